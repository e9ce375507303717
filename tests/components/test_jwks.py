"""Keys from a JWKS URL: caching, rotation, refetch cooldown, a failing key server, and a
gateway that accepts JWKS-signed tokens. The key server is real (uvicorn in a thread)."""

from __future__ import annotations

import asyncio
import secrets
import socket
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx2
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from gateway.auth.jwks import JwksKeys, parse_key_set
from gateway.auth.tokens import TokenVerifier, mint_token
from gateway.config import Secret, Settings
from gateway.errors import Unauthorized
from tests.conftest import GatewayFactory
from tests.support.jwks_server import KeyServer, Mode, ec_key, good_claims, rsa_key, rsa_private
from tests.support.serving import serve_in_thread
from tests.support.ws import connected

CACHE_SECONDS = 300.0
COOLDOWN = 30.0


class Clock:
    """Monotonic seconds that move only when a test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def key_server() -> Iterator[tuple[KeyServer, str]]:
    server = KeyServer()
    with serve_in_thread(server.app) as url:
        yield server, f"{url}/jwks.json"


@pytest.fixture
def clock() -> Clock:
    return Clock()


Make = Callable[..., TokenVerifier]


@pytest.fixture
async def make_verifier(clock: Clock) -> AsyncIterator[Make]:
    """Verifiers over a JWKS URL with the test's clock; closed after the test."""
    made: list[TokenVerifier] = []

    def make(url: str, timeout: float = 5.0, **changes: Any) -> TokenVerifier:
        settings = Settings(jwt_jwks_url=url, **changes)
        keys = JwksKeys(
            url,
            settings.algorithms,
            cache_seconds=CACHE_SECONDS,
            cooldown=COOLDOWN,
            timeout=timeout,
            clock=clock,
        )
        made.append(TokenVerifier(settings, keys))
        return made[-1]

    yield make
    for verifier in made:
        await verifier.aclose()


async def refusal(verifier: TokenVerifier, token: str) -> str:
    with pytest.raises(Unauthorized) as caught:
        await verifier.verify(token)
    return caught.value.message


async def test_rsa_and_ec_tokens_verify_with_one_fetch(
    key_server: tuple[KeyServer, str], make_verifier: Make
) -> None:
    server, url = key_server
    server.publish(rsa_key("r1"), ec_key("e1"))
    verifier = make_verifier(url)
    assert (await verifier.verify(rsa_key("r1").sign(good_claims(tier="pro")))).sub == "alice"
    principal = await verifier.verify(ec_key("e1").sign(good_claims(sub="bob")))
    assert principal.sub == "bob"
    assert server.requests == 1


async def test_a_rotated_in_key_is_fetched_once_then_verifies(
    key_server: tuple[KeyServer, str], make_verifier: Make, clock: Clock
) -> None:
    server, url = key_server
    server.publish(rsa_key("old"))
    verifier = make_verifier(url)
    await verifier.verify(rsa_key("old").sign())
    server.publish(rsa_key("old"), rsa_key("new", index=1))
    clock.advance(COOLDOWN)
    assert (await verifier.verify(rsa_key("new", index=1).sign())).sub == "alice"
    assert server.requests == 2
    await verifier.verify(rsa_key("new", index=1).sign())
    await verifier.verify(rsa_key("old").sign())
    assert server.requests == 2


async def test_a_key_appearing_during_the_cooldown_waits_for_it_to_end(
    key_server: tuple[KeyServer, str], make_verifier: Make, clock: Clock
) -> None:
    server, url = key_server
    server.publish(rsa_key("a"))
    verifier = make_verifier(url)
    assert "not known" in await refusal(verifier, rsa_key("b", index=1).sign())
    server.publish(rsa_key("a"), rsa_key("b", index=1))
    clock.advance(COOLDOWN - 1)
    assert "not known" in await refusal(verifier, rsa_key("b", index=1).sign())
    assert server.requests == 1
    clock.advance(1)
    assert (await verifier.verify(rsa_key("b", index=1).sign())).sub == "alice"
    assert server.requests == 2


async def test_a_key_removed_from_the_set_stops_working_when_the_cache_expires(
    key_server: tuple[KeyServer, str], make_verifier: Make, clock: Clock
) -> None:
    server, url = key_server
    server.publish(rsa_key("a"), rsa_key("b", index=1))
    verifier = make_verifier(url)
    await verifier.verify(rsa_key("b", index=1).sign())
    server.publish(rsa_key("a"))
    clock.advance(CACHE_SECONDS - 1)
    await verifier.verify(rsa_key("b", index=1).sign())  # still cached
    clock.advance(1)
    assert await refusal(verifier, rsa_key("b", index=1).sign()) == (
        "The token's signing key is not known."
    )
    assert server.requests == 2


async def test_an_unknown_kid_flood_fetches_at_most_once_per_cooldown(
    key_server: tuple[KeyServer, str], make_verifier: Make, clock: Clock
) -> None:
    server, url = key_server
    server.publish(rsa_key("a"))
    verifier = make_verifier(url)
    forged = [rsa_key(secrets.token_hex(8)).sign() for _ in range(200)]
    started = time.perf_counter()
    results = await asyncio.gather(*(verifier.verify(t) for t in forged), return_exceptions=True)
    assert all(isinstance(r, Unauthorized) for r in results)
    assert server.requests == 1  # the 200 shared the first fetch
    for token in forged:  # one after another, within the cooldown
        assert "not known" in await refusal(verifier, token)
    elapsed = time.perf_counter() - started
    assert server.requests == 1
    assert (await verifier.verify(rsa_key("a").sign())).sub == "alice"
    clock.advance(COOLDOWN)
    results = await asyncio.gather(*(verifier.verify(t) for t in forged), return_exceptions=True)
    assert all(isinstance(r, Unauthorized) for r in results)
    assert server.requests == 2
    assert elapsed < 5  # 400 refusals, measured at about 0.1 s on a laptop


async def test_known_keys_outlive_a_key_server_that_is_down(
    make_verifier: Make, clock: Clock
) -> None:
    server = KeyServer()
    server.publish(rsa_key("a"))
    with serve_in_thread(server.app) as base:
        verifier = make_verifier(f"{base}/jwks.json")
        await verifier.verify(rsa_key("a").sign())
    clock.advance(CACHE_SECONDS)
    assert (await verifier.verify(rsa_key("a").sign())).sub == "alice"
    started = time.perf_counter()
    message = await refusal(verifier, rsa_key("b", index=1).sign())
    assert message == (
        "The token's signing key is not known, and the key server cannot be reached."
    )
    assert time.perf_counter() - started < 1
    clock.advance(COOLDOWN)  # another attempt, which fails again: the key still works
    assert (await verifier.verify(rsa_key("a").sign())).sub == "alice"


@pytest.mark.parametrize(
    ("mode", "logged"),
    [
        ("500", "HTTP 500"),
        ("garbage", "not JSON"),
        ("not-a-set", "not a JWK Set"),
        ("no-usable-keys", "no usable key"),
        ("huge", "too large"),
    ],
)
async def test_known_keys_outlive_a_key_server_answering_nonsense(
    key_server: tuple[KeyServer, str],
    make_verifier: Make,
    clock: Clock,
    caplog: pytest.LogCaptureFixture,
    mode: Mode,
    logged: str,
) -> None:
    server, url = key_server
    server.publish(rsa_key("a"))
    verifier = make_verifier(url)
    await verifier.verify(rsa_key("a").sign())
    server.mode = mode
    clock.advance(CACHE_SECONDS)
    assert (await verifier.verify(rsa_key("a").sign())).sub == "alice"
    assert server.requests == 2
    assert "cannot be reached" in await refusal(verifier, rsa_key("b", index=1).sign())
    warnings = [r.getMessage() for r in caplog.records if r.name == "gateway.auth.jwks"]
    assert (
        len(warnings) == 1
        and logged in warnings[0]
        and warnings[0].endswith("keys still in use: 1")
    )
    clock.advance(COOLDOWN - 1)  # the failed fetch extended the cache: no new request
    await verifier.verify(rsa_key("a").sign())
    assert server.requests == 2
    server.mode = "ok"
    server.publish(rsa_key("a"), rsa_key("b", index=1))
    clock.advance(1)
    assert (await verifier.verify(rsa_key("b", index=1).sign())).sub == "alice"
    assert server.requests == 3


async def test_a_key_server_that_never_answers_times_out(make_verifier: Make) -> None:
    with socket.socket() as silent:  # listens, never accepts: connections wait in the backlog
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        verifier = make_verifier(f"http://127.0.0.1:{port}/jwks.json", timeout=0.3)
        started = time.perf_counter()
        assert "cannot be reached" in await refusal(verifier, rsa_key("a").sign())
        assert time.perf_counter() - started < 3
        started = time.perf_counter()  # within the cooldown: refused without waiting again
        assert "cannot be reached" in await refusal(verifier, rsa_key("a").sign())
        assert time.perf_counter() - started < 0.1


async def test_a_token_without_kid_needs_a_lone_key(
    key_server: tuple[KeyServer, str], make_verifier: Make, clock: Clock
) -> None:
    server, url = key_server
    server.publish(rsa_key(None))
    verifier = make_verifier(url)
    assert (await verifier.verify(rsa_key(None).sign())).sub == "alice"
    assert "not known" in await refusal(verifier, rsa_key(None).sign(kid="any"))
    server.publish(rsa_key("a"), rsa_key("b", index=1))
    clock.advance(CACHE_SECONDS)
    message = await refusal(verifier, rsa_key("a").sign(kid=None))
    assert message == "The token has no 'kid' and there are several signing keys."


async def test_a_token_alg_must_fit_its_key(
    key_server: tuple[KeyServer, str], make_verifier: Make
) -> None:
    server, url = key_server
    loose = rsa_key("loose", index=1)
    server.publish(rsa_key("a"), ec_key("e"), loose.jwk(with_alg=False))
    verifier = make_verifier(url, jwt_algorithms=("RS256", "PS256", "ES256"))
    mismatch = "The token's algorithm does not match its signing key."
    assert await refusal(verifier, rsa_key("a").sign(alg="PS256")) == mismatch
    assert await refusal(verifier, rsa_key("a").sign(kid="e")) == mismatch
    # A key published without `alg` verifies any allowed algorithm of its type.
    assert (await verifier.verify(loose.sign(alg="PS256"))).sub == "alice"
    assert await refusal(verifier, loose.sign(alg="PS384")) == (
        "The token is malformed or wrongly signed."
    )


def test_only_usable_signature_keys_are_read() -> None:
    small = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    with_private_parts = RSAAlgorithm.to_jwk(rsa_private(0), as_dict=True)
    document = {
        "keys": [
            rsa_key("good").jwk(),
            {**with_private_parts, "kid": "private"},
            {"kty": "oct", "k": "c2VjcmV0", "kid": "hmac"},
            rsa_key("enc").jwk(use="enc"),
            rsa_key("hs").jwk(alg="HS256"),
            ec_key("wrong-curve-alg").jwk(alg="ES384"),
            {**RSAAlgorithm.to_jwk(small.public_key(), as_dict=True), "kid": "small"},
            {"kty": "RSA", "n": 12, "e": [], "kid": "broken"},
            {"kty": "EC", "crv": ["P-256"], "kid": "odd-curve"},
            "not a key",
        ]
    }
    keys = parse_key_set(document, ("RS256", "ES256", "ES384"))
    assert [(k.kid, sorted(k.algorithms)) for k in keys.keys] == [
        ("good", ["RS256"]),
        ("private", ["RS256"]),
    ]
    assert all(isinstance(k.key, rsa.RSAPublicKey) for k in keys.keys)


def test_static_key_verification_never_awaits_io() -> None:
    """With a configured key, `verify` finishes in its first step: no I/O was awaited."""
    settings = Settings(jwt_public_key=Secret(rsa_key("a").public_pem()))
    step = TokenVerifier(settings).verify(rsa_key("a").sign())
    with pytest.raises(StopIteration) as finished:
        step.send(None)
    assert finished.value.value.sub == "alice"


async def test_a_gateway_accepts_jwks_tokens_on_the_socket_and_over_http(
    key_server: tuple[KeyServer, str], start_gateway: GatewayFactory
) -> None:
    server, url = key_server
    signer = rsa_key("gw-key")
    server.publish(signer, ec_key("other"))
    with start_gateway(jwt_secret=None, jwt_jwks_url=url) as gateway:
        settings = Settings(jwt_jwks_url=url)
        token = mint_token(settings, "dana", 600, signer.private_pem(), kid="gw-key")
        ready = await connected(gateway, token)
        await ready.close()
        async with httpx2.AsyncClient(timeout=20) as client:
            response = await client.post(
                f"{gateway}/completion",
                json={"message": "hello", "model": "echo"},
                headers={"Authorization": f"Bearer {token}"},
            )
            refused = await client.post(
                f"{gateway}/completion",
                json={"message": "hello", "model": "echo"},
                headers={"Authorization": f"Bearer {rsa_key('stranger', index=1).sign()}"},
            )
    assert response.status_code == 200, response.text
    assert response.json()["content"]
    assert refused.status_code == 401
    assert refused.json()["error"] == "unauthorized"
    assert server.requests == 1  # the stranger's kid came within the cooldown: no refetch
    assert jwt.get_unverified_header(token)["kid"] == "gw-key"

"""Forged, tampered and misused tokens against running gateways: each is refused on the
WebSocket (close 4401) and over HTTP (401 unauthorized) with a short reason, and the gateway
keeps serving good tokens. Tokens never reach a log line."""

from __future__ import annotations

import asyncio
import base64
import hmac
import json
import secrets
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx2
import jwt
import pytest
from websockets.exceptions import ConnectionClosed

from gateway.config import Secret
from tests.adversarial.conftest import MINTED
from tests.conftest import GatewayFactory
from tests.support.jwks_server import KeyServer, good_claims, rsa_key
from tests.support.polling import settle
from tests.support.processes import start_process
from tests.support.redis import RedisServer
from tests.support.serving import serve_in_thread
from tests.support.tokens import TEST_SECRET
from tests.support.ws import connected, open_socket

AUD = "chat-gateway"
ISS = "https://idp.example.test"
MALFORMED = "The token is malformed or wrongly signed."
NOT_FOR_US = "The token is not meant for this gateway."


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def segment(obj: dict[str, Any]) -> str:
    return b64(json.dumps(obj).encode())


def hs256(
    header: dict[str, Any], payload: dict[str, Any], key: bytes, digest: str = "sha256"
) -> str:
    """A token with exactly this header, signed by hand (jwt.encode would refuse some)."""
    signing_input = f"{segment(header)}.{segment(payload)}"
    signature = hmac.new(key, signing_input.encode(), digest).digest()
    return f"{signing_input}.{b64(signature)}"


def claims(**changes: Any) -> dict[str, Any]:
    return good_claims(**{"aud": AUD, "iss": ISS, **changes})


def good_hs() -> str:
    return jwt.encode(claims(), TEST_SECRET, "HS256")


def tampered() -> str:
    header, _, signature = good_hs().split(".")
    return f"{header}.{segment(claims(sub='mallory'))}.{signature}"


def stripped() -> str:
    header, payload, _ = good_hs().split(".")
    return f"{header}.{payload}."


def unsigned(alg: str) -> str:
    return f"{segment({'alg': alg, 'typ': 'JWT'})}.{segment(claims(sub='mallory'))}."


def later(seconds: int = 600) -> int:
    return int(time.time()) + seconds


# name: (the forged token, the reason the gateway gives), against a JWT_SECRET gateway
# that also checks JWT_AUDIENCE and JWT_ISSUER.
SECRET_ATTACKS: dict[str, Callable[[], tuple[str, str]]] = {
    "alg-none": lambda: (unsigned("none"), MALFORMED),
    "alg-None-mixed-case": lambda: (unsigned("NoNe"), MALFORMED),
    "tampered-payload": lambda: (tampered(), MALFORMED),
    "signature-stripped": lambda: (stripped(), MALFORMED),
    "wrong-key": lambda: (jwt.encode(claims(), secrets.token_urlsafe(32), "HS256"), MALFORMED),
    "alg-not-allowed-hs512": lambda: (
        hs256({"alg": "HS512"}, claims(), TEST_SECRET.encode(), "sha512"),
        MALFORMED,
    ),
    "kid-path-injection": lambda: (
        hs256({"alg": "HS256", "kid": "../../../../dev/null"}, claims(), b""),
        MALFORMED,
    ),
    "missing-exp": lambda: (
        jwt.encode(claims(exp=None), TEST_SECRET, "HS256"),
        "The token has no 'exp' claim.",
    ),
    "expired": lambda: (
        jwt.encode(claims(exp=later(-60)), TEST_SECRET, "HS256"),
        "The token has expired.",
    ),
    "nbf-in-the-future": lambda: (
        jwt.encode(claims(nbf=later()), TEST_SECRET, "HS256"),
        "The token is not valid yet.",
    ),
    "iat-in-the-future": lambda: (
        jwt.encode(claims(iat=later()), TEST_SECRET, "HS256"),
        "The token was issued in the future.",
    ),
    "wrong-aud": lambda: (jwt.encode(claims(aud="other-api"), TEST_SECRET, "HS256"), NOT_FOR_US),
    "missing-aud": lambda: (
        jwt.encode(claims(aud=None), TEST_SECRET, "HS256"),
        "The token has no 'aud' claim.",
    ),
    "wrong-iss": lambda: (
        jwt.encode(claims(iss="https://evil.test"), TEST_SECRET, "HS256"),
        NOT_FOR_US,
    ),
    "bad-typ-security-event": lambda: (
        jwt.encode(claims(), TEST_SECRET, "HS256", headers={"typ": "secevent+jwt"}),
        "The token's type is not accepted.",
    ),
    "empty-sub": lambda: (
        jwt.encode(claims(sub=""), TEST_SECRET, "HS256"),
        "The token's 'sub' must be a non-empty string.",
    ),
    # JSON's "\udc80": a string no store key can hold (see test_activity_attacks.py).
    "lone-surrogate-sub": lambda: (
        jwt.encode(claims(sub="mallory-\udc80"), TEST_SECRET, "HS256"),
        "The token's 'sub' must be valid Unicode.",
    ),
    # Past OpenID Connect's 255: every instance would hear it with each of the user's events.
    "long-sub": lambda: (
        jwt.encode(claims(sub="m" * 256), TEST_SECRET, "HS256"),
        "The token's 'sub' must be at most 255 characters.",
    ),
}


async def ws_refusal(url: str, token: str, carrier: str = "subprotocol") -> tuple[int | None, str]:
    """The close code and reason the gateway ends a socket offering `token` with."""
    ws = await open_socket(url, token, carrier=carrier)
    try:
        while True:
            await asyncio.wait_for(ws.recv(), 10)
    except ConnectionClosed as closed:
        return (closed.rcvd.code, closed.rcvd.reason) if closed.rcvd else (None, "")


async def post(url: str, token: str, client: httpx2.AsyncClient | None = None) -> httpx2.Response:
    headers = {"Authorization": f"Bearer {token}"}
    body = {"message": "hi", "model": "echo"}
    if client is not None:
        return await client.post(f"{url}/completion", json=body, headers=headers)
    async with httpx2.AsyncClient(timeout=20) as own:
        return await own.post(f"{url}/completion", json=body, headers=headers)


async def assert_refused(url: str, token: str, reason: str) -> None:
    MINTED.append(token)  # the autouse log check fails the test if it reached a log line
    assert await ws_refusal(url, token) == (4401, reason)
    response = await post(url, token)
    assert response.status_code == 401, response.text
    body = response.json()
    assert body["error"] == "unauthorized" and body["detail"] == reason
    assert response.headers["www-authenticate"] == "Bearer"


async def assert_serves(url: str, token: str) -> None:
    MINTED.append(token)
    ws = await connected(url, token)
    await ws.close()
    response = await post(url, token)
    assert response.status_code == 200, response.text
    assert response.json()["content"]


@pytest.fixture
def secret_gateway(start_gateway: GatewayFactory) -> Iterator[str]:
    with start_gateway(jwt_audience=AUD, jwt_issuer=ISS) as url:
        yield url


@pytest.mark.parametrize("attack", list(SECRET_ATTACKS))
async def test_forged_tokens_are_refused(secret_gateway: str, attack: str) -> None:
    token, reason = SECRET_ATTACKS[attack]()
    await assert_refused(secret_gateway, token, reason)
    await assert_serves(secret_gateway, good_hs())


@pytest.fixture
def public_key_gateway(start_gateway: GatewayFactory) -> Iterator[str]:
    public_pem = rsa_key("issuer").public_pem()
    with start_gateway(jwt_secret=None, jwt_public_key=Secret(public_pem)) as url:
        yield url


async def test_hs256_signed_with_the_public_key_is_refused(public_key_gateway: str) -> None:
    """Algorithm confusion: the public key, which anyone has, used as an HMAC secret."""
    public_pem = rsa_key("issuer").public_pem().encode()
    forged = hs256({"alg": "HS256", "typ": "JWT"}, good_claims(sub="mallory"), public_pem)
    await assert_refused(public_key_gateway, forged, MALFORMED)
    await assert_serves(public_key_gateway, rsa_key("issuer").sign())


async def test_a_key_embedded_in_the_header_is_not_trusted(public_key_gateway: str) -> None:
    """The attacker signs with their own key and offers it in `jwk` (or points `jku` at it)."""
    attacker = rsa_key("attacker", index=1)
    forged = attacker.sign(
        good_claims(sub="mallory"), jwk=attacker.jwk(), jku="http://127.0.0.1:9/"
    )
    await assert_refused(public_key_gateway, forged, MALFORMED)
    await assert_serves(public_key_gateway, rsa_key("issuer").sign())


@pytest.fixture
def key_server() -> Iterator[tuple[KeyServer, str]]:
    server = KeyServer()
    server.publish(rsa_key("issuer"), {"kty": "oct", "k": b64(b"s" * 32), "kid": "hmac"})
    with serve_in_thread(server.app) as url:
        yield server, f"{url}/jwks.json"


@pytest.fixture
def jwks_gateway(start_gateway: GatewayFactory, key_server: tuple[KeyServer, str]) -> Iterator[str]:
    with start_gateway(jwt_secret=None, jwt_jwks_url=key_server[1]) as url:
        yield url


async def test_an_unknown_kid_flood_does_not_flood_the_key_server(
    jwks_gateway: str, key_server: tuple[KeyServer, str]
) -> None:
    server = key_server[0]
    forged = [rsa_key(f"random-{secrets.token_hex(6)}", index=1).sign() for _ in range(200)]
    MINTED.extend(forged)
    started = time.perf_counter()
    async with httpx2.AsyncClient(timeout=20) as client:
        answers = await asyncio.gather(*(post(jwks_gateway, t, client) for t in forged))
    sockets = await asyncio.gather(*(ws_refusal(jwks_gateway, t) for t in forged[:20]))
    elapsed = time.perf_counter() - started
    assert {a.status_code for a in answers} == {401}
    assert {a.json()["detail"] for a in answers} == {"The token's signing key is not known."}
    assert {code for code, _ in sockets} == {4401}
    assert server.requests <= 2  # measured: 1 (the first load, shared by all)
    await assert_serves(jwks_gateway, rsa_key("issuer").sign())
    assert server.requests <= 2
    assert elapsed < 20


async def test_hs256_with_a_published_oct_key_is_refused(
    jwks_gateway: str, key_server: tuple[KeyServer, str]
) -> None:
    """An HMAC key in the set never verifies: HS* is not allowed with JWT_JWKS_URL."""
    forged = hs256({"alg": "HS256", "kid": "hmac"}, good_claims(sub="mallory"), b"s" * 32)
    await assert_refused(jwks_gateway, forged, MALFORMED)
    await assert_serves(jwks_gateway, rsa_key("issuer").sign())


async def test_a_jku_header_is_never_followed(
    jwks_gateway: str, key_server: tuple[KeyServer, str]
) -> None:
    attacker = KeyServer()
    evil = rsa_key("evil", index=1)
    attacker.publish(evil)
    with serve_in_thread(attacker.app) as attacker_url:
        forged = evil.sign(good_claims(sub="mallory"), jku=f"{attacker_url}/jwks.json")
        await assert_refused(jwks_gateway, forged, "The token's signing key is not known.")
    assert attacker.requests == 0
    await assert_serves(jwks_gateway, rsa_key("issuer").sign())


async def test_tokens_never_reach_the_process_log(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    """A real gateway process logging at debug level: tokens in a query string, a header and
    the subprotocol, good and bad, appear nowhere in its output."""
    good = jwt.encode(good_claims(sub="logged"), TEST_SECRET, "HS256")
    bad = jwt.encode(good_claims(exp=later(-60)), TEST_SECRET, "HS256")
    env = {
        "REDIS_URL": redis_server.url,
        "REDIS_PREFIX": f"t{uuid.uuid4().hex[:12]}:",
        "LOG_LEVEL": "debug",
    }
    gateway = start_process(tmp_path, env)
    try:
        # start_process returns at "startup complete", a moment before the port listens.
        assert await settle(lambda: any("Uvicorn running" in ln for ln in gateway.output))
        for carrier in ("query", "header", "subprotocol"):
            ws = await connected(gateway.url, good, carrier=carrier)
            await ws.close()
            assert (await ws_refusal(gateway.url, bad, carrier))[0] == 4401
        async with httpx2.AsyncClient(timeout=20) as client:
            for token, status in ((good, 200), (bad, 401)):
                answer = await client.post(
                    f"{gateway.url}/completion?token={token}",
                    json={"message": "hi", "model": "echo"},
                    headers={"Authorization": f"Bearer {token}"},
                )
                assert answer.status_code == status
        # The request lines with a token in the query string were logged, redacted.
        assert await settle(lambda: sum("token=[redacted]" in ln for ln in gateway.output) >= 4)
    finally:
        gateway.stop()
    output = "".join(gateway.output)
    for token in (good, bad):
        assert token not in output
        assert token.split(".")[2] not in output  # not even the signature

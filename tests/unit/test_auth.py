"""Token verification and token carriers."""

from __future__ import annotations

import base64
import hmac
import json
import time
from typing import Any, cast

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from gateway.auth.tokens import (
    Header,
    TokenVerifier,
    VerifiedTokens,
    bearer_token,
    choose_subprotocol,
    mint_token,
    read_header,
    subprotocol_token,
)
from gateway.config import Secret, Settings
from gateway.errors import Unauthorized

SECRET = "s" * 64
HS = Settings(jwt_secret=Secret(SECRET))


def claims(**changes: Any) -> dict[str, Any]:
    # Parameters are built at collection, long before a test runs in a full session.
    base: dict[str, Any] = {"sub": "alice", "exp": int(time.time()) + 3600}
    base.update(changes)
    return {k: v for k, v in base.items() if v is not None}


async def test_a_good_token_gives_its_principal() -> None:
    principal = await TokenVerifier(HS).verify(jwt.encode(claims(tier="pro"), SECRET, "HS256"))
    assert principal.sub == "alice"
    assert principal.claims["tier"] == "pro"
    assert principal.expires_at > time.time()


def test_verified_tokens_are_remembered_until_exp_and_at_most_max_seconds() -> None:
    remembered = VerifiedTokens(size=2, max_seconds=60)
    remembered.add("a", {"exp": 1030}, now=1000)
    remembered.add("b", {"exp": 5000}, now=1000)
    assert remembered.get("a", 1029) == {"exp": 1030}
    assert remembered.get("a", 1030) is None  # its exp came
    assert remembered.get("b", 1059) == {"exp": 5000}
    assert remembered.get("b", 1060) is None  # remembered 60 s at most
    assert remembered.get("never", 1000) is None


def test_verified_tokens_forget_the_least_recently_used_past_their_size() -> None:
    remembered = VerifiedTokens(size=2, max_seconds=60)
    for name in ("a", "b"):
        remembered.add(name, {"exp": 2000}, now=1000)
    assert remembered.get("a", 1001) is not None  # a is now the most recent
    remembered.add("c", {"exp": 2000}, now=1001)
    assert remembered.get("b", 1002) is None
    assert remembered.get("a", 1002) is not None and remembered.get("c", 1002) is not None


async def test_a_remembered_token_is_still_checked_for_nbf_and_refused_when_wrong() -> None:
    verifier = TokenVerifier(HS)
    good = jwt.encode(claims(), SECRET, "HS256")
    assert (await verifier.verify(good)).sub == (await verifier.verify(good)).sub == "alice"
    forged = good[: good.rindex(".") + 1] + "A" * 43
    for _ in range(2):  # a refusal is not remembered as anything
        with pytest.raises(Unauthorized, match="wrongly signed"):
            await verifier.verify(forged)
    later = jwt.encode(claims(nbf=int(time.time()) + 600), SECRET, "HS256")
    for _ in range(2):
        with pytest.raises(Unauthorized):
            await verifier.verify(later)


@pytest.mark.parametrize(
    ("token", "fragment"),
    [
        (jwt.encode(claims(exp=int(time.time()) - 5), SECRET, "HS256"), "expired"),
        (jwt.encode(claims(), "x" * 64, "HS256"), "wrongly signed"),
        (jwt.encode(claims(), cast(Any, None), "none"), "wrongly signed"),
        (jwt.encode(claims(sub=None), SECRET, "HS256"), "'sub'"),
        (jwt.encode(claims(exp=None), SECRET, "HS256"), "'exp'"),
        (jwt.encode(claims(sub=""), SECRET, "HS256"), "sub"),
        (jwt.encode(claims(), SECRET, "HS512"), "wrongly signed"),
        ("not-a-jwt", "malformed"),
        ("a.b.c", "malformed"),
    ],
)
async def test_bad_tokens_are_refused_with_a_reason(token: str, fragment: str) -> None:
    with pytest.raises(Unauthorized) as caught:
        await TokenVerifier(HS).verify(token)
    assert fragment in caught.value.message


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"nbf": int(time.time()) + 3000}, "The token is not valid yet."),
        ({"iat": int(time.time()) + 3000}, "The token was issued in the future."),
        ({"nbf": "soon"}, "The token's 'nbf' claim must be a number."),
        ({"iat": True}, "The token's 'iat' claim must be a number."),
    ],
)
async def test_not_yet_valid_tokens_are_refused(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(Unauthorized) as caught:
        await TokenVerifier(HS).verify(jwt.encode(claims(**changes), SECRET, "HS256"))
    assert caught.value.message == message


async def test_leeway_covers_clock_skew_for_nbf_and_iat() -> None:
    verifier = TokenVerifier(Settings(jwt_secret=Secret(SECRET), jwt_leeway=30))
    soon = int(time.time()) + 10
    token = jwt.encode(claims(nbf=soon, iat=soon), SECRET, "HS256")
    assert (await verifier.verify(token)).sub == "alice"
    past = int(time.time()) - 10
    assert await TokenVerifier(HS).verify(jwt.encode(claims(nbf=past, iat=past), SECRET, "HS256"))


@pytest.mark.parametrize("typ", ["JWT", "jwt", "at+jwt", "AT+JWT", "application/at+jwt", None])
async def test_accepted_token_types(typ: str | None) -> None:
    token = jwt.encode(claims(), SECRET, "HS256", headers={"typ": typ})
    assert (await TokenVerifier(HS).verify(token)).sub == "alice"


@pytest.mark.parametrize("typ", ["JWS", "secevent+jwt", "id_token", "", 1, ["JWT"]])
async def test_other_token_types_are_refused(typ: object) -> None:
    token = signed({"alg": "HS256", "typ": typ}, claims())
    with pytest.raises(Unauthorized) as caught:
        await TokenVerifier(HS).verify(token)
    assert caught.value.message == "The token's type is not accepted."


def test_read_header() -> None:
    token = jwt.encode(claims(), SECRET, "HS256", headers={"kid": "k1"})
    assert read_header(token, ["HS256"]) == Header("HS256", "k1")
    with pytest.raises(Unauthorized):
        read_header(token, ["RS256"])
    with pytest.raises(Unauthorized):
        read_header(signed({"alg": "HS256", "kid": 7}, claims()), ["HS256"])


def test_a_verifier_needs_a_key() -> None:
    with pytest.raises(ValueError, match="JWT_JWKS_URL"):
        TokenVerifier(Settings())


async def test_audience_and_issuer_are_checked_when_configured() -> None:
    settings = Settings(jwt_secret=Secret(SECRET), jwt_audience="gw", jwt_issuer="idp")
    verifier = TokenVerifier(settings)
    assert (
        await verifier.verify(jwt.encode(claims(aud="gw", iss="idp"), SECRET, "HS256"))
    ).sub == "alice"
    for bad in (claims(aud="other", iss="idp"), claims(aud="gw", iss="evil"), claims(iss="idp")):
        with pytest.raises(Unauthorized):
            await verifier.verify(jwt.encode(bad, SECRET, "HS256"))


async def test_leeway_accepts_a_just_expired_token() -> None:
    token = jwt.encode(claims(exp=int(time.time()) - 2), SECRET, "HS256")
    assert await TokenVerifier(Settings(jwt_secret=Secret(SECRET), jwt_leeway=30)).verify(token)


async def test_public_key_tokens_and_no_algorithm_confusion() -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    public_pem = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    settings = Settings(jwt_public_key=Secret(public_pem))
    verifier = TokenVerifier(settings)
    assert (await verifier.verify(mint_token(settings, "bob", 60, private_pem))).sub == "bob"
    # An HS256 token "signed" with the public key must not pass.
    header = base64url(b'{"alg":"HS256","typ":"JWT"}')
    payload = base64url(f'{{"sub":"eve","exp":{int(time.time()) + 60}}}'.encode())
    signature = hmac.new(public_pem.encode(), f"{header}.{payload}".encode(), "sha256").digest()
    token = f"{header}.{payload}.{base64url(signature)}"
    with pytest.raises(Unauthorized):
        await verifier.verify(token)


def base64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def signed(header: dict[str, Any], payload: dict[str, Any]) -> str:
    """An HS256 token with exactly this header, which jwt.encode would tidy up."""
    head = base64url(json.dumps(header).encode())
    body = base64url(json.dumps(payload).encode())
    signature = hmac.new(SECRET.encode(), f"{head}.{body}".encode(), "sha256").digest()
    return f"{head}.{body}.{base64url(signature)}"


async def test_minted_tokens_verify() -> None:
    token = mint_token(HS, "carol", 60)
    assert (await TokenVerifier(HS).verify(token)).sub == "carol"
    assert "kid" not in jwt.get_unverified_header(token)
    assert jwt.get_unverified_header(mint_token(HS, "carol", 60, kid="k2"))["kid"] == "k2"


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("Bearer abc", "abc"),
        ("bearer  abc ", "abc"),
        ("Basic abc", None),
        ("Bearer", None),
        ("", None),
        (None, None),
    ],
)
def test_bearer_header(header: str | None, expected: str | None) -> None:
    assert bearer_token(header) == expected


def test_subprotocol_carrier() -> None:
    offered = ["chat-gateway.v1", "bearer.a.b.c"]
    assert subprotocol_token(offered) == "a.b.c"
    assert choose_subprotocol(offered) == "chat-gateway.v1"
    assert subprotocol_token(["chat-gateway.v1"]) is None
    assert subprotocol_token(["bearer."]) is None
    assert choose_subprotocol(["bearer.a.b.c"]) is None

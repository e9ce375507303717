"""Token verification and token carriers."""

from __future__ import annotations

import base64
import hmac
import time
from typing import Any, cast

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from gateway.auth import (
    TokenVerifier,
    bearer_token,
    choose_subprotocol,
    mint_token,
    subprotocol_token,
)
from gateway.config import Secret, Settings
from gateway.errors import Unauthorized

SECRET = "s" * 64
HS = Settings(jwt_secret=Secret(SECRET))


def claims(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"sub": "alice", "exp": int(time.time()) + 60}
    base.update(changes)
    return {k: v for k, v in base.items() if v is not None}


def test_a_good_token_gives_its_principal() -> None:
    principal = TokenVerifier(HS).verify(jwt.encode(claims(tier="pro"), SECRET, "HS256"))
    assert principal.sub == "alice"
    assert principal.claims["tier"] == "pro"
    assert principal.expires_at > time.time()


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
def test_bad_tokens_are_refused_with_a_reason(token: str, fragment: str) -> None:
    with pytest.raises(Unauthorized) as caught:
        TokenVerifier(HS).verify(token)
    assert fragment in caught.value.message


def test_audience_and_issuer_are_checked_when_configured() -> None:
    settings = Settings(jwt_secret=Secret(SECRET), jwt_audience="gw", jwt_issuer="idp")
    verifier = TokenVerifier(settings)
    assert verifier.verify(jwt.encode(claims(aud="gw", iss="idp"), SECRET, "HS256")).sub == "alice"
    for bad in (claims(aud="other", iss="idp"), claims(aud="gw", iss="evil"), claims(iss="idp")):
        with pytest.raises(Unauthorized):
            verifier.verify(jwt.encode(bad, SECRET, "HS256"))


def test_leeway_accepts_a_just_expired_token() -> None:
    token = jwt.encode(claims(exp=int(time.time()) - 2), SECRET, "HS256")
    assert TokenVerifier(Settings(jwt_secret=Secret(SECRET), jwt_leeway=30)).verify(token)


def test_public_key_tokens_and_no_algorithm_confusion() -> None:
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
    assert verifier.verify(mint_token(settings, "bob", 60, private_pem)).sub == "bob"
    # An HS256 token "signed" with the public key must not pass.
    header = base64url(b'{"alg":"HS256","typ":"JWT"}')
    payload = base64url(f'{{"sub":"eve","exp":{int(time.time()) + 60}}}'.encode())
    signature = hmac.new(public_pem.encode(), f"{header}.{payload}".encode(), "sha256").digest()
    token = f"{header}.{payload}.{base64url(signature)}"
    with pytest.raises(Unauthorized):
        verifier.verify(token)


def base64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def test_minted_tokens_verify() -> None:
    token = mint_token(HS, "carol", 60)
    assert TokenVerifier(HS).verify(token).sub == "carol"


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

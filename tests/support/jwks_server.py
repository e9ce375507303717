"""A JWKS key server for tests: RSA and EC signing keys, a request count, and ways to fail."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from functools import cache
from typing import Any, Literal

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
Mode = Literal["ok", "500", "garbage", "not-a-set", "no-usable-keys", "huge"]


@cache
def rsa_private(index: int) -> rsa.RSAPrivateKey:
    """The index-th RSA key of the test session, made once (2048 bits is the least accepted)."""
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@cache
def ec_private(index: int) -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@dataclass(frozen=True)
class SigningKey:
    """A private key, the `kid` it is published under, and the algorithm it signs with."""

    private: PrivateKey
    kid: str | None
    alg: str

    def jwk(self, *, with_alg: bool = True, **extra: Any) -> dict[str, Any]:
        public = self.private.public_key()
        if isinstance(public, rsa.RSAPublicKey):
            jwk: dict[str, Any] = RSAAlgorithm.to_jwk(public, as_dict=True)
        else:
            jwk = ECAlgorithm.to_jwk(public, as_dict=True)
        jwk["use"] = "sig"
        if self.kid is not None:
            jwk["kid"] = self.kid
        if with_alg:
            jwk["alg"] = self.alg
        return {**jwk, **extra}

    def sign(
        self,
        claims: dict[str, Any] | None = None,
        *,
        alg: str | None = None,
        kid: str | None = "",
        **header: Any,
    ) -> str:
        """A token with this key; `kid=""` names the key's own kid, None leaves it out."""
        kid = self.kid if kid == "" else kid
        headers = {**header, **({"kid": kid} if kid is not None else {})}
        return jwt.encode(
            claims if claims is not None else good_claims(),
            self.private,
            algorithm=alg or self.alg,
            headers=headers,
        )

    def public_pem(self) -> str:
        return (
            self.private.public_key()
            .public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            .decode()
        )

    def private_pem(self) -> str:
        return self.private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode()


def rsa_key(kid: str | None, index: int = 0, alg: str = "RS256") -> SigningKey:
    return SigningKey(rsa_private(index), kid, alg)


def ec_key(kid: str | None, index: int = 0) -> SigningKey:
    return SigningKey(ec_private(index), kid, "ES256")


def good_claims(**changes: Any) -> dict[str, Any]:
    claims: dict[str, Any] = {"sub": "alice", "exp": int(time.time()) + 600}
    claims.update(changes)
    return {k: v for k, v in claims.items() if v is not None}


@dataclass
class KeyServer:
    """Serves `/jwks.json`; counts the requests it gets. Runs in the server's thread."""

    jwks: dict[str, Any] = field(default_factory=lambda: {"keys": []})
    mode: Mode = "ok"
    requests: int = 0

    def publish(self, *keys: SigningKey | dict[str, Any]) -> None:
        self.jwks = {"keys": [k if isinstance(k, dict) else k.jwk() for k in keys]}

    @property
    def app(self) -> Starlette:
        return Starlette(routes=[Route("/jwks.json", self._serve)])

    async def _serve(self, request: Request) -> Response:
        self.requests += 1
        if self.mode == "500":
            return Response("key store unavailable", status_code=500)
        if self.mode == "garbage":
            return Response("<html>not json{", media_type="application/json")
        if self.mode == "not-a-set":
            return Response(json.dumps({"keys": "none"}), media_type="application/json")
        if self.mode == "huge":  # valid, and over a megabyte
            return JSONResponse({"keys": self.jwks["keys"], "padding": "x" * 1_100_000})
        if self.mode == "no-usable-keys":
            return JSONResponse({"keys": [{"kty": "oct", "k": "c2VjcmV0"}]})
        return JSONResponse(self.jwks)

"""Signing keys published at a JWKS URL: fetched, cached, and refetched for a new `kid`.

Reading a key set is pure (`parse_key_set`); `JwksKeys` owns the HTTP client and the cache.
The key server is protected from the gateway's clients: a token with an unknown `kid`
causes at most one fetch per cooldown, and concurrent verifications share one fetch.
When the key server fails, the keys already known keep working.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx2
from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePublicKey
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
from jwt.algorithms import ECAlgorithm, RSAAlgorithm
from jwt.exceptions import InvalidKeyError

from gateway.cookies import no_cookies
from gateway.errors import Unauthorized

log = logging.getLogger("gateway.auth.jwks")

FETCH_TIMEOUT = 5.0  # seconds for a whole fetch: a verification waits no longer than this
MAX_DOCUMENT_BYTES = 1 << 20
MIN_RSA_BITS = 2048
RSA_ALGORITHMS = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"})
EC_ALGORITHMS = {"P-256": "ES256", "P-384": "ES384", "P-521": "ES512"}

PublicKey = RSAPublicKey | EllipticCurvePublicKey


class JwksError(Exception):
    """The key server could not be reached, or its answer is not a usable key set."""


@dataclass(frozen=True, slots=True)
class SigningKey:
    kid: str | None
    algorithms: frozenset[str]  # the allow-listed algorithms this key may verify
    key: PublicKey


@dataclass(frozen=True, slots=True)
class KeySet:
    keys: tuple[SigningKey, ...] = ()

    def matching(self, kid: str | None) -> tuple[SigningKey, ...]:
        """The keys a token with this `kid` may use; without a `kid`, only a lone key."""
        if kid is None:
            return self.keys if len(self.keys) == 1 else ()
        return tuple(key for key in self.keys if key.kid == kid)


def parse_key_set(document: object, allowed: Collection[str]) -> KeySet:
    """The usable signature keys in a JWKS document; keys of other types, uses or algorithms
    are left out. Raises JwksError when nothing in it can be used."""
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise JwksError("the answer is not a JWK Set")
    keys = tuple(k for jwk in document["keys"] if (k := _signing_key(jwk, allowed)) is not None)
    if not keys:
        raise JwksError("the key set holds no usable key")
    return KeySet(keys)


def _signing_key(jwk: object, allowed: Collection[str]) -> SigningKey | None:
    if not isinstance(jwk, dict) or jwk.get("use", "sig") != "sig":
        return None
    kid = jwk.get("kid")
    if kid is not None and not isinstance(kid, str):
        return None
    algorithms = _algorithms_for(jwk, allowed)
    if not algorithms:
        return None
    try:
        key = _public_key(jwk)
    except (InvalidKeyError, ValueError, TypeError, AttributeError, KeyError):
        return None
    if isinstance(key, RSAPublicKey) and key.key_size < MIN_RSA_BITS:
        return None
    return SigningKey(kid, algorithms, key)


def _algorithms_for(jwk: Mapping[str, Any], allowed: Collection[str]) -> frozenset[str]:
    """Allow-listed algorithms that fit the key's type and curve, narrowed by its `alg`."""
    kty, crv, alg = jwk.get("kty"), jwk.get("crv"), jwk.get("alg")
    if kty == "RSA":
        fitting = RSA_ALGORITHMS
    elif kty == "EC" and isinstance(crv, str) and crv in EC_ALGORITHMS:
        fitting = frozenset({EC_ALGORITHMS[crv]})
    else:
        return frozenset()
    usable = fitting & frozenset(allowed)
    if alg is not None:
        usable = usable & {alg} if isinstance(alg, str) else frozenset()
    return usable


def _public_key(jwk: dict[str, Any]) -> PublicKey:
    # Only the public members are read: a set that wrongly publishes private parts still
    # only ever verifies, and no work is spent on them.
    key: object
    if jwk["kty"] == "RSA":
        key = RSAAlgorithm.from_jwk({"kty": "RSA", "n": jwk["n"], "e": jwk["e"]})
    else:
        key = ECAlgorithm.from_jwk({m: jwk[m] for m in ("kty", "crv", "x", "y")})
    if not isinstance(key, RSAPublicKey | EllipticCurvePublicKey):
        raise TypeError("not a public key")
    return key


class JwksKeys:
    """The keys at `url`, used for `cache_seconds`; an unknown `kid` may refetch them once
    every `cooldown` seconds. `clock` is monotonic seconds."""

    def __init__(
        self,
        url: str,
        algorithms: Collection[str],
        *,
        cache_seconds: float,
        cooldown: float,
        timeout: float = FETCH_TIMEOUT,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._url = url
        self._algorithms = frozenset(algorithms)
        self._cache_seconds = cache_seconds
        self._cooldown = cooldown
        self._timeout = timeout
        self._clock = clock
        self._client = httpx2.AsyncClient(
            timeout=timeout,
            follow_redirects=False,
            headers={"Accept": "application/json"},
            cookies=no_cookies(),
        )
        self._keys = KeySet()
        self._fresh_until = -math.inf
        self._attempted_at = -math.inf
        self._failing = False
        self._inflight: asyncio.Task[None] | None = None

    async def key_for(self, kid: str | None, alg: str) -> PublicKey:
        """The key that verifies a token with this header, or Unauthorized saying why not."""
        if self._clock() >= self._fresh_until:
            await self._refresh()
        if kid is None and len(self._keys.keys) > 1:
            raise Unauthorized("The token has no 'kid' and there are several signing keys.")
        matches = self._keys.matching(kid)
        if not matches and (self._inflight is not None or self._cooled_down()):
            await self._refresh()
            matches = self._keys.matching(kid)
        if not matches:
            if self._failing:
                raise Unauthorized(
                    "The token's signing key is not known, and the key server cannot be reached."
                )
            raise Unauthorized("The token's signing key is not known.")
        for key in matches:
            if alg in key.algorithms:
                return key.key
        raise Unauthorized("The token's algorithm does not match its signing key.")

    async def aclose(self) -> None:
        if self._inflight is not None:
            self._inflight.cancel()
        await self._client.aclose()

    def _cooled_down(self) -> bool:
        return self._clock() - self._attempted_at >= self._cooldown

    async def _refresh(self) -> None:
        """Fetch the keys, or join the fetch already under way."""
        if self._inflight is None:
            self._attempted_at = self._clock()
            self._inflight = asyncio.create_task(self._fetch())
        # Shielded: a client that goes away must not cancel the fetch others wait for.
        await asyncio.shield(self._inflight)

    async def _fetch(self) -> None:
        try:
            keys = parse_key_set(await self._download(), self._algorithms)
        except Exception as exc:  # any failure of the key server leaves the known keys in place
            self._failing = True
            # Known keys stay in use; the next attempt waits for the cooldown.
            self._fresh_until = max(self._fresh_until, self._clock() + self._cooldown)
            log.warning(
                "JWKS fetch from %s failed (%s); keys still in use: %d",
                _where(self._url),
                _reason(exc),
                len(self._keys.keys),
            )
        else:
            self._keys, self._failing = keys, False
            self._fresh_until = self._clock() + self._cache_seconds
        finally:
            self._inflight = None

    async def _download(self) -> object:
        async with (
            asyncio.timeout(self._timeout),
            self._client.stream("GET", self._url) as response,
        ):
            if response.status_code != 200:
                raise JwksError(f"HTTP {response.status_code}")
            body = bytearray()
            async for part in response.aiter_bytes():
                body += part
                if len(body) > MAX_DOCUMENT_BYTES:
                    raise JwksError("the answer is too large")
        try:
            return json.loads(body)
        except ValueError:
            raise JwksError("the answer is not JSON") from None


def _where(url: str) -> str:
    """The URL without its query or credentials, for log lines."""
    parts = urlsplit(url)
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{parts.hostname}{port}{parts.path}"


def _reason(exc: BaseException) -> str:
    if isinstance(exc, JwksError):
        return str(exc)
    if isinstance(exc, TimeoutError):
        return "timed out"
    return type(exc).__name__

"""Tokens: where a client may put one, and how it becomes a Principal.

With JWT_SECRET or JWT_PUBLIC_KEY, verification is pure CPU, done once per connection or
request, never per frame. With JWT_JWKS_URL the key comes from `JwksKeys`, which awaits the
key server only when its cache is due or a new `kid` appears.

With a key of its own (not JWKS) a token's signature is checked once and the result
remembered (`VerifiedTokens`): an HTTP client sends the same token with every request, and
PyJWT prepares its key anew on every check (for an HMAC secret, tests that it is no PEM or DER
key), which made verification about a seventh of a streamed request's CPU. Such a key cannot
change while the process runs; keys from a JWKS can, so their tokens are checked every time.
A remembered token is forgotten at its `exp`; `nbf` and `iat` are checked on every use.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import jwt

from gateway.auth.jwks import JwksKeys, PublicKey
from gateway.config import Settings
from gateway.errors import Unauthorized
from gateway.principal import Principal
from gateway.protocol.frames import BEARER_PREFIX, SUBPROTOCOL

# RFC 7519 `typ` values, and RFC 9068 access tokens; compared case-insensitively.
ACCEPTED_TYPES = frozenset({"jwt", "at+jwt", "application/at+jwt"})
MALFORMED = "The token is malformed or wrongly signed."
BAD_SUB_TEXT = "The token's 'sub' must be valid Unicode."
# OpenID Connect's bound on a subject (Core 1.0, §2). A user's `sub` is in every key of theirs
# and in every activity message each instance hears, so it is bounded like any input.
MAX_SUB_CHARS = 255


@dataclass(frozen=True, slots=True)
class Header:
    alg: str
    kid: str | None


class VerifiedTokens:
    """Tokens whose signature and claims checked out, remembered until their `exp` and at
    most `max_seconds`; the least recently used go first past `size`."""

    def __init__(self, size: int, max_seconds: float) -> None:
        self._size = size
        self._max_seconds = max_seconds
        self._entries: OrderedDict[str, tuple[float, dict[str, Any]]] = OrderedDict()

    def get(self, token: str, now: float) -> dict[str, Any] | None:
        entry = self._entries.get(token)
        if entry is None:
            return None
        if now >= entry[0]:
            del self._entries[token]
            return None
        self._entries.move_to_end(token)
        return entry[1]

    def add(self, token: str, claims: dict[str, Any], now: float) -> None:
        until = min(float(claims["exp"]), now + self._max_seconds)
        self._entries[token] = (until, claims)
        self._entries.move_to_end(token)
        while len(self._entries) > self._size:
            self._entries.popitem(last=False)


# Enough for every client of a busy worker; tokens are a few hundred bytes each.
VERIFIED_TOKENS = 4096
REMEMBER_SECONDS = 3600.0


class TokenVerifier:
    def __init__(self, settings: Settings, jwks: JwksKeys | None = None) -> None:
        self._algorithms = list(settings.algorithms)
        self._audience = settings.jwt_audience
        self._issuer = settings.jwt_issuer
        self._leeway = settings.jwt_leeway
        if jwks is None and settings.jwt_jwks_url:
            jwks = JwksKeys(
                settings.jwt_jwks_url,
                self._algorithms,
                cache_seconds=settings.jwks_cache_seconds,
                cooldown=settings.jwks_refetch_cooldown,
            )
        self._jwks = jwks
        key = settings.jwt_secret or settings.jwt_public_key
        if key is None and jwks is None:
            raise ValueError("TokenVerifier needs JWT_SECRET, JWT_PUBLIC_KEY or JWT_JWKS_URL.")
        self._key = key.reveal() if key is not None else None
        # Only for a key of the process's own: a JWKS key may be withdrawn at any time.
        self._verified = VerifiedTokens(VERIFIED_TOKENS if self._key else 0, REMEMBER_SECONDS)

    async def verify(self, token: str) -> Principal:
        """Return the token's Principal, or raise Unauthorized with a short, safe reason."""
        now = time.time()
        claims = self._verified.get(token, now)
        if claims is None:
            claims = await self._check_signature(token)
            self._verified.add(token, claims, now)
        check_times(claims, now, self._leeway)
        sub = claims.get("sub")
        if not isinstance(sub, str) or not sub:
            raise Unauthorized("The token's 'sub' must be a non-empty string.")
        if not _unicode(sub):
            raise Unauthorized(BAD_SUB_TEXT)
        if len(sub) > MAX_SUB_CHARS:
            raise Unauthorized(f"The token's 'sub' must be at most {MAX_SUB_CHARS} characters.")
        return Principal(sub=sub, expires_at=int(claims["exp"]), claims=claims)

    async def _check_signature(self, token: str) -> dict[str, Any]:
        if self._key is not None:
            return self._decode(token, self._key, self._algorithms)
        assert self._jwks is not None
        # The header is read first only here: it names the key to fetch.
        header = read_header(token, self._algorithms)
        key = await self._jwks.key_for(header.kid, header.alg)
        return self._decode(token, key, [header.alg])

    async def aclose(self) -> None:
        if self._jwks is not None:
            await self._jwks.aclose()

    def _decode(self, token: str, key: str | PublicKey, algorithms: list[str]) -> dict[str, Any]:
        try:
            decoded = jwt.decode_complete(
                token,
                key,
                algorithms=algorithms,
                audience=self._audience,
                issuer=self._issuer,
                leeway=self._leeway,
                options={
                    "require": ["exp", "sub"],
                    "verify_aud": self._audience is not None,
                    # check_times gives these their own messages.
                    "verify_nbf": False,
                    "verify_iat": False,
                },
            )
        except jwt.ExpiredSignatureError:
            raise Unauthorized("The token has expired.") from None
        except jwt.MissingRequiredClaimError as exc:
            raise Unauthorized(f"The token has no '{exc.claim}' claim.") from None
        except (jwt.InvalidAudienceError, jwt.InvalidIssuerError):
            raise Unauthorized("The token is not meant for this gateway.") from None
        except jwt.InvalidTokenError:
            raise Unauthorized(MALFORMED) from None
        check_type(decoded["header"])
        claims: dict[str, Any] = decoded["payload"]
        return claims


def read_header(token: str, algorithms: Sequence[str]) -> Header:
    """The unverified header, refused early when its `typ` or `alg` is not accepted."""
    try:
        header = jwt.get_unverified_header(token)
    except jwt.InvalidTokenError:
        raise Unauthorized(MALFORMED) from None
    check_type(header)
    alg, kid = header.get("alg"), header.get("kid")
    if not isinstance(alg, str) or alg not in algorithms:
        raise Unauthorized(MALFORMED)
    if kid is not None and not isinstance(kid, str):
        raise Unauthorized(MALFORMED)
    return Header(alg, kid)


def check_type(header: Mapping[str, Any]) -> None:
    """`typ`, when present, must say this is a JWT or an access token (RFC 9068), so that
    another kind of token from the same issuer (an ID or logout token) is not taken for one."""
    typ = header.get("typ")
    if typ is not None and (not isinstance(typ, str) or typ.lower() not in ACCEPTED_TYPES):
        raise Unauthorized("The token's type is not accepted.")


def check_times(claims: Mapping[str, Any], now: float, leeway: float) -> None:
    """`nbf` and `iat` must be numbers and not in the future, give or take the leeway.

    A future `iat` is refused like a future `nbf`: a token cannot have been issued later
    than now, so either the issuer's clock is off (JWT_LEEWAY absorbs small skews) or the
    token was made to outlive its real lifetime."""
    for name, message in (
        ("nbf", "The token is not valid yet."),
        ("iat", "The token was issued in the future."),
    ):
        if name not in claims:
            continue
        value = claims[name]
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
        ):
            raise Unauthorized(f"The token's '{name}' claim must be a number.")
        if value > now + leeway:
            raise Unauthorized(message)


def mint_token(
    settings: Settings,
    sub: str,
    ttl: int,
    private_key: str | None = None,
    kid: str | None = None,
) -> str:
    """A token for `sub` signed with the configured secret (or `private_key` for RS/ES),
    naming `kid` in its header when given (for JWKS setups with several keys)."""
    now = int(time.time())
    claims = {"sub": sub, "iat": now, "exp": now + ttl}
    if settings.jwt_audience:
        claims["aud"] = settings.jwt_audience
    if settings.jwt_issuer:
        claims["iss"] = settings.jwt_issuer
    headers = {"kid": kid} if kid is not None else None
    if private_key is not None:
        return jwt.encode(claims, private_key, algorithm=settings.algorithms[0], headers=headers)
    if settings.jwt_secret is None:
        raise ValueError("Minting needs JWT_SECRET (or a private key for JWT_PUBLIC_KEY).")
    return jwt.encode(
        claims, settings.jwt_secret.reveal(), algorithm=settings.algorithms[0], headers=headers
    )


def bearer_token(authorization: str | None) -> str | None:
    """The token in an `Authorization: Bearer <jwt>` header, if there is one."""
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def subprotocol_token(offered: list[str]) -> str | None:
    """The token in `["chat-gateway.v1", "bearer.<jwt>"]`, if offered."""
    for proto in offered:
        if proto.startswith(BEARER_PREFIX) and len(proto) > len(BEARER_PREFIX):
            return proto[len(BEARER_PREFIX) :]
    return None


def choose_subprotocol(offered: list[str]) -> str | None:
    """Echo our protocol name when offered; never echo the bearer entry."""
    return SUBPROTOCOL if SUBPROTOCOL in offered else None


def _unicode(text: str) -> bool:
    """Whether `text` is Unicode text. JSON lets a claim hold a lone surrogate ("\\udc80"),
    which no store key, log line or frame can carry: every store command of such a user
    fails, and so would a read of many users' activity that named it."""
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True

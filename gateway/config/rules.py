"""The rules between settings, checked whenever a `Settings` is made: each field's own bound
comes from its declaration; here are the rules that join several (keys and algorithms, a
cluster's URL, the models agents name, how long keys outlive logs, how many messages a
conversation keeps)."""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from gateway.config import fields
from gateway.config.fields import ConfigError

if TYPE_CHECKING:
    from gateway.config.settings import Settings

JWT_ALGORITHMS = (
    "HS256",
    "HS384",
    "HS512",
    "RS256",
    "RS384",
    "RS512",
    "ES256",
    "ES384",
    "ES512",
    "PS256",
)
MIN_SECRET_BYTES = 32


def check(s: Settings) -> None:
    """ConfigError for the first rule `s` breaks."""
    if "{" in s.redis_prefix or "}" in s.redis_prefix:
        raise ConfigError("REDIS_PREFIX must not contain braces: they are Redis Cluster hash tags.")
    if s.redis_cluster:
        _check_cluster_url(s.redis_url)
    _check_names(s)
    _check_keys(s)
    if s.idempotency_ttl > s.generation_ttl:
        # A key that outlives its generation's log could only answer "not found".
        raise ConfigError("IDEMPOTENCY_TTL may not be longer than GENERATION_TTL.")
    fields.check(s)
    if s.max_stored_messages < 2 * s.max_stored_turns:
        # Below it, a conversation with no branches would be refused before it is trimmed.
        raise ConfigError(
            "MAX_STORED_MESSAGES must be at least twice MAX_STORED_TURNS (a turn is two messages)."
        )
    _check_jwks(s)
    for configured in s.models.values():
        if configured.max_concurrent is not None and configured.max_concurrent <= 0:
            raise ConfigError(f"Model '{configured.name}': max_concurrent must be above zero.")


def _check_names(s: Settings) -> None:
    if s.default_model not in s.models:
        raise ConfigError(f"default_model '{s.default_model}' is not a configured model.")
    if s.default_agent not in s.agents:
        raise ConfigError(f"default_agent '{s.default_agent}' is not a configured agent.")
    for agent in s.agents.values():
        for model in (agent.model, *agent.allowed_models):
            if model is not None and model not in s.models:
                raise ConfigError(f"Agent '{agent.name}' names unknown model '{model}'.")


def _check_keys(s: Settings) -> None:
    for alg in s.algorithms:
        if alg not in JWT_ALGORITHMS:
            raise ConfigError(f"JWT_ALGORITHMS: '{alg}' is not allowed; use {JWT_ALGORITHMS}.")
    hmac = any(a.startswith("HS") for a in s.algorithms)
    if s.jwt_public_key is not None and hmac:
        # A public key used as an HMAC secret lets anyone forge tokens (algorithm confusion).
        raise ConfigError("JWT_ALGORITHMS may not allow HS* algorithms with JWT_PUBLIC_KEY.")
    if s.jwt_secret is not None and s.jwt_public_key is not None:
        raise ConfigError("Set JWT_SECRET or JWT_PUBLIC_KEY, not both.")
    if s.jwt_secret is not None and len(s.jwt_secret.reveal().encode()) < MIN_SECRET_BYTES:
        raise ConfigError(f"JWT_SECRET must be at least {MIN_SECRET_BYTES} bytes (RFC 7518).")
    if s.jwt_secret is not None and not all(a.startswith("HS") for a in s.algorithms):
        raise ConfigError("JWT_SECRET only verifies HS256/HS384/HS512 tokens.")


def _check_jwks(s: Settings) -> None:
    if s.jwt_jwks_url is None:
        return
    if s.jwt_secret is not None or s.jwt_public_key is not None:
        raise ConfigError("Set one of JWT_SECRET, JWT_PUBLIC_KEY and JWT_JWKS_URL.")
    if not s.jwt_jwks_url.startswith(("https://", "http://")):
        raise ConfigError("JWT_JWKS_URL must be an https:// (or http://) URL.")
    if any(a.startswith("HS") for a in s.algorithms):
        raise ConfigError("JWT_ALGORITHMS may not allow HS* algorithms with JWT_JWKS_URL.")


def _check_cluster_url(url: str | None) -> None:
    """A cluster is reached over TCP through one of its nodes, and has only database 0."""
    if url is None:
        raise ConfigError(
            "REDIS_CLUSTER needs REDIS_URL, the address of one of the cluster's nodes "
            "(the embedded Redis is a single server)."
        )
    parsed = urlsplit(url)
    if parsed.scheme not in ("redis", "rediss") or not parsed.hostname:
        raise ConfigError(
            "REDIS_CLUSTER: REDIS_URL must be a redis:// or rediss:// URL of one of the "
            "cluster's nodes."
        )
    if parsed.path.strip("/") not in ("", "0"):
        raise ConfigError(
            "REDIS_CLUSTER: a Redis Cluster has only database 0; REDIS_URL names another."
        )

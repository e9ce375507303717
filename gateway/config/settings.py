"""`Settings`, read once from the environment and an optional TOML file.

No module reads the environment on its own: `Settings.from_env(os.environ)` is called by the
CLI or the app factory, and tests build `Settings(...)` directly. Each field that a variable
sets is declared once, with `setting(...)`: its variable, default, bound and meaning.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

from gateway.config import rules
from gateway.config.fields import Secret, Spec, declared, lowered, read, setting
from gateway.config.tables import (
    ECHO,
    GATEWAY_CONFIG,
    INPUTS,
    AgentConfig,
    Limits,
    ModelConfig,
    chat_agents,
    echo_models,
    load_toml,
    read_agents,
    read_limits,
    read_models,
)

MiB = 1024 * 1024
RETRIES_NOT_NEGATIVE = (
    "UPSTREAM_MAX_RETRIES, UPSTREAM_RETRY_MAX_WAIT and JWKS_REFETCH_COOLDOWN may not be negative."
)
WAITS_NOT_NEGATIVE = (
    "HISTORY_TURNS, ECHO_DELAY_MS, LOG_FLUSH_MS, SHUTDOWN_DRAIN_SECONDS and "
    "SHUTDOWN_STORE_SECONDS may not be negative."
)


@dataclass(frozen=True, slots=True)
class Settings:
    # `setting(...)` returns a `dataclasses.Field`, which ruff's RUF009 takes for a call whose
    # value all instances would share.
    # Store
    redis_url: str | None = setting("REDIS_URL", None, "The Redis that holds all state")
    redis_cluster: bool = setting("REDIS_CLUSTER", False, "REDIS_URL names a cluster's node")
    redis_prefix: str = setting("REDIS_PREFIX", "cgw:", "Prefix of every key")
    data_dir: Path = setting(  # noqa: RUF009
        "GATEWAY_DATA_DIR", Path(".chat-gateway"), "The embedded Redis's data, the dev secret"
    )
    redis_max_connections: int = setting(
        "REDIS_MAX_CONNECTIONS", 200, "Connections per process to Redis", gt=0
    )
    redis_pool_timeout: float = setting(
        "REDIS_POOL_TIMEOUT", 5.0, "Seconds to wait for a free connection", gt=0
    )
    # Every Redis reply must come within this: a resume waits on XREAD BLOCK for up to a
    # second (on a connection of its own, given a second more), so the socket must outlast it.
    redis_socket_timeout: float = setting(
        "REDIS_SOCKET_TIMEOUT",
        5.0,
        "Seconds any Redis reply may take",
        gt=1,
        refusal="REDIS_SOCKET_TIMEOUT must be more than 1 second.",
    )
    redis_connect_timeout: float = setting(
        "REDIS_CONNECT_TIMEOUT", 2.0, "Seconds a new Redis connection may take", gt=0
    )
    # Auth
    jwt_secret: Secret | None = setting("JWT_SECRET", None, "HS256 secret, 32 bytes or more")  # noqa: RUF009
    jwt_public_key: Secret | None = setting("JWT_PUBLIC_KEY", None, "PEM key for RS/ES tokens")  # noqa: RUF009
    jwt_audience: str | None = setting("JWT_AUDIENCE", None, "The `aud` tokens must name")
    jwt_issuer: str | None = setting("JWT_ISSUER", None, "The `iss` tokens must name")
    jwt_algorithms: tuple[str, ...] = setting(
        "JWT_ALGORITHMS", (), "Allowed algorithms; unset: the key's"
    )
    jwt_leeway: float = setting("JWT_LEEWAY", 0.0, "Seconds of clock skew on exp, nbf, iat")
    jwt_jwks_url: str | None = setting("JWT_JWKS_URL", None, "URL of a JWK Set of keys")
    jwks_cache_seconds: float = setting(
        "JWKS_CACHE_SECONDS", 300.0, "How long fetched keys are used before a refetch", gt=0
    )
    jwks_refetch_cooldown: float = setting(
        "JWKS_REFETCH_COOLDOWN",
        30.0,
        "Least time between fetches for an unknown `kid`",
        ge=0,
        refusal=RETRIES_NOT_NEGATIVE,
    )
    allowed_origins: tuple[str, ...] = setting(
        "ALLOWED_ORIGINS", (), "Browser origins allowed; empty allows any (no CORS headers)"
    )
    # Models and agents
    models: Mapping[str, ModelConfig] = field(default_factory=echo_models)
    default_model: str = setting("DEFAULT_MODEL", ECHO, "Model of a request that names none")
    agents: Mapping[str, AgentConfig] = field(default_factory=chat_agents)
    default_agent: str = "chat"
    echo_delay_ms: int = setting(
        "ECHO_DELAY_MS", 30, "Delay between echo's words", ge=0, refusal=WAITS_NOT_NEGATIVE
    )
    echo_max_words: int = setting(
        "ECHO_MAX_WORDS", 1000, "An echo answer is cut here (finish reason length)", gt=0
    )
    upstream_connect_timeout: float = setting(
        "UPSTREAM_CONNECT_TIMEOUT", 10.0, "Seconds to connect to a model's API", gt=0
    )
    upstream_read_timeout: float = setting(
        "UPSTREAM_READ_TIMEOUT", 60.0, "Longest time without a complete line", gt=0
    )
    upstream_first_token_timeout: float = setting(
        "UPSTREAM_FIRST_TOKEN_TIMEOUT", 30.0, "Seconds from a request to its first token", gt=0
    )
    upstream_max_retries: int = setting(
        "UPSTREAM_MAX_RETRIES",
        2,
        "Retries of a request, only before the first token",
        ge=0,
        refusal=RETRIES_NOT_NEGATIVE,
    )
    upstream_retry_max_wait: float = setting(
        "UPSTREAM_RETRY_MAX_WAIT",
        20.0,
        "Longest Retry-After honoured before giving up",
        ge=0,
        refusal=RETRIES_NOT_NEGATIVE,
    )
    upstream_max_concurrent: int = setting(
        "UPSTREAM_MAX_CONCURRENT", 256, "Requests in flight per model (or its max_concurrent)", gt=0
    )
    # What one upstream response may send (its head: aiohttp's 128 lines of 8 KiB); each
    # bound ends that generation alone.
    upstream_max_line_bytes: int = setting(
        "UPSTREAM_MAX_LINE_BYTES", MiB, "One line of a streamed body", gt=0
    )
    upstream_max_body_bytes: int = setting(
        "UPSTREAM_MAX_BODY_BYTES", 32 * MiB, "A whole body, after decompression", gt=0
    )
    upstream_max_tool_calls: int = setting(
        "UPSTREAM_MAX_TOOL_CALLS", 64, "Tool calls in one model turn", gt=0
    )
    upstream_max_tool_argument_bytes: int = setting(
        "UPSTREAM_MAX_TOOL_ARGUMENT_BYTES", MiB, "Their arguments' bytes, together", gt=0
    )
    # One generation: its answer's length (then finish reason "length") and its whole time.
    max_answer_chars: int = setting("MAX_ANSWER_CHARS", 1_000_000, "The longest answer", gt=0)
    generation_timeout: float = setting(
        "GENERATION_TIMEOUT", 900.0, "Seconds one generation may run in all", gt=0
    )
    # Older events of a running generation come from its log in Redis.
    generation_memory_events: int = setting(
        "GENERATION_MEMORY_EVENTS", 1024, "Events kept in memory for resumes here", gt=0
    )
    tool_timeout: float = setting("TOOL_TIMEOUT", 10.0, "Seconds one tool call may run", gt=0)
    tool_workers: int = setting(
        "TOOL_WORKERS", 2, "Worker processes that run plain-function tools", gt=0
    )
    tool_memory_mb: int = setting(
        "TOOL_MEMORY_MB", 256, "Address space of one tool worker, in MiB", gt=0
    )
    # Per-user limits, and per value of the `limit_claim` claim (e.g. tiers "free", "pro")
    limits: Limits = field(default_factory=Limits)
    limit_tiers: Mapping[str, Limits] = field(default_factory=dict)
    limit_claim: str = setting("LIMIT_CLAIM", "tier", "Token claim naming the user's tier")
    # Limits
    max_frame_bytes: int = setting(
        "MAX_FRAME_BYTES", MiB, "Largest WebSocket frame and HTTP body", gt=0
    )
    max_concurrent_per_connection: int = setting(
        "MAX_CONCURRENT_PER_CONNECTION", 4, "Completions running at once on one socket", gt=0
    )
    auth_timeout: float = setting("AUTH_TIMEOUT", 10.0, "Seconds to wait for an auth frame", gt=0)
    token_expiry_warning: float = setting(
        "TOKEN_EXPIRY_WARNING", 60.0, "Seconds before exp a socket is warned"
    )
    token_expiry_grace: float = setting(
        "TOKEN_EXPIRY_GRACE", 10.0, "Seconds after exp a socket stays open"
    )
    max_queued_frames: int = setting(
        "MAX_QUEUED_FRAMES", 1024, "Frames waiting for a slow client before it is closed", gt=0
    )
    max_error_frames: int = setting(
        "MAX_ERROR_FRAMES", 50, "Refused frames per minute before a close (1008)", gt=0
    )
    history_turns: int = setting(
        "HISTORY_TURNS", 20, "Stored turns sent upstream", ge=0, refusal=WAITS_NOT_NEGATIVE
    )
    max_stored_turns: int = setting("MAX_STORED_TURNS", 200, "Turns kept per conversation", gt=0)
    max_stored_messages: int = setting(
        "MAX_STORED_MESSAGES", 1000, "Messages kept per conversation, all branches", gt=0
    )
    max_siblings: int = setting(
        "MAX_SIBLINGS", 32, "Answers or versions of one message (branches)", gt=0
    )
    conversation_ttl: int = setting(
        "CONVERSATION_TTL", 30 * 24 * 3600, "Seconds a conversation lives after an update", gt=0
    )
    conversation_page_bytes: int = setting(
        "CONVERSATION_PAGE_BYTES", 4 * MiB, "Bytes of a page of messages, and of history", gt=0
    )
    # Generations
    on_disconnect: Literal["continue", "cancel"] = setting(
        "ON_DISCONNECT", "continue", "What a client's going away does to its generations"
    )
    log_flush_ms: float = setting(
        "LOG_FLUSH_MS", 50.0, "Window of one batch of log writes", ge=0, refusal=WAITS_NOT_NEGATIVE
    )
    generation_ttl: int = setting(
        "GENERATION_TTL", 3600, "Seconds a generation's log is kept after it ends", gt=0
    )
    max_log_events: int = setting("MAX_LOG_EVENTS", 100_000, "Most events of one generation", gt=0)
    lease_ttl: float = setting("LEASE_TTL", 10.0, "Seconds a generation's lease lasts", gt=0)
    shutdown_drain_seconds: float = setting(
        "SHUTDOWN_DRAIN_SECONDS",
        10.0,
        "On SIGTERM, how long generations may finish",
        ge=0,
        refusal=WAITS_NOT_NEGATIVE,
    )
    # After the drain, how long answers whose end is not stored yet (the store is
    # unreachable) are kept and retried before the process exits anyway.
    shutdown_store_seconds: float = setting(
        "SHUTDOWN_STORE_SECONDS",
        15.0,
        "After the drain, how long unstored answers are retried",
        ge=0,
        refusal=WAITS_NOT_NEGATIVE,
    )
    idempotency_ttl: int = setting(
        "IDEMPOTENCY_TTL", 3600, "Seconds an Idempotency-Key is kept", gt=0
    )
    # WebSocket transport
    ws_ping_interval: float = setting("WS_PING_INTERVAL", 20.0, "Seconds between pings; 0: off")
    ws_ping_timeout: float = setting("WS_PING_TIMEOUT", 20.0, "Seconds to wait for a pong")
    ws_per_message_deflate: bool = setting(
        "WS_PER_MESSAGE_DEFLATE", False, "Compression (twice the memory per socket)"
    )
    ws_idle_timeout: float = setting(
        "WS_IDLE_TIMEOUT", 300.0, "A socket with no frames and nothing running is closed", gt=0
    )
    ws_send_timeout: float = setting(
        "WS_SEND_TIMEOUT", 30.0, "A client that reads nothing for this long is reset", gt=0
    )
    # HTTP transport: request line and headers (and WebSocket handshakes) must arrive in time
    http_header_timeout: float = setting(
        "HTTP_HEADER_TIMEOUT", 10.0, "Seconds for a request's headers to arrive", gt=0
    )
    http_keepalive_timeout: float = setting(
        "HTTP_KEEPALIVE_TIMEOUT", 5.0, "An idle keep-alive connection is closed after it", gt=0
    )
    # Observability
    log_level: str = setting("LOG_LEVEL", "info", "The least level logged", parse=lowered)
    log_format: Literal["text", "json"] = setting("LOG_FORMAT", "text", "Text or JSON lines")
    log_bodies: bool = setting(
        "LOG_BODIES", False, "Message bodies in debug logs; never on by default"
    )
    metrics_token: Secret | None = setting(  # noqa: RUF009
        "METRICS_TOKEN", None, "When set, /metrics needs it as a bearer token"
    )

    def __post_init__(self) -> None:
        rules.check(self)

    @property
    def dev_mode(self) -> bool:
        """No key configured: the CLI makes a local secret and says so loudly."""
        return self.jwt_secret is None and self.jwt_public_key is None and not self.jwt_jwks_url

    @property
    def algorithms(self) -> tuple[str, ...]:
        if self.jwt_algorithms:
            return self.jwt_algorithms
        asymmetric = self.jwt_public_key is not None or self.jwt_jwks_url is not None
        return ("RS256", "ES256") if asymmetric else ("HS256",)

    def with_secret(self, secret: str) -> Settings:
        return replace(self, jwt_secret=Secret(secret))

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Settings:
        env = {k: v for k, v in environ.items() if v.strip() != ""}
        file = load_toml(env.get(GATEWAY_CONFIG.env))
        models = read_models(env, file)
        agents = read_agents(file)
        limits, tiers = read_limits(env, file)
        values = read(cls, env)
        for key in ("default_model", "default_agent"):  # the file wins over the environment
            if file.get(key):
                values[key] = str(file[key])
        if ECHO not in models and values.get("default_model", ECHO) == ECHO:
            values["default_model"] = next(iter(models))
        return cls(**values, models=models, agents=agents, limits=limits, limit_tiers=tiers)


def variables() -> tuple[Spec, ...]:
    """Every environment variable the settings are read from, in the order declared."""
    return (
        *(d.spec for d in declared(Settings)),
        *(d.spec for d in declared(Limits)),
        *INPUTS,
    )

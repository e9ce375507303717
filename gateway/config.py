"""Settings, read once from the environment and an optional TOML file.

No module reads the environment on its own: `Settings.from_env(os.environ)` is called by the
CLI or the app factory, and tests build `Settings(...)` directly.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, get_args
from urllib.parse import urlsplit

# The names a model's `provider` and an agent's `kind` may take, stated once: each has its
# implementation's `module:attribute` path in its registry (`gateway/llm/providers.py`,
# `gateway/agents/registry.py`), and a test holds the registries to these lists.
ProviderName = Literal["openai", "echo"]
AgentKind = Literal["chat", "grounded", "tools"]
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
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$")


class ConfigError(ValueError):
    """The configuration cannot be used; the message says which setting and why."""


class Secret:
    """A string that never shows itself in a repr, a log line or a traceback."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('**********')"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


@dataclass(frozen=True, slots=True)
class ModelConfig:
    name: str
    provider: ProviderName = "echo"
    base_url: str | None = None
    api_key: Secret | None = None
    upstream_model: str = ""
    streaming: bool = True
    max_tokens: int | None = None
    max_concurrent: int | None = None  # upstream requests at once; None: UPSTREAM_MAX_CONCURRENT

    @property
    def upstream_name(self) -> str:
        return self.upstream_model or self.name


@dataclass(frozen=True, slots=True)
class AgentConfig:
    name: str
    kind: AgentKind = "chat"
    system_prompt: str | None = None
    model: str | None = None
    temperature: float | None = None
    allowed_models: tuple[str, ...] = ()  # empty: any configured model
    tools: tuple[str, ...] = ()  # built-in names or "module:attribute" paths
    plugin: str | None = None  # "module:Class": an agent written in Python
    max_tool_rounds: int = 4
    source_budget: int = 3000  # tokens of sources a grounded agent puts in the prompt


@dataclass(frozen=True, slots=True)
class Limits:
    """Per-user limits, enforced across instances in Redis. Zero turns a limit off."""

    requests_per_minute: int = 60
    concurrent_generations: int = 8
    connections: int = 16
    tokens_per_day: int = 0
    storage_bytes: int = 100 * 1024 * 1024  # stored message bytes over all conversations


LIMIT_FIELDS = {
    "requests_per_minute": "LIMIT_REQUESTS_PER_MINUTE",
    "concurrent_generations": "LIMIT_CONCURRENT_GENERATIONS",
    "connections": "LIMIT_CONNECTIONS",
    "tokens_per_day": "LIMIT_TOKENS_PER_DAY",
    "storage_bytes": "LIMIT_STORAGE_BYTES",
}


def _echo_models() -> dict[str, ModelConfig]:
    return {"echo": ModelConfig(name="echo", provider="echo")}


def _chat_agents() -> dict[str, AgentConfig]:
    """The built-in agents; a TOML table of the same name replaces one."""
    return {
        "chat": AgentConfig(name="chat"),
        "grounded": AgentConfig(name="grounded", kind="grounded"),
        "tools": AgentConfig(
            name="tools",
            kind="tools",
            tools=("calculate", "current_time", "date_add", "date_diff"),
        ),
    }


@dataclass(frozen=True, slots=True)
class Settings:
    # Store
    redis_url: str | None = None
    redis_cluster: bool = False  # REDIS_URL names one node of a Redis Cluster
    redis_prefix: str = "cgw:"
    data_dir: Path = Path(".chat-gateway")
    redis_max_connections: int = 200
    redis_pool_timeout: float = 5.0
    # Every Redis reply must come within this (the followers' log reader blocks on XREAD on a
    # connection of its own, which is given a second more).
    redis_socket_timeout: float = 5.0
    redis_connect_timeout: float = 2.0
    # Auth
    jwt_secret: Secret | None = None
    jwt_public_key: Secret | None = None
    jwt_audience: str | None = None
    jwt_issuer: str | None = None
    jwt_algorithms: tuple[str, ...] = ()
    jwt_leeway: float = 0.0
    jwt_jwks_url: str | None = None
    jwks_cache_seconds: float = 300.0  # how long fetched keys are used before a refetch
    jwks_refetch_cooldown: float = 30.0  # least time between fetches for an unknown `kid`
    # Browser origins allowed on the WebSocket and by CORS; empty allows any (no CORS headers).
    allowed_origins: tuple[str, ...] = ()
    # Models and agents
    models: Mapping[str, ModelConfig] = field(default_factory=_echo_models)
    default_model: str = "echo"
    agents: Mapping[str, AgentConfig] = field(default_factory=_chat_agents)
    default_agent: str = "chat"
    echo_delay_ms: int = 30
    echo_max_words: int = 1000  # an echo answer is cut here (finish reason "length")
    upstream_connect_timeout: float = 10.0
    upstream_read_timeout: float = 60.0  # the longest time without a complete line
    upstream_first_token_timeout: float = 30.0
    upstream_max_retries: int = 2  # only before the first token
    upstream_retry_max_wait: float = 20.0  # longest Retry-After honoured before giving up
    upstream_max_concurrent: int = 256  # per model, unless the model sets max_concurrent
    # What one upstream response may send (its head: aiohttp's 128 lines of 8 KiB); each
    # bound ends that generation alone.
    upstream_max_line_bytes: int = 1024 * 1024  # one line of a streamed body
    upstream_max_body_bytes: int = 32 * 1024 * 1024  # a whole body, after decompression
    upstream_max_tool_calls: int = 64  # tool calls in one model turn
    upstream_max_tool_argument_bytes: int = 1024 * 1024  # their arguments, together
    # One generation: its answer's length (then finish reason "length") and its whole time.
    max_answer_chars: int = 1_000_000
    generation_timeout: float = 900.0
    # Events of a running generation kept in memory for resumes here; older ones come from
    # its log in Redis.
    generation_memory_events: int = 1024
    tool_timeout: float = 10.0
    tool_workers: int = 2  # worker processes that run plain-function tools
    tool_memory_mb: int = 256  # address space of one tool worker
    # Per-user limits, and per value of the `limit_claim` claim (e.g. tiers "free", "pro")
    limits: Limits = field(default_factory=Limits)
    limit_tiers: Mapping[str, Limits] = field(default_factory=dict)
    limit_claim: str = "tier"
    # Limits
    max_frame_bytes: int = 1024 * 1024
    max_concurrent_per_connection: int = 4
    auth_timeout: float = 10.0
    token_expiry_warning: float = 60.0
    token_expiry_grace: float = 10.0
    max_queued_frames: int = 1024
    max_error_frames: int = 50  # refused frames per minute before a socket is closed (1008)
    history_turns: int = 20
    max_stored_turns: int = 200
    conversation_ttl: int = 30 * 24 * 3600
    # Message bytes in one page of a read, and in the stored history a turn sends upstream.
    conversation_page_bytes: int = 4 * 1024 * 1024
    # Generations
    on_disconnect: Literal["continue", "cancel"] = "continue"
    log_flush_ms: float = 50.0
    generation_ttl: int = 3600
    max_log_events: int = 100_000
    lease_ttl: float = 10.0
    shutdown_drain_seconds: float = 10.0
    # After the drain, how long answers whose end is not stored yet (the store is
    # unreachable) are kept and retried before the process exits anyway.
    shutdown_store_seconds: float = 15.0
    idempotency_ttl: int = 3600
    # WebSocket transport
    ws_ping_interval: float = 20.0
    ws_ping_timeout: float = 20.0
    ws_per_message_deflate: bool = False
    ws_idle_timeout: float = 300.0  # a socket with no frames and nothing running is closed
    ws_send_timeout: float = 30.0  # a client that reads nothing for this long is reset
    # HTTP transport: request line and headers (and WebSocket handshakes) must arrive in time
    http_header_timeout: float = 10.0
    http_keepalive_timeout: float = 5.0
    # Observability
    log_level: str = "info"
    log_format: Literal["text", "json"] = "text"
    log_bodies: bool = False  # message bodies in debug logs; never on by default
    metrics_token: Secret | None = None  # when set, /metrics needs it as a bearer token

    def __post_init__(self) -> None:
        _check(self)

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
        file = _load_toml(env.get("GATEWAY_CONFIG"))
        models = _models(env, file)
        agents = _agents(file)
        limits, tiers = _limits(env, file)
        default_model = str(file.get("default_model") or env.get("DEFAULT_MODEL") or "echo")
        if "echo" not in models and default_model == "echo" and models:
            default_model = next(iter(models))
        return cls(
            redis_url=env.get("REDIS_URL"),
            redis_cluster=_flag(env, "REDIS_CLUSTER"),
            redis_prefix=env.get("REDIS_PREFIX", "cgw:"),
            data_dir=Path(env.get("GATEWAY_DATA_DIR", ".chat-gateway")),
            redis_max_connections=int(_number(env, "REDIS_MAX_CONNECTIONS", 200)),
            redis_pool_timeout=_number(env, "REDIS_POOL_TIMEOUT", 5.0),
            redis_socket_timeout=_number(env, "REDIS_SOCKET_TIMEOUT", 5.0),
            redis_connect_timeout=_number(env, "REDIS_CONNECT_TIMEOUT", 2.0),
            jwt_secret=_secret(env.get("JWT_SECRET")),
            jwt_public_key=_secret(env.get("JWT_PUBLIC_KEY")),
            jwt_audience=env.get("JWT_AUDIENCE"),
            jwt_issuer=env.get("JWT_ISSUER"),
            jwt_algorithms=_csv(env.get("JWT_ALGORITHMS", "")),
            jwt_leeway=_number(env, "JWT_LEEWAY", 0.0),
            jwt_jwks_url=env.get("JWT_JWKS_URL"),
            jwks_cache_seconds=_number(env, "JWKS_CACHE_SECONDS", 300.0),
            jwks_refetch_cooldown=_number(env, "JWKS_REFETCH_COOLDOWN", 30.0),
            allowed_origins=_csv(env.get("ALLOWED_ORIGINS", "")),
            models=models,
            default_model=default_model,
            agents=agents,
            default_agent=str(file.get("default_agent") or "chat"),
            echo_delay_ms=int(_number(env, "ECHO_DELAY_MS", 30)),
            echo_max_words=int(_number(env, "ECHO_MAX_WORDS", 1000)),
            upstream_connect_timeout=_number(env, "UPSTREAM_CONNECT_TIMEOUT", 10.0),
            upstream_read_timeout=_number(env, "UPSTREAM_READ_TIMEOUT", 60.0),
            upstream_first_token_timeout=_number(env, "UPSTREAM_FIRST_TOKEN_TIMEOUT", 30.0),
            upstream_max_retries=int(_number(env, "UPSTREAM_MAX_RETRIES", 2)),
            upstream_retry_max_wait=_number(env, "UPSTREAM_RETRY_MAX_WAIT", 20.0),
            upstream_max_concurrent=int(_number(env, "UPSTREAM_MAX_CONCURRENT", 256)),
            upstream_max_line_bytes=int(_number(env, "UPSTREAM_MAX_LINE_BYTES", 1024 * 1024)),
            upstream_max_body_bytes=int(_number(env, "UPSTREAM_MAX_BODY_BYTES", 32 * 1024 * 1024)),
            upstream_max_tool_calls=int(_number(env, "UPSTREAM_MAX_TOOL_CALLS", 64)),
            upstream_max_tool_argument_bytes=int(
                _number(env, "UPSTREAM_MAX_TOOL_ARGUMENT_BYTES", 1024 * 1024)
            ),
            max_answer_chars=int(_number(env, "MAX_ANSWER_CHARS", 1_000_000)),
            generation_timeout=_number(env, "GENERATION_TIMEOUT", 900.0),
            generation_memory_events=int(_number(env, "GENERATION_MEMORY_EVENTS", 1024)),
            tool_timeout=_number(env, "TOOL_TIMEOUT", 10.0),
            tool_workers=int(_number(env, "TOOL_WORKERS", 2)),
            tool_memory_mb=int(_number(env, "TOOL_MEMORY_MB", 256)),
            limits=limits,
            limit_tiers=tiers,
            limit_claim=env.get("LIMIT_CLAIM", "tier"),
            max_frame_bytes=int(_number(env, "MAX_FRAME_BYTES", 1024 * 1024)),
            max_concurrent_per_connection=int(_number(env, "MAX_CONCURRENT_PER_CONNECTION", 4)),
            auth_timeout=_number(env, "AUTH_TIMEOUT", 10.0),
            token_expiry_warning=_number(env, "TOKEN_EXPIRY_WARNING", 60.0),
            token_expiry_grace=_number(env, "TOKEN_EXPIRY_GRACE", 10.0),
            max_queued_frames=int(_number(env, "MAX_QUEUED_FRAMES", 1024)),
            max_error_frames=int(_number(env, "MAX_ERROR_FRAMES", 50)),
            history_turns=int(_number(env, "HISTORY_TURNS", 20)),
            max_stored_turns=int(_number(env, "MAX_STORED_TURNS", 200)),
            conversation_ttl=int(_number(env, "CONVERSATION_TTL", 30 * 24 * 3600)),
            conversation_page_bytes=int(_number(env, "CONVERSATION_PAGE_BYTES", 4 * 1024 * 1024)),
            on_disconnect=_choice(env, "ON_DISCONNECT", ("continue", "cancel")),
            log_flush_ms=_number(env, "LOG_FLUSH_MS", 50.0),
            generation_ttl=int(_number(env, "GENERATION_TTL", 3600)),
            max_log_events=int(_number(env, "MAX_LOG_EVENTS", 100_000)),
            lease_ttl=_number(env, "LEASE_TTL", 10.0),
            shutdown_drain_seconds=_number(env, "SHUTDOWN_DRAIN_SECONDS", 10.0),
            shutdown_store_seconds=_number(env, "SHUTDOWN_STORE_SECONDS", 15.0),
            idempotency_ttl=int(_number(env, "IDEMPOTENCY_TTL", 3600)),
            ws_ping_interval=_number(env, "WS_PING_INTERVAL", 20.0),
            ws_ping_timeout=_number(env, "WS_PING_TIMEOUT", 20.0),
            ws_per_message_deflate=_flag(env, "WS_PER_MESSAGE_DEFLATE"),
            ws_idle_timeout=_number(env, "WS_IDLE_TIMEOUT", 300.0),
            ws_send_timeout=_number(env, "WS_SEND_TIMEOUT", 30.0),
            http_header_timeout=_number(env, "HTTP_HEADER_TIMEOUT", 10.0),
            http_keepalive_timeout=_number(env, "HTTP_KEEPALIVE_TIMEOUT", 5.0),
            log_level=env.get("LOG_LEVEL", "info").lower(),
            log_format=_choice(env, "LOG_FORMAT", ("text", "json")),
            log_bodies=_flag(env, "LOG_BODIES"),
            metrics_token=_secret(env.get("METRICS_TOKEN")),
        )


def _check(s: Settings) -> None:
    if "{" in s.redis_prefix or "}" in s.redis_prefix:
        raise ConfigError("REDIS_PREFIX must not contain braces: they are Redis Cluster hash tags.")
    if s.redis_cluster:
        _check_cluster_url(s.redis_url)
    if s.default_model not in s.models:
        raise ConfigError(f"default_model '{s.default_model}' is not a configured model.")
    if s.default_agent not in s.agents:
        raise ConfigError(f"default_agent '{s.default_agent}' is not a configured agent.")
    for agent in s.agents.values():
        for model in (agent.model, *agent.allowed_models):
            if model is not None and model not in s.models:
                raise ConfigError(f"Agent '{agent.name}' names unknown model '{model}'.")
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
    positive = {
        "MAX_FRAME_BYTES": s.max_frame_bytes,
        "REDIS_MAX_CONNECTIONS": s.redis_max_connections,
        "REDIS_POOL_TIMEOUT": s.redis_pool_timeout,
        "REDIS_CONNECT_TIMEOUT": s.redis_connect_timeout,
        "MAX_CONCURRENT_PER_CONNECTION": s.max_concurrent_per_connection,
        "AUTH_TIMEOUT": s.auth_timeout,
        "MAX_QUEUED_FRAMES": s.max_queued_frames,
        "MAX_ERROR_FRAMES": s.max_error_frames,
        "MAX_STORED_TURNS": s.max_stored_turns,
        "CONVERSATION_TTL": s.conversation_ttl,
        "GENERATION_TTL": s.generation_ttl,
        "MAX_LOG_EVENTS": s.max_log_events,
        "LEASE_TTL": s.lease_ttl,
        "IDEMPOTENCY_TTL": s.idempotency_ttl,
        "UPSTREAM_CONNECT_TIMEOUT": s.upstream_connect_timeout,
        "UPSTREAM_READ_TIMEOUT": s.upstream_read_timeout,
        "UPSTREAM_FIRST_TOKEN_TIMEOUT": s.upstream_first_token_timeout,
        "UPSTREAM_MAX_CONCURRENT": s.upstream_max_concurrent,
        "WS_IDLE_TIMEOUT": s.ws_idle_timeout,
        "WS_SEND_TIMEOUT": s.ws_send_timeout,
        "HTTP_HEADER_TIMEOUT": s.http_header_timeout,
        "HTTP_KEEPALIVE_TIMEOUT": s.http_keepalive_timeout,
        "JWKS_CACHE_SECONDS": s.jwks_cache_seconds,
        "ECHO_MAX_WORDS": s.echo_max_words,
        "UPSTREAM_MAX_LINE_BYTES": s.upstream_max_line_bytes,
        "UPSTREAM_MAX_BODY_BYTES": s.upstream_max_body_bytes,
        "UPSTREAM_MAX_TOOL_CALLS": s.upstream_max_tool_calls,
        "UPSTREAM_MAX_TOOL_ARGUMENT_BYTES": s.upstream_max_tool_argument_bytes,
        "MAX_ANSWER_CHARS": s.max_answer_chars,
        "GENERATION_TIMEOUT": s.generation_timeout,
        "GENERATION_MEMORY_EVENTS": s.generation_memory_events,
        "TOOL_TIMEOUT": s.tool_timeout,
        "TOOL_WORKERS": s.tool_workers,
        "TOOL_MEMORY_MB": s.tool_memory_mb,
        "CONVERSATION_PAGE_BYTES": s.conversation_page_bytes,
    }
    if s.redis_socket_timeout <= 1.0:
        # A resume waits on XREAD BLOCK for up to a second; the socket must outlast it.
        raise ConfigError("REDIS_SOCKET_TIMEOUT must be more than 1 second.")
    if s.idempotency_ttl > s.generation_ttl:
        # A key that outlives its generation's log could only answer "not found".
        raise ConfigError("IDEMPOTENCY_TTL may not be longer than GENERATION_TTL.")
    for name, value in positive.items():
        if value <= 0:
            raise ConfigError(f"{name} must be greater than zero.")
    if s.jwt_jwks_url is not None and (s.jwt_secret is not None or s.jwt_public_key is not None):
        raise ConfigError("Set one of JWT_SECRET, JWT_PUBLIC_KEY and JWT_JWKS_URL.")
    if s.jwt_jwks_url is not None and not s.jwt_jwks_url.startswith(("https://", "http://")):
        raise ConfigError("JWT_JWKS_URL must be an https:// (or http://) URL.")
    if s.jwt_jwks_url is not None and any(a.startswith("HS") for a in s.algorithms):
        raise ConfigError("JWT_ALGORITHMS may not allow HS* algorithms with JWT_JWKS_URL.")
    for configured in s.models.values():
        if configured.max_concurrent is not None and configured.max_concurrent <= 0:
            raise ConfigError(f"Model '{configured.name}': max_concurrent must be above zero.")
    if min(s.upstream_max_retries, s.upstream_retry_max_wait, s.jwks_refetch_cooldown) < 0:
        raise ConfigError(
            "UPSTREAM_MAX_RETRIES, UPSTREAM_RETRY_MAX_WAIT and JWKS_REFETCH_COOLDOWN "
            "may not be negative."
        )
    waits = (s.history_turns, s.echo_delay_ms, s.log_flush_ms, s.shutdown_drain_seconds)
    if min(*waits, s.shutdown_store_seconds) < 0:
        raise ConfigError(
            "HISTORY_TURNS, ECHO_DELAY_MS, LOG_FLUSH_MS, SHUTDOWN_DRAIN_SECONDS and "
            "SHUTDOWN_STORE_SECONDS may not be negative."
        )


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


def _load_toml(path: str | None) -> dict[str, Any]:
    if path is None:
        return {}
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except OSError as exc:
        raise ConfigError(f"GATEWAY_CONFIG: cannot read {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"GATEWAY_CONFIG: {path} is not valid TOML: {exc}") from None


def _models(env: Mapping[str, str], file: Mapping[str, Any]) -> dict[str, ModelConfig]:
    tables = file.get("models")
    if tables is None:
        return _models_from_env(env)
    if not isinstance(tables, dict) or not tables:
        raise ConfigError("GATEWAY_CONFIG: [models] must hold at least one [models.NAME] table.")
    return {name: _model(name, table, env) for name, table in tables.items()}


def _models_from_env(env: Mapping[str, str]) -> dict[str, ModelConfig]:
    models = _echo_models()
    if "OPENAI_API_KEY" in env or "OPENAI_BASE_URL" in env:
        for name in _csv(env.get("OPENAI_MODELS", "")):
            models[name] = _model(name, {"provider": "openai"}, env)
    return models


def _model(name: str, table: Any, env: Mapping[str, str]) -> ModelConfig:
    where = f"GATEWAY_CONFIG: [models.{name}]"
    if not NAME_RE.match(name):
        raise ConfigError(f"{where}: a model name uses letters, digits and . _ : - only.")
    if not isinstance(table, dict):
        raise ConfigError(f"{where} must be a table.")
    provider = table.get("provider", "openai")
    if provider not in get_args(ProviderName):
        raise ConfigError(f"{where}: provider must be one of {', '.join(get_args(ProviderName))}.")
    key_env = str(table.get("api_key_env", "OPENAI_API_KEY"))
    max_tokens = table.get("max_tokens")
    if max_tokens is not None and (not isinstance(max_tokens, int) or max_tokens <= 0):
        raise ConfigError(f"{where}: max_tokens must be a positive integer.")
    return ModelConfig(
        name=name,
        provider=provider,
        base_url=table.get("base_url") or env.get("OPENAI_BASE_URL"),
        api_key=_secret(env.get(key_env)),
        upstream_model=str(table.get("upstream_model", name)),
        streaming=bool(table.get("streaming", True)),
        max_tokens=max_tokens,
        max_concurrent=table.get("max_concurrent"),
    )


def _limits(env: Mapping[str, str], file: Mapping[str, Any]) -> tuple[Limits, dict[str, Limits]]:
    """The global limits (env over `[limits]`) and one set per `[limits.tiers.NAME]` table;
    a tier inherits every limit it does not set."""
    table = file.get("limits") or {}
    if not isinstance(table, dict):
        raise ConfigError("GATEWAY_CONFIG: [limits] must be a table.")
    values = {
        name: _limit(table, name, getattr(Limits(), name), "[limits]") for name in LIMIT_FIELDS
    }
    for name, var in LIMIT_FIELDS.items():
        values[name] = int(_number(env, var, values[name]))
        if values[name] < 0:
            raise ConfigError(f"{var} may not be negative (0 turns the limit off).")
    base = Limits(**values)
    tiers = table.get("tiers") or {}
    if not isinstance(tiers, dict):
        raise ConfigError("GATEWAY_CONFIG: [limits.tiers] must hold [limits.tiers.NAME] tables.")
    found: dict[str, Limits] = {}
    for tier, tier_table in tiers.items():
        where = f"[limits.tiers.{tier}]"
        if not isinstance(tier_table, dict):
            raise ConfigError(f"GATEWAY_CONFIG: {where} must be a table.")
        unknown = set(tier_table) - set(LIMIT_FIELDS)
        if unknown:
            raise ConfigError(f"GATEWAY_CONFIG: {where}: unknown limit '{sorted(unknown)[0]}'.")
        found[str(tier)] = replace(
            base, **{k: _limit(tier_table, k, getattr(base, k), where) for k in tier_table}
        )
    return base, found


def _limit(table: Mapping[str, Any], key: str, default: int, where: str) -> int:
    value = table.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"GATEWAY_CONFIG: {where}: {key} must be a whole number, 0 or more.")
    return value


def _agents(file: Mapping[str, Any]) -> dict[str, AgentConfig]:
    agents = _chat_agents()
    for name, table in (file.get("agents") or {}).items():
        where = f"GATEWAY_CONFIG: [agents.{name}]"
        if not NAME_RE.match(name) or not isinstance(table, dict):
            raise ConfigError(f"{where} must be a table with a simple name.")
        agents[name] = _agent(name, table, where)
    return agents


def _agent(name: str, table: dict[str, Any], where: str) -> AgentConfig:
    kind = table.get("kind", "chat")
    if kind not in get_args(AgentKind):
        raise ConfigError(f"{where}: kind must be one of {', '.join(get_args(AgentKind))}.")
    temperature = table.get("temperature")
    if temperature is not None and not isinstance(temperature, int | float):
        raise ConfigError(f"{where}: temperature must be a number.")
    plugin = table.get("plugin")
    if plugin is not None and (not isinstance(plugin, str) or ":" not in plugin):
        raise ConfigError(f"{where}: plugin must be a 'module:Class' path.")
    return AgentConfig(
        name=name,
        kind=kind,
        system_prompt=table.get("system_prompt"),
        model=table.get("model"),
        temperature=None if temperature is None else float(temperature),
        allowed_models=_names(table, "allowed_models", where),
        tools=_names(table, "tools", where),
        plugin=plugin,
        max_tool_rounds=_positive_int(table, "max_tool_rounds", 4, where),
        source_budget=_positive_int(table, "source_budget", 3000, where),
    )


def _names(table: dict[str, Any], key: str, where: str) -> tuple[str, ...]:
    value = table.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ConfigError(f"{where}: {key} must be a list of names.")
    return tuple(value)


def _positive_int(table: dict[str, Any], key: str, default: int, where: str) -> int:
    value = table.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError(f"{where}: {key} must be a positive integer.")
    return value


def _secret(value: str | None) -> Secret | None:
    return None if value is None else Secret(value)


def _csv(value: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in value.split(",") if part.strip())


def _number(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw is None:
        return default
    try:
        return float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number, not '{raw}'.") from None


def _choice(env: Mapping[str, str], name: str, choices: tuple[str, ...]) -> Any:
    value = env.get(name, choices[0]).lower()
    if value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(choices)}, not '{value}'.")
    return value


def _flag(env: Mapping[str, str], name: str) -> bool:
    return env.get(name, "").lower() in {"1", "true", "yes", "on"}

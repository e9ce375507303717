"""The models, agents and per-user limits: their records, and how the TOML file
(`GATEWAY_CONFIG`) and the few variables that feed them make them."""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any, Final, Literal, get_args

from gateway.config.fields import ConfigError, Secret, Spec, check, csv, read, secret, setting

# The names a model's `provider` and an agent's `kind` may take, stated once: each has its
# implementation's `module:attribute` path in its registry (`gateway/llm/providers.py`,
# `gateway/agents/registry.py`), and a test holds the registries to these lists.
ProviderName = Literal["openai", "echo"]
AgentKind = Literal["chat", "grounded", "tools"]
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$")
ECHO: Final = "echo"  # the built-in model's name, and the default model while it is configured

# Variables read here rather than into a field of their own.
GATEWAY_CONFIG = Spec("GATEWAY_CONFIG", None, "Path of a TOML file with models, agents, limits")
OPENAI_API_KEY = Spec("OPENAI_API_KEY", None, "The key of the OpenAI-compatible upstream")
OPENAI_BASE_URL = Spec("OPENAI_BASE_URL", None, "The URL of the OpenAI-compatible upstream")
OPENAI_MODELS = Spec("OPENAI_MODELS", None, "Models on that upstream, when there is no file")
INPUTS = (GATEWAY_CONFIG, OPENAI_API_KEY, OPENAI_BASE_URL, OPENAI_MODELS)


@dataclass(frozen=True, slots=True)
class ModelConfig:
    name: str
    provider: ProviderName = ECHO
    base_url: str | None = None
    api_key: Secret | None = None
    upstream_model: str = ""
    streaming: bool = True
    max_tokens: int | None = None
    max_concurrent: int | None = None  # upstream requests at once; None: UPSTREAM_MAX_CONCURRENT
    # Whether JSON output formats (OpenAI's `response_format` json_object and json_schema)
    # are forwarded to the model; the gateway refuses them for a model that does not say so.
    structured_outputs: bool = False

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


LIMIT_OFF = "{env} may not be negative (0 turns the limit off)."


@dataclass(frozen=True, slots=True)
class Limits:
    """Per-user limits, enforced across instances in Redis. Zero turns a limit off."""

    requests_per_minute: int = setting(
        "LIMIT_REQUESTS_PER_MINUTE", 60, "New turns per minute", ge=0, refusal=LIMIT_OFF
    )
    concurrent_generations: int = setting(
        "LIMIT_CONCURRENT_GENERATIONS", 8, "Generations running at once", ge=0, refusal=LIMIT_OFF
    )
    connections: int = setting(
        "LIMIT_CONNECTIONS", 16, "Open sockets and following streams", ge=0, refusal=LIMIT_OFF
    )
    tokens_per_day: int = setting(
        "LIMIT_TOKENS_PER_DAY", 0, "Prompt and answer tokens per UTC day", ge=0, refusal=LIMIT_OFF
    )
    storage_bytes: int = setting(
        "LIMIT_STORAGE_BYTES",
        100 * 1024 * 1024,
        "Stored message bytes over all conversations",
        ge=0,
        refusal=LIMIT_OFF,
    )

    def __post_init__(self) -> None:
        check(self)


LIMIT_NAMES = tuple(f.name for f in fields(Limits))


def echo_models() -> dict[str, ModelConfig]:
    return {ECHO: ModelConfig(name=ECHO, provider="echo", structured_outputs=True)}


def chat_agents() -> dict[str, AgentConfig]:
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


def load_toml(path: str | None) -> dict[str, Any]:
    if path is None:
        return {}
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except OSError as exc:
        raise ConfigError(f"GATEWAY_CONFIG: cannot read {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"GATEWAY_CONFIG: {path} is not valid TOML: {exc}") from None


def read_models(env: Mapping[str, str], file: Mapping[str, Any]) -> dict[str, ModelConfig]:
    tables = file.get("models")
    if tables is None:
        return _models_from_env(env)
    if not isinstance(tables, dict) or not tables:
        raise ConfigError("GATEWAY_CONFIG: [models] must hold at least one [models.NAME] table.")
    return {name: _model(name, table, env) for name, table in tables.items()}


def _models_from_env(env: Mapping[str, str]) -> dict[str, ModelConfig]:
    models = echo_models()
    if OPENAI_API_KEY.env in env or OPENAI_BASE_URL.env in env:
        for name in csv(env.get(OPENAI_MODELS.env, "")):
            models[name] = _model(name, {"provider": "openai"}, env)
    return models


def _model(name: str, table: Any, env: Mapping[str, str]) -> ModelConfig:
    where = f"GATEWAY_CONFIG: [models.{name}]"
    if not NAME_RE.match(name):
        raise ConfigError(f"{where}: a model name uses letters, digits and . _ : - only.")
    if not isinstance(table, dict):
        raise ConfigError(f"{where} must be a table.")
    # A table names an upstream model, so its provider is "openai" unless it says otherwise.
    provider = table.get("provider", "openai")
    if provider not in get_args(ProviderName):
        raise ConfigError(f"{where}: provider must be one of {', '.join(get_args(ProviderName))}.")
    key_env = str(table.get("api_key_env", OPENAI_API_KEY.env))
    max_tokens = table.get("max_tokens")
    if max_tokens is not None and (not isinstance(max_tokens, int) or max_tokens <= 0):
        raise ConfigError(f"{where}: max_tokens must be a positive integer.")
    # The echo provider answers JSON formats itself; an upstream must be declared able to.
    structured = table.get("structured_outputs", provider == ECHO)
    if not isinstance(structured, bool):
        raise ConfigError(f"{where}: structured_outputs must be true or false.")
    return ModelConfig(
        name=name,
        provider=provider,
        base_url=table.get("base_url") or env.get(OPENAI_BASE_URL.env),
        api_key=secret(env.get(key_env)),
        upstream_model=str(table.get("upstream_model", name)),
        streaming=bool(table.get("streaming", ModelConfig(name).streaming)),
        max_tokens=max_tokens,
        max_concurrent=table.get("max_concurrent"),
        structured_outputs=structured,
    )


def read_limits(
    env: Mapping[str, str], file: Mapping[str, Any]
) -> tuple[Limits, dict[str, Limits]]:
    """The global limits (env over `[limits]`) and one set per `[limits.tiers.NAME]` table;
    a tier inherits every limit it does not set."""
    table = file.get("limits") or {}
    if not isinstance(table, dict):
        raise ConfigError("GATEWAY_CONFIG: [limits] must be a table.")
    defaults = Limits()
    from_file = {k: _limit(table, k, getattr(defaults, k), "[limits]") for k in LIMIT_NAMES}
    base = Limits(**{**from_file, **read(Limits, env)})
    tiers = table.get("tiers") or {}
    if not isinstance(tiers, dict):
        raise ConfigError("GATEWAY_CONFIG: [limits.tiers] must hold [limits.tiers.NAME] tables.")
    found: dict[str, Limits] = {}
    for tier, tier_table in tiers.items():
        where = f"[limits.tiers.{tier}]"
        if not isinstance(tier_table, dict):
            raise ConfigError(f"GATEWAY_CONFIG: {where} must be a table.")
        unknown = set(tier_table) - set(LIMIT_NAMES)
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


def read_agents(file: Mapping[str, Any]) -> dict[str, AgentConfig]:
    agents = chat_agents()
    for name, table in (file.get("agents") or {}).items():
        where = f"GATEWAY_CONFIG: [agents.{name}]"
        if not NAME_RE.match(name) or not isinstance(table, dict):
            raise ConfigError(f"{where} must be a table with a simple name.")
        agents[name] = _agent(name, table, where)
    return agents


def _agent(name: str, table: dict[str, Any], where: str) -> AgentConfig:
    defaults = AgentConfig(name=name)
    kind = table.get("kind", defaults.kind)
    if kind not in get_args(AgentKind):
        raise ConfigError(f"{where}: kind must be one of {', '.join(get_args(AgentKind))}.")
    temperature = table.get("temperature")
    if temperature is not None and not isinstance(temperature, int | float):
        raise ConfigError(f"{where}: temperature must be a number.")
    plugin = table.get("plugin")
    if plugin is not None and (not isinstance(plugin, str) or ":" not in plugin):
        raise ConfigError(f"{where}: plugin must be a 'module:Class' path.")
    return replace(
        defaults,
        kind=kind,
        system_prompt=table.get("system_prompt"),
        model=table.get("model"),
        temperature=None if temperature is None else float(temperature),
        allowed_models=_names(table, "allowed_models", where),
        tools=_names(table, "tools", where),
        plugin=plugin,
        max_tool_rounds=_positive_int(table, "max_tool_rounds", defaults.max_tool_rounds, where),
        source_budget=_positive_int(table, "source_budget", defaults.source_budget, where),
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

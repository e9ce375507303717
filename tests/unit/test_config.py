"""Settings from the environment and the TOML file."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest

from gateway.config import ConfigError, Limits, Secret, Settings, variables
from gateway.config.fields import Declared, declared

S = "k" * 32


def test_defaults_give_dev_mode_with_echo() -> None:
    settings = Settings.from_env({})
    assert settings.dev_mode
    assert list(settings.models) == ["echo"]
    assert settings.default_model == "echo"
    assert list(settings.agents) == ["chat", "grounded", "tools"]
    assert settings.max_frame_bytes == 1024 * 1024
    assert settings.max_concurrent_per_connection == 4
    assert settings.auth_timeout == 10
    assert settings.redis_url is None
    assert settings.redis_prefix == "cgw:"


def test_empty_variables_count_as_unset() -> None:
    settings = Settings.from_env({"JWT_SECRET": "", "REDIS_URL": " ", "MAX_FRAME_BYTES": ""})
    assert settings.dev_mode and settings.redis_url is None
    assert settings.max_frame_bytes == 1024 * 1024


def test_each_variable_is_parsed_as_its_field_is_typed() -> None:
    settings = Settings.from_env(
        {
            "REDIS_CLUSTER": "yes",
            "REDIS_URL": "redis://127.0.0.1:7000",
            "GATEWAY_DATA_DIR": "/srv/gw",
            "ALLOWED_ORIGINS": " https://a.example , ,https://b.example",
            "MAX_FRAME_BYTES": "2e3",
            "LOG_FLUSH_MS": "2.5",
            "LOG_LEVEL": "DEBUG",
            "LOG_FORMAT": "JSON",
            "METRICS_TOKEN": "m",
        }
    )
    assert settings.redis_cluster and settings.data_dir == Path("/srv/gw")
    assert settings.allowed_origins == ("https://a.example", "https://b.example")
    assert (settings.max_frame_bytes, settings.log_flush_ms) == (2000, 2.5)
    assert (settings.log_level, settings.log_format) == ("debug", "json")
    assert settings.metrics_token == Secret("m")


def test_a_choice_outside_its_literal_is_explained() -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({"ON_DISCONNECT": "Pause"})
    assert str(caught.value) == "ON_DISCONNECT must be one of continue, cancel, not 'pause'."


def test_openai_models_from_env() -> None:
    settings = Settings.from_env(
        {
            "OPENAI_API_KEY": "sk-1",
            "OPENAI_MODELS": "gpt-a, gpt-b",
            "JWT_SECRET": S,
            "OPENAI_BASE_URL": "http://127.0.0.1:9/v1",
        }
    )
    assert list(settings.models) == ["echo", "gpt-a", "gpt-b"]
    model = settings.models["gpt-a"]
    assert model.provider == "openai" and model.api_key == Secret("sk-1")
    assert model.base_url == "http://127.0.0.1:9/v1" and model.upstream_name == "gpt-a"
    assert "sk-1" not in repr(settings)


def test_openai_models_need_a_key_or_url() -> None:
    assert list(Settings.from_env({"OPENAI_MODELS": "gpt-a"}).models) == ["echo"]


def test_toml_models_and_agents(tmp_path: Path) -> None:
    path = tmp_path / "gateway.toml"
    path.write_text(
        'default_model = "big"\n'
        '[models.big]\nprovider = "openai"\nbase_url = "http://127.0.0.1:1/v1"\n'
        'api_key_env = "BIG_KEY"\nupstream_model = "vendor/big-1"\nstreaming = false\n'
        "max_tokens = 100\nstructured_outputs = true\n"
        '[models.small]\nprovider = "openai"\n'
        '[models.echo]\nprovider = "echo"\n'
        '[agents.pirate]\nsystem_prompt = "Arr."\nmodel = "echo"\ntemperature = 1\n'
    )
    settings = Settings.from_env({"GATEWAY_CONFIG": str(path), "BIG_KEY": "k"})
    big = settings.models["big"]
    assert (big.upstream_name, big.streaming, big.max_tokens) == ("vendor/big-1", False, 100)
    assert big.api_key == Secret("k")
    # JSON output formats: as declared; off for an upstream by default, on for echo.
    structured = {name: m.structured_outputs for name, m in settings.models.items()}
    assert structured == {"big": True, "small": False, "echo": True}
    assert settings.default_model == "big"
    pirate = settings.agents["pirate"]
    assert (pirate.system_prompt, pirate.model, pirate.temperature) == ("Arr.", "echo", 1.0)
    assert "chat" in settings.agents


def test_a_conversation_keeps_room_for_its_turns() -> None:
    with pytest.raises(ConfigError, match="MAX_STORED_MESSAGES must be at least twice"):
        Settings.from_env({"MAX_STORED_TURNS": "10", "MAX_STORED_MESSAGES": "19"})
    assert Settings.from_env({"MAX_STORED_TURNS": "10", "MAX_STORED_MESSAGES": "20"})


@pytest.mark.parametrize(
    ("toml", "env", "fragment"),
    [
        ("[models.x]\nprovider = 'magic'\n", {}, "provider"),
        ("[models.x]\nmax_tokens = -1\n", {}, "max_tokens"),
        ("[models.x]\nstructured_outputs = 'yes'\n", {}, "structured_outputs"),
        ("default_model = 'nope'\n[models.x]\nprovider = 'echo'\n", {}, "default_model"),
        ("[models.x]\nprovider='echo'\n[agents.a]\nmodel = 'y'\n", {}, "unknown model"),
        ("models = 3\n", {}, "[models]"),
        ("not toml [", {}, "not valid TOML"),
        ("", {"JWT_ALGORITHMS": "none"}, "JWT_ALGORITHMS"),
        ("", {"JWT_PUBLIC_KEY": "pem", "JWT_ALGORITHMS": "HS256,RS256"}, "HS*"),
        ("", {"JWT_SECRET": S, "JWT_ALGORITHMS": "RS256"}, "JWT_SECRET"),
        ("", {"JWT_SECRET": S, "JWT_PUBLIC_KEY": "p"}, "not both"),
        ("", {"MAX_FRAME_BYTES": "lots"}, "MAX_FRAME_BYTES"),
        ("", {"AUTH_TIMEOUT": "0"}, "AUTH_TIMEOUT"),
        ("", {"REDIS_PREFIX": "a{b}"}, "braces"),
        ("", {"JWT_SECRET": "short"}, "32 bytes"),
        ("[agents.a]\nkind = 'wizard'\n", {}, "kind must be one of"),
        ("[agents.a]\ntools = 'calculate'\n", {}, "tools must be a list"),
        ("[agents.a]\nallowed_models = ['gpt-x']\n", {}, "unknown model 'gpt-x'"),
        ("[agents.a]\nplugin = 'no_colon'\n", {}, "module:Class"),
        ("[agents.a]\nmax_tool_rounds = 0\n", {}, "max_tool_rounds"),
    ],
)
def test_bad_configuration_is_explained(
    tmp_path: Path, toml: str, env: dict[str, str], fragment: str
) -> None:
    path = tmp_path / "c.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({"GATEWAY_CONFIG": str(path), **env})
    assert fragment in str(caught.value)


def test_agent_kinds_tools_and_plugins(tmp_path: Path) -> None:
    path = tmp_path / "agents.toml"
    path.write_text(
        "[models.echo]\nprovider = 'echo'\n"
        "[agents.helper]\nkind = 'tools'\ntools = ['calculate', 'pkg.mod:tool']\n"
        "allowed_models = ['echo']\nmax_tool_rounds = 2\n"
        "[agents.docs]\nkind = 'grounded'\nsource_budget = 500\n"
        "[agents.custom]\nplugin = 'pkg.agents:Custom'\n"
    )
    agents = Settings.from_env({"GATEWAY_CONFIG": str(path)}).agents
    assert set(agents) >= {"chat", "grounded", "tools", "helper", "docs", "custom"}
    helper = agents["helper"]
    assert (helper.kind, helper.tools, helper.allowed_models, helper.max_tool_rounds) == (
        "tools",
        ("calculate", "pkg.mod:tool"),
        ("echo",),
        2,
    )
    assert (agents["docs"].kind, agents["docs"].source_budget) == ("grounded", 500)
    assert agents["custom"].plugin == "pkg.agents:Custom"


def test_missing_config_file_is_explained(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        Settings.from_env({"GATEWAY_CONFIG": str(tmp_path / "missing.toml")})


def test_algorithms_follow_the_key() -> None:
    assert Settings.from_env({"JWT_SECRET": S}).algorithms == ("HS256",)
    assert Settings.from_env({"JWT_PUBLIC_KEY": "p"}).algorithms == ("RS256", "ES256")


def test_limits_from_env_and_tiers_from_the_file(tmp_path: Path) -> None:
    path = tmp_path / "gateway.toml"
    path.write_text(
        "[limits]\nrequests_per_minute = 20\ntokens_per_day = 1000\n"
        "[limits.tiers.pro]\nrequests_per_minute = 300\nconnections = 0\n"
    )
    settings = Settings.from_env(
        {"GATEWAY_CONFIG": str(path), "LIMIT_CONCURRENT_GENERATIONS": "3", "LIMIT_CLAIM": "plan"}
    )
    assert settings.limits == Limits(20, 3, 16, 1000)
    # A tier inherits what it does not set, including the environment's overrides.
    assert settings.limit_tiers["pro"] == Limits(300, 3, 0, 1000)
    assert settings.limit_claim == "plan"


@pytest.mark.parametrize(
    ("toml", "env", "fragment"),
    [
        ("[limits]\nrequests_per_minute = -1\n", {}, "requests_per_minute"),
        ("[limits]\nconnections = 'many'\n", {}, "connections"),
        ("[limits.tiers.pro]\nrpm = 5\n", {}, "unknown limit 'rpm'"),
        ("", {"LIMIT_TOKENS_PER_DAY": "-5"}, "LIMIT_TOKENS_PER_DAY"),
    ],
)
def test_bad_limits_are_explained(
    tmp_path: Path, toml: str, env: dict[str, str], fragment: str
) -> None:
    path = tmp_path / "gateway.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError, match=fragment):
        Settings.from_env({"GATEWAY_CONFIG": str(path), **env})


# The documentation's tables, held to the declarations: a variable added without a row in
# README's table, a row left after its variable is gone, or a default changed on one side
# only fails here.

ROOT = Path(__file__).resolve().parents[2]
DECLARED = {spec.env: spec for spec in variables()}
NAME = re.compile(r"`([A-Z][A-Z0-9_]+)`")
UNITS = {"": 1.0, "s": 1.0, "ms": 0.001, "KiB": 1024.0, "MiB": 1024.0**2, "GiB": 1024.0**3}
# A documented quantity after a variable's name, in limits.md's tables: `NAME` (1 MiB…
QUANTITY = re.compile(
    r"`([A-Z][A-Z0-9_]+)`(?: \| | \(| )(\d[\d,]*(?:\.\d+)?)(?: (KiB|MiB|GiB|ms|s)\b)?"
)


def shown(default: object) -> str:
    """A default as README's table writes it."""
    if default is None or default == ():
        return "unset"
    if isinstance(default, bool):
        return "on" if default else "off"
    if isinstance(default, Path):
        return f"`{default}`" if default.is_absolute() else f"`./{default}`"
    if isinstance(default, float) and default.is_integer():
        return f"`{int(default)}`"
    return f"`{default}`"


def readme_defaults() -> dict[str, str]:
    """Each variable in README's configuration table, with the default it documents."""
    section = (ROOT / "README.md").read_text().split("\n## Configuration\n", 1)[1]
    rows: dict[str, str] = {}
    for line in section.split("\n## ", 1)[0].splitlines():
        if not line.startswith("| `"):
            continue
        names_cell, default_cell = line.split(" | ")[:2]
        names = NAME.findall(names_cell)
        defaults = default_cell.split(", ") if len(names) > 1 else [default_cell]
        if len(defaults) == 1:  # one default for every variable of the row
            defaults *= len(names)
        assert len(defaults) == len(names), line
        rows.update(zip(names, defaults, strict=True))
    return rows


def test_readme_documents_every_variable_and_no_other() -> None:
    documented = readme_defaults()
    assert sorted(set(DECLARED) - set(documented)) == []  # declared, not documented
    assert sorted(set(documented) - set(DECLARED)) == []  # documented, not declared


@pytest.mark.parametrize("env", sorted(DECLARED))
def test_readme_states_each_default_as_declared(env: str) -> None:
    documented = readme_defaults().get(env, "(no row)")
    declared = shown(DECLARED[env].default)
    assert documented == declared or documented.startswith(f"{declared}:")


def in_base_units(env: str, value: float) -> float:
    """A declared default in bytes or seconds, as its name's suffix says it is counted."""
    return value * {"_MB": 1024.0**2, "_MS": 0.001}.get(env[-3:], 1.0)


def test_limits_md_states_the_declared_defaults() -> None:
    rows = [line for line in (ROOT / "docs/limits.md").read_text().splitlines() if line[:1] == "|"]
    found = [m.groups() for line in rows for m in QUANTITY.finditer(line)]
    assert len(found) >= 25  # the two tables still read as this test expects
    for env, number, unit in found:
        assert env in DECLARED, f"docs/limits.md names {env}, which is not declared"
        documented = float(number.replace(",", "")) * UNITS[unit or ""]
        declared = in_base_units(env, float(DECLARED[env].default))
        assert math.isclose(documented, declared), f"docs/limits.md: {env} {number} {unit}"


BOUNDED = [d for cls in (Settings, Limits) for d in declared(cls) if d.spec.gt or d.spec.ge == 0]


@pytest.mark.parametrize("field", BOUNDED, ids=[d.spec.env for d in BOUNDED])
def test_each_declared_bound_is_enforced_with_its_message(field: Declared) -> None:
    spec = field.spec
    past = spec.gt if spec.gt is not None else -1
    env = {spec.env: str(past)}
    if spec.env == "GENERATION_TTL":  # a log kept for less than its keys is refused first
        env["IDEMPOTENCY_TTL"] = str(past)
    with pytest.raises(ConfigError) as caught:
        Settings.from_env(env)
    assert str(caught.value) == spec.refused()
    assert spec.env in spec.refused()

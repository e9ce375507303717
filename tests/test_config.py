"""Settings from the environment and the TOML file."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config import ConfigError, Limits, Secret, Settings

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
        "max_tokens = 100\n"
        '[models.echo]\nprovider = "echo"\n'
        '[agents.pirate]\nsystem_prompt = "Arr."\nmodel = "echo"\ntemperature = 1\n'
    )
    settings = Settings.from_env({"GATEWAY_CONFIG": str(path), "BIG_KEY": "k"})
    big = settings.models["big"]
    assert (big.upstream_name, big.streaming, big.max_tokens) == ("vendor/big-1", False, 100)
    assert big.api_key == Secret("k")
    assert settings.default_model == "big"
    pirate = settings.agents["pirate"]
    assert (pirate.system_prompt, pirate.model, pirate.temperature) == ("Arr.", "echo", 1.0)
    assert "chat" in settings.agents


@pytest.mark.parametrize(
    ("toml", "env", "fragment"),
    [
        ("[models.x]\nprovider = 'magic'\n", {}, "provider"),
        ("[models.x]\nmax_tokens = -1\n", {}, "max_tokens"),
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

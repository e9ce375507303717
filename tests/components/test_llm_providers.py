"""The providers' registry: one line per name a model's `provider` may take, imported only when
a configured model uses it, and each provider makes the models of its kind."""

from __future__ import annotations

import contextlib
import subprocess
import sys
from pathlib import Path
from typing import get_args

import pytest

from gateway.config import ConfigError, ModelConfig, ProviderName, Settings
from gateway.errors import RateLimited
from gateway.importer import import_from_string
from gateway.llm.echo import EchoModel
from gateway.llm.providers import PROVIDERS, ProviderContext, load_provider
from gateway.llm.registry import ModelRegistry
from gateway.llm.upstream import UpstreamModel
from gateway.obs.metrics import GatewayMetrics

ROOT = Path(__file__).resolve().parents[2]


def test_the_registry_has_a_line_for_every_provider_name_and_no_other() -> None:
    assert list(PROVIDERS) == list(get_args(ProviderName))


@pytest.mark.parametrize("name", list(PROVIDERS))
def test_every_registered_provider_imports_and_makes_its_models(name: ProviderName) -> None:
    factory = import_from_string(PROVIDERS[name])
    assert callable(factory) and callable(factory.model) and callable(factory.aclose)


async def test_the_models_are_made_by_the_provider_of_each() -> None:
    models = {
        "echo": ModelConfig("echo", "echo"),
        "a": ModelConfig("a", "openai", "http://127.0.0.1:1/v1", streaming=False),
        "b": ModelConfig("b", "openai", "http://127.0.0.1:2/v1"),
    }
    registry = ModelRegistry(Settings(models=models), GatewayMetrics())
    try:
        assert isinstance(registry.get("echo"), EchoModel)
        whole, streamed = registry.get("a"), registry.get("b")
        assert isinstance(whole, UpstreamModel) and isinstance(streamed, UpstreamModel)
        assert (whole.name, whole.streaming, streamed.streaming) == ("a", False, True)
        assert registry.names() == ["echo", "a", "b"]
    finally:
        await registry.aclose()


def test_an_unknown_provider_is_a_configuration_error() -> None:
    with pytest.raises(ConfigError, match="Unknown model provider 'magic'; use one of openai"):
        load_provider("magic")  # type: ignore[arg-type]


async def test_the_context_gives_each_model_its_cap_and_the_retry_policy() -> None:
    settings = Settings(upstream_max_concurrent=3, upstream_first_token_timeout=0.01)
    context = ProviderContext.of(settings, GatewayMetrics(), max_retries=0)
    assert context.policy.max_retries == 0
    assert context.bounds.max_body_bytes == settings.upstream_max_body_bytes
    for config, limit in ((ModelConfig("m", max_concurrent=2), 2), (ModelConfig("n"), 3)):
        gate = context.gate(config)
        async with contextlib.AsyncExitStack() as held:
            for _ in range(limit):
                await held.enter_async_context(gate.slot())
            with pytest.raises(RateLimited, match=f"limit of {limit} requests"):
                await held.enter_async_context(gate.slot())


def test_a_gateway_serving_only_echo_imports_no_sdk() -> None:
    code = (
        "import sys\n"
        "from gateway.config import Settings\n"
        "from gateway.llm.registry import ModelRegistry\n"
        "from gateway.obs.metrics import GatewayMetrics\n"
        "ModelRegistry(Settings(), GatewayMetrics())\n"
        "print(sorted(m for m in ('openai', 'aiohttp', 'httpx2') if m in sys.modules))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == "[]"

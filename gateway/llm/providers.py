"""Providers by name: the registry of model implementations, and what each is given.

`PROVIDERS` maps each name a model's `provider` may take (`config.ProviderName`) to the
`module:attribute` path of its provider class, imported only when a configured model uses it
(uvicorn's `config.py` style), so the registry is one line per provider and a gateway that
serves only `echo` never imports an SDK. A provider is built once per process with a
`ProviderContext` and makes every model of its kind; an upstream API's provider wraps its
dialect in the shared upstream policy with `ProviderContext.upstream`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol, cast

from gateway.config import ConfigError, ModelConfig, ProviderName, Settings
from gateway.importer import import_from_string
from gateway.llm.base import ChatModel
from gateway.llm.bounds import UpstreamBounds
from gateway.llm.dialect import Dialect
from gateway.llm.gate import ConcurrencyGate
from gateway.llm.retry import RetryPolicy
from gateway.llm.upstream import UpstreamModel
from gateway.obs.metrics import GatewayMetrics

PROVIDERS: Mapping[ProviderName, str] = {
    "openai": "gateway.llm.openai.dialect:OpenAIProvider",
    "echo": "gateway.llm.echo:EchoProvider",
}


class Provider(Protocol):
    def model(self, config: ModelConfig) -> ChatModel:
        """The model `config` describes; called once per configured model, at startup."""
        ...

    async def aclose(self) -> None:
        """Release what the provider's models share (connections); called once at shutdown."""
        ...


@dataclass(frozen=True, slots=True)
class ProviderContext:
    """What the gateway gives every provider: its settings, metrics, the retry policy and
    the bounds of an upstream response."""

    settings: Settings
    metrics: GatewayMetrics
    policy: RetryPolicy
    bounds: UpstreamBounds

    @classmethod
    def of(
        cls, settings: Settings, metrics: GatewayMetrics, max_retries: int | None = None
    ) -> ProviderContext:
        """`max_retries` overrides UPSTREAM_MAX_RETRIES (tests that want failures at once)."""
        retries = settings.upstream_max_retries if max_retries is None else max_retries
        policy = RetryPolicy(retries, settings.upstream_retry_max_wait)
        return cls(settings, metrics, policy, upstream_bounds(settings))

    def gate(self, config: ModelConfig) -> ConcurrencyGate:
        """A model's cap on requests in flight. A request past it waits for a slot as long
        as it would wait for a first token."""
        limit = config.max_concurrent or self.settings.upstream_max_concurrent
        return ConcurrencyGate(config.name, limit, self.settings.upstream_first_token_timeout)

    def upstream(self, config: ModelConfig, dialect: Dialect) -> ChatModel:
        """The model behind an upstream API: the gateway's policy around the API's dialect."""
        return UpstreamModel(
            config,
            dialect,
            self.gate(config),
            self.policy,
            self.settings.upstream_first_token_timeout,
            self.metrics,
            read_timeout=self.settings.upstream_read_timeout,
        )


ProviderFactory = Callable[[ProviderContext], Provider]


def load_provider(name: ProviderName) -> ProviderFactory:
    """The provider class registered under `name`, imported now."""
    path = PROVIDERS.get(name)
    if path is None:
        known = ", ".join(PROVIDERS)
        raise ConfigError(f"Unknown model provider '{name}'; use one of {known}.")
    return cast(ProviderFactory, import_from_string(path))


def upstream_bounds(settings: Settings) -> UpstreamBounds:
    return UpstreamBounds(
        max_line_bytes=settings.upstream_max_line_bytes,
        max_body_bytes=settings.upstream_max_body_bytes,
        max_tool_calls=settings.upstream_max_tool_calls,
        max_tool_argument_bytes=settings.upstream_max_tool_argument_bytes,
    )

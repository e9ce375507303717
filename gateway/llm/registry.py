"""The configured models, built once at startup by their providers (`gateway.llm.providers`):
one provider per name in use, sharing what its models may share (an SDK client per upstream),
one concurrency gate per model."""

from __future__ import annotations

from collections.abc import Mapping

from gateway.config import Settings
from gateway.llm.base import ChatModel
from gateway.llm.providers import Provider, ProviderContext, load_provider
from gateway.obs.metrics import GatewayMetrics


class ModelRegistry:
    def __init__(
        self, settings: Settings, metrics: GatewayMetrics, max_retries: int | None = None
    ) -> None:
        """`max_retries` overrides UPSTREAM_MAX_RETRIES (tests that want failures at once)."""
        context = ProviderContext.of(settings, metrics, max_retries)
        providers: dict[str, Provider] = {}
        models: dict[str, ChatModel] = {}
        for name, config in settings.models.items():
            if config.provider not in providers:
                providers[config.provider] = load_provider(config.provider)(context)
            models[name] = providers[config.provider].model(config)
        self._models: Mapping[str, ChatModel] = models
        self._providers = list(providers.values())

    def get(self, name: str) -> ChatModel | None:
        return self._models.get(name)

    def names(self) -> list[str]:
        return list(self._models)

    async def aclose(self) -> None:
        for provider in self._providers:
            await provider.aclose()

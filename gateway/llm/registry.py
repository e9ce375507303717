"""Build the configured models once at startup; one `AsyncOpenAI` client per upstream, one
concurrency gate per model."""

from __future__ import annotations

from collections.abc import Mapping

import openai

from gateway.config import ModelConfig, Secret, Settings
from gateway.llm.base import ChatModel
from gateway.llm.bounds import UpstreamBounds
from gateway.llm.echo import EchoModel
from gateway.llm.gate import ConcurrencyGate
from gateway.llm.openai.dialect import OpenAIDialect, make_client
from gateway.llm.retry import RetryPolicy
from gateway.llm.upstream import UpstreamModel
from gateway.metrics import GatewayMetrics


class ModelRegistry:
    def __init__(
        self, settings: Settings, metrics: GatewayMetrics, max_retries: int | None = None
    ) -> None:
        """`max_retries` overrides UPSTREAM_MAX_RETRIES (tests that want failures at once)."""
        retries = settings.upstream_max_retries if max_retries is None else max_retries
        policy = RetryPolicy(retries, settings.upstream_retry_max_wait)
        bounds = upstream_bounds(settings)
        clients: dict[tuple[str | None, Secret | None], openai.AsyncOpenAI] = {}
        models: dict[str, ChatModel] = {}
        for name, config in settings.models.items():
            gate = _gate(config, settings)
            if config.provider == "echo":
                models[name] = EchoModel(
                    name, settings.echo_delay_ms, gate, settings.echo_max_words
                )
                continue
            key = (config.base_url, config.api_key)
            if key not in clients:
                clients[key] = make_client(
                    config,
                    settings.upstream_connect_timeout,
                    settings.upstream_read_timeout,
                    bounds,
                )
            models[name] = UpstreamModel(
                config,
                OpenAIDialect(config, clients[key], bounds),
                gate,
                policy,
                settings.upstream_first_token_timeout,
                metrics,
                read_timeout=settings.upstream_read_timeout,
            )
        self._models: Mapping[str, ChatModel] = models
        self._clients = list(clients.values())

    def get(self, name: str) -> ChatModel | None:
        return self._models.get(name)

    def names(self) -> list[str]:
        return list(self._models)

    async def aclose(self) -> None:
        for client in self._clients:
            await client.close()


def _gate(config: ModelConfig, settings: Settings) -> ConcurrencyGate:
    """A request past the cap waits for a slot as long as it would wait for a first token."""
    limit = config.max_concurrent or settings.upstream_max_concurrent
    return ConcurrencyGate(config.name, limit, settings.upstream_first_token_timeout)


def upstream_bounds(settings: Settings) -> UpstreamBounds:
    return UpstreamBounds(
        max_line_bytes=settings.upstream_max_line_bytes,
        max_body_bytes=settings.upstream_max_body_bytes,
        max_tool_calls=settings.upstream_max_tool_calls,
        max_tool_argument_bytes=settings.upstream_max_tool_argument_bytes,
    )

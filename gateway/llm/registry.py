"""Build the configured models once at startup; one `AsyncOpenAI` client per upstream."""

from __future__ import annotations

from collections.abc import Mapping

import openai

from gateway.config import Secret, Settings
from gateway.llm.base import ChatModel
from gateway.llm.echo import EchoModel
from gateway.llm.openai_model import OpenAIModel, make_client


class ModelRegistry:
    def __init__(self, settings: Settings, max_retries: int = 2) -> None:
        clients: dict[tuple[str | None, Secret | None], openai.AsyncOpenAI] = {}
        models: dict[str, ChatModel] = {}
        for name, config in settings.models.items():
            if config.provider == "echo":
                models[name] = EchoModel(name, settings.echo_delay_ms)
                continue
            key = (config.base_url, config.api_key)
            if key not in clients:
                clients[key] = make_client(
                    config,
                    settings.upstream_connect_timeout,
                    settings.upstream_read_timeout,
                    max_retries,
                )
            models[name] = OpenAIModel(config, clients[key])
        self._models: Mapping[str, ChatModel] = models
        self._clients = list(clients.values())

    def get(self, name: str) -> ChatModel | None:
        return self._models.get(name)

    def names(self) -> list[str]:
        return list(self._models)

    async def aclose(self) -> None:
        for client in self._clients:
            await client.close()

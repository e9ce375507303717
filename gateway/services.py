"""The gateway's long-lived parts, opened once per process and closed in order."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from redis.asyncio import Redis

from gateway.agents.registry import build_agents
from gateway.auth import TokenVerifier
from gateway.chat import ChatService
from gateway.config import Settings
from gateway.generations import GenerationRegistry
from gateway.llm.registry import ModelRegistry
from gateway.store.conversations import ConversationStore
from gateway.store.embedded import EmbeddedRedis
from gateway.store.keys import Keys

log = logging.getLogger("gateway")


@dataclass(frozen=True, slots=True)
class Services:
    settings: Settings
    verifier: TokenVerifier
    redis: Redis
    chat: ChatService


@asynccontextmanager
async def open_services(settings: Settings, upstream_retries: int = 2) -> AsyncIterator[Services]:
    embedded = None
    redis_url = settings.redis_url
    if redis_url is None:
        embedded = EmbeddedRedis(settings.data_dir)
        redis_url = embedded.start()
    redis = Redis.from_url(redis_url, decode_responses=True, health_check_interval=30)
    models = ModelRegistry(settings, max_retries=upstream_retries)
    generations = GenerationRegistry()
    conversations = ConversationStore(
        redis, Keys(settings.redis_prefix), settings.conversation_ttl, settings.max_stored_turns
    )
    chat = ChatService(settings, models, build_agents(settings), conversations, generations)
    try:
        yield Services(settings, TokenVerifier(settings), redis, chat)
    finally:
        await generations.shutdown()
        await models.aclose()
        await redis.aclose()
        if embedded is not None:
            embedded.stop()

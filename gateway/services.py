"""The gateway's long-lived parts, opened once per process and closed in order."""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import signal
import socket
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from types import FrameType
from typing import Any

from redis.asyncio import BlockingConnectionPool, Redis

from gateway.agents.registry import build_agents
from gateway.auth import TokenVerifier
from gateway.chat import ChatService
from gateway.config import Settings
from gateway.conversations import ConversationService
from gateway.generations import GenerationRegistry
from gateway.llm.registry import ModelRegistry
from gateway.store.conversations import ConversationStore
from gateway.store.embedded import EmbeddedRedis
from gateway.store.keys import Keys
from gateway.store.log_writer import LogWriter
from gateway.store.logs import GenerationLog

log = logging.getLogger("gateway")


@dataclass(frozen=True, slots=True)
class Services:
    settings: Settings
    verifier: TokenVerifier
    redis: Redis
    chat: ChatService
    generations: GenerationRegistry
    conversations: ConversationService


@asynccontextmanager
async def open_services(settings: Settings, upstream_retries: int = 2) -> AsyncIterator[Services]:
    embedded = None
    redis_url = settings.redis_url
    if redis_url is None:
        embedded = EmbeddedRedis(settings.data_dir)
        redis_url = embedded.start()
    # A blocking pool: a burst of requests waits briefly for a connection instead of failing.
    pool = BlockingConnectionPool.from_url(
        redis_url,
        decode_responses=True,
        health_check_interval=30,
        max_connections=settings.redis_max_connections,
        timeout=settings.redis_pool_timeout,
    )
    redis = Redis.from_pool(pool)  # the client owns the pool and closes it
    keys = Keys(settings.redis_prefix)
    models = ModelRegistry(settings, max_retries=upstream_retries)
    instance = _instance_id()
    generation_log = GenerationLog(
        redis,
        keys,
        ended_ttl=settings.generation_ttl,
        max_events=settings.max_log_events,
        lease_ttl=settings.lease_ttl,
        instance=instance,
    )
    writer = LogWriter(generation_log, settings.log_flush_ms)
    generations = GenerationRegistry(
        generation_log, writer, settings.lease_ttl, keys.cancel_channel()
    )
    conversations = ConversationStore(
        redis,
        keys,
        settings.conversation_ttl,
        settings.max_stored_turns,
        generation_retention=generation_log.retention,
    )
    chat = ChatService(
        settings, models, build_agents(settings), conversations, generation_log, generations
    )
    # A delete waits this long for a cancelled generation to end: at once, or once its lease
    # lapses if its process died.
    stop_timeout = 2 * settings.lease_ttl + 1
    conversation_service = ConversationService(chat, conversations, generation_log, stop_timeout)
    writer.start()
    generations.start()
    restore_signals = _drain_on_signal(generations.begin_drain)
    try:
        yield Services(
            settings, TokenVerifier(settings), redis, chat, generations, conversation_service
        )
    finally:
        restore_signals()
        await generations.shutdown(settings.shutdown_drain_seconds)
        await writer.close()
        await models.aclose()
        await redis.aclose()
        if embedded is not None:
            embedded.stop()


def _instance_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


def _drain_on_signal(begin_drain: Callable[[], None]) -> Callable[[], None]:
    """On SIGTERM or SIGINT, start draining at once (new work is refused and SSE streams end
    so their clients resume elsewhere), then let the server's own handler run.

    uvicorn installs its handlers with signal.signal before the app starts, so we wrap them;
    only the main thread may do so (a server in a test thread simply skips this)."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    loop = asyncio.get_running_loop()
    previous: dict[int, Any] = {
        sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)
    }

    def handle(sig: int, frame: FrameType | None) -> None:
        loop.call_soon_threadsafe(begin_drain)
        handler = previous[sig]
        if callable(handler):
            handler(sig, frame)

    for sig in previous:
        signal.signal(sig, handle)

    def restore() -> None:
        for sig, handler in previous.items():
            signal.signal(sig, handler)

    return restore

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

import httpx2
import redis.exceptions
from redis.asyncio import BlockingConnectionPool, Redis, RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff

from gateway.agents.registry import build_agents
from gateway.auth.tokens import TokenVerifier
from gateway.config import Settings
from gateway.config.rules import webhook_key
from gateway.cookies import no_cookies
from gateway.core.activity import ActivityService
from gateway.core.chat import ChatService
from gateway.core.conversations import ConversationService
from gateway.core.running import GenerationRegistry
from gateway.core.webhooks import Webhooks
from gateway.llm.registry import ModelRegistry
from gateway.obs.metrics import GatewayMetrics
from gateway.store.activity import ActivityLog
from gateway.store.activity_hub import CLUSTER_SWEEP, ActivityHub
from gateway.store.client import StoreClient, cluster_client, ping
from gateway.store.conversations import ConversationStore
from gateway.store.embedded import EmbeddedRedis
from gateway.store.keys import Keys
from gateway.store.limits import LimitStore
from gateway.store.log_hub import LogHub, LogReads
from gateway.store.log_reads import BLOCK_MS, BlockingReads, PolledReads
from gateway.store.log_writer import LogWriter
from gateway.store.logs import GenerationLog
from gateway.store.packing import connection_class
from gateway.store.webhooks import WebhookQueue
from gateway.tools.pool import WorkerPool

log = logging.getLogger("gateway")

# How long stopping may take past SHUTDOWN_DRAIN_SECONDS: interrupted generations store
# their ends, the log writer flushes, connections close.
CLOSE_GRACE_SECONDS = 5.0


@dataclass(frozen=True, slots=True)
class Services:
    settings: Settings
    verifier: TokenVerifier
    redis: StoreClient
    chat: ChatService
    generations: GenerationRegistry
    conversations: ConversationService
    limits: LimitStore
    metrics: GatewayMetrics
    activity: ActivityService

    async def store_ready(self) -> bool:
        return await ping(self.redis)


@asynccontextmanager
async def open_services(
    settings: Settings,
    upstream_retries: int | None = None,
    metrics: GatewayMetrics | None = None,
) -> AsyncIterator[Services]:
    embedded = None
    redis_url = settings.redis_url
    if redis_url is None:
        embedded = EmbeddedRedis(settings.data_dir)
        redis_url = embedded.start()
    redis = open_client(settings, redis_url)
    keys = Keys(settings.redis_prefix)
    metrics = metrics or GatewayMetrics()
    models = ModelRegistry(settings, metrics, max_retries=upstream_retries)
    instance = _instance_id()
    generation_log = GenerationLog(
        redis,
        keys,
        ended_ttl=settings.generation_ttl,
        max_events=settings.max_log_events,
        lease_ttl=settings.lease_ttl,
        instance=instance,
    )
    writer = LogWriter(
        generation_log,
        settings.log_flush_ms,
        # On one server, a connection of its own: a write is timed as a whole, not per reply.
        own=None if isinstance(redis, RedisCluster) else _own_connection(settings, redis_url, None),
        deadline=settings.redis_socket_timeout,
    )
    generations = GenerationRegistry(generation_log, writer, settings.lease_ttl, metrics)
    conversations = ConversationStore(
        redis,
        keys,
        settings.conversation_ttl,
        settings.max_stored_turns,
        generation_retention=generation_log.retention,
        history_bytes=settings.conversation_page_bytes,
        max_stored_messages=settings.max_stored_messages,
        max_siblings=settings.max_siblings,
    )
    limits = LimitStore(
        redis,
        keys,
        generation_slot_ttl=settings.generation_ttl,
        storage_ttl=settings.conversation_ttl,
    )
    hub = LogHub(log_reads(settings, redis_url, redis, keys, instance))
    webhook_client, webhooks = open_webhooks(settings, redis, keys, metrics)
    activity_log = ActivityLog(redis, keys, settings.activity_ttl)
    sweep = CLUSTER_SWEEP if isinstance(redis, RedisCluster) else None
    activity = ActivityService(activity_log, ActivityHub(activity_log, sweep), webhooks)
    # Its workers start at the first tool call, so nothing is left to stop if opening fails.
    tools = WorkerPool(settings.tool_workers, settings.tool_memory_mb)
    chat = ChatService(
        settings,
        models,
        build_agents(settings, tools),
        conversations,
        generation_log,
        generations,
        limits,
        hub,
        activity,
    )
    # A delete waits this long for a cancelled generation to end: at once, or once its lease
    # lapses if its process died.
    stop_timeout = 2 * settings.lease_ttl + 1
    conversation_service = ConversationService(
        chat,
        conversations,
        generation_log,
        limits,
        stop_timeout,
        settings.conversation_page_bytes,
        settings,
    )
    writer.start()
    generations.start()
    hub.start()
    activity.hub.start()
    if webhooks is not None:
        webhooks.start()
    verifier = TokenVerifier(settings)  # with JWT_JWKS_URL, it owns an HTTP client
    restore_signals = _drain_on_signal(generations.begin_drain)
    try:
        yield Services(
            settings,
            verifier,
            redis,
            chat,
            generations,
            conversation_service,
            limits,
            metrics,
            activity,
        )
    finally:
        restore_signals()
        try:
            # A process asked to stop must stop: past the drain, storing the answers its
            # clients saw end gets SHUTDOWN_STORE_SECONDS (the store may be unreachable), and
            # closing the rest CLOSE_GRACE_SECONDS, whatever Redis or the upstream do.
            bound = settings.shutdown_drain_seconds + settings.shutdown_store_seconds
            async with asyncio.timeout(bound + CLOSE_GRACE_SECONDS):
                await generations.shutdown(settings.shutdown_drain_seconds)
                await verifier.aclose()
                await writer.close(within=settings.shutdown_store_seconds)
                await generations.stop()
                await hub.close()
                await activity.hub.close()
                if webhooks is not None:
                    await webhooks.close()
                if webhook_client is not None:
                    await webhook_client.aclose()
                await limits.close()
                await models.aclose()
                await redis.aclose()
        except TimeoutError:
            log.error("shutdown took longer than it may; exiting")
        finally:
            await tools.aclose()  # after the generations, which may still run tools
            if embedded is not None:
                embedded.stop()


def open_client(settings: Settings, redis_url: str) -> StoreClient:
    """A client for one Redis server, or for a Redis Cluster reached through one of its
    nodes (REDIS_CLUSTER): the cluster client learns the others and follows slots as they
    move."""
    if settings.redis_cluster:
        # One pool per node, of up to REDIS_MAX_CONNECTIONS; the cluster client has no
        # waiting pool, so past the cap a command fails (unavailable) instead of waiting.
        return cluster_client(
            redis_url,
            decode_responses=True,
            max_connections=settings.redis_max_connections,
            **redis_options(settings, redis_url),
        )
    # A blocking pool: a burst of requests waits briefly for a connection instead of failing.
    pool = BlockingConnectionPool.from_url(
        redis_url,
        connection_class=connection_class(redis_url),
        decode_responses=True,
        max_connections=settings.redis_max_connections,
        timeout=settings.redis_pool_timeout,
        **redis_options(settings, redis_url),
    )
    return Redis.from_pool(pool)  # the client owns the pool and closes it


def log_reads(
    settings: Settings, redis_url: str, redis: StoreClient, keys: Keys, instance: str
) -> LogReads:
    """How the process reads the logs of the generations it follows: on one server, blocked
    on a connection of its own, outside the pool; on a Redis Cluster, by polling through the
    cluster client (see `gateway/store/log_reads.py`)."""
    if isinstance(redis, RedisCluster):
        return PolledReads(redis, keys, settings.log_flush_ms / 1000)
    # It blocks in XREAD for up to BLOCK_MS: its replies may take that much longer.
    timeout = settings.redis_socket_timeout + BLOCK_MS / 1000
    return BlockingReads(
        _own_connection(settings, redis_url, timeout), redis, keys, keys.log_wake(instance)
    )


def open_webhooks(
    settings: Settings, redis: StoreClient, keys: Keys, metrics: GatewayMetrics
) -> tuple[httpx2.AsyncClient | None, Webhooks | None]:
    """With WEBHOOK_URL, the sender of webhooks and its HTTP client (no redirects followed, no
    cookies kept, a bounded time per attempt)."""
    url, secret = settings.webhook_url, settings.webhook_secret
    if url is None or secret is None:
        return None, None
    timeout = settings.webhook_timeout
    client = httpx2.AsyncClient(timeout=timeout, follow_redirects=False, cookies=no_cookies())

    async def post(body: str, headers: dict[str, str]) -> int:
        # The whole attempt within WEBHOOK_TIMEOUT (httpx times each read, which a receiver
        # dripping bytes resets), and the answer's body never read: only its status counts,
        # so an endless body costs nothing.
        async with (
            asyncio.timeout(timeout),
            client.stream("POST", url, content=body.encode(), headers=headers) as response,
        ):
            return response.status_code

    queue = WebhookQueue(redis, keys, watch_ttl=settings.generation_timeout + settings.lease_ttl)
    sender = Webhooks(
        queue,
        post,
        webhook_key(secret.reveal()),
        settings.webhook_when,
        settings.webhook_include_text,
        settings.webhook_timeout,
        metrics,
    )
    return client, sender


def _own_connection(settings: Settings, redis_url: str, socket_timeout: float | None) -> Redis:
    """A connection outside the pool, for a reader that blocks (XREAD BLOCK) or the log
    writer; `socket_timeout` for each reply (None: its user times its calls)."""
    options = redis_options(settings, redis_url)
    options["socket_timeout"] = socket_timeout
    return Redis.from_url(
        redis_url,
        connection_class=connection_class(redis_url),
        decode_responses=True,
        single_connection_client=True,
        **options,
    )


def redis_options(settings: Settings, redis_url: str) -> dict[str, Any]:
    """How the client meets a failing Redis: a stalled server times out instead of hanging
    (SIGSTOP, a partition), a refused or reset connection is retried twice with a short
    backoff (a restart, a failover), and an idle connection is checked before reuse.
    Timeouts are not retried: a command that timed out may still run, and a stalled server
    would only make the caller wait twice as long. (The cluster client takes only the number
    of retries from this policy: it retries timeouts too, each time after asking the cluster
    for its nodes again, since a node that failed over looks like one that stalls.)"""
    options: dict[str, Any] = {
        "socket_timeout": settings.redis_socket_timeout,
        "socket_connect_timeout": settings.redis_connect_timeout,
        "retry": Retry(
            ExponentialWithJitterBackoff(base=0.05, cap=0.5),
            retries=2,
            supported_errors=(redis.exceptions.ConnectionError,),
        ),
        "health_check_interval": 10,
    }
    if not redis_url.startswith("unix:"):
        options["socket_keepalive"] = True  # TCP only: a unix socket has no keep-alive
    return options


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

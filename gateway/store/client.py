"""The two kinds of Redis client the store works with: one server, or a Redis Cluster.

Every store class takes a `StoreClient`. Their Lua scripts only name keys that share one hash
tag, and their pipelines are not transactions, so the same code runs on both: redis-py's
cluster client sends each command of a pipeline to the node that owns its slot.

That holds because every command the store sends names its keys where the client can read
them (fixed key positions; EVAL and EVALSHA by their key count). For a command whose keys it
cannot place (XREAD, ZUNIONSTORE, SORT...) the cluster client first asks its default node
(COMMAND GETKEYS), which is not the key's node and may be one that has failed: don't send
such commands (see docs/deployment.md, "Key lookups").
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from types import TracebackType
from typing import Any

from redis._parsers import AsyncCommandsParser
from redis.asyncio import Redis, RedisCluster
from redis.asyncio.client import Pipeline, PubSub
from redis.asyncio.cluster import ClusterNode, ClusterPipeline
from redis.exceptions import TimeoutError as RedisTimeoutError

# Loaded with every client, so that its failures read as an outage (store_error).
import gateway.store.errors  # noqa: F401

StoreClient = Redis | RedisCluster
StorePipeline = Pipeline | ClusterPipeline

# A listener pings its node after this many seconds without a message: a subscribed
# connection otherwise waits for good on a node that went silent without closing it.
LISTEN_CHECK = 1.0


def cluster_client(url: str, **options: Any) -> RedisCluster:
    """A Redis Cluster client reached through the node at `url`, which asks a node for the
    command table once (see `CommandTable`)."""
    client = RedisCluster.from_url(url, **options)
    client.commands_parser = CommandTable()
    return client


class CommandTable(AsyncCommandsParser):
    """The commands' key positions, read from a node (`COMMAND`) the first time the client
    learns the cluster, and kept. redis-py reads them again each time it learns the cluster,
    from its default node, which after a failure may be the primary that stopped answering:
    learning the cluster then fails until a replica has taken over, and so does every command
    of the process, on every node, lease renewals included."""

    async def initialize(self, node: ClusterNode | None = None) -> None:
        if node is not None:
            self.node = node
        if not self.commands:
            await super().initialize()


async def ping(client: StoreClient) -> bool:
    """True when the store answers: on a cluster, every primary must (each owns slots that a
    request may need)."""
    if isinstance(client, RedisCluster):
        return bool(await client.ping(target_nodes=RedisCluster.PRIMARIES))
    return bool(await client.ping())


async def open_pubsub(client: StoreClient) -> Listener:
    """A pub/sub connection that notices when its node goes silent (see `Listener`).

    A cluster client picks the node by the channel's slot from the slots it has learnt, so it
    learns them first: lazily the first time (at its first command), and again each time
    after that, since a listener is opened again when its node failed and the slot may have
    moved to a replica since (the client's other commands, which would refresh the slots
    when they fail, may not have run)."""
    if isinstance(client, RedisCluster):
        if client.get_default_node() is None:
            await client.initialize()
        else:
            await client.nodes_manager.initialize()
    return Listener(client.pubsub(), check=LISTEN_CHECK, deadline=_socket_timeout(client))


async def hear(client: StoreClient, channel: str) -> AsyncIterator[str | None]:
    """The messages of one channel as they come, after None once it is joined (from then on
    nothing published there is missed). A dropped channel ends the iteration with its error;
    the caller joins again."""
    async with await open_pubsub(client) as pubsub:
        await pubsub.subscribe(channel)
        async for message in pubsub.listen():
            if message["type"] == "subscribe":
                yield None
            elif message["type"] == "message":
                yield str(message["data"])


class Listener:
    """A subscription whose `listen` raises redis's TimeoutError when the node stops
    answering: after `check` seconds without a message it pings the node, and a pong that
    takes longer than `deadline` means the node went silent (a frozen host, a partition),
    which a subscribed connection, reading with no timeout, would otherwise wait on for
    good. Every message is handed on, pongs too: between two, a caller may use the
    connection itself (at least every `check` seconds while the channel is quiet)."""

    def __init__(self, pubsub: PubSub, check: float, deadline: float) -> None:
        self._pubsub = pubsub
        self._check = check
        self._deadline = deadline

    async def __aenter__(self) -> Listener:
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        close: Callable[[], Awaitable[None]] = self._pubsub.aclose  # untyped in older redis-py
        await close()

    async def subscribe(self, *channels: str) -> None:
        await self._pubsub.subscribe(*channels)

    async def unsubscribe(self, *channels: str) -> None:
        await self._pubsub.unsubscribe(*channels)

    async def listen(self) -> AsyncIterator[dict[str, Any]]:
        loop = asyncio.get_running_loop()
        pinged: float | None = None
        while True:
            message = await self._pubsub.get_message(timeout=self._check)
            if message is not None:
                pinged = None  # the node answers
                yield message
            elif pinged is None:
                await self._pubsub.ping()
                pinged = loop.time()
            elif loop.time() - pinged > self._deadline:
                raise RedisTimeoutError("the node of a pub/sub connection stopped answering")


def _socket_timeout(client: StoreClient) -> float:
    """How long the client waits for any reply (REDIS_SOCKET_TIMEOUT)."""
    if isinstance(client, RedisCluster):
        kwargs = client.get_connection_kwargs()
    else:
        kwargs = client.connection_pool.connection_kwargs
    return float(kwargs.get("socket_timeout") or 5.0)

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

from redis.asyncio import Redis, RedisCluster
from redis.asyncio.client import Pipeline, PubSub
from redis.asyncio.cluster import ClusterPipeline

StoreClient = Redis | RedisCluster
StorePipeline = Pipeline | ClusterPipeline


async def ping(client: StoreClient) -> bool:
    """True when the store answers: on a cluster, every primary must (each owns slots that a
    request may need)."""
    if isinstance(client, RedisCluster):
        return bool(await client.ping(target_nodes=RedisCluster.PRIMARIES))
    return bool(await client.ping())


async def open_pubsub(client: StoreClient) -> PubSub:
    """A pub/sub connection. A cluster client picks its node by the channel's slot, so it must
    have learnt the cluster's slots first (it does so lazily, at its first command)."""
    if isinstance(client, RedisCluster):
        await client.initialize()
    return client.pubsub()

"""Redis failures, translated at the store's edge into the gateway's own errors."""

from __future__ import annotations

import redis.exceptions
from redis.exceptions import RedisClusterException

from gateway.errors import RequestError, Unavailable

# ConnectionError includes LOADING (a restarted Redis reading its data back) and a cluster
# node's connection cap; READONLY is a replica answering during a failover. On a Redis
# Cluster, CLUSTERDOWN, TRYAGAIN (keys moving between nodes) and a slot no node serves are
# the same passing trouble. All pass once Redis is back.
UNREACHABLE: tuple[type[Exception], ...] = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    redis.exceptions.ReadOnlyError,
    redis.exceptions.ClusterDownError,
    redis.exceptions.TryAgainError,
    redis.exceptions.SlotNotCoveredError,
)


def unreachable(exc: BaseException) -> bool:
    """Whether `exc` means Redis cannot be reached right now, which passes once it is back.
    A Redis Cluster client that cannot learn the cluster from any node (every node down, or
    the network to them) raises a RedisClusterException caused by the last node's failure;
    the same exception without such a cause is a command no node can take (a bug), not this."""
    if isinstance(exc, UNREACHABLE):
        return True
    return isinstance(exc, RedisClusterException) and isinstance(exc.__cause__, UNREACHABLE)


def store_error(exc: BaseException) -> RequestError | None:
    """Unavailable (503, retryable) when Redis cannot be reached; None for anything else."""
    if unreachable(exc):
        return Unavailable("The gateway cannot reach its store right now; retry in a moment.")
    return None

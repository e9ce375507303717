"""Redis failures, translated at the store's edge into the gateway's own errors."""

from __future__ import annotations

import redis.exceptions

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


def store_error(exc: BaseException) -> RequestError | None:
    """Unavailable (503, retryable) when Redis cannot be reached; None for anything else."""
    if isinstance(exc, UNREACHABLE):
        return Unavailable("The gateway cannot reach its store right now; retry in a moment.")
    return None

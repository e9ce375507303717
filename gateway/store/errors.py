"""The Redis failures that mean the store cannot be reached right now, named for
`gateway.store.unreachable` as this module loads (every Redis client module imports it)."""

from __future__ import annotations

import redis.exceptions

from gateway.store.unreachable import count_as_unreachable

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
count_as_unreachable(*UNREACHABLE)

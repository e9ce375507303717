"""The Redis failures that mean the store cannot be reached right now, named for
`gateway.store.unreachable` as this module loads (every Redis client module imports it)."""

from __future__ import annotations

import redis.exceptions
from redis.exceptions import RedisClusterException

from gateway.store.unreachable import count_as_unreachable, count_as_unreachable_when_caused

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
# A Redis Cluster client that cannot learn the cluster from any node (every node down, or the
# network to them) raises a RedisClusterException caused by the last node's failure; the same
# exception without such a cause is a command no node can take (a bug), not an outage.
count_as_unreachable_when_caused(RedisClusterException)

"""Webhook deliveries queued in Redis, so that they survive a restart and any instance sends
them: a hash of records by `webhook-id` and a sorted set of when each is due, both in one slot
(`webhooks:{q}`). A sender claims what is due by pushing its due time a lease ahead (one Lua
script, Redis's clock), so a delivery in flight is not sent twice at once, and one whose
sender died is taken over when its lease lapses: at least once, never lost.

Also the watchers of a generation, by which an unwatched end is told from a watched one.
"""

from __future__ import annotations

import json
from typing import Any, cast

from gateway.store.client import StoreClient, StorePipeline
from gateway.store.keys import Keys
from gateway.store.lua import Lua

# KEYS: due, records. ARGV: lease_ms, count.
# Returns {id, record, id, record, ...} of what is due, each now due again after the lease.
_CLAIM = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local found = {}
for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, ARGV[2])) do
  local record = redis.call('HGET', KEYS[2], id)
  if record then
    redis.call('ZADD', KEYS[1], now + tonumber(ARGV[1]), id)
    found[#found + 1] = id
    found[#found + 1] = record
  else
    redis.call('ZREM', KEYS[1], id)
  end
end
return found
"""

# KEYS: due, records. ARGV: id, record, delay_ms. The next attempt, `delay_ms` from now.
_LATER = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[1])
return 1
"""


class WebhookQueue:
    def __init__(self, redis: StoreClient, keys: Keys, watch_ttl: float) -> None:
        """`watch_ttl`: how long a watcher's mark lasts (no generation runs longer)."""
        self._redis = redis
        self._keys = keys
        self._watch_ttl_ms = int(watch_ttl * 1000)
        self._claim = Lua(redis, _CLAIM)
        self._later = Lua(redis, _LATER)

    def queue(self, pipe: StorePipeline, message_id: str, record: dict[str, Any]) -> None:
        """Add a delivery, due at once, in the caller's round trip (a turn's end)."""
        pipe.hset(self._keys.webhooks(), message_id, json.dumps(record))
        pipe.zadd(self._keys.webhooks_due(), {message_id: 0})

    async def claim(self, lease: float, count: int) -> list[tuple[str, dict[str, Any]]]:
        found = await self._claim(
            [self._keys.webhooks_due(), self._keys.webhooks()], [int(lease * 1000), count]
        )
        pairs = cast(list[str], found)
        return [(pairs[i], json.loads(pairs[i + 1])) for i in range(0, len(pairs), 2)]

    async def later(self, message_id: str, record: dict[str, Any], delay: float) -> None:
        await self._later(
            [self._keys.webhooks_due(), self._keys.webhooks()],
            [message_id, json.dumps(record), int(delay * 1000)],
        )

    async def forget(self, message_id: str) -> None:
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.zrem(self._keys.webhooks_due(), message_id)
            pipe.hdel(self._keys.webhooks(), message_id)
            await pipe.execute()

    # Watchers.

    async def watch(self, generation_id: str, follow_id: str) -> None:
        key = self._keys.generation_watchers(generation_id)
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.zadd(key, {follow_id: 0})
            pipe.pexpire(key, self._watch_ttl_ms)
            await pipe.execute()

    async def unwatch(self, generation_id: str, follow_id: str) -> None:
        await self._redis.zrem(self._keys.generation_watchers(generation_id), follow_id)

    async def watched(self, generation_id: str) -> bool:
        return bool(await self._redis.zcard(self._keys.generation_watchers(generation_id)))

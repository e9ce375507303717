"""Per-user limits counted in Redis, so they hold across every instance.

A user's counters share the hash tag `{sub}` (one Cluster slot), so one Lua script checks
every limit and takes what a turn needs atomically: a refused turn takes nothing. Time comes
from Redis (`TIME`), so instances with skewed clocks agree.

- requests per minute: GCRA (one key holding the theoretical arrival time); a burst of up to
  the whole minute's allowance is let through, then one request per interval.
- concurrent generations and open connections: sorted sets of ids scored by when the entry
  lapses. A generation's entry is removed in the same round trip that stores its answer; an
  entry whose process died is swept when the user reaches the limit. Connections are
  refreshed by their process and lapse within CONNECTION_SLOT_TTL of a crash.
- tokens per day: a counter per UTC day; a turn reserves its prompt plus its answer's cap
  (at most what remains), corrected from the upstream's usage when it ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from gateway.config import Limits
from gateway.limits import Refusal, day_of, seconds_to_utc_midnight
from gateway.store.client import StoreClient, StorePipeline
from gateway.store.keys import Keys
from gateway.store.lua import Lua

log = logging.getLogger("gateway.limits")

CONNECTION_SLOT_TTL = 90.0  # seconds; refreshed every third of it
DAY_SECONDS = 86_400

# KEYS: rate, generations, tokens.
# ARGV: rpm, max_generations, tokens_per_day, generation_id, reserve, slot_ttl_ms.
# Returns {"", reserved} when admitted, else {limit, retry_after_ms} (-1: until midnight).
_ADMIT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local rpm, max_gens, budget = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local tat = now
if rpm > 0 then
  local interval = 60000 / rpm
  tat = math.max(tonumber(redis.call('GET', KEYS[1]) or now), now) + interval
  if tat - now > 60000 then return {'requests_per_minute', math.ceil(tat - now - 60000)} end
end
if max_gens > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
  if redis.call('ZCARD', KEYS[2]) >= max_gens then return {'concurrent_generations', 1000} end
end
local reserve = 0
if budget > 0 then
  local used = tonumber(redis.call('GET', KEYS[3]) or 0)
  if used >= budget then return {'tokens_per_day', -1} end
  reserve = math.min(tonumber(ARGV[5]), budget - used)
end
if rpm > 0 then redis.call('SET', KEYS[1], tat, 'PX', math.ceil(tat - now)) end
if max_gens > 0 then
  redis.call('ZADD', KEYS[2], now + tonumber(ARGV[6]), ARGV[4])
  redis.call('PEXPIRE', KEYS[2], ARGV[6])
end
if reserve > 0 then
  redis.call('INCRBY', KEYS[3], reserve)
  redis.call('EXPIRE', KEYS[3], 172800)
end
return {'', reserve}
"""

# KEYS: connections. ARGV: limit, connection_id, ttl_ms.
# Returns 0 when admitted, else ms until the oldest entry lapses.
_CONNECT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then
  local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  return math.max(1, math.ceil(tonumber(oldest[2]) - now))
end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 0
"""

# KEYS: connections. ARGV: ttl_ms, then connection ids. Pushes their lapse time forward.
_REFRESH = """
local t = redis.call('TIME')
local lapse = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) + tonumber(ARGV[1])
for i = 2, #ARGV do redis.call('ZADD', KEYS[1], 'XX', lapse, ARGV[i]) end
redis.call('PEXPIRE', KEYS[1], ARGV[1])
"""


@dataclass(frozen=True, slots=True)
class Admission:
    """What a turn took: released (and its tokens corrected) when it ends."""

    sub: str
    generation_id: str
    day: str
    reserved_tokens: int


class LimitStore:
    def __init__(self, redis: StoreClient, keys: Keys, generation_slot_ttl: float) -> None:
        self._redis = redis
        self._keys = keys
        self._slot_ttl_ms = int(generation_slot_ttl * 1000)
        self._admit = Lua(redis, _ADMIT)
        self._connect = Lua(redis, _CONNECT)
        self._refresh_script = Lua(redis, _REFRESH)
        self._connections: dict[str, set[str]] = {}  # sub -> ids of connections open here
        self._refresher: asyncio.Task[None] | None = None

    # Turns.

    async def admit(
        self,
        sub: str,
        limits: Limits,
        generation_id: str,
        reserve: int,
        still_running: Callable[[str], Awaitable[bool]],
        also: Callable[[StorePipeline], None] | None = None,
    ) -> Admission | Refusal:
        """Take a turn's share of every limit, or nothing and say which limit refused it.
        `also` queues commands into the same round trip (the generation's record), whatever
        the answer. At the concurrency limit, entries of generations that ended without
        releasing (their process died) are swept once with `still_running` and the turn is
        tried again."""
        taken = await self._try_admit(sub, limits, generation_id, reserve, also)
        if (
            isinstance(taken, Refusal)
            and taken.limit == "concurrent_generations"
            and await self._sweep(sub, still_running)
        ):
            taken = await self._try_admit(sub, limits, generation_id, reserve)
        return taken

    async def _try_admit(
        self,
        sub: str,
        limits: Limits,
        generation_id: str,
        reserve: int,
        also: Callable[[StorePipeline], None] | None = None,
    ) -> Admission | Refusal:
        now = datetime.now(UTC)
        day = day_of(now)
        keys = [self._keys.user_rate(sub), self._keys.user_generations(sub), self._tokens(sub, day)]
        async with self._redis.pipeline(transaction=False) as pipe:
            self._admit.queue(
                pipe,
                keys,
                [
                    limits.requests_per_minute,
                    limits.concurrent_generations,
                    limits.tokens_per_day,
                    generation_id,
                    reserve,
                    self._slot_ttl_ms,
                ],
            )
            if also is not None:
                also(pipe)
            (limit, value), *_ = await pipe.execute()
        if not limit:
            return Admission(sub, generation_id, day, int(value))
        retry_after = seconds_to_utc_midnight(now) if value < 0 else value / 1000
        return Refusal(limit, retry_after)

    async def _sweep(self, sub: str, still_running: Callable[[str], Awaitable[bool]]) -> bool:
        key = self._keys.user_generations(sub)
        members = [str(member) for member in await self._redis.zrange(key, 0, -1)]
        ended = [g for g in members if not await still_running(g)]
        if ended:
            await self._redis.zrem(key, *ended)
        return bool(ended)

    def queue_release(
        self, pipe: StorePipeline, admission: Admission, used_tokens: int | None
    ) -> None:
        """Free the turn's generation slot and correct its token reservation to what the
        answer used, in the pipeline that stores the answer."""
        pipe.zrem(self._keys.user_generations(admission.sub), admission.generation_id)
        if admission.reserved_tokens and used_tokens is not None:
            key = self._tokens(admission.sub, admission.day)
            pipe.incrby(key, used_tokens - admission.reserved_tokens)

    async def release(self, admission: Admission) -> None:
        """Give back everything a turn took that never started."""
        async with self._redis.pipeline(transaction=False) as pipe:
            self.queue_release(pipe, admission, 0)
            await pipe.execute()

    def _tokens(self, sub: str, day: str) -> str:
        return self._keys.user_tokens(sub, day)

    # Connections.

    async def connect(self, sub: str, limit: int, connection_id: str) -> Refusal | None:
        """Count a connection against the user's limit (0: no limit, nothing stored)."""
        if limit <= 0:
            return None
        wait_ms = await self._connect(
            [self._keys.user_connections(sub)],
            [limit, connection_id, int(CONNECTION_SLOT_TTL * 1000)],
        )
        if wait_ms:
            return Refusal("connections", int(wait_ms) / 1000)
        self._connections.setdefault(sub, set()).add(connection_id)
        self._ensure_refresher()
        return None

    async def disconnect(self, sub: str, connection_id: str) -> None:
        ids = self._connections.get(sub)
        if ids is None or connection_id not in ids:
            return
        ids.discard(connection_id)
        if not ids:
            del self._connections[sub]
        await self._redis.zrem(self._keys.user_connections(sub), connection_id)

    def _ensure_refresher(self) -> None:
        if self._refresher is None or self._refresher.done():
            self._refresher = asyncio.create_task(self._refresh_loop(), name="limits-refresh")

    async def _refresh_loop(self) -> None:
        """One pipeline per interval keeps every connection open here counted."""
        while self._connections:
            await asyncio.sleep(CONNECTION_SLOT_TTL / 3)
            try:
                async with self._redis.pipeline(transaction=False) as pipe:
                    ttl_ms = int(CONNECTION_SLOT_TTL * 1000)
                    for sub, ids in list(self._connections.items()):
                        key = self._keys.user_connections(sub)
                        self._refresh_script.queue(pipe, [key], [ttl_ms, *ids])
                    await pipe.execute()
            except Exception as exc:  # Redis down: the entries lapse; they are recounted later
                log.warning("could not refresh connection counts: %s", type(exc).__name__)

    async def close(self) -> None:
        if self._refresher is not None:
            self._refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refresher

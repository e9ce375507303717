"""Per-user limits counted in Redis, so they hold across every instance.

A user's counters share the hash tag `{sub}` (one Cluster slot), so one Lua script checks
every limit and takes what a turn needs atomically: a refused turn takes nothing. Time comes
from Redis (`TIME`), so instances with skewed clocks agree.

- requests per minute: GCRA (one key holding the theoretical arrival time); a burst of up to
  the whole minute's allowance is let through, then one request per interval.
- concurrent generations and open connections: sorted sets of ids scored by when the entry
  lapses (the generations' set is kept with no limit too: it lists what the user runs). A
  generation's entry is removed in the same round trip that stores its answer; an entry whose
  process died is swept when the user reaches the limit. Connections are refreshed by their
  process and lapse within CONNECTION_SLOT_TTL of a crash.
- tokens per day: a counter per UTC day; a turn reserves its prompt plus its answer's cap
  (at most what remains), corrected from the upstream's usage when it ends.
- stored bytes: a count per conversation and their total. A turn counts its message when it
  is admitted; its end counts the whole conversation as the conversation store reported it
  (trims included) plus the answer, in the round trip that stores the answer. A delete stops
  counting the conversation in the round trip that deletes it; an expired one lapses with it.
  See docs/limits.md for what this counts late.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from gateway.config import Limits
from gateway.limits import Admission, Refusal, Turn, day_of, seconds_to_utc_midnight
from gateway.store.client import StoreClient, StorePipeline
from gateway.store.keys import Keys
from gateway.store.lua import Arg, Lua
from gateway.tasks import stop_tasks

log = logging.getLogger("gateway.limits")

CONNECTION_SLOT_TTL = 90.0  # seconds; refreshed every third of it
DAY_SECONDS = 86_400

# Shared by the storage scripts. A user's stored bytes are counted per conversation, in a hash
# (`sizes`) whose sum is kept in `total`; `lapses` scores each conversation by when its count
# lapses, as the conversation expires (CONVERSATION_TTL) unless a turn comes first.
_STORAGE = """
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
-- `old`: the count already read, if it was (a number).
local function set_stored(sizes, total, id, bytes, old)
  old = old or tonumber(redis.call('HGET', sizes, id) or 0)
  redis.call('HSET', sizes, id, bytes)
  redis.call('INCRBY', total, bytes - old)
end
local function forget_stored(sizes, lapses, total, id)
  local old = redis.call('HGET', sizes, id)
  if old then
    redis.call('HDEL', sizes, id)
    -- Not -old: Lua writes -0 as "-0", which INCRBY refuses.
    redis.call('INCRBY', total, 0 - tonumber(old))
  end
  redis.call('ZREM', lapses, id)
end
local function lapse_later(sizes, lapses, total, id, now, ttl_ms)
  redis.call('ZADD', lapses, now + ttl_ms, id)
  redis.call('PEXPIRE', sizes, ttl_ms)
  redis.call('PEXPIRE', lapses, ttl_ms)
  redis.call('PEXPIRE', total, ttl_ms)
end
"""

# KEYS: rate, generations, tokens, storage sizes, storage lapses, storage total.
# ARGV: rpm, max_generations, tokens_per_day, generation_id, reserve, slot_ttl_ms,
#       storage_bytes, conversation_id, message_bytes, storage_ttl_ms.
# Returns {"", reserved} when admitted, else {limit, retry_after_ms} (-1: until midnight), or
# {"storage_bytes", bytes stored}. Counts of expired conversations are swept first, a few a
# turn. An admitted turn counts its message against its conversation at once.
_ADMIT = (
    _STORAGE
    + """
local now = now_ms()
local rpm, max_gens, budget = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local tat = now
if rpm > 0 then
  local interval = 60000 / rpm
  tat = math.max(tonumber(redis.call('GET', KEYS[1]) or now), now) + interval
  if tat - now > 60000 then return {'requests_per_minute', math.ceil(tat - now - 60000)} end
end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
if max_gens > 0 and redis.call('ZCARD', KEYS[2]) >= max_gens then
  return {'concurrent_generations', 1000}
end
local reserve = 0
if budget > 0 then
  local used = tonumber(redis.call('GET', KEYS[3]) or 0)
  if used >= budget then return {'tokens_per_day', -1} end
  reserve = math.min(tonumber(ARGV[5]), budget - used)
end
for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[5], '-inf', now, 'LIMIT', 0, 16)) do
  forget_stored(KEYS[4], KEYS[5], KEYS[6], id)
end
local quota, need = tonumber(ARGV[7]), tonumber(ARGV[9])
if quota > 0 then
  local stored = math.max(0, tonumber(redis.call('GET', KEYS[6]) or 0))
  if stored + need > quota then return {'storage_bytes', stored} end
end
if rpm > 0 then redis.call('SET', KEYS[1], tat, 'PX', math.ceil(tat - now)) end
-- Kept without a limit too: it lists the user's running generations (activity).
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[6]), ARGV[4])
redis.call('PEXPIRE', KEYS[2], ARGV[6])
if reserve > 0 then
  redis.call('INCRBY', KEYS[3], reserve)
  redis.call('EXPIRE', KEYS[3], 172800)
end
local counted = tonumber(redis.call('HGET', KEYS[4], ARGV[8]) or 0)
set_stored(KEYS[4], KEYS[6], ARGV[8], counted + need, counted)
lapse_later(KEYS[4], KEYS[5], KEYS[6], ARGV[8], now, tonumber(ARGV[10]))
return {'', reserve}
"""
)

# KEYS: storage sizes, lapses, total. ARGV: conversation_id, bytes, storage_ttl_ms, new.
# The conversation's bytes as its store counted them when a turn ended. Only a conversation
# still counted is updated: one deleted meanwhile is not brought back; unless `new` is '1'
# (a conversation just made whole: a fork).
_STORED = (
    _STORAGE
    + """
local old = redis.call('HGET', KEYS[1], ARGV[1])
if ARGV[4] ~= '1' and not old then return 0 end
set_stored(KEYS[1], KEYS[3], ARGV[1], tonumber(ARGV[2]), tonumber(old or 0))
lapse_later(KEYS[1], KEYS[2], KEYS[3], ARGV[1], now_ms(), tonumber(ARGV[3]))
return 1
"""
)

# KEYS: storage sizes, lapses, total. ARGV: conversation_id, message_bytes.
# Takes back a message counted by a turn that never started; a count left at nothing (the
# conversation was new) is forgotten.
_UNCOUNT = (
    _STORAGE
    + """
local counted = redis.call('HGET', KEYS[1], ARGV[1])
if not counted then return 0 end
local left = tonumber(counted) - tonumber(ARGV[2])
if left > 0 then set_stored(KEYS[1], KEYS[3], ARGV[1], left, tonumber(counted))
else forget_stored(KEYS[1], KEYS[2], KEYS[3], ARGV[1]) end
return 1
"""
)

# KEYS: storage sizes, lapses, total. ARGV: conversation_id. A deleted conversation.
_FORGET = (
    _STORAGE
    + """
forget_stored(KEYS[1], KEYS[2], KEYS[3], ARGV[1])
return 1
"""
)

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


class LimitStore:
    def __init__(
        self, redis: StoreClient, keys: Keys, generation_slot_ttl: float, storage_ttl: float
    ) -> None:
        """`storage_ttl`: CONVERSATION_TTL, after which a conversation no turn touched is gone
        and its bytes no longer count."""
        self._redis = redis
        self._keys = keys
        self._slot_ttl_ms = int(generation_slot_ttl * 1000)
        self._storage_ttl_ms = int(storage_ttl * 1000)
        # By hash in its pipeline too: the generation's record there does not need it first.
        self._admit = Lua(redis, _ADMIT, by_hash_in_pipelines=True)
        self._stored = Lua(redis, _STORED)
        self._uncount = Lua(redis, _UNCOUNT)
        self._forget = Lua(redis, _FORGET)
        self._connect = Lua(redis, _CONNECT)
        self._refresh_script = Lua(redis, _REFRESH)
        self._connections: dict[str, set[str]] = {}  # sub -> ids of connections open here
        self._refresher: asyncio.Task[None] | None = None

    # Turns.

    async def admit(
        self,
        sub: str,
        limits: Limits,
        turn: Turn,
        still_running: Callable[[str], Awaitable[bool]],
        also: Callable[[StorePipeline], None] | None = None,
    ) -> Admission | Refusal:
        """Take a turn's share of every limit, or nothing and say which limit refused it.
        `also` queues commands into the same round trip (the generation's record), whatever
        the answer. At the concurrency limit, entries of generations that ended without
        releasing (their process died) are swept once with `still_running` and the turn is
        tried again."""
        taken = await self._try_admit(sub, limits, turn, also)
        if (
            isinstance(taken, Refusal)
            and taken.limit == "concurrent_generations"
            and await self._sweep(sub, still_running)
        ):
            taken = await self._try_admit(sub, limits, turn)
        return taken

    async def _try_admit(
        self,
        sub: str,
        limits: Limits,
        turn: Turn,
        also: Callable[[StorePipeline], None] | None = None,
    ) -> Admission | Refusal:
        now = datetime.now(UTC)
        day = day_of(now)
        keys = [
            self._keys.user_rate(sub),
            self._keys.user_generations(sub),
            self._tokens(sub, day),
            *self._storage_keys(sub),
        ]
        args: list[Arg] = [
            limits.requests_per_minute,
            limits.concurrent_generations,
            limits.tokens_per_day,
            turn.generation_id,
            turn.reserve_tokens,
            self._slot_ttl_ms,
            limits.storage_bytes,
            turn.conversation_id,
            turn.message_bytes,
            self._storage_ttl_ms,
        ]
        async with self._redis.pipeline(transaction=False) as pipe:
            self._admit.queue(pipe, keys, args)
            if also is not None:
                also(pipe)
            results = await pipe.execute(raise_on_error=False)
        limit, value = await self._admit.settle(results, 0, keys, args)
        if not limit:
            return Admission(
                sub,
                turn.generation_id,
                day,
                int(value),
                turn.conversation_id,
                turn.message_bytes,
            )
        if limit == "storage_bytes":
            return Refusal(limit, None, stored=int(value), needed=turn.message_bytes)
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
        """Give back everything a turn took that never started, its message's bytes too."""
        async with self._redis.pipeline(transaction=False) as pipe:
            self.queue_release(pipe, admission, 0)
            if admission.conversation_id:
                self._uncount.queue(
                    pipe,
                    self._storage_keys(admission.sub),
                    [admission.conversation_id, admission.message_bytes],
                )
            await pipe.execute()

    # Storage.

    def queue_stored(
        self, pipe: StorePipeline, sub: str, conversation_id: str, stored_bytes: int
    ) -> None:
        """Count what a conversation holds as a turn ends, in the pipeline that stores the
        answer (`stored_bytes`: as the conversation store counted it when the turn opened,
        plus the answer). Nothing for a conversation deleted meanwhile."""
        self._stored.queue(
            pipe,
            self._storage_keys(sub),
            [conversation_id, stored_bytes, self._storage_ttl_ms],
        )

    def queue_forget(self, pipe: StorePipeline, sub: str, conversation_id: str) -> None:
        """Stop counting a deleted conversation, in the pipeline that deletes it."""
        self._forget.queue(pipe, self._storage_keys(sub), [conversation_id])

    async def count_stored(
        self, sub: str, conversation_id: str, stored_bytes: int, *, new: bool = False
    ) -> None:
        """Count what a conversation holds after a change other than a turn (a branch
        deleted; `new`: a fork, counted from nothing)."""
        async with self._redis.pipeline(transaction=False) as pipe:
            self._stored.queue(
                pipe,
                self._storage_keys(sub),
                [conversation_id, stored_bytes, self._storage_ttl_ms, "1" if new else "0"],
            )
            await pipe.execute()

    async def stored_bytes(self, sub: str) -> int:
        """What the user's conversations are counted to hold (expired ones are swept at the
        user's next turn)."""
        return int(await self._redis.get(self._keys.user_storage_total(sub)) or 0)

    def _storage_keys(self, sub: str) -> list[str]:
        keys = self._keys
        return [keys.user_storage(sub), keys.user_storage_lapses(sub), keys.user_storage_total(sub)]

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
        await stop_tasks(self._refresher)

"""Generation logs in Redis: each generation's events in a capped stream, its metadata, its lease.

Any instance can serve a resume from the log; the process that runs a generation appends to
it in batches (see `LogWriter`) and renews the lease while it lives. A lease that stays lapsed
on a generation still marked running means its process died: an instance that notices appends a
terminal `interrupted` event, atomically, so exactly one does.

A lapsed lease alone is not enough: a live process cannot renew while the store is
unreachable to it (a stall, a network split, a Redis Cluster failover longer than the lease),
and it may hold an answer its client saw end that it has yet to write. So the first instance
to find the lease lapsed only notes when (`lapsed_at`, Redis's own clock), and the generation
is interrupted by a check at least one more lease later that still finds no lease. The owner's
next renewal, every third of a lease, clears the note: a live process always gets a full lease
after the store is back to renew its leases and write what it kept.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterable, Sequence
from typing import Any, cast

from gateway.events import Event
from gateway.store import records
from gateway.store.client import StoreClient, StorePipeline, hear
from gateway.store.keys import Keys
from gateway.store.lua import Arg, Lua
from gateway.store.records import READ_PAGE, GenerationMeta, Status

# KEYS: meta, events, lease. ARGV: ended_ttl, message, now_ms, grace_ms.
# Returns the terminal event's seq when this call interrupted the generation, else 0: when it
# runs, when its lease is there, or when the lease was first found lapsed less than grace_ms ago
# (the first finding is noted in `lapsed_at`).
_INTERRUPT_IF_ABANDONED = """
if redis.call('HGET', KEYS[1], 'status') ~= 'running' then return 0 end
if redis.call('EXISTS', KEYS[3]) == 1 then return 0 end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local lapsed = tonumber(redis.call('HGET', KEYS[1], 'lapsed_at'))
if not lapsed then
  redis.call('HSET', KEYS[1], 'lapsed_at', now)
  return 0
end
if now - lapsed < tonumber(ARGV[4]) then return 0 end
redis.call('HDEL', KEYS[1], 'lapsed_at')
local top = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', 1)
local seq = 1
if #top > 0 then seq = tonumber(string.match(top[1][1], '^(%d+)')) + 1 end
-- A stored record of version 2 (see store/records.py: interrupted_record).
local event = cjson.encode({v=2, k='error', s=seq, code='interrupted', msg=ARGV[2], retry=true})
redis.call('XADD', KEYS[2], seq .. '-0', 'e', event)
redis.call('HSET', KEYS[1], 'status', 'interrupted', 'last_seq', seq, 'ended_at', ARGV[3])
redis.call('EXPIRE', KEYS[1], ARGV[1])
redis.call('EXPIRE', KEYS[2], ARGV[1])
return seq
"""

# KEYS: meta, lease, events. ARGV: instance, lease_ms, running_ttl.
# Returns -1 when the generation is no longer running (another instance ended it), -2 when its
# record is gone (Redis restarted empty), 1 when a cancel was requested, else 0. Recreates a
# lapsed lease, so a stall does not lose it.
_RENEW = """
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return -2 end
if status ~= 'running' then return -1 end
redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2])
redis.call('HDEL', KEYS[1], 'lapsed_at')
redis.call('EXPIRE', KEYS[3], ARGV[3])
if redis.call('HGET', KEYS[1], 'cancel') then return 1 end
return 0
"""

# KEYS: meta, events, lease.
# ARGV: maxlen, finish (0/1), status, last_seq, ended_ms, ended_ttl, then seq, json pairs.
# Appends only while the generation runs; a seq already stored (a retried batch) is skipped by
# XADD's own id check. With finish=1 it also ends the generation. Returns 0 when it had
# already ended, else 1.
_APPEND = """
if redis.call('HGET', KEYS[1], 'status') ~= 'running' then return 0 end
for i = 7, #ARGV, 2 do
  local added = redis.pcall('XADD', KEYS[2], 'MAXLEN', '~', ARGV[1], ARGV[i] .. '-0',
                            'e', ARGV[i + 1])
  if type(added) == 'table' and added.err and not string.find(added.err, 'equal or smaller') then
    return redis.error_reply(added.err)
  end
end
if ARGV[2] == '1' then
  redis.call('HSET', KEYS[1], 'status', ARGV[3], 'last_seq', ARGV[4], 'ended_at', ARGV[5])
  redis.call('EXPIRE', KEYS[1], ARGV[6])
  redis.call('EXPIRE', KEYS[2], ARGV[6])
  redis.call('DEL', KEYS[3])
end
return 1
"""

# KEYS: idempotency key. ARGV: generation id. Deletes the key only if it still points there.
_RELEASE_IF_OURS = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

# KEYS: meta. ARGV: channel, generation id. Flags the cancel and tells every instance, in one
# round trip: PUBLISH has no key, so it may go with the flag even on a Redis Cluster (whose
# nodes pass a message on to the subscribers of every node), where a pipeline may not hold it.
# A record that has expired is not brought back as a hash without a TTL.
_REQUEST_CANCEL = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'cancel', 1)
redis.call('PUBLISH', ARGV[1], ARGV[2])
return 1
"""

INTERRUPTED_MESSAGE = "The gateway running this answer stopped before it finished."
# A running generation's record outlives GENERATION_TTL by this much, in case its process dies
# and nobody follows it to notice.
RUNNING_GRACE = 86400


class GenerationLog:
    def __init__(
        self,
        redis: StoreClient,
        keys: Keys,
        *,
        ended_ttl: int,
        max_events: int,
        lease_ttl: float,
        instance: str,
    ) -> None:
        self.instance = instance  # written into leases, so an operator can see who runs what
        self._redis = redis
        self._keys = keys
        self._ended_ttl = ended_ttl
        self._max_events = max_events
        self._lease_ms = int(lease_ttl * 1000)
        self._interrupt = Lua(redis, _INTERRUPT_IF_ABANDONED)
        self._release = Lua(redis, _RELEASE_IF_OURS)
        self._renew = Lua(redis, _RENEW)
        # The hot path: `LogWriter` reads each of its results and writes again what NOSCRIPT
        # refused, so it may go by hash in pipelines.
        self._append = Lua(redis, _APPEND, by_hash_in_pipelines=True)
        self._request_cancel = Lua(redis, _REQUEST_CANCEL)

    @property
    def redis(self) -> StoreClient:
        return self._redis

    @property
    def retention(self) -> int:
        """Seconds after its start by which none of a generation's keys is left, for every
        generation that ends within GENERATION_TTL + RUNNING_GRACE of its start: its record
        lives that long while it runs, and GENERATION_TTL once it has ended."""
        return 2 * self._ended_ttl + RUNNING_GRACE

    def queue_create(self, pipe: StorePipeline, meta: GenerationMeta) -> None:
        gid = meta.generation_id
        pipe.hset(self._keys.generation(gid), mapping=cast(Any, meta.fields()))
        # A running generation's keys expire only if its process dies and nobody notices.
        pipe.expire(self._keys.generation(gid), self._ended_ttl + RUNNING_GRACE)
        pipe.set(self._keys.lease(gid), self.instance, px=self._lease_ms)

    def queue_append(
        self, pipe: StorePipeline, generation_id: str, events: Iterable[Event]
    ) -> None:
        """Append events, unless the generation has already ended (another instance
        interrupted it while this process stalled): nothing may follow a terminal event.
        Its result may be a NOSCRIPT error (it did not run): see `saw_appends`."""
        self._append.queue(pipe, self._log_keys(generation_id), self._append_args(events, ()))

    def queue_finish(
        self, pipe: StorePipeline, generation_id: str, events: Sequence[Event], status: Status
    ) -> None:
        """Append the last events and end the generation with `status`, unless it already
        ended elsewhere."""
        ending = (status, events[-1].seq, int(time.time() * 1000), self._ended_ttl)
        self._append.queue(pipe, self._log_keys(generation_id), self._append_args(events, ending))

    def saw_appends(self, results: Iterable[object]) -> None:
        """Pass on the results of a pipeline's `queue_append` and `queue_finish` calls: after a
        NOSCRIPT among them, the next ones carry the script whole."""
        self._append.saw(results)

    def _log_keys(self, generation_id: str) -> list[str]:
        gid = generation_id
        return [self._keys.generation(gid), self._keys.events(gid), self._keys.lease(gid)]

    def _append_args(self, events: Iterable[Event], ending: Sequence[str | int]) -> list[Arg]:
        args: list[Arg] = [self._max_events, 1 if ending else 0, *(ending or ("", 0, 0, 0))]
        for event in events:
            args += [event.seq, records.encode(event)]
        return args

    async def meta(self, generation_id: str) -> GenerationMeta | None:
        raw = cast(dict[str, str], await self._redis.hgetall(self._keys.generation(generation_id)))
        return GenerationMeta.from_fields(generation_id, raw) if raw else None

    async def statuses(self, generation_ids: Sequence[str]) -> list[Status | None]:
        """Each generation's status (None once its record has expired), in one round trip."""
        if not generation_ids:
            return []
        async with self._redis.pipeline(transaction=False) as pipe:
            for gid in generation_ids:
                pipe.hget(self._keys.generation(gid), "status")
            return cast(list[Status | None], await pipe.execute())

    async def delete(self, generation_ids: Sequence[str]) -> None:
        """Remove the generations' records, event logs and leases."""
        if not generation_ids:
            return
        async with self._redis.pipeline(transaction=False) as pipe:
            for gid in generation_ids:
                # One slot: the three keys share the generation's hash tag.
                pipe.delete(
                    self._keys.generation(gid), self._keys.events(gid), self._keys.lease(gid)
                )
            await pipe.execute()

    async def read_after(
        self, generation_id: str, after: int, count: int = READ_PAGE
    ) -> list[Event]:
        """Stored events with seq > after, oldest first, at most `count`."""
        entries = await self._redis.xrange(
            self._keys.events(generation_id), min=f"({after}-0", max="+", count=count
        )
        return stream_events(cast(Any, entries))

    async def last_event(self, generation_id: str) -> Event | None:
        entries = await self._redis.xrevrange(self._keys.events(generation_id), count=1)
        found = stream_events(cast(Any, entries))
        return found[0] if found else None

    async def renew(self, generation_ids: Sequence[str]) -> dict[str, str]:
        """Renew these leases. Returns the ids that need action: "cancel" when a cancel was
        requested from elsewhere, "lost" when another instance already ended it, "gone" when
        its record vanished."""
        async with self._redis.pipeline(transaction=False) as pipe:
            for gid in generation_ids:
                await self._renew(
                    keys=[
                        self._keys.generation(gid),
                        self._keys.lease(gid),
                        self._keys.events(gid),
                    ],
                    args=[self.instance, self._lease_ms, self._ended_ttl + 86400],
                    client=pipe,
                )
            results = await pipe.execute()
        actions = {1: "cancel", -1: "lost", -2: "gone"}
        return {
            gid: actions[int(r)]
            for gid, r in zip(generation_ids, results, strict=True)
            if int(r) in actions
        }

    async def request_cancel(self, generation_id: str) -> None:
        """Flag the generation for cancel (seen at the next lease renewal) and tell its
        process now over pub/sub."""
        await self._request_cancel(
            keys=[self._keys.generation(generation_id)],
            args=[self._keys.cancel_channel(), generation_id],
        )

    async def cancel_requests(self) -> AsyncIterator[str]:
        """The ids of generations whose cancel is asked on any instance, as it is asked. A
        dropped channel ends the iteration with its error; the caller subscribes again."""
        async for generation_id in hear(self._redis, self._keys.cancel_channel()):
            if generation_id is not None:
                yield generation_id

    async def interrupt_if_abandoned(self, generation_id: str) -> int:
        """Mark a running generation as interrupted if its lease has stayed lapsed for a
        lease's time since an instance first found it so; 0 if it was not."""
        gid = generation_id
        keys = [self._keys.generation(gid), self._keys.events(gid), self._keys.lease(gid)]
        args: list[Arg] = [
            self._ended_ttl,
            INTERRUPTED_MESSAGE,
            int(time.time() * 1000),
            self._lease_ms,
        ]
        return int(await self._interrupt(keys=keys, args=args))

    async def discard(
        self, generation_id: str, sub: str | None = None, key: str | None = None
    ) -> None:
        """Remove a generation that never started, and release its idempotency key."""
        names = [
            self._keys.generation(generation_id),
            self._keys.lease(generation_id),
            self._keys.events(generation_id),
        ]
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.delete(*names)  # one hash tag, so one slot
            if sub is not None and key is not None:
                await self._release(
                    keys=[self._keys.idempotency(sub, key)], args=[generation_id], client=pipe
                )
            await pipe.execute()

    async def idempotent(self, sub: str, key: str) -> str | None:
        """The generation a user's idempotency key started, if it still points at one."""
        found = await self._redis.get(self._keys.idempotency(sub, key))
        return None if found is None else str(found)

    async def claim_idempotency(self, sub: str, key: str, generation_id: str, ttl: int) -> str:
        """The generation this key already started, or `generation_id` if it is new."""
        name = self._keys.idempotency(sub, key)
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.set(name, generation_id, nx=True, ex=ttl)
            pipe.get(name)
            _, owner = await pipe.execute()
        return str(owner)


def stream_events(entries: list[tuple[str, dict[str, str]]]) -> list[Event]:
    """The events of a stream's entries, in their order."""
    return [records.decode(fields["e"]) for _, fields in entries]

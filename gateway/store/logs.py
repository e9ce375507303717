"""Generation logs in Redis: each generation's events in a capped stream, its metadata, its lease.

Any instance can serve a resume from the log; the process that runs a generation appends to
it in batches (see `LogWriter`) and renews the lease while it lives. A lapsed lease on a
generation still marked running means its process died: the first instance to notice appends
a terminal `interrupted` event, atomically, so exactly one does.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, cast

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from gateway.events import Event
from gateway.protocol import dumps, event_from_payload, event_payload
from gateway.store.keys import Keys

Status = Literal["running", "complete", "cancelled", "failed", "interrupted"]

# KEYS: meta, events, lease. ARGV: ended_ttl, message, now_ms.
# Returns the terminal event's seq when this call interrupted the generation, else 0.
_INTERRUPT_IF_ABANDONED = """
if redis.call('HGET', KEYS[1], 'status') ~= 'running' then return 0 end
if redis.call('EXISTS', KEYS[3]) == 1 then return 0 end
local top = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', 1)
local seq = 1
if #top > 0 then seq = tonumber(string.match(top[1][1], '^(%d+)')) + 1 end
local event = cjson.encode({type='error', seq=seq, content='', done=true, code='interrupted',
                            message=ARGV[2], retryable=true, error=ARGV[2]})
redis.call('XADD', KEYS[2], seq .. '-0', 'e', event)
redis.call('HSET', KEYS[1], 'status', 'interrupted', 'last_seq', seq, 'ended_at', ARGV[3])
redis.call('EXPIRE', KEYS[1], ARGV[1])
redis.call('EXPIRE', KEYS[2], ARGV[1])
return seq
"""

INTERRUPTED_MESSAGE = "The gateway running this answer stopped before it finished."


@dataclass(frozen=True, slots=True)
class GenerationMeta:
    generation_id: str
    owner: str
    conversation_id: str
    request_id: str | None
    model: str
    agent: str
    status: Status = "running"
    last_seq: int = 0

    def fields(self) -> dict[str, str | int]:
        return {
            "owner": self.owner,
            "conversation_id": self.conversation_id,
            "request_id": self.request_id or "",
            "model": self.model,
            "agent": self.agent,
            "status": self.status,
            "last_seq": self.last_seq,
            "created_at": int(time.time() * 1000),
        }

    @staticmethod
    def from_fields(generation_id: str, raw: dict[str, str]) -> GenerationMeta:
        return GenerationMeta(
            generation_id=generation_id,
            owner=raw["owner"],
            conversation_id=raw["conversation_id"],
            request_id=raw.get("request_id") or None,
            model=raw["model"],
            agent=raw["agent"],
            status=raw["status"],  # type: ignore[arg-type]
            last_seq=int(raw.get("last_seq", 0)),
        )


class GenerationLog:
    def __init__(
        self, redis: Redis, keys: Keys, *, ended_ttl: int, max_events: int, lease_ttl: float
    ) -> None:
        self._redis = redis
        self._keys = keys
        self._ended_ttl = ended_ttl
        self._max_events = max_events
        self._lease_ms = int(lease_ttl * 1000)
        self._interrupt = redis.register_script(_INTERRUPT_IF_ABANDONED)

    @property
    def redis(self) -> Redis:
        return self._redis

    def queue_create(self, pipe: Pipeline, meta: GenerationMeta, instance: str) -> None:
        gid = meta.generation_id
        pipe.hset(self._keys.generation(gid), mapping=cast(Any, meta.fields()))
        # A running generation's keys expire only if its process dies and nobody notices.
        pipe.expire(self._keys.generation(gid), self._ended_ttl + 86400)
        pipe.set(self._keys.lease(gid), instance, px=self._lease_ms)

    def queue_append(self, pipe: Pipeline, generation_id: str, events: Iterable[Event]) -> None:
        key = self._keys.events(generation_id)
        for event in events:
            pipe.xadd(
                key,
                {"e": dumps(event_payload(event))},
                id=f"{event.seq}-0",
                maxlen=self._max_events,
                approximate=True,
            )

    def queue_finish(
        self, pipe: Pipeline, generation_id: str, status: Status, last_seq: int
    ) -> None:
        meta = self._keys.generation(generation_id)
        pipe.hset(
            meta,
            mapping={"status": status, "last_seq": last_seq, "ended_at": int(time.time() * 1000)},
        )
        pipe.expire(meta, self._ended_ttl)
        pipe.expire(self._keys.events(generation_id), self._ended_ttl)
        pipe.delete(self._keys.lease(generation_id))

    async def meta(self, generation_id: str) -> GenerationMeta | None:
        raw = cast(dict[str, str], await self._redis.hgetall(self._keys.generation(generation_id)))
        return GenerationMeta.from_fields(generation_id, raw) if raw else None

    async def read_after(self, generation_id: str, after: int, count: int = 1000) -> list[Event]:
        """Stored events with seq > after, oldest first, at most `count`."""
        entries = await self._redis.xrange(
            self._keys.events(generation_id), min=f"({after}-0", max="+", count=count
        )
        return _events(cast(Any, entries))

    async def last_event(self, generation_id: str) -> Event | None:
        entries = await self._redis.xrevrange(self._keys.events(generation_id), count=1)
        found = _events(cast(Any, entries))
        return found[0] if found else None

    async def wait_after(self, generation_id: str, after: int, block_ms: int) -> list[Event]:
        """Events with seq > after, waiting up to `block_ms` for the first to arrive."""
        found = await self._redis.xread(
            {self._keys.events(generation_id): f"{after}-0"}, count=1000, block=block_ms
        )
        return _events(cast(Any, found)[0][1]) if found else []

    async def renew(self, generation_ids: Sequence[str]) -> list[str]:
        """Renew these leases; return the ids whose cancel was requested from elsewhere."""
        async with self._redis.pipeline(transaction=False) as pipe:
            for gid in generation_ids:
                pipe.pexpire(self._keys.lease(gid), self._lease_ms)
                pipe.hget(self._keys.generation(gid), "cancel")
            results = await pipe.execute()
        flags = results[1::2]
        return [gid for gid, flag in zip(generation_ids, flags, strict=True) if flag]

    async def request_cancel(self, generation_id: str) -> None:
        """Flag the generation for cancel (seen at the next lease renewal) and tell its
        process now over pub/sub."""
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.hset(self._keys.generation(generation_id), "cancel", 1)
            pipe.publish(self._keys.cancel_channel(), generation_id)
            await pipe.execute()

    async def interrupt_if_abandoned(self, generation_id: str) -> int:
        """Mark a running generation whose lease lapsed as interrupted; 0 if it was not."""
        gid = generation_id
        keys = [self._keys.generation(gid), self._keys.events(gid), self._keys.lease(gid)]
        seq = await self._interrupt(
            keys=keys, args=[self._ended_ttl, INTERRUPTED_MESSAGE, int(time.time() * 1000)]
        )
        return int(seq)

    async def claim_idempotency(self, sub: str, key: str, generation_id: str, ttl: int) -> str:
        """The generation this key already started, or `generation_id` if it is new."""
        name = self._keys.idempotency(sub, key)
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.set(name, generation_id, nx=True, ex=ttl)
            pipe.get(name)
            _, owner = await pipe.execute()
        return str(owner)


def _events(entries: list[tuple[str, dict[str, str]]]) -> list[Event]:
    return [event_from_payload(json.loads(fields["e"])) for _, fields in entries]

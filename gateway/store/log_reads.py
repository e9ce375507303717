"""How `LogHub` reads many generation logs at once: one way for one Redis server, another for
a Redis Cluster.

- One server (`BlockingReads`): one `XREAD BLOCK` over every followed stream, on a connection
  of the hub's own (never one of the shared pool). When a generation is added, the read in
  flight is ended by an entry on the process's wake stream, which that read covers too; an
  entry added before the read reaches the server wakes it all the same, since the stream is
  read from the last entry seen.
- A Redis Cluster (`PolledReads`): a multi-key XREAD needs all its keys in one slot, and each
  generation has a slot of its own. So once per flush window (LOG_FLUSH_MS, when the writers
  write) one pipeline carries a short XRANGE per followed log, which the cluster client splits
  into one round trip per node; a log that brought nothing is read less often, down to once
  every `QUIET_WINDOWS` windows.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, cast

from redis.asyncio import Redis, RedisCluster

from gateway.events import Event
from gateway.store.client import StoreClient
from gateway.store.keys import Keys
from gateway.store.log_hub import Found
from gateway.store.logs import stream_events

READ_COUNT = 500  # entries per log per read
BLOCK_MS = 1000  # a blocked read ends this often even if nothing comes
WAKE_TTL_MS = 60_000  # the wake stream outlives its process by at most this
QUIET_WINDOWS = 4
SHORTEST_WINDOW = 0.01  # seconds: LOG_FLUSH_MS may be 0 (every event written at once)


class WakeableStreams:
    """One XREAD BLOCK over some streams and the process's wake stream, on a connection of its
    own; `wake` ends a read in flight (or the next one) from a pooled connection. The wake
    stream's entries are consumed here: a read returns only the other streams' rows."""

    def __init__(self, own: Redis, pooled: StoreClient, wake_key: str, block_ms: int) -> None:
        self._own = own  # its socket timeout must exceed block_ms
        self._pooled = pooled
        self._wake_key = wake_key
        self._wake_id = "0-0"  # the last wake entry seen
        self._block_ms = block_ms

    async def read(self, streams: Mapping[str, str], count: int) -> list[tuple[str, Any]]:
        asked: dict[Any, Any] = {**streams, self._wake_key: self._wake_id}
        replies = await self._own.xread(asked, count=count, block=self._block_ms)
        found: list[tuple[str, Any]] = []
        for name, rows in cast(list[tuple[str, Any]], replies or []):
            if name == self._wake_key:
                self._wake_id = rows[-1][0]
            else:
                found.append((name, rows))
        return found

    async def wake(self) -> None:
        """One entry on the wake stream (a pooled connection, one round trip)."""
        async with self._pooled.pipeline(transaction=False) as pipe:
            pipe.xadd(self._wake_key, {"w": 1}, maxlen=1, approximate=False)
            pipe.pexpire(self._wake_key, WAKE_TTL_MS)
            await pipe.execute()

    async def aclose(self) -> None:
        await self._own.aclose()


class BlockingReads:
    """One server: one XREAD BLOCK over every followed log, on a connection of its own."""

    def __init__(
        self,
        own: Redis,
        pooled: StoreClient,
        keys: Keys,
        wake_key: str,
        block_ms: int = BLOCK_MS,
    ) -> None:
        self._streams = WakeableStreams(own, pooled, wake_key, block_ms)
        self._keys = keys

    async def read(self, cursors: Mapping[str, int]) -> Found:
        names = {self._keys.events(generation_id): generation_id for generation_id in cursors}
        asked = {name: f"{cursors[g]}-0" for name, g in names.items()}
        return {
            names[name]: stream_events(rows)
            for name, rows in await self._streams.read(asked, READ_COUNT)
        }

    async def wake(self) -> None:
        await self._streams.wake()

    async def aclose(self) -> None:
        await self._streams.aclose()


class PolledReads:
    """A Redis Cluster: one pipeline of short XRANGEs per flush window, one round trip per node,
    on the cluster client's pooled connections (one per node at a time)."""

    def __init__(
        self,
        client: RedisCluster,
        keys: Keys,
        window: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        self._keys = keys
        window = max(window, SHORTEST_WINDOW)
        self._schedule = PollSchedule(window, window * QUIET_WINDOWS)
        self._clock = clock
        self._woken = asyncio.Event()

    async def read(self, cursors: Mapping[str, int]) -> Found:
        pause = self._schedule.wait(cursors, self._clock())
        if pause > 0:
            self._woken.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(pause):  # a pacing pause, cut short by `wake`
                    await self._woken.wait()
        now = self._clock()
        due = self._schedule.due(cursors, now)
        if not due:
            return {}
        async with self._client.pipeline(transaction=False) as pipe:
            for generation_id in due:
                # XRANGE, not XREAD: the cluster client finds XREAD's keys by asking a node
                # (COMMAND GETKEYS), a round trip per command; XRANGE names its key first.
                name = self._keys.events(generation_id)
                pipe.xrange(name, min=f"({cursors[generation_id]}-0", max="+", count=READ_COUNT)
            replies = await pipe.execute(raise_on_error=False)
        found: dict[str, list[Event] | Exception] = {}
        for generation_id, reply in zip(due, replies, strict=True):
            if isinstance(reply, Exception):
                found[generation_id] = reply  # that node failed; the others answered
                self._schedule.read(generation_id, False, now)
                continue
            events = stream_events(cast(Any, reply))
            self._schedule.read(generation_id, bool(events), now)
            found[generation_id] = events
        return found

    async def wake(self) -> None:
        self._woken.set()  # a new log is read at once, not after the pause

    async def aclose(self) -> None:
        return None  # the cluster client is the store's, closed with it


class PollSchedule:
    """When each followed log is read next: every `window` while it brings news; while it is
    quiet, each time after twice the last interval, up to `longest`. Pure: the caller passes
    the time."""

    def __init__(self, window: float, longest: float) -> None:
        self._window = window
        self._longest = longest
        self._next: dict[str, float] = {}  # when a log is due; one never read is due at once
        self._interval: dict[str, float] = {}

    def wait(self, names: Iterable[str], now: float) -> float:
        """Seconds until the first of `names` is due (0 if one is)."""
        return max(0.0, min((self._next.get(name, now) for name in names), default=now) - now)

    def due(self, names: Iterable[str], now: float) -> list[str]:
        """Those of `names` to read now; logs not among `names` are forgotten."""
        wanted = list(names)
        for gone in self._next.keys() - set(wanted):
            del self._next[gone]
            self._interval.pop(gone, None)
        return [name for name in wanted if self._next.get(name, now) <= now]

    def read(self, name: str, news: bool, now: float) -> None:
        interval = self._window
        if not news:
            interval = min(self._longest, 2 * self._interval.get(name, self._window / 2))
        self._interval[name] = interval
        self._next[name] = now + interval

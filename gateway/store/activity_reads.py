"""How `ActivityHub` reads many users' activity at once, as `log_reads.py` does for logs.

- One server (`BlockingActivityReads`): one `XREAD BLOCK` over the streams of every user with
  a listener here, on a connection of the hub's own, ended early by an entry on the process's
  activity wake stream when a user is added.
- A Redis Cluster (`PolledActivityReads`): each user's keys have a slot of their own, so one
  pipeline of short XRANGEs per window, one round trip per node; a quiet user's stream is read
  less often (`PollSchedule`, shared with the log reader).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Mapping

from redis.asyncio import Redis, RedisCluster

from gateway.protocol.activity import ActivityEntry
from gateway.store.activity import READ_COUNT, entries
from gateway.store.activity_hub import Found
from gateway.store.client import StoreClient
from gateway.store.keys import Keys
from gateway.store.log_reads import (
    BLOCK_MS,
    QUIET_WINDOWS,
    SHORTEST_WINDOW,
    PollSchedule,
    WakeableStreams,
)

# A Cluster's users are polled at this pace while active; activity is not a token stream.
POLL_WINDOW = 0.1


class BlockingActivityReads:
    def __init__(self, own: Redis, pooled: StoreClient, keys: Keys, wake_key: str) -> None:
        self._streams = WakeableStreams(own, pooled, wake_key, BLOCK_MS)
        self._keys = keys

    async def read(self, cursors: Mapping[str, str]) -> Found:
        names = {self._keys.user_activity(sub): sub for sub in cursors}
        asked = {name: cursors[sub] for name, sub in names.items()}
        return {
            names[name]: entries(rows) for name, rows in await self._streams.read(asked, READ_COUNT)
        }

    async def wake(self) -> None:
        await self._streams.wake()

    async def aclose(self) -> None:
        await self._streams.aclose()


class PolledActivityReads:
    def __init__(
        self,
        client: RedisCluster,
        keys: Keys,
        window: float = POLL_WINDOW,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        self._keys = keys
        window = max(window, SHORTEST_WINDOW)
        self._schedule = PollSchedule(window, window * QUIET_WINDOWS)
        self._clock = clock
        self._woken = asyncio.Event()

    async def read(self, cursors: Mapping[str, str]) -> Found:
        pause = self._schedule.wait(cursors, self._clock())
        if pause > 0:
            self._woken.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(pause):
                    await self._woken.wait()
        now = self._clock()
        due = self._schedule.due(cursors, now)
        if not due:
            return {}
        async with self._client.pipeline(transaction=False) as pipe:
            for sub in due:
                key = self._keys.user_activity(sub)
                pipe.xrange(key, min=f"({cursors[sub]}", max="+", count=READ_COUNT)
            replies = await pipe.execute(raise_on_error=False)
        found: dict[str, list[ActivityEntry] | Exception] = {}
        for sub, reply in zip(due, replies, strict=True):
            got = reply if isinstance(reply, Exception) else entries(reply)
            self._schedule.read(sub, bool(got) and not isinstance(got, Exception), now)
            found[sub] = got
        return found

    async def wake(self) -> None:
        self._woken.set()

    async def aclose(self) -> None:
        return None

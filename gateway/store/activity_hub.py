"""One reader per process for the activity of every user with a listener here.

Like `log_hub.py` for generation logs: the hub reads every followed user's stream at once
(`activity_reads.py`: one XREAD BLOCK on one server, polling on a Redis Cluster), parses each
new entry once, and hands the same `ActivityEntry` (which renders its frame once) to each of
the user's listeners. A listener never blocks the hub: it queues the entry into its own
bounded outbox (a socket's, which closes the socket 4008 when it overflows as for any frame;
an `/activity` stream's, which ends the stream so its client resumes from Last-Event-ID).

A user is read from the last id a listener knew when it joined; while Redis fails the hub
retries, and what was published meanwhile is read once it is back (within ACTIVITY_TTL).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from gateway.protocol.activity import ActivityEntry, stream_id

log = logging.getLogger("gateway.store")

RETRY_FIRST = 0.05
RETRY_MAX = 1.0

Listener = Callable[[ActivityEntry], object]  # what it returns is ignored
# What one read found: each user's new entries, oldest first, or the error of its stream.
Found = Mapping[str, list[ActivityEntry] | Exception]


class ActivityReads(Protocol):
    async def read(self, cursors: Mapping[str, str]) -> Found:
        """Each user's entries with ids above its cursor, waiting a while for some."""
        ...

    async def wake(self) -> None:
        """End the read in flight early: a user was added."""
        ...

    async def aclose(self) -> None: ...


@dataclass(eq=False, slots=True)
class _Followed:
    cursor: str
    listeners: set[Listener] = field(default_factory=set)


class ActivityHub:
    def __init__(self, reads: ActivityReads) -> None:
        self._reads = reads
        self._followed: dict[str, _Followed] = {}
        self._reading: Mapping[str, str] | None = None  # what the read in flight covers
        self._wanted = asyncio.Event()
        self._waking: asyncio.Task[None] | None = None
        self._round = 0  # reads begun
        self._woken = -1  # the read a wake was last sent for
        self._failing = False
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="activity-hub")

    async def close(self) -> None:
        for task in (self._task, self._waking):
            while task is not None and not task.done():
                task.cancel()
                await asyncio.wait([task], timeout=0.1)  # again if lost (see LogHub.close)
        await self._reads.aclose()

    @property
    def users(self) -> int:
        """How many users' activity the hub reads."""
        return len(self._followed)

    def join(self, sub: str, listener: Listener, after: str) -> None:
        """Hand `listener` the user's entries from now on; a user not read yet is read from
        `after`, the last id the listener's client knows of."""
        followed = self._followed.get(sub)
        if followed is None:
            followed = self._followed[sub] = _Followed(after)
            self._wanted.set()
            if self._waking is None or self._waking.done():
                self._waking = asyncio.create_task(self._wake(), name="activity-hub-wake")
        followed.listeners.add(listener)

    def leave(self, sub: str, listener: Listener) -> None:
        followed = self._followed.get(sub)
        if followed is not None:
            followed.listeners.discard(listener)
            if not followed.listeners:
                del self._followed[sub]

    async def _run(self) -> None:
        delay = RETRY_FIRST
        while True:
            if not self._followed:
                self._wanted.clear()
                await self._wanted.wait()
            reading = self._reading = {sub: f.cursor for sub, f in self._followed.items()}
            self._round += 1
            try:
                found = await self._reads.read(reading)
            except Exception as exc:
                self._reading = None
                if not self._failing:
                    log.warning("reading activity failed: %s", type(exc).__name__)
                self._failing = True
                await asyncio.sleep(delay)  # back off while Redis is down: don't spin
                delay = min(delay * 2, RETRY_MAX)
                continue
            self._reading = None
            delay = RETRY_FIRST
            if self._failing:
                log.warning("activity is read again")
                self._failing = False
            self._dispatch(found)

    def _dispatch(self, found: Found) -> None:
        for sub, got in found.items():
            followed = self._followed.get(sub)
            if followed is None or isinstance(got, Exception) or not got:
                continue
            fresh = [e for e in got if _after(e.id, followed.cursor)]
            if not fresh:
                continue
            followed.cursor = fresh[-1].id
            for entry in fresh:
                for listener in tuple(followed.listeners):
                    listener(entry)

    async def _wake(self) -> None:
        """End the read in flight if it lacks a user who joined (once per read, however many
        joined): the next read covers them all."""
        while (
            self._reading is not None
            and self._woken != self._round
            and not self._followed.keys() <= self._reading.keys()
        ):
            self._woken = self._round
            try:
                await self._reads.wake()
            except Exception as exc:  # the read ends by its own timeout, within a second
                log.warning("could not wake the activity reader: %s", type(exc).__name__)


def _after(entry_id: str, cursor: str) -> bool:
    """Whether an entry comes after the cursor (a user who left and joined again during a
    read may have a cursor ahead of that read)."""
    mine, theirs = stream_id(entry_id), stream_id(cursor)
    return mine is None or theirs is None or mine > theirs

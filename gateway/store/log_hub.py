"""One reader per process for every generation log followed from here.

A follower of a generation that runs on another instance reads what the log already holds
with a quick XRANGE of its own, then joins the hub from the last seq it delivered. The hub
reads every followed log at once (how, depends on the server: see `log_reads.py`) and hands
each new entry to the followers of its generation, parsed once. So a follower holds no pooled
connection while it waits, and three hundred followers of one generation cost the reads of
one.

Each follower has a bounded buffer: one that does not take what it is given (its client reads
slowly) loses the buffer and is marked `stale`, and reads the log itself again, at its own
pace, from its last seq. The hub never waits for a follower.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from gateway.events import Event
from gateway.store.trouble import Trouble
from gateway.tasks import stop_tasks

log = logging.getLogger("gateway.store")

# Events a follower may have waiting: twice what one read brings per log, so that a follower
# that keeps up never overflows.
BUFFERED_EVENTS = 1000

# What one read found: each generation's new events, oldest first, or the error that kept its
# log from being read (on a Redis Cluster, one node may fail while the others answer).
Found = Mapping[str, list[Event] | Exception]


class LogReads(Protocol):
    """How the hub reads many logs at once."""

    async def read(self, cursors: Mapping[str, int]) -> Found:
        """The events of each generation with seq above its cursor, waiting a while for some
        to come; raises when Redis fails as a whole."""
        ...

    async def wake(self) -> None:
        """End the read in flight early: a generation was added to the ones it covers."""
        ...

    async def aclose(self) -> None: ...


class Subscription:
    """One follower's place at the hub, for one generation.

    Contract: `take` hands over events at most once each, in seq order, with seq above what
    the follower says it has. While `stale`, the hub cannot vouch for what came before: the
    follower clears `stale`, then reads the log itself from its last seq (what it was not
    given is there, and what the hub reads from then on is kept for it), then takes again.
    """

    __slots__ = ("_events", "_failure", "_hub", "_joined", "_waiter", "generation_id", "stale")

    def __init__(self, hub: LogHub, generation_id: str) -> None:
        self.generation_id = generation_id
        self.stale = True  # a new follower reads the log's backlog first
        self._hub = hub
        self._events: list[Event] = []
        self._failure: Exception | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._joined = False

    def take(self, after: int) -> list[Event]:
        """The events waiting with seq above `after` (joining the hub from `after` the first
        time). Raises, once, the error of a read that failed since the last take."""
        if not self._joined:
            self._joined = True
            self._hub.join(self, after)
        if self._failure is not None:
            failure, self._failure = self._failure, None
            raise failure
        events, self._events = self._events, []
        return [event for event in events if event.seq > after]

    async def wait(self, seconds: float) -> bool:
        """Wait up to `seconds` for events, a failure or staleness; False if none came."""
        if self._events or self._failure is not None or self.stale:
            return True
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            async with asyncio.timeout(max(seconds, 0.0)):
                await self._waiter
        except TimeoutError:
            return False
        finally:
            self._waiter = None
        return True

    def close(self) -> None:
        """Leave the hub; nothing more is kept for this follower."""
        if self._joined:
            self._joined = False
            self._hub.leave(self)
        self._events = []

    # The hub's side.

    def put(self, events: list[Event]) -> None:
        if self.stale:
            return  # the follower reads the log itself first: these are there
        if len(self._events) + len(events) > self._hub.buffered:
            self._events = []  # too far behind: it rereads the log at its own pace
            self.stale = True
        else:
            self._events += events
        self._wake()

    def fail(self, error: Exception) -> None:
        self._events = []
        self.stale = True
        self._failure = error
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)


@dataclass(eq=False, slots=True)
class _Followed:
    """A followed generation: the last seq the hub has read of its log, and its followers."""

    cursor: int
    subscriptions: set[Subscription] = field(default_factory=set)


class LogHub:
    """Reads every followed generation's log, one read for all of them, deduplicated by
    generation, and dispatches what it finds; never waits for a follower."""

    def __init__(self, reads: LogReads, buffered: int = BUFFERED_EVENTS) -> None:
        self.buffered = buffered
        self._reads = reads
        self._followed: dict[str, _Followed] = {}
        self._reading: dict[str, _Followed] | None = None  # what the read in flight covers
        self._round = 0  # reads begun
        self._woken = -1  # the read a wake was last sent for
        self._waking: asyncio.Task[None] | None = None
        self._wanted = asyncio.Event()  # something is followed
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="log-hub")

    async def close(self) -> None:
        await stop_tasks(self._task, self._waking)
        await self._reads.aclose()

    def subscribe(self, generation_id: str) -> Subscription:
        """A follower's subscription; it joins the hub at its first `take`."""
        return Subscription(self, generation_id)

    @property
    def followed(self) -> int:
        """How many generations the hub reads."""
        return len(self._followed)

    def join(self, subscription: Subscription, after: int) -> None:
        generation_id = subscription.generation_id
        followed = self._followed.get(generation_id)
        if followed is None:
            followed = self._followed[generation_id] = _Followed(after)
            self._wanted.set()
            self._wake_if_needed()
        elif followed.cursor > after:
            subscription.stale = True  # the hub is past it: the gap is in the log
        followed.subscriptions.add(subscription)

    def leave(self, subscription: Subscription) -> None:
        # A generation nobody follows is dropped from the next read; the one in flight may
        # still bring its events, which go to nobody.
        generation_id = subscription.generation_id
        followed = self._followed.get(generation_id)
        if followed is not None:
            followed.subscriptions.discard(subscription)
            if not followed.subscriptions:
                del self._followed[generation_id]

    async def _run(self) -> None:
        trouble = Trouble("following generation logs")
        while True:
            if not self._followed:
                self._wanted.clear()
                await self._wanted.wait()
            reading = self._reading = dict(self._followed)
            self._round += 1
            try:
                found = await self._reads.read({g: f.cursor for g, f in reading.items()})
            except Exception as exc:
                self._reading = None
                trouble.met(exc)
                self._fail(exc)
                await trouble.back_off()  # while Redis is down: don't spin
                continue
            self._reading = None
            trouble.over()
            self._dispatch(reading, found)

    def _dispatch(self, reading: dict[str, _Followed], found: Found) -> None:
        for generation_id, got in found.items():
            followed = reading.get(generation_id)
            # Left and followed again during the read: its new cursor may be behind this.
            if followed is None or self._followed.get(generation_id) is not followed:
                continue
            if isinstance(got, Exception):
                for subscription in tuple(followed.subscriptions):
                    subscription.fail(got)
                continue
            if not got:
                continue
            followed.cursor = got[-1].seq
            for subscription in tuple(followed.subscriptions):
                subscription.put(got)

    def _fail(self, error: Exception) -> None:
        for followed in self._followed.values():
            for subscription in tuple(followed.subscriptions):
                subscription.fail(error)

    def _wake_if_needed(self) -> None:
        """When the read in flight lacks a followed generation, end it early (once per read,
        however many joined): the next read covers them all."""
        if self._waking is None or self._waking.done():
            self._waking = asyncio.create_task(self._wake(), name="log-hub-wake")

    async def _wake(self) -> None:
        while (
            self._reading is not None
            and self._woken != self._round
            and not self._followed.keys() <= self._reading.keys()
        ):
            self._woken = self._round
            try:
                await self._reads.wake()
            except Exception as exc:  # the read ends by its own timeout, within a second
                log.warning("could not wake the log reader: %s", type(exc).__name__)

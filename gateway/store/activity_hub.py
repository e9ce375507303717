"""One reader per process for the activity of every user with a listener here.

Every publish tells the user's pub/sub channel the id it reaches (`activity.py`). The hub
hears, on one connection, the channels of the users with a listener here, and reads, in one
pipeline, the streams of those with news; so an event costs an instance where its user
listens one message and one short read of the user's stream, however many other users listen
there, and an instance where the user does not listen nothing. Each new entry is parsed once
and the same `ActivityEntry` (which renders its frame once) is handed to each of the user's
listeners. A listener never blocks the hub: it queues the entry into its own bounded outbox (a
socket's, which closes the socket 4008 when it overflows as for any frame; an `/activity`
stream's, which ends the stream so its client resumes from Last-Event-ID).

A user is read from the last id a listener knew when it joined, once the user's channel is
heard (what was published before is in the stream). Whenever the connection is (re)joined,
every user is read again, since news may have been missed meanwhile; and every
`sweep` seconds on a Redis Cluster, in case a message was lost on the way (its bus does not
promise delivery). While Redis fails, the hub retries the users whose reads failed, at growing
intervals, and goes on reading the others' news at once (one node of a Redis Cluster may fail
alone); what was published meanwhile is read once it is back (within ACTIVITY_TTL).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from gateway.protocol.activity import ActivityEntry, stream_id
from gateway.store.trouble import Trouble
from gateway.tasks import stop_tasks

log = logging.getLogger("gateway.store")

# Seconds between reads of every user on a Redis Cluster, whose bus may lose a message when
# nodes fail. One server loses none on a live connection, and a dropped one is rejoined (and
# every user read): there, no sweep. A sweep costs about 50 µs of CPU per listening user.
CLUSTER_SWEEP = 30.0
USERS_PER_READ = 1000  # a sweep of many users goes in pipelines of this many
READ_COUNT = 200  # entries per read of one user's stream

Listener = Callable[[ActivityEntry], object]  # what it returns is ignored
# What one read of many users found: each user's new entries, oldest first, or the error of
# its stream (on a Redis Cluster one node may fail while the others answer).
Found = Mapping[str, list[ActivityEntry] | Exception]
# News from the channels: (sub, the id of the user's latest event); (sub, None) when the
# user's channel is heard from now on, or None when the connection was (re)joined: anything
# (of that user's, of anyone's) may have been missed before.
News = tuple[str, str | None] | None


class ActivitySource(Protocol):
    async def read(self, cursors: Mapping[str, str]) -> Found:
        """Each user's entries with ids above its cursor."""
        ...

    def news(self) -> AsyncIterator[News]:
        """Which of the users followed have news, as published; None when joined."""
        ...

    def follow(self, sub: str) -> None:
        """Hear the user's news from now on; `news` says `(sub, None)` once it does."""
        ...

    def unfollow(self, sub: str) -> None: ...

    async def announce_changes(self) -> None:
        """Run for good: makes `news` take up follows and unfollows at once."""
        ...


@dataclass(eq=False, slots=True)
class _Followed:
    cursor: str
    # Each listener, with the id it starts after while the reader is behind that (None once
    # the reader has passed it): a listener never gets what its client had before it joined.
    listeners: dict[Listener, str | None] = field(default_factory=dict)


class ActivityHub:
    def __init__(self, source: ActivitySource, sweep: float | None = None) -> None:
        self._source = source
        self._sweep = sweep
        self._followed: dict[str, _Followed] = {}
        # Users to read, oldest news first (a dict keeps insertion order; a set would not).
        self._due: dict[str, None] = {}
        self._wanted = asyncio.Event()  # set while `_due` holds someone
        self._failing: set[str] = set()  # users whose last read failed
        self._next_sweep: float | None = None  # when every user is read next, if ever
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        if self._sweep is not None:
            self._next_sweep = asyncio.get_running_loop().time() + self._sweep
        self._tasks = [
            asyncio.create_task(self._read_loop(), name="activity-reads"),
            asyncio.create_task(self._news_loop(), name="activity-news"),
            asyncio.create_task(self._source.announce_changes(), name="activity-channels"),
        ]

    async def close(self) -> None:
        await stop_tasks(*self._tasks)

    @property
    def users(self) -> int:
        """How many users' activity the hub reads."""
        return len(self._followed)

    def join(self, sub: str, listener: Listener, after: str) -> None:
        """Hand `listener` the user's entries after `after`, the last id its client knows of,
        from now on; a user not read yet is read from there."""
        followed = self._followed.get(sub)
        if followed is None:
            followed = self._followed[sub] = _Followed(after)
            self._source.follow(sub)  # read once the channel is heard: see `_hear`
        followed.listeners[listener] = after if _after(after, followed.cursor) else None

    def leave(self, sub: str, listener: Listener) -> None:
        followed = self._followed.get(sub)
        if followed is not None:
            followed.listeners.pop(listener, None)
            if not followed.listeners:
                del self._followed[sub]
                self._failing.discard(sub)
                self._source.unfollow(sub)

    def _mark(self, *subs: str) -> None:
        self._due.update(dict.fromkeys(subs))
        if self._due:
            self._wanted.set()

    def _hear(self, news: News) -> None:
        if news is None:
            self._mark(*self._followed)
            return
        sub, entry_id = news
        followed = self._followed.get(sub)
        if followed is not None and (entry_id is None or _after(entry_id, followed.cursor)):
            self._mark(sub)

    async def _news_loop(self) -> None:
        trouble = Trouble("listening for activity")
        while True:
            try:
                async for news in self._source.news():
                    trouble.over()
                    self._hear(news)
            except Exception as exc:
                trouble.met(exc)
            await trouble.back_off()  # while Redis is down: don't spin

    async def _read_loop(self) -> None:
        trouble = Trouble("reading activity")
        while True:
            await self._wait_for_work()
            batch = self._take_batch()
            if not batch:
                continue
            try:
                found = await self._source.read(batch)
            except Exception as exc:
                found = dict.fromkeys(batch, exc)
            failed = self._dispatch(found)
            if failed:
                trouble.met(next(iter(failed.values())))
                self._retry_later(list(failed), trouble.step())
            elif not self._failing:
                trouble.over()

    def _retry_later(self, subs: list[str], delay: float) -> None:
        """Users whose read failed are read again after `delay`; the others' news goes on
        being read at once. When Redis is down that is everyone, and the loop waits; when
        only some streams fail (a Cluster node down, a key of another type) only their users
        wait: the whole loop backing off slowed every user's activity to one read a second."""
        self._failing.update(subs)
        asyncio.get_running_loop().call_later(delay, self._mark, *subs)

    async def _wait_for_work(self) -> None:
        """Until a user is due, or it is time to read them all."""
        loop = asyncio.get_running_loop()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout_at(self._next_sweep):
                await self._wanted.wait()
        if self._sweep is None or self._next_sweep is None or loop.time() < self._next_sweep:
            return
        self._next_sweep = loop.time() + self._sweep
        self._mark(*self._followed)

    def _take_batch(self) -> dict[str, str]:
        """The next USERS_PER_READ users due, with their cursors. They are taken in one pass:
        taking the first due user again and again rescans the places already emptied, which
        made a sweep of tens of thousands of users hold the event loop for seconds."""
        if len(self._due) <= USERS_PER_READ:
            taken, self._due = list(self._due), {}
        else:
            taken = list(itertools.islice(self._due, USERS_PER_READ))
            for sub in taken:
                del self._due[sub]
        if not self._due:
            self._wanted.clear()
        return {sub: f.cursor for sub in taken if (f := self._followed.get(sub)) is not None}

    def _dispatch(self, found: Found) -> dict[str, Exception]:
        """Hand out what was found; users who may have more are due again. Returns the users
        whose read failed, with its error."""
        failed: dict[str, Exception] = {}
        for sub, got in found.items():
            followed = self._followed.get(sub)
            if followed is None:
                continue
            if isinstance(got, Exception):
                failed[sub] = got
                continue
            self._failing.discard(sub)
            if len(got) >= READ_COUNT:
                self._mark(sub)
            fresh = [e for e in got if _after(e.id, followed.cursor)]
            if not fresh:
                continue
            followed.cursor = fresh[-1].id
            for listener, start in tuple(followed.listeners.items()):
                given = fresh if start is None else [e for e in fresh if _after(e.id, start)]
                _hand(listener, given, followed.listeners)
                if start is None or listener not in followed.listeners:
                    continue
                if not _after(start, followed.cursor):
                    followed.listeners[listener] = None  # the reader has caught up with it
        return failed


def _hand(
    listener: Listener, entries: list[ActivityEntry], listeners: dict[Listener, str | None]
) -> None:
    """Give a listener the entries; one that raises is dropped, so that it ends neither the
    reader nor the other listeners' activity."""
    try:
        for entry in entries:
            listener(entry)
    except Exception as exc:
        listeners.pop(listener, None)
        log.error("an activity listener failed and was dropped: %s", type(exc).__name__)


def _after(entry_id: str, cursor: str) -> bool:
    """Whether an entry comes after the cursor (a user who left and joined again during a
    read may have a cursor ahead of that read)."""
    mine, theirs = stream_id(entry_id), stream_id(cursor)
    return mine is None or theirs is None or mine > theirs

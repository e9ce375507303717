"""Batched appends to generation logs: one pipeline per flush window for the whole process.

Local subscribers get every event at once; Redis gets them a few milliseconds later, many per
round trip. All writes go through one lock so a generation's events reach its stream in seq
order even when a flush and a finish overlap.

When Redis fails, nothing here blocks a generation or raises into it: events stay buffered
and are written, in order, once Redis answers again. The buffer is shared by every generation
of the process, so each gets a fair share: one generation holds at most about
`MAX_BUFFERED_PER_GENERATION` events, and when the whole buffer (`MAX_BUFFERED_EVENTS`) is
full the generation holding the most is given up, not the one that came last. Each generation
hears about it through `on_trouble`: "degraded" when a write covering it failed (it will be
retried), "lost" when its log is given up for good (it outgrew its share, or its record
vanished because Redis restarted empty). `on_written` tells it how far its log reaches, so
that it may drop older events from memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from redis.asyncio import Redis

from gateway.events import Event
from gateway.store.errors import UNREACHABLE
from gateway.store.log_results import (
    NOT_LANDED,
    Ending,
    ExtraCommands,
    Positions,
    drop_landed,
    was_refused,
    written_up_to,
)
from gateway.store.logs import GenerationLog
from gateway.store.records import Persisted, Status, Trouble
from gateway.store.trouble import RETRY_FIRST, RETRY_MAX
from gateway.tasks import stop_tasks

log = logging.getLogger("gateway.store")

# About 20 MB of small events: minutes of an outage at a busy gateway's pace.
MAX_BUFFERED_EVENTS = 100_000
# One generation's share: a long answer's events through an outage of a few minutes. (A write
# in flight holds up to as many again, so it may briefly hold twice this.)
MAX_BUFFERED_PER_GENERATION = 10_000
# How long a finish waits on a Redis known to be failing before the final event goes out.
FAILING_WAIT = 0.5


class LogWriter:
    def __init__(
        self,
        generation_log: GenerationLog,
        window_ms: float,
        max_buffered: int = MAX_BUFFERED_EVENTS,
        max_per_generation: int = MAX_BUFFERED_PER_GENERATION,
        *,
        own: Redis | None = None,
        deadline: float | None = None,
    ) -> None:
        """`own`: a connection of the writer's alone (one Redis server), whose replies have no
        timeout each: a write then has `deadline` seconds as a whole. redis-py times every
        reply of a pipeline with an asyncio timeout of its own, and a write holds one reply per
        generation with news (about 1.7 µs of CPU per chunk at 100 streams). Without `own`,
        writes go through the store's client and its per-reply timeout (a Redis Cluster)."""
        self._log = generation_log
        self._own = own
        self._deadline = deadline
        self._window = window_ms / 1000
        self._max_buffered = max_buffered
        self._max_per_generation = max_per_generation
        self._pending: dict[str, list[Event]] = {}
        self._endings: dict[str, Ending] = {}
        self._ends_in_flight: set[str] = set()  # ends of the write under way
        self._given_up: set[str] = set()
        self._buffered = 0  # events in _pending and _endings
        self._failing = False  # the last write failed; the next success clears it
        self._wakeup = asyncio.Event()
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self.on_trouble: Callable[[str, Trouble], None] = lambda generation_id, trouble: None
        # Told the highest seq of a generation that its log now holds (all before it too).
        self.on_written: Callable[[str, int], None] = lambda generation_id, seq: None
        self.round_trips = 0
        self.events_written = 0

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="log-writer")

    def add(self, generation_id: str, event: Event) -> None:
        """Queue an event; it reaches Redis within the flush window (or once Redis is back)."""
        if generation_id in self._given_up:
            return
        waiting = len(self._pending.get(generation_id, ()))
        if waiting >= self._max_per_generation:
            log.warning(
                "generation %s: %d events wait for the store; its log is given up",
                generation_id,
                waiting,
            )
            self.give_up(generation_id)
            return
        if self._buffered >= self._max_buffered and self._drop_largest(generation_id):
            return
        self._pending.setdefault(generation_id, []).append(event)
        self._buffered += 1
        self._wakeup.set()

    def _drop_largest(self, adding: str) -> bool:
        """The buffer is full: give up the generation with the most events waiting, so that
        a small one is not the one to lose its log. True when that is `adding`."""
        largest = max(self._pending, key=lambda g: len(self._pending[g]), default=adding)
        if len(self._pending.get(adding, ())) >= len(self._pending.get(largest, ())):
            largest = adding
        log.warning("generation %s: the log buffer is full; its log is given up", largest)
        self.give_up(largest)
        return largest == adding

    def forget(self, generation_id: str) -> None:
        """Drop all state of a generation that ends without `finish` (another instance ended
        it: nothing may follow its terminal event)."""
        dropped = self._pending.pop(generation_id, [])
        ending = self._endings.pop(generation_id, None)
        self._buffered -= len(dropped) + (len(ending.events) if ending else 0)
        self._given_up.discard(generation_id)

    def give_up(self, generation_id: str) -> None:
        """Write nothing more for this generation (its events still reach local subscribers)."""
        ended = generation_id in self._endings  # no more events will come for it
        self.forget(generation_id)
        if not ended:
            self._given_up.add(generation_id)
        self.on_trouble(generation_id, "lost")

    async def finish(
        self,
        generation_id: str,
        final: Event,
        status: Status,
        extra: ExtraCommands | None = None,
        again: ExtraCommands | None = None,
    ) -> Persisted:
        """Write the generation's queued events, its final event, its status and `extra`
        commands (such as storing the answer) in one round trip, with whatever else is
        queued. Never raises for Redis failures: the end stays queued and is written once
        Redis answers again. While Redis is known to fail it is given only `FAILING_WAIT`,
        so the final event reaches the client at once. `again`: those of `extra` that may
        run twice, written again after a failed write whose final event landed (on a Redis
        Cluster the rest may have gone to a node that failed; which, a failed write does
        not say)."""
        if generation_id in self._given_up:
            self.forget(generation_id)
            return "lost"
        self._endings[generation_id] = Ending([final], status, extra, again)
        self._buffered += 1
        gone: set[str] = set()
        with contextlib.suppress(Exception):  # a failure keeps it queued; see below
            async with self._lock:
                # Chosen once the lock is held: a write that was already stalling has failed by
                # then, so the end waits for at most one stalled write.
                async with asyncio.timeout(FAILING_WAIT if self._failing else None):
                    gone = await self._flush_locked()
        self._given_up.discard(generation_id)  # given up while its end was being written
        if generation_id in gone:
            return "lost"
        return "pending" if generation_id in self._endings else "stored"

    async def flush(self) -> None:
        """Write everything queued; raise if Redis failed (it stays queued)."""
        async with self._lock:
            await self._flush_locked()

    def unstored_ends(self) -> set[str]:
        """The generations that have ended here but whose end is not written yet: their
        clients may have seen it, so their leases must be kept until it is."""
        return set(self._endings) | self._ends_in_flight

    async def _flush_locked(self) -> set[str]:
        """Returns the ended generations whose records vanished: their end is lost."""
        batch, self._pending = self._pending, {}
        endings, self._endings = self._endings, {}
        if not batch and not endings:
            return set()
        self._ends_in_flight = set(endings)
        try:
            return await self._flush_taken(batch, endings)
        finally:
            self._ends_in_flight = set()

    async def _flush_taken(
        self, batch: dict[str, list[Event]], endings: dict[str, Ending]
    ) -> set[str]:
        """Write what `_flush_locked` took; on failure it is all kept for the next try."""
        for generation_id, ending in endings.items():  # last events travel with their end
            ending.events = batch.pop(generation_id, []) + ending.events
        try:
            # A timed-out write can still run once Redis continues: an end tried before is
            # written again only if its generation still runs, so its answer is stored once.
            tried = {g: e for g, e in endings.items() if e.tried and not e.finished}
            retried = await self._unwritten(tried)
            endings = {g: e for g, e in endings.items() if g not in tried or g in retried}
            for ending in endings.values():
                ending.tried = True
            refused = await self._write(batch, endings)
        except BaseException:  # a timeout cancels the write: keep it all too
            self._keep(batch, endings)
            raise
        return await self._vanished(refused, ended=set(endings))

    async def _run(self) -> None:
        delay = RETRY_FIRST
        while True:
            await self._wakeup.wait()
            await asyncio.sleep(self._window)  # the window that lets events gather
            self._wakeup.clear()
            try:
                await self.flush()
                delay = RETRY_FIRST
            except Exception:
                await asyncio.sleep(delay)  # back off while Redis is down: don't spin
                delay = min(delay * 2, RETRY_MAX)
                self._wakeup.set()

    async def close(self, within: float = 0.0) -> None:
        """Write what is left, trying for up to `within` seconds while the store fails (a
        process asked to stop keeps the answers its clients saw end until they are stored),
        then say loudly what could not be written."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        delay = RETRY_FIRST
        while True:
            with contextlib.suppress(Exception):
                # A reachable store takes milliseconds; a second at least for the last try.
                async with asyncio.timeout(max(deadline - loop.time(), 1.0)):
                    await self.flush()
            left = deadline - loop.time()
            if not self._buffered or left <= 0:
                break
            await asyncio.sleep(min(delay, left))  # the store is still down: don't spin
            delay = min(delay * 2, RETRY_MAX)
        await stop_tasks(self._task)
        self._report_unwritten()
        if self._own is not None:
            await self._own.aclose()

    def _report_unwritten(self) -> None:
        for generation_id in self.unstored_ends():
            ending = self._endings.get(generation_id)
            if ending is not None and ending.finished:  # only what follows the end is left
                log.error(
                    "generation %s: its answer could not be stored before exit", generation_id
                )
                continue
            log.error(
                "generation %s: its end and answer could not be stored before exit; another "
                "instance will end it as interrupted with what its log holds",
                generation_id,
            )
        if self._buffered:
            log.error("%d generation log events could not be written before exit", self._buffered)

    def _keep(self, batch: dict[str, list[Event]], endings: dict[str, Ending]) -> None:
        """Put back what a failed write held, ahead of anything queued since, and tell the
        generations concerned."""
        if not self._failing:
            log.warning("the store is unreachable: generation logs are buffered until it is back")
        self._failing = True
        for generation_id, events in batch.items():
            if generation_id in self._given_up:  # given up during the write
                self._buffered -= len(events)
                continue
            self._pending[generation_id] = events + self._pending.get(generation_id, [])
        for generation_id, ending in endings.items():
            ending.events = self._pending.pop(generation_id, []) + ending.events
            self._endings[generation_id] = ending
        self._wakeup.set()
        for generation_id in (*batch, *endings):
            if generation_id not in self._given_up:
                self.on_trouble(generation_id, "degraded")

    async def _unwritten(self, endings: dict[str, Ending]) -> dict[str, Ending]:
        """Those of `endings` whose generation still runs (their end has not landed), and,
        of those whose end landed, what may be written again (`Ending.again`) alone."""
        if not endings:
            return endings
        ids = list(endings)
        statuses = await self._log.statuses(ids)
        kept = {}
        for generation_id, status in zip(ids, statuses, strict=True):
            ending = endings[generation_id]
            if status == "running":
                kept[generation_id] = ending
                continue
            self._buffered -= len(ending.events)
            if status is not None and ending.again is not None:
                ending.events, ending.finished, ending.extra = [], True, ending.again
                kept[generation_id] = ending
            elif status is None:
                log.warning("generation %s vanished from the store; its end is lost", generation_id)
        return kept

    async def _write(self, batch: dict[str, list[Event]], endings: dict[str, Ending]) -> list[str]:
        """One round trip for all of it; two when the server had forgotten the append script
        (NOSCRIPT: those appends did not run, and go again at once, whole). Returns the
        generations whose appends were refused because they no longer run. If part of it could
        not reach Redis (a Cluster node), what landed is removed from `batch` and `endings` and
        the error raised: the rest is kept and written again."""
        refused: list[str] = []
        while True:  # once more at most: after a NOSCRIPT the script goes whole (EVAL)
            results, where = await self._send(batch, endings)
            commands = (*where.appends.items(), *where.finishes.items())
            self._log.saw_appends(results[index] for _, index in commands)
            refused += [gid for gid, index in commands if was_refused(gid, results[index])]
            for generation_id, seq in written_up_to(batch, endings, results, where):
                self.on_written(generation_id, seq)
            if not any(isinstance(result, NOT_LANDED) for result in results):
                break
            dropped = drop_landed(batch, endings, results, where)
            self._buffered -= dropped
            self.events_written += dropped
            failure = next((r for r in results if isinstance(r, UNREACHABLE)), None)
            if failure is not None:
                raise failure
        written = sum(len(e) for e in batch.values()) + sum(len(e.events) for e in endings.values())
        self._buffered -= written
        if self._failing:
            log.warning("the store is reachable again: buffered generation logs are written")
        self._failing = False
        self.events_written += written
        return refused

    async def _send(
        self, batch: dict[str, list[Event]], endings: dict[str, Ending]
    ) -> tuple[list[object], Positions]:
        where = Positions()
        async with (self._own or self._log.redis).pipeline(transaction=False) as pipe:
            for generation_id, events in batch.items():
                where.appends[generation_id] = len(pipe)
                self._log.queue_append(pipe, generation_id, events)
            for generation_id, ending in endings.items():
                if not ending.finished:
                    where.finishes[generation_id] = len(pipe)
                    self._log.queue_finish(pipe, generation_id, ending.events, ending.status)
                start = len(pipe)
                if ending.extra is not None:
                    ending.extra(pipe)
                where.extras[generation_id] = range(start, len(pipe))
            async with asyncio.timeout(self._deadline):
                results = await pipe.execute(raise_on_error=False)
        self.round_trips += 1
        return results, where

    async def _vanished(self, refused: list[str], ended: set[str]) -> set[str]:
        """Of the generations whose append was refused (no longer running), those whose record
        is gone (Redis restarted empty), now given up; the others were ended by another
        instance, which stored their end."""
        if not refused:
            return set()
        try:
            statuses = await self._log.statuses(refused)
        except Exception:
            return set()  # asked again at the next refusal
        gone = {gid for gid, status in zip(refused, statuses, strict=True) if status is None}
        for generation_id in gone:
            if generation_id in ended:
                log.warning("generation %s vanished from the store; its end is lost", generation_id)
                self.on_trouble(generation_id, "lost")
            else:
                self.give_up(generation_id)
        return gone

"""Batched appends to generation logs: one pipeline per flush window for the whole process.

Local subscribers get every event at once; Redis gets them a few milliseconds later, many per
round trip. All writes go through one lock so a generation's events reach its stream in seq
order even when a flush and a finish overlap.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from redis.asyncio.client import Pipeline

from gateway.events import Event
from gateway.store.logs import GenerationLog, Status

log = logging.getLogger("gateway.store")

ExtraCommands = Callable[[Pipeline], None]


class LogWriter:
    def __init__(self, generation_log: GenerationLog, window_ms: float) -> None:
        self._log = generation_log
        self._window = window_ms / 1000
        self._pending: dict[str, list[Event]] = {}
        self._wakeup = asyncio.Event()
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self.round_trips = 0
        self.events_written = 0

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="log-writer")

    def add(self, generation_id: str, event: Event) -> None:
        """Queue an event; it reaches Redis within the flush window."""
        self._pending.setdefault(generation_id, []).append(event)
        self._wakeup.set()

    async def finish(
        self, generation_id: str, final: Event, status: Status, extra: ExtraCommands | None = None
    ) -> None:
        """Write the generation's queued events, its final event, its status and `extra`
        commands (such as storing the answer) in one round trip."""
        async with self._lock:
            events = [*self._pending.pop(generation_id, []), final]
            async with self._log.redis.pipeline(transaction=False) as pipe:
                self._log.queue_finish(pipe, generation_id, events, status)
                if extra is not None:
                    extra(pipe)
                await _execute(pipe)
            self._count(len(events))

    async def flush(self) -> None:
        async with self._lock:
            batch, self._pending = self._pending, {}
            if not batch:
                return
            try:
                async with self._log.redis.pipeline(transaction=False) as pipe:
                    for generation_id, events in batch.items():
                        self._log.queue_append(pipe, generation_id, events)
                    await _execute(pipe)
            except Exception:
                log.warning("appending to generation logs failed; retrying in the next window")
                for generation_id, events in batch.items():
                    self._pending[generation_id] = events + self._pending.get(generation_id, [])
                raise
            self._count(sum(len(events) for events in batch.values()))

    async def _run(self) -> None:
        while True:
            await self._wakeup.wait()
            await asyncio.sleep(self._window)  # the window that lets events gather
            self._wakeup.clear()
            with contextlib.suppress(Exception):
                await self.flush()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        with contextlib.suppress(Exception):
            await self.flush()

    def _count(self, events: int) -> None:
        self.round_trips += 1
        self.events_written += events


async def _execute(pipe: Pipeline) -> None:
    for result in await pipe.execute(raise_on_error=False):
        if isinstance(result, Exception):
            raise result

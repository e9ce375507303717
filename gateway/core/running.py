"""The generations this process runs: their tasks kept alive, their leases renewed, cancels
heard from other instances, and the drain on shutdown."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from gateway.core.generations import Generation
from gateway.core.notices import PERSISTENCE_DEGRADED, PERSISTENCE_LOST
from gateway.core.ports import GenerationLogs, LogWriting
from gateway.obs.metrics import GatewayMetrics
from gateway.store.records import Trouble
from gateway.tasks import stop_tasks

log = logging.getLogger("gateway.core.generations")


class GenerationRegistry:
    """The generations this process runs: keeps their tasks alive, renews their leases,
    hears cancels from other instances, and drains them on shutdown."""

    def __init__(
        self,
        generation_log: GenerationLogs,
        writer: LogWriting,
        lease_ttl: float,
        metrics: GatewayMetrics,
    ) -> None:
        self._log = generation_log
        self.metrics = metrics
        self.writer = writer
        self._lease_ttl = lease_ttl
        self._running: dict[str, Generation] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self.draining = asyncio.Event()
        self._drain_started: float | None = None
        self._drain_hooks: set[Callable[[], None]] = set()
        writer.on_trouble = self._trouble
        writer.on_written = self._written
        self._renew_failing = False

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._keep_leases(), name="generation-leases"),
            asyncio.create_task(self._hear_cancels(), name="generation-cancels"),
        ]

    def begin_drain(self) -> None:
        """Refuse new generations from now on and run the drain hooks (once)."""
        if self._drain_started is None:
            self._drain_started = time.monotonic()
            self.draining.set()
            for hook in list(self._drain_hooks):
                hook()

    def on_drain(self, hook: Callable[[], None]) -> Callable[[], None]:
        """Run `hook` when draining begins; returns a function that removes it."""
        self._drain_hooks.add(hook)
        return lambda: self._drain_hooks.discard(hook)

    def launch(self, generation: Generation) -> None:
        generation.begin()
        # Its span is the task's current one: the model's calls are its children.
        work = generation.trace.run(generation.run())
        task = asyncio.create_task(work, name=f"generation-{generation.id}")
        generation.task = task
        self._running[generation.id] = generation
        self.metrics.generations_running.set(len(self._running))
        task.add_done_callback(lambda _: self._forget(generation.id))

    def _forget(self, generation_id: str) -> None:
        self._running.pop(generation_id, None)
        # Set, not moved, so it cannot drift; a live gauge, so workers add up.
        self.metrics.generations_running.set(len(self._running))

    def get(self, generation_id: str) -> Generation | None:
        return self._running.get(generation_id)

    def _trouble(self, generation_id: str, trouble: Trouble) -> None:
        generation = self._running.get(generation_id)
        if generation is not None:
            if trouble == "lost":
                generation.recent.never_written()
            generation.notify(PERSISTENCE_DEGRADED if trouble == "degraded" else PERSISTENCE_LOST)

    def _written(self, generation_id: str, seq: int) -> None:
        generation = self._running.get(generation_id)
        if generation is not None:
            generation.recent.written(seq)

    async def _keep_leases(self) -> None:
        while True:
            await asyncio.sleep(self._lease_ttl / 3)
            # A generation whose end is not stored yet keeps its lease too: its clients may
            # have seen it end, so no other instance may end it as interrupted meanwhile.
            held = list(dict.fromkeys((*self._running, *self.writer.unstored_ends())))
            if not held:
                continue
            try:
                actions = await self._log.renew(held)
            except Exception:
                # The store is down: keep serving the clients; the leases are renewed (and
                # recreated if they lapsed) once it is back.
                if not self._renew_failing:
                    log.warning("renewing generation leases failed; retrying")
                self._renew_failing = True
                continue
            self._renew_failing = False
            for generation_id, action in actions.items():
                self._act(generation_id, action)

    def _act(self, generation_id: str, action: str) -> None:
        """What a lease renewal found: a cancel asked elsewhere, the generation ended by
        another instance ("lost": stop), or its record gone because the store restarted
        empty ("gone": it keeps serving its clients, but nothing more is written for it)."""
        generation = self._running.get(generation_id)
        if generation is None:
            return
        if action == "gone":
            self.writer.give_up(generation_id)
        else:
            generation.cancel("lost" if action == "lost" else "cancel")

    async def _hear_cancels(self) -> None:
        while True:
            try:
                async for generation_id in self._log.cancel_requests():
                    self._cancel_local(generation_id)
            except Exception:
                log.warning("the cancel channel dropped; resubscribing")
                await asyncio.sleep(1)  # back off before reconnecting to Redis

    def _cancel_local(self, generation_id: str) -> None:
        generation = self._running.get(generation_id)
        if generation is not None:
            generation.cancel()

    async def shutdown(self, drain_seconds: float) -> None:
        """Let running generations finish until `drain_seconds` after draining began and
        interrupt the rest; each stores what it has (or leaves it to the log writer). The
        leases are kept until `stop`, for the ends the writer has yet to store."""
        self.begin_drain()
        assert self._drain_started is not None
        tasks = [g.task for g in self._running.values() if g.task is not None]
        if tasks:
            deadline = self._drain_started + drain_seconds
            await asyncio.wait(tasks, timeout=max(0.0, deadline - time.monotonic()))
        for generation in list(self._running.values()):
            generation.cancel("shutdown")
        tasks = [g.task for g in self._running.values() if g.task is not None]
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    async def stop(self) -> None:
        """Stop renewing leases and hearing cancels."""
        await stop_tasks(*self._tasks)

"""Running generations: number the agent's events, fan them out, cancel, store the answer.

A generation is a task owned by the gateway process, not by the connection that asked for it:
when that connection goes away the generation still runs to its end and its answer is stored.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Literal

from gateway.errors import InternalError, Interrupted, RequestError
from gateway.events import (
    AgentEvent,
    Chunk,
    Done,
    Event,
    Failed,
    Finish,
    GenerationRef,
    Start,
    TextDelta,
    Usage,
)
from gateway.protocol import failed_from

log = logging.getLogger("gateway.generations")

Subscriber = Callable[[GenerationRef, Event], None]
Outcome = Literal["complete", "incomplete", "cancelled"]


@dataclass(frozen=True, slots=True)
class Result:
    """How a generation ended; handed to its `on_end` before the final event is published."""

    text: str
    outcome: Outcome
    usage: Usage
    finish: Done | Failed


OnEnd = Callable[[Result], Awaitable[None]]


class Generation:
    def __init__(
        self,
        ref: GenerationRef,
        model: str,
        agent: str,
        events: AsyncIterator[AgentEvent],
        on_end: OnEnd,
    ) -> None:
        self.ref = ref
        self.model = model
        self.agent = agent
        self._events = events
        self._on_end = on_end
        self._subscribers: list[Subscriber] = []
        self._seq = 0
        self._stop: Literal["cancel", "shutdown"] | None = None
        self.task: asyncio.Task[None] | None = None

    @property
    def id(self) -> str:
        return self.ref.generation_id

    def subscribe(self, subscriber: Subscriber) -> None:
        self._subscribers.append(subscriber)

    def unsubscribe(self, subscriber: Subscriber) -> None:
        if subscriber in self._subscribers:
            self._subscribers.remove(subscriber)

    def cancel(self, reason: Literal["cancel", "shutdown"] = "cancel") -> None:
        """Stop the agent (and its upstream request); idempotent."""
        if self.task is not None and not self.task.done() and self._stop is None:
            self._stop = reason
            self.task.cancel()

    async def run(self) -> None:
        self._publish(Start(self._next_seq(), self.model, self.agent))
        parts: list[str] = []
        finish: Finish | None = None
        error: RequestError | None = None
        try:
            async for event in self._events:
                if isinstance(event, TextDelta):
                    parts.append(event.text)
                    self._publish(Chunk(self._next_seq(), event.text, event.metadata))
                else:
                    finish = event
        except asyncio.CancelledError:
            if self._stop is None:
                raise
            asyncio.current_task().uncancel()  # type: ignore[union-attr]
            if self._stop == "shutdown":
                error = Interrupted("The gateway stopped before the answer was finished.")
        except RequestError as exc:
            error = exc
        except Exception:
            log.exception("generation %s failed", self.id)
            error = InternalError()
        await self._end("".join(parts), finish, error)

    async def _end(self, text: str, finish: Finish | None, error: RequestError | None) -> None:
        seq = self._next_seq()
        result: Result
        if error is not None:
            usage = Usage(completion_tokens=len(text.split()))
            result = Result(text, "incomplete", usage, failed_from(error, seq))
        elif finish is None:
            usage = Usage(completion_tokens=len(text.split()))
            result = Result(text, "cancelled", usage, Done(seq, "cancelled", usage))
        else:
            result = Result(text, "complete", finish.usage, Done(seq, finish.reason, finish.usage))
        try:
            await self._on_end(result)
        except Exception:
            log.exception("generation %s: storing the answer failed", self.id)
            failure = InternalError("The answer could not be stored; it may be missing later.")
            result = Result(text, result.outcome, result.usage, failed_from(failure, seq))
        self._publish(result.finish)
        self._subscribers.clear()

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def _publish(self, event: Event) -> None:
        for subscriber in tuple(self._subscribers):
            subscriber(self.ref, event)


class GenerationRegistry:
    """The generations this process runs: keeps their tasks alive and stops them on shutdown."""

    def __init__(self) -> None:
        self._running: dict[str, Generation] = {}

    def launch(self, generation: Generation) -> None:
        task = asyncio.create_task(generation.run(), name=f"generation-{generation.id}")
        generation.task = task
        self._running[generation.id] = generation
        task.add_done_callback(lambda _: self._running.pop(generation.id, None))

    def get(self, generation_id: str) -> Generation | None:
        return self._running.get(generation_id)

    def __len__(self) -> int:
        return len(self._running)

    async def shutdown(self) -> None:
        """Stop every generation; each stores what it has as incomplete."""
        generations = list(self._running.values())
        for generation in generations:
            generation.cancel("shutdown")
        tasks = [g.task for g in generations if g.task is not None]
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

"""Running generations: number the agent's events, fan them out, log them, cancel, lease.

A generation is a task owned by the gateway process, not by the connection that asked for it.
It publishes each event to local subscribers at once and to its Redis log in batches, so a
subscriber anywhere can follow it by seq: locally from memory, remotely from the log.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Literal, Protocol

from gateway.bounds import AnswerText, GenerationBounds, timed_out
from gateway.core.notices import (
    NOTICES,
    PERSISTENCE_DEGRADED,
    PERSISTENCE_LOST,
    STORE_UNREACHABLE,
    NoticeSink,
    Sink,
)
from gateway.core.ports import GenerationLogs, LogWriting
from gateway.core.recent import RecentEvents
from gateway.errors import InternalError, Interrupted, RequestError, UpstreamError
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
    ToolCall,
    ToolCalled,
    ToolResult,
    ToolReturned,
    Usage,
    is_final,
)
from gateway.obs.logs import bind
from gateway.obs.metrics import GatewayMetrics
from gateway.obs.tracing import NO_GENERATION, GenerationTrace
from gateway.protocol.frames import failed_from
from gateway.store.records import Persisted, Status
from gateway.store.unreachable import store_error

log = logging.getLogger("gateway.core.generations")

Subscriber = Callable[[GenerationRef, Event], None]


# A resume on this process reads events older than those in memory from the log: this many
# per read, retried with a growing pause while the store is unreachable.
LOG_READ_BATCH = 256
LOG_RETRY_FIRST = 0.1
LOG_RETRY_MAX = 2.0
UNREPLAYABLE = (
    "The earlier events of this answer could not be saved, so it cannot be replayed from "
    "this point; resume from a later event."
)
Outcome = Literal["complete", "incomplete", "cancelled"]
# cancel: asked for; shutdown: the drain ran out; lost: another instance already ended it.
StopReason = Literal["cancel", "shutdown", "lost"]


@dataclass(frozen=True, slots=True)
class Result:
    """How a generation ended; handed to its `on_end` before the final event is published."""

    text: str
    outcome: Outcome
    status: Status
    usage: Usage
    finish: Done | Failed


# Whether the end was stored; None counts as stored.
OnEnd = Callable[[Result], Awaitable[Persisted | None]]


def _length(answer: AnswerText) -> Finish:
    """How a generation that a bound stopped ends: its usage is unknown, as for a cancel."""
    return Finish("length", Usage(completion_tokens=len(answer.text.split())))


def result_of(text: str, finish: Finish | None, error: RequestError | None, seq: int) -> Result:
    if error is not None:
        usage = Usage(completion_tokens=len(text.split()))
        status: Status = "interrupted" if isinstance(error, Interrupted) else "failed"
        return Result(text, "incomplete", status, usage, failed_from(error, seq))
    if finish is None:
        usage = Usage(completion_tokens=len(text.split()))
        return Result(text, "cancelled", "cancelled", usage, Done(seq, "cancelled", usage))
    done = Done(seq, finish.reason, finish.usage, finish.metadata)
    return Result(text, "complete", "complete", finish.usage, done)


class Generation:
    def __init__(
        self,
        ref: GenerationRef,
        model: str,
        agent: str,
        events: AsyncIterator[AgentEvent],
        on_end: OnEnd,
        writer: LogWriting,
        metrics: GatewayMetrics,
        bounds: GenerationBounds,
        generation_log: GenerationLogs,
        trace: GenerationTrace = NO_GENERATION,
    ) -> None:
        self.ref = ref
        self.trace = trace
        self.model = model
        self.agent = agent
        self._source = events
        self._on_end = on_end
        self._writer = writer
        self._log = generation_log
        self._bounds = bounds
        self._subscribers: list[Subscriber] = []
        self.recent = RecentEvents(bounds.memory_events)
        self._stop: StopReason | None = None
        self._ending = False
        self._noticed: set[str] = set()
        self.task: asyncio.Task[None] | None = None
        self._metrics = metrics
        self._first_token = metrics.time_to_first_token.labels(model)
        self._started = time.perf_counter()
        self._last_chunk = 0.0
        self._cancelled_at = 0.0

    @property
    def id(self) -> str:
        return self.ref.generation_id

    @property
    def ended(self) -> bool:
        last = self.recent.last
        return last is not None and is_final(last)

    @property
    def last_seq(self) -> int:
        """The seq of the last event published."""
        return self.recent.last_seq

    def attach(self, subscriber: Subscriber) -> None:
        """Deliver every event published from now on to `subscriber`."""
        if not self.ended:
            self._subscribers.append(subscriber)

    async def replay(self, sink: Sink, after: int) -> None:
        """Deliver events with seq > after at the sink's pace, then attach it live: the last
        check and the attach happen with no await between, so nothing is missed or repeated.
        Events older than those kept in memory are read from the log, which holds all of them
        (see RecentEvents); should it not, the sink gets a final error instead of a gap."""
        position = after
        from_log: deque[Event] = deque()
        while position < self.last_seq:
            if not await sink.room():
                return
            event = from_log.popleft() if from_log else self.recent.at(position + 1)
            if event is None:
                from_log.extend(await self._read_log(sink, position))
                if not from_log:
                    sink(self.ref, Failed(position + 1, "internal", UNREPLAYABLE, False))
                    return
                continue
            sink(self.ref, event)
            position = event.seq
        self._metrics.replayed_events.inc(position - after)
        self.attach(sink)

    async def _read_log(self, sink: Sink, after: int) -> list[Event]:
        """The next events after `after` from the log, in an unbroken run of seqs (empty when
        the log lacks the first). While the store is unreachable the sink is told once and
        the read is tried again until it is back."""
        pause = 0.0
        while True:
            try:
                events = await self._log.read_after(self.id, after, LOG_READ_BATCH)
                break
            except Exception as exc:
                if store_error(exc) is None:
                    raise
                if not pause and isinstance(sink, NoticeSink):
                    sink.notice(self.ref, STORE_UNREACHABLE, NOTICES[STORE_UNREACHABLE])
                pause = min(LOG_RETRY_MAX, max(LOG_RETRY_FIRST, pause * 2))
                await asyncio.sleep(pause)  # a retry pause while the store is down
        run: list[Event] = []
        for event in events:
            if event.seq != after + len(run) + 1:
                break
            run.append(event)
        return run

    def detach(self, subscriber: Subscriber) -> None:
        if subscriber in self._subscribers:
            self._subscribers.remove(subscriber)

    def cancel(self, reason: StopReason = "cancel") -> None:
        """Stop the agent (and its upstream request); idempotent, and a no-op once ending."""
        running = self.task is not None and not self.task.done()
        if running and self._stop is None and not self._ending:
            assert self.task is not None
            self._stop = reason
            self._cancelled_at = time.perf_counter()
            self.task.cancel()

    def notify(self, code: str) -> None:
        """Tell the current subscribers, once per code, e.g. that its log cannot be written."""
        if code in self._noticed or self.ended:
            return
        self._noticed.add(code)
        log.warning("generation %s: %s", self.id, code)
        for subscriber in tuple(self._subscribers):
            if isinstance(subscriber, NoticeSink):
                subscriber.notice(self.ref, code, NOTICES[code])

    def begin(self) -> None:
        """Publish the start event; called before the task runs so it precedes anything else."""
        self._publish(Start(1, self.model, self.agent))

    async def run(self) -> None:
        bind(generation_id=self.id, conversation_id=self.ref.conversation_id)  # its log lines
        answer = AnswerText(self._bounds.answer_chars)
        finish: Finish | None = None
        error: RequestError | None = None
        try:
            finish = await self._bounded(answer)
        except asyncio.CancelledError:
            if self._stop is None:
                raise
            asyncio.current_task().uncancel()  # type: ignore[union-attr]
            # The agent's upstream request is closed once the cancel has unwound it.
            self._metrics.cancel_latency.observe(time.perf_counter() - self._cancelled_at)
            if self._stop in ("shutdown", "lost"):
                error = Interrupted("The gateway stopped before the answer was finished.")
        except RequestError as exc:
            error = exc
        except Exception:
            log.exception("generation %s failed", self.id)
            error = InternalError()
        await self._end(result_of(answer.text, finish, error, self._next_seq()))

    async def _bounded(self, answer: AnswerText) -> Finish | None:
        """The agent's events, published, until it ends or a bound stops it: the answer's
        length or the log's size (finish reason "length"), or GENERATION_TIMEOUT
        (UpstreamError). Stopping closes the agent, and with it its upstream request."""
        deadline = asyncio.timeout(self._bounds.seconds)
        try:
            async with deadline:
                try:
                    return await self._consume(answer)
                finally:
                    await self._close_source()
        except TimeoutError:
            if deadline.expired():
                raise UpstreamError(timed_out(self._bounds.seconds)) from None
            raise

    async def _consume(self, answer: AnswerText) -> Finish | None:
        finish: Finish | None = None
        async for event in self._source:
            if isinstance(event, Finish):
                finish = event
                continue
            if self._next_seq() >= self._bounds.log_events:
                return _length(answer)  # the last seq the log holds is the final event's
            if isinstance(event, TextDelta):
                text = answer.take(event.text)
                if text:
                    self._publish_chunk(Chunk(self._next_seq(), text, event.metadata))
                if answer.cut:
                    return _length(answer)
            elif isinstance(event, ToolCall):
                self._publish(
                    ToolCalled(self._next_seq(), event.call_id, event.name, event.arguments)
                )
            elif isinstance(event, ToolResult):
                self._publish(
                    ToolReturned(
                        self._next_seq(), event.call_id, event.name, event.result, event.is_error
                    )
                )
        return finish

    async def _close_source(self) -> None:
        """Close the agent if a bound left it suspended (a no-op once it has ended)."""
        close = getattr(self._source, "aclose", None)
        if close is not None:
            await close()

    async def _end(self, result: Result) -> None:
        self._ending = True
        code = result.finish.code if isinstance(result.finish, Failed) else None
        self.trace.ended(result.outcome, code)
        if self._stop == "lost":
            # The log already ends with another instance's terminal event; only local
            # subscribers still need one.
            self._writer.forget(self.id)
            self._deliver(result.finish)
            self._subscribers.clear()
            return
        try:
            # Never waits long on a failing store: the final event goes out regardless.
            persisted = await self._on_end(result)
            if persisted == "pending":
                self.notify(PERSISTENCE_DEGRADED)
            elif persisted == "lost":
                self.notify(PERSISTENCE_LOST)
        except Exception:
            log.exception("generation %s: storing the end failed", self.id)
            failure = InternalError("The answer could not be stored; it may be missing later.")
            failed = failed_from(failure, result.finish.seq)
            result = Result(result.text, result.outcome, "failed", result.usage, failed)
        self._deliver(result.finish)
        self._subscribers.clear()
        self._count_end(result)

    def _count_end(self, result: Result) -> None:
        finish = result.finish
        if isinstance(finish, Failed):
            self._metrics.errors.labels(finish.code).inc()
        outcome = {"complete": "done", "incomplete": "failed"}.get(result.outcome, result.outcome)
        if result.status == "interrupted":
            outcome = "interrupted"
        self._metrics.generations_total.labels(outcome).inc()

    def _next_seq(self) -> int:
        return self.recent.last_seq + 1

    def _publish_chunk(self, chunk: Chunk) -> None:
        now = time.perf_counter()
        if self._last_chunk:
            self._metrics.chunk_gap.observe(now - self._last_chunk)
        else:
            self._first_token.observe(now - self._started)
        self._last_chunk = now
        self._writer.add(self.id, chunk)
        self._deliver(chunk)
        self._metrics.overhead.observe(time.perf_counter() - now)

    def _publish(self, event: Event) -> None:
        self._writer.add(self.id, event)
        self._deliver(event)

    def _deliver(self, event: Event) -> None:
        self.recent.append(event)
        for subscriber in tuple(self._subscribers):
            subscriber(self.ref, event)


class Follow(Protocol):
    """A subscription to one generation; `stop` ends it and never cancels the generation."""

    @property
    def generation_id(self) -> str: ...

    def stop(self) -> None: ...


@dataclass
class LocalFollow:
    """A subscription to a generation of this process; `task` paces a replay, if any."""

    generation: Generation
    subscriber: Subscriber
    task: asyncio.Task[None] | None = None

    @property
    def generation_id(self) -> str:
        return self.generation.id

    def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
        self.generation.detach(self.subscriber)


@dataclass
class RemoteFollow:
    task: asyncio.Task[None]
    followed: str

    @property
    def generation_id(self) -> str:
        return self.followed

    def stop(self) -> None:
        self.task.cancel()

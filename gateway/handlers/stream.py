"""The one driver of every HTTP event stream (the gateway's own SSE, the OpenAI API's chunks,
the AI SDK's UI message stream); each transport gives it only a `Renderer`, its wire format.

The driver owns what all of them share: keep-alives through silences, one write for every
event already queued, the end of the stream (its final event, or the outbox closing under a
client that fell behind or a drain), detaching when it ends however it ends, the disconnect
policy when the client left first, and counting the events sent. The whole-answer collector
of the non-streamed answers is here too.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from typing import Literal, Protocol

from prometheus_client import Counter
from starlette.responses import StreamingResponse

from gateway.core.generations import Follow
from gateway.core.outbox import Outbox
from gateway.errors import InternalError
from gateway.events import Event, GenerationRef, is_final
from gateway.handlers.runtime import Runtime, disconnect_policy
from gateway.handlers.slots import Slot, SlotStream
from gateway.principal import Principal
from gateway.protocol.sse import event_count

HEARTBEAT_SECONDS = 15.0
# A metric update costs more than writing a token's event: the count goes to the metric
# every this many events, and when the stream ends.
COUNT_EVERY = 64

Item = tuple[GenerationRef, Event]
Heartbeat = Literal["heartbeat"]


class Listener:
    """Collects one generation's events for one HTTP response."""

    def __init__(self, limit: int) -> None:
        self.outbox: Outbox[Item] = Outbox(limit)
        self.notices: list[tuple[GenerationRef, str, str]] = []  # sent before the next event

    def __call__(self, ref: GenerationRef, event: Event) -> None:
        self.outbox.put((ref, event))

    def notice(self, ref: GenerationRef, code: str, message: str) -> None:
        self.notices.append((ref, code, message))

    async def room(self) -> bool:
        return await self.outbox.room()

    async def next(self) -> Item | Heartbeat | None:
        """The next event, None once the outbox closed, or "heartbeat" after
        HEARTBEAT_SECONDS of silence: proxies drop streams that stay silent."""
        if len(self.outbox):  # no silence to time: skip the timer (a hot path)
            return await self.outbox.get()
        try:
            async with asyncio.timeout(HEARTBEAT_SECONDS):
                return await self.outbox.get()
        except TimeoutError:
            return "heartbeat"


class Renderer(Protocol):
    """One transport's wire format: the text of each event (empty for none), of a notice,
    of a keep-alive, and of the end of a stream whose outbox closed before its final event."""

    @property
    def heartbeat(self) -> str: ...

    def event(self, ref: GenerationRef, event: Event) -> str: ...

    def notice(self, ref: GenerationRef, code: str, message: str) -> str: ...

    def closed(self) -> str: ...


Left = Callable[[], Awaitable[None]]


def on_leave(services: Runtime, principal: Principal, follow: Follow) -> Left:
    """What the stream of a generation its client started does when that client leaves
    before the end: the core's disconnect policy (ON_DISCONNECT)."""
    policy = disconnect_policy(services)

    async def left() -> None:
        await policy.left(principal, (follow.generation_id,))

    return left


class EventStream:
    """One response's events, rendered and written by `body`, which also ends the follow
    (however the stream ends), runs `cleanup` and, when the client left before the final
    event, `left`. `opening` holds events read before the response started."""

    def __init__(
        self,
        follow: Follow,
        listener: Listener,
        renderer: Renderer,
        frames: Counter,
        *,
        left: Left | None = None,
        cleanup: Callable[[], None] | None = None,
        opening: Iterable[Item] = (),
    ) -> None:
        self.follow = follow
        self.listener = listener
        self.renderer = renderer
        self.frames = frames
        self.left = left
        self.cleanup = cleanup
        self.opening = deque(opening)
        self.ended = False

    async def body(self) -> AsyncIterator[str]:
        sent = 0  # events written and not yet counted in the metric
        try:
            while True:
                item = self.opening.popleft() if self.opening else await self.listener.next()
                if item == "heartbeat":
                    yield self.renderer.heartbeat
                    continue
                text = self._batch(item) if item is not None else self.renderer.closed()
                if text:
                    yield text
                    sent += event_count(text)
                    if sent >= COUNT_EVERY:
                        self.frames.inc(sent)
                        sent = 0
                if item is None or self.ended:
                    return
        finally:
            if sent:
                self.frames.inc(sent)
            self.stop()
            if self.left is not None and not self.ended:
                await asyncio.shield(self.left())

    def stop(self) -> None:
        """Detach; also when the body never started (the client left before it)."""
        self.follow.stop()
        if self.cleanup is not None:
            self.cleanup()

    def _batch(self, item: Item | None) -> str:
        """`item` and every event already queued behind it, up to the final one, as one
        write: one syscall, not one per event."""
        parts: list[str] = []
        renderer, listener = self.renderer, self.listener
        while item is not None:
            ref, event = item
            while listener.notices:
                parts.append(renderer.notice(*listener.notices.pop(0)))
            parts.append(renderer.event(ref, event))
            if is_final(event):
                self.ended = True
                break
            item = self.opening.popleft() if self.opening else listener.outbox.take()
        return "".join(parts)


def stream_response(
    stream: EventStream, headers: Mapping[str, str], slot: Slot | None = None
) -> StreamingResponse:
    """The stream as a response; a stream that only follows holds `slot` until it ends."""
    if slot is not None:
        return SlotStream(stream.body(), headers, slot, on_close=stream.stop)
    return StreamingResponse(stream.body(), media_type="text/event-stream", headers=headers)


def frames_sent(services: Runtime) -> Counter:
    return services.metrics.frames_sent.labels("sse")


async def collect(follow: Follow, listener: Listener) -> tuple[GenerationRef, list[Event]]:
    """A whole answer: its events up to its final one (`Done` or `Failed`)."""
    events: list[Event] = []
    try:
        while (item := await listener.outbox.get()) is not None:
            ref, event = item
            events.append(event)
            if is_final(event):
                return ref, events
    finally:
        follow.stop()
    raise InternalError("The answer could not be collected.")

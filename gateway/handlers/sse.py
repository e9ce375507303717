"""HTTP streams: `POST /completion` (JSON, or SSE with stream=true), `GET
/generations/{id}/events` (resume by Last-Event-ID), `POST /generations/{id}/cancel`."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Literal

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from gateway.core.generations import Follow
from gateway.core.outbox import Outbox
from gateway.errors import InternalError, status_of
from gateway.events import Chunk, Done, Event, Failed, GenerationRef, Start, is_final
from gateway.handlers.common import authenticate, json_error, read_body, services_of
from gateway.handlers.slots import Slot, SlotStream
from gateway.protocol.frames import (
    dumps,
    encode_event,
    notice_object,
    parse_after,
    parse_completion,
    parse_json_object,
)

HEARTBEAT_SECONDS = 15.0
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


KEEP_ALIVE = ": keep-alive\n\n"
Heartbeat = Literal["heartbeat"]


class Listener:
    """Collects one generation's events for one HTTP response."""

    def __init__(self, limit: int) -> None:
        self.outbox: Outbox[tuple[GenerationRef, Event]] = Outbox(limit)
        self.notices: list[tuple[GenerationRef, str, str]] = []  # sent before the next event

    def __call__(self, ref: GenerationRef, event: Event) -> None:
        self.outbox.put((ref, event))

    def notice(self, ref: GenerationRef, code: str, message: str) -> None:
        self.notices.append((ref, code, message))

    async def room(self) -> bool:
        return await self.outbox.room()

    async def next(self) -> tuple[GenerationRef, Event] | Heartbeat | None:
        """The next event, None once the outbox closed, or "heartbeat" after
        HEARTBEAT_SECONDS of silence: proxies drop streams that stay silent."""
        if len(self.outbox):  # no silence to time: skip the timer (a hot path)
            return await self.outbox.get()
        try:
            async with asyncio.timeout(HEARTBEAT_SECONDS):
                return await self.outbox.get()
        except TimeoutError:
            return "heartbeat"


async def completion(request: Request) -> Response:
    principal = await authenticate(request)
    services = services_of(request)
    body = parse_json_object(await read_body(request, services.settings.max_frame_bytes))
    key = request.headers.get("idempotency-key")
    if key is not None and "idempotency_key" not in body:
        body["idempotency_key"] = key
    completion_request = parse_completion(body, require_id=False)
    listener = Listener(services.settings.max_queued_frames)
    follow = await services.chat.start(
        principal, completion_request, listener, must_stream=completion_request.stream
    )
    if completion_request.stream:
        services = services_of(request)
        cancel_on_leave = services.settings.on_disconnect == "cancel"

        async def abandoned() -> None:
            # ON_DISCONNECT=cancel: the client that asked left before the end (not a drain).
            if cancel_on_leave and not services.generations.draining.is_set():
                await services.chat.cancel(principal, follow.generation_id)

        return event_stream(request, follow, listener, completion_request.id, abandoned)
    return await _whole_answer(follow, listener)


async def generation_events(request: Request) -> Response:
    """Replay and follow a generation; `Last-Event-ID` (or `?after=`) is the last seq seen."""
    principal = await authenticate(request, query_token=True)
    services = services_of(request)
    generation_id = request.path_params["generation_id"]
    after = parse_after(
        request.headers.get("last-event-id") or request.query_params.get("after") or 0
    )
    meta = await services.chat.locate(principal, generation_id)
    if meta.status not in ("running", "interrupted") and after >= meta.last_seq:
        return Response(status_code=204)  # nothing more will come: EventSource stops here
    slot = await Slot.take(services, principal)  # 429 when the user has too many open
    listener = Listener(services.settings.max_queued_frames)
    follow = services.chat.attach(meta, after, listener)
    return event_stream(request, follow, listener, meta.request_id, slot=slot)


async def cancel_generation(request: Request) -> JSONResponse:
    principal = await authenticate(request)
    generation_id = request.path_params["generation_id"]
    status = await services_of(request).chat.cancel(principal, generation_id)
    code = 202 if status == "running" else 200
    return JSONResponse({"generation_id": generation_id, "status": status}, code)


def event_stream(
    request: Request,
    follow: Follow,
    listener: Listener,
    request_id: str | None,
    abandoned: Callable[[], Awaitable[None]] | None = None,
    slot: Slot | None = None,
) -> StreamingResponse:
    """The events as SSE; a stream that only follows holds `slot` until it ends."""
    generations = services_of(request).generations
    # Draining ends the stream so the client reconnects (to another instance) and resumes.
    remove_hook = generations.on_drain(listener.outbox.close)
    if generations.draining.is_set():
        listener.outbox.close()
    body = _sse(follow, listener, request_id, remove_hook, abandoned)
    if slot is not None:

        def closed() -> None:  # also when the body never started (the client left first)
            follow.stop()
            remove_hook()

        return SlotStream(body, SSE_HEADERS, slot, on_close=closed)
    return StreamingResponse(body, media_type="text/event-stream", headers=SSE_HEADERS)


async def _sse(
    follow: Follow,
    listener: Listener,
    request_id: str | None,
    cleanup: Callable[[], None],
    abandoned: Callable[[], Awaitable[None]] | None,
) -> AsyncIterator[str]:
    ended = False
    try:
        while True:
            item = await listener.next()
            if item == "heartbeat":
                yield KEEP_ALIVE
                continue
            # Everything already queued goes out in one write: one syscall, not one per event.
            parts: list[str] = []
            while item is not None:
                ref, event = item
                while listener.notices:
                    notice = notice_object(request_id, *listener.notices.pop(0))
                    parts.append(f"event: notice\ndata: {dumps(notice)}\n\n")
                parts.append(f"id: {event.seq}\ndata: {encode_event(event, ref, request_id)}\n\n")
                if is_final(event):
                    ended = True
                    yield "".join(parts)
                    return
                item = listener.outbox.take()
            if not parts:
                return  # the outbox closed
            yield "".join(parts)
    finally:
        follow.stop()
        cleanup()
        if abandoned is not None and not ended:
            await asyncio.shield(abandoned())


async def _whole_answer(follow: Follow, listener: Listener) -> JSONResponse:
    parts: list[str] = []
    start: Start | None = None
    try:
        while (item := await listener.outbox.get()) is not None:
            ref, event = item
            if isinstance(event, Start):
                start = event
            elif isinstance(event, Chunk):
                parts.append(event.content)
            elif isinstance(event, Done) and start is not None:
                return JSONResponse(
                    {
                        "content": "".join(parts),
                        "model": start.model,
                        "agent": start.agent,
                        "conversation_id": ref.conversation_id,
                        "generation_id": ref.generation_id,
                        "finish_reason": event.finish_reason,
                        "usage": event.usage.as_dict(),
                    }
                )
            elif isinstance(event, Failed):
                status = status_of(event.code)
                return json_error(event.code, event.message, status, event.retry_after)
    finally:
        follow.stop()
    raise InternalError("The answer could not be collected.")

"""HTTP streams: `POST /completion` (JSON, or SSE with stream=true), `GET
/generations/{id}/events` (resume by Last-Event-ID), `POST /generations/{id}/cancel`."""

from __future__ import annotations

from collections.abc import Sequence

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from gateway.core.generations import Follow
from gateway.errors import InternalError, status_of
from gateway.events import Chunk, Done, Event, Failed, GenerationRef, Start
from gateway.handlers.common import authenticate, json_error, read_body, services_of
from gateway.handlers.slots import Slot
from gateway.handlers.stream import (
    EventStream,
    Left,
    Listener,
    collect,
    frames_sent,
    on_leave,
    stream_response,
)
from gateway.protocol.requests import parse_after, parse_completion, parse_json_object
from gateway.protocol.sse import SSE_HEADERS, NativeEvents


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
        left = on_leave(services, principal, follow)
        return event_stream(request, follow, listener, completion_request.id, left)
    return _answer(*await collect(follow, listener))


async def generation_events(request: Request) -> Response:
    """Replay and follow a generation; `Last-Event-ID` (or `?after=`) is the last seq seen."""
    principal = await authenticate(request, query_token=True)
    services = services_of(request)
    generation_id = request.path_params["generation_id"]
    after = parse_after(
        request.headers.get("last-event-id") or request.query_params.get("after") or 0
    )
    meta = await services.chat.locate(principal, generation_id)
    services.chat.check_after(meta, after)  # a seq no generation reaches is refused, ended or not
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
    left: Left | None = None,
    slot: Slot | None = None,
) -> StreamingResponse:
    """The events as SSE; a stream that only follows holds `slot` until it ends."""
    services = services_of(request)
    generations = services.generations
    # Draining ends the stream so the client reconnects (to another instance) and resumes.
    remove_hook = generations.on_drain(listener.outbox.close)
    if generations.draining.is_set():
        listener.outbox.close()
    renderer = NativeEvents(request_id)
    stream = EventStream(
        follow, listener, renderer, frames_sent(services), left=left, cleanup=remove_hook
    )
    return stream_response(stream, SSE_HEADERS, slot)


def _answer(ref: GenerationRef, events: Sequence[Event]) -> JSONResponse:
    """The whole answer in the native JSON shape, or its failure as the native error."""
    final = events[-1]
    if isinstance(final, Failed):
        return json_error(final.code, final.message, status_of(final.code), final.retry_after)
    start = next((event for event in events if isinstance(event, Start)), None)
    if start is None or not isinstance(final, Done):
        raise InternalError("The answer could not be collected.")
    return JSONResponse(
        {
            "content": "".join(event.content for event in events if isinstance(event, Chunk)),
            "model": start.model,
            "agent": start.agent,
            "conversation_id": ref.conversation_id,
            "generation_id": ref.generation_id,
            "finish_reason": final.finish_reason,
            "usage": final.usage.as_dict(),
        }
    )

"""`POST /completion`: one JSON answer, or Server-Sent Events with `stream=true`."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from gateway.errors import InternalError, UpstreamError
from gateway.events import Chunk, Done, Event, Failed, GenerationRef, is_final
from gateway.generations import Generation
from gateway.handlers.common import authenticate, error_body, read_body, services_of
from gateway.outbox import Outbox
from gateway.protocol import dumps, event_object, parse_completion, parse_json_object

HEARTBEAT_SECONDS = 15.0
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


class _Listener:
    """Collects one generation's events for one HTTP response."""

    def __init__(self, limit: int) -> None:
        self.outbox: Outbox[Event] = Outbox(limit)

    def __call__(self, ref: GenerationRef, event: Event) -> None:
        self.outbox.put(event)


async def completion(request: Request) -> Response:
    principal = authenticate(request)
    services = services_of(request)
    body = await read_body(request, services.settings.max_frame_bytes)
    completion_request = parse_completion(parse_json_object(body), require_id=False)
    listener = _Listener(services.settings.max_queued_frames)
    generation = await services.chat.start(
        principal, completion_request, listener, must_stream=completion_request.stream
    )
    if completion_request.stream:
        return StreamingResponse(
            _event_stream(generation, listener, completion_request.id),
            media_type="text/event-stream",
            headers=SSE_HEADERS,
        )
    return await _whole_answer(generation, listener)


async def _whole_answer(generation: Generation, listener: _Listener) -> JSONResponse:
    parts: list[str] = []
    try:
        while (event := await listener.outbox.get()) is not None:
            if isinstance(event, Chunk):
                parts.append(event.content)
            elif isinstance(event, Done):
                return JSONResponse(
                    {
                        "content": "".join(parts),
                        "model": generation.model,
                        "agent": generation.agent,
                        "conversation_id": generation.ref.conversation_id,
                        "generation_id": generation.id,
                        "finish_reason": event.finish_reason,
                        "usage": event.usage.as_dict(),
                    }
                )
            elif isinstance(event, Failed):
                status = UpstreamError.http_status if event.code == "upstream_error" else 500
                return JSONResponse(error_body(event.code, event.message), status)
    finally:
        generation.unsubscribe(listener)
    raise InternalError("The answer could not be collected.")


async def _event_stream(
    generation: Generation, listener: _Listener, request_id: str | None
) -> AsyncIterator[str]:
    try:
        while True:
            try:
                async with asyncio.timeout(HEARTBEAT_SECONDS):
                    event = await listener.outbox.get()
            except TimeoutError:
                yield ": keep-alive\n\n"  # proxies drop streams that stay silent
                continue
            if event is None:
                return
            yield sse_event(event.seq, dumps(event_object(event, generation.ref, request_id)))
            if is_final(event):
                return
    finally:
        generation.unsubscribe(listener)


def sse_event(seq: int, data: str) -> str:
    return f"id: {seq}\ndata: {data}\n\n"

"""The OpenAI-compatible API: `POST /v1/chat/completions`, `GET /v1/models` and
`GET /v1/models/{model}`, so the official OpenAI SDKs work against the gateway unchanged.

The API key an SDK sends (`Authorization: Bearer <key>`) is the user's JWT. A request is
stateless like OpenAI's (its messages are the history) unless `X-Conversation-Id` binds it
to a stored conversation; `X-Agent` picks an agent. See docs/api/openai.md.

Only the I/O is here: the request's translation is `protocol/openai.py`, the answer's
chunks, objects and errors `protocol/openai_response.py`, the stream's loop `stream.py`.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from gateway.errors import RequestError, Unauthorized, retry_after_seconds
from gateway.events import Done, Event, Failed, GenerationRef, Start
from gateway.handlers.common import (
    authenticate,
    counted,
    read_body,
    services_of,
    translate_unexpected,
)
from gateway.handlers.stream import (
    HEARTBEAT_SECONDS,
    EventStream,
    Item,
    Listener,
    collect,
    frames_sent,
    on_leave,
    stream_response,
)
from gateway.protocol.openai import Body, ModelNotFound, chat_call
from gateway.protocol.openai_response import (
    ChunkTranslator,
    completion_object,
    error_object,
    error_of,
    failure_of,
    model_list,
    model_object,
)
from gateway.protocol.requests import parse_json_object
from gateway.protocol.sse import SSE_HEADERS

ALL_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE"]
# How long a stream waits for its first token before sending the 200 and headers: a failure
# within this time is answered with an HTTP error status, as OpenAI does, not a data line.
FIRST_EVENT_WAIT = HEARTBEAT_SECONDS

Handler = Callable[[Request], Awaitable[Response]]


def openai_errors(handler: Handler) -> Handler:
    """Answer every error in OpenAI's shape, with `x-should-retry` for the SDKs' retries."""

    @functools.wraps(handler)
    async def wrapped(request: Request) -> Response:
        try:
            return await handler(request)
        except RequestError as exc:
            error: RequestError = counted(request, exc)
        except Exception as exc:
            error = translate_unexpected(request, exc)
        status, body = error_of(error)
        return error_response(status, body, error.retryable, error.retry_after)

    return wrapped


def error_response(
    status: int, body: Body, retryable: bool, retry_after: float | None = None
) -> JSONResponse:
    headers = {"x-should-retry": "true" if retryable else "false"}
    if retry_after is not None:
        headers["Retry-After"] = str(retry_after_seconds(retry_after))
    if status == Unauthorized.http_status:
        headers["WWW-Authenticate"] = "Bearer"
    return JSONResponse(body, status, headers)


@openai_errors
async def chat_completions(request: Request) -> Response:
    principal = await authenticate(request)
    services = services_of(request)
    body = parse_json_object(await read_body(request, services.settings.max_frame_bytes))
    call = chat_call(
        body,
        services.settings.models.keys(),
        conversation_id=request.headers.get("x-conversation-id"),
        agent=request.headers.get("x-agent"),
        idempotency_key=request.headers.get("idempotency-key"),
    )
    listener = Listener(services.settings.max_queued_frames)
    # A model that cannot stream sends its whole answer as one content delta.
    follow = await services.chat.start(principal, call.request, listener)
    created = int(time.time())
    if not call.request.stream:
        return _answer(*await collect(follow, listener), created)
    opening = await opening_events(listener)
    failed = next((event for _, event in opening if isinstance(event, Failed)), None)
    if failed is not None:
        follow.stop()
        return _failure(failed)
    # No drain hook: an SDK cannot resume, so the stream follows its generation through a
    # drain to its end (finished, or interrupted: an error line).
    stream = EventStream(
        follow,
        listener,
        ChunkTranslator(created, call.include_usage),
        frames_sent(services),
        left=on_leave(services, principal, follow),
        opening=opening,
    )
    headers = {**SSE_HEADERS, **_id_headers(opening[0][0] if opening else None)}
    return stream_response(stream, headers)


@openai_errors
async def list_models(request: Request) -> Response:
    await authenticate(request)
    return JSONResponse(model_list(list(services_of(request).settings.models)))


@openai_errors
async def retrieve_model(request: Request) -> Response:
    await authenticate(request)
    name = request.path_params["model"]
    if name not in services_of(request).settings.models:
        raise ModelNotFound(name)
    return JSONResponse(model_object(name))


@openai_errors
async def unknown_path(request: Request) -> Response:
    """Any other path under /v1, answered like OpenAI answers one."""
    message = f"Invalid URL ({request.method} {request.url.path})"
    return error_response(404, error_object(message, "invalid_request_error"), False)


async def opening_events(listener: Listener) -> list[Item]:
    """The events up to the first one after `Start`, or what came in FIRST_EVENT_WAIT."""
    items: list[Item] = []
    try:
        async with asyncio.timeout(FIRST_EVENT_WAIT):
            while (item := await listener.outbox.get()) is not None:
                items.append(item)
                if not isinstance(item[1], Start):
                    break
    except TimeoutError:
        pass  # a slow first token: start the stream, keep-alives fill the wait
    return items


def _id_headers(ref: GenerationRef | None) -> dict[str, str]:
    if ref is None:
        return {}
    return {"X-Conversation-Id": ref.conversation_id, "X-Generation-Id": ref.generation_id}


def _answer(ref: GenerationRef, events: list[Event], created: int) -> Response:
    """The whole answer as a `chat.completion`, or its failure as OpenAI's error."""
    final = events[-1]
    if isinstance(final, Done):
        return JSONResponse(completion_object(ref, events, created), headers=_id_headers(ref))
    assert isinstance(final, Failed)  # the collector's events end with Done or Failed
    return _failure(final)


def _failure(failed: Failed) -> JSONResponse:
    status, error = failure_of(failed)
    return error_response(status, error, failed.retryable, failed.retry_after)

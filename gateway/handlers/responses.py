"""The OpenAI Responses API: `POST /v1/responses`, `GET /v1/responses/{id}` (whole, or
streamed from `starting_after`), `POST /v1/responses/{id}/cancel`, `DELETE
/v1/responses/{id}` and `GET /v1/responses/{id}/input_items`. See docs/api/responses.md.

A response is a generation (`resp_` + the generation id without `gen_`), so every route
works on every instance: the core's attach follows it from memory or from its log. The API
key is the user's JWT, as on the other /v1 routes; another user's response is not found.
Only the I/O is here: the wire format is `protocol/responses.py` and `responses_render.py`,
the stream's loop `stream.py`.
"""

from __future__ import annotations

import dataclasses
import time

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from gateway.core.generations import Follow
from gateway.errors import NotFound, OutputFormatRefused
from gateway.events import Failed, GenerationRef, is_final
from gateway.handlers.common import authenticate, read_body, services_of
from gateway.handlers.openai_compat import error_response, openai_errors, opening_events
from gateway.handlers.runtime import Runtime
from gateway.handlers.slots import Slot
from gateway.handlers.stream import (
    EventStream,
    Listener,
    collect,
    frames_sent,
    on_leave,
    stream_response,
)
from gateway.principal import Principal
from gateway.protocol.openai import Body, InvalidParameter
from gateway.protocol.openai_response import failure_of
from gateway.protocol.requests import parse_json_object
from gateway.protocol.responses import (
    Echo,
    ResponseNotFound,
    ResponsesCall,
    after_calls,
    generation_of,
    parse_starting_after,
    responses_call,
)
from gateway.protocol.responses_input import input_item_page, referenced_items, with_references
from gateway.protocol.responses_render import ResponseRenderer, deleted_object, response_object
from gateway.protocol.sse import SSE_HEADERS
from gateway.protocol.wire import answer_id
from gateway.store.records import GenerationMeta


@openai_errors
async def create(request: Request) -> Response:
    principal = await authenticate(request)
    services = services_of(request)
    body = parse_json_object(await read_body(request, services.settings.max_frame_bytes))
    body = await _resolved(services, principal, body)
    call = responses_call(
        body,
        services.settings.models.keys(),
        int(time.time()),
        agent=request.headers.get("x-agent"),
        idempotency_key=request.headers.get("idempotency-key"),
    )
    call = await _continued(services, principal, call)
    listener = Listener(services.settings.max_queued_frames)
    follow = await _start(services, principal, call, listener)
    if not call.request.stream:
        if call.background:
            follow.stop()  # it runs on: a generation outlives its client
            ref = GenerationRef(follow.generation_id, "")
            return JSONResponse(response_object(ref, call.echo, [], "queued"))
        ref, events = await collect(follow, listener)
        final = events[-1]
        if isinstance(final, Failed):
            return _failure(final)
        return JSONResponse(response_object(ref, call.echo, events))
    opening = await opening_events(listener)
    failed = next((event for _, event in opening if isinstance(event, Failed)), None)
    if failed is not None:
        follow.stop()
        return _failure(failed)
    # A background response runs on when its client leaves; another is the disconnect
    # policy's to decide, as on every stream.
    left = None if call.background else on_leave(services, principal, follow)
    renderer = ResponseRenderer(call.echo)
    stream = EventStream(
        follow, listener, renderer, frames_sent(services), left=left, opening=opening
    )
    return stream_response(stream, SSE_HEADERS)


async def _start(
    services: Runtime, principal: Principal, call: ResponsesCall, listener: Listener
) -> Follow:
    """Start the response's generation; the core's refusals named by this API's parameters."""
    try:
        return await services.chat.start(
            principal, call.request, listener, must_stream=call.request.stream
        )
    except OutputFormatRefused as exc:  # the model's table does not take JSON formats
        raise InvalidParameter(exc.message, "text.format", "unsupported_value") from None
    except NotFound:
        if call.previous_generation is None:
            raise
        raise InvalidParameter(  # it ended with no answer stored to continue after
            f"Previous response with id '{call.echo.previous_response_id}' has no answer to "
            "continue after.",
            "previous_response_id",
            "previous_response_not_found",
        ) from None


def _failure(failed: Failed) -> Response:
    """A failure before the answer, as OpenAI's error status (as /v1/chat/completions)."""
    status, error = failure_of(failed)
    return error_response(status, error, failed.retryable, failed.retry_after)


@openai_errors
async def retrieve(request: Request) -> Response:
    """The response as it stands; with `stream=true`, its events after `starting_after`
    (all of them without it) and then the live ones, replayed from its first event wherever
    it runs, so the numbering is the same on every instance."""
    principal = await authenticate(request)
    services = services_of(request)
    meta = await _locate(services, principal, request.path_params["response_id"])
    echo = Echo.of_note(meta.note, meta.model)
    query = request.query_params
    if query.get("stream") != "true":
        return JSONResponse(await _current(services, meta, echo))
    after = parse_starting_after(query.get("starting_after"))
    slot = await Slot.take(services, principal)  # 429 when the user has too many open
    listener = Listener(services.settings.max_queued_frames)
    follow = services.chat.attach(meta, 0, listener)
    stream = EventStream(follow, listener, ResponseRenderer(echo, after), frames_sent(services))
    return stream_response(stream, SSE_HEADERS, slot)


@openai_errors
async def cancel(request: Request) -> Response:
    """Cancel wherever it runs, and answer the response as it ended."""
    principal = await authenticate(request)
    services = services_of(request)
    meta = await _locate(services, principal, request.path_params["response_id"])
    await services.chat.cancel(principal, meta.generation_id)
    echo = Echo.of_note(meta.note, meta.model)
    return JSONResponse(await _ended(services, meta, echo))


@openai_errors
async def delete(request: Request) -> Response:
    principal = await authenticate(request)
    services = services_of(request)
    response_id = request.path_params["response_id"]
    meta = await _locate(services, principal, response_id)
    await services.chat.forget(principal, meta.generation_id)
    return JSONResponse(deleted_object(response_id))


@openai_errors
async def input_items(request: Request) -> Response:
    principal = await authenticate(request)
    services = services_of(request)
    response_id = request.path_params["response_id"]
    meta = await _locate(services, principal, response_id)
    echo = Echo.of_note(meta.note, meta.model)
    return JSONResponse(input_item_page(response_id, echo.input, request.query_params))


async def _locate(services: Runtime, principal: Principal, response_id: str) -> GenerationMeta:
    """The response's generation; an unknown id and another user's answer the same 404."""
    try:
        return await services.chat.locate(principal, generation_of(response_id))
    except NotFound:
        raise ResponseNotFound(response_id) from None


async def _continued(services: Runtime, principal: Principal, call: ResponsesCall) -> ResponsesCall:
    """`previous_response_id`: the turn joins that response's conversation."""
    if call.previous_generation is None:
        return call
    try:
        meta = await services.chat.locate(principal, call.previous_generation)
    except NotFound:
        raise InvalidParameter(
            f"Previous response with id '{call.echo.previous_response_id}' not found.",
            "previous_response_id",
            "previous_response_not_found",
        ) from None
    if meta.status == "running":
        raise InvalidParameter(
            f"Previous response with id '{call.echo.previous_response_id}' is still in "
            "progress; wait for it to end, or cancel it.",
            "previous_response_id",
            "previous_response_in_progress",
        )
    request = dataclasses.replace(call.request, conversation_id=meta.conversation_id)
    if request.message is not None:
        # After that response's answer: the branch through it, whatever came after it since.
        request = dataclasses.replace(request, parent_id=answer_id(meta.generation_id))
        return dataclasses.replace(call, request=request)
    call = dataclasses.replace(call, request=request)
    listener = Listener(services.settings.max_queued_frames)
    _, events = await collect(services.chat.attach(meta, 0, listener), listener)
    return after_calls(call, Echo.of_note(meta.note, meta.model), events)


async def _resolved(services: Runtime, principal: Principal, body: Body) -> Body:
    """The body with its `item_reference`s replaced by the output items they name, read
    from the user's own responses (another user's items are not found)."""
    wanted = referenced_items(body)
    items: dict[str, Body] = {}
    for generation_id in wanted:
        try:
            meta = await services.chat.locate(principal, generation_id)
        except NotFound:
            continue  # its references are answered as not found
        if meta.status == "running":
            continue
        output = (await _ended(services, meta, Echo.of_note(meta.note, meta.model)))["output"]
        items.update((item["id"], item) for item in output if item["id"] in wanted[generation_id])
    return with_references(body, items)


async def _ended(services: Runtime, meta: GenerationMeta, echo: Echo) -> Body:
    """The response object once its generation ended (waiting for a running one's end)."""
    listener = Listener(services.settings.max_queued_frames)
    ref, events = await collect(services.chat.attach(meta, 0, listener), listener)
    return response_object(ref, echo, events)


async def _current(services: Runtime, meta: GenerationMeta, echo: Echo) -> Body:
    """The response object now: a running one's output so far, or the whole ended one."""
    if meta.status == "running":
        ref = GenerationRef(meta.generation_id, meta.conversation_id)
        events = await services.chat.stored_events(meta)
        ended = bool(events) and is_final(events[-1])  # it ended since its record was read
        return response_object(ref, echo, events, None if ended else "in_progress")
    return await _ended(services, meta, echo)

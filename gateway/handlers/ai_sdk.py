"""The Vercel AI SDK's UI message stream: `POST /api/chat` (what `useChat` with
`DefaultChatTransport` sends) and `GET /api/chat/{id}/stream` (what its `resume` calls).

The chat id the SDK sends is the conversation id. Each of our events becomes a few UI message
stream parts (`event_parts`, pure); the response is SSE whose `data:` is one part, ended by
`data: [DONE]`. The assistant message's id is the generation id, so a replay of the same
generation updates the same message, and `POST /generations/{messageId}/cancel` stops it.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from gateway.core.generations import Follow
from gateway.errors import BadRequest, NotFound
from gateway.events import (
    Chunk,
    Done,
    Event,
    FinishReason,
    GenerationRef,
    Start,
    ToolCalled,
    ToolReturned,
    is_final,
)
from gateway.handlers.common import authenticate, read_body, services_of
from gateway.handlers.slots import Slot, SlotStream
from gateway.handlers.sse import KEEP_ALIVE, SSE_HEADERS, Listener
from gateway.protocol.frames import (
    CONVERSATION_ID_RE,
    GENERATION_ID_RE,
    CompletionRequest,
    dumps,
    json_string,
    parse_completion,
    parse_json_object,
)
from gateway.store.messages import ACTIVE_LEAF, answer_id

UI_STREAM_HEADERS = {**SSE_HEADERS, "x-vercel-ai-ui-message-stream": "v1"}
DONE_LINE = "data: [DONE]\n\n"
# Fields of the transport's `body` option that mean the same as in `POST /completion`.
BODY_FIELDS = ("model", "agent", "temperature", "max_tokens", "stop", "project_id", "sources")
FINISH_REASONS: dict[FinishReason, str] = {
    "stop": "stop",
    "length": "length",
    "tool_calls": "tool-calls",
    "cancelled": "other",
}
BAD_CHAT_ID = "'id' (the chat id) must be 1-64 characters of A-Z, a-z, 0-9, _ or -."
NO_USER_TEXT = "The last message must be a user message with at least one non-empty text part."
FELL_BEHIND = "The client is not reading fast enough."

Part = dict[str, Any]


# The request: pure.


def chat_request(body: dict[str, Any], idempotency_key: str | None = None) -> CompletionRequest:
    """A `DefaultChatTransport` body (`{id, messages, trigger, messageId, ...body}`) as a
    completion request: the chat id is the conversation, the last user message's text parts
    are the message. The gateway keeps the history, so earlier messages are not read."""
    chat_id = body.get("id")
    if not isinstance(chat_id, str) or not CONVERSATION_ID_RE.fullmatch(chat_id):
        raise BadRequest(BAD_CHAT_ID)
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadRequest("'messages' must be a non-empty list of UI messages.")
    fields: dict[str, Any] = {name: body[name] for name in BODY_FIELDS if name in body}
    fields.update(message=last_user_text(messages[-1]), conversation_id=chat_id, stream=True)
    if idempotency_key is not None:
        fields["idempotency_key"] = idempotency_key
    request = parse_completion(fields, require_id=False)
    if body.get("trigger") == "regenerate-message":
        return replace(request, message=None, regenerate=regenerated(body.get("messageId")))
    return request


def regenerated(message_id: Any) -> str:
    """The answer a regenerate makes again: the UI message named (`start` gave it its
    generation's id, whose answer is stored under the same token), else the active path's
    last answer."""
    if isinstance(message_id, str) and GENERATION_ID_RE.fullmatch(message_id):
        return answer_id(message_id)
    return ACTIVE_LEAF


def last_user_text(message: Any) -> str:
    """The text parts of a user UI message, joined by newlines."""
    if not isinstance(message, dict) or message.get("role") != "user":
        raise BadRequest(NO_USER_TEXT)
    parts = message.get("parts")
    if not isinstance(parts, list):
        raise BadRequest("A UI message needs a 'parts' list.")
    texts = [
        part["text"]
        for part in parts
        if isinstance(part, dict)
        and part.get("type") == "text"
        and isinstance(part.get("text"), str)
    ]
    text = "\n".join(texts)
    if not text.strip():
        raise BadRequest(NO_USER_TEXT)
    return text


# The response: pure.


@dataclass(frozen=True, slots=True)
class PartsState:
    """What the parts so far leave open: the text part being written (its id), and whether
    tool results just came (the next text or tool call then begins a new step)."""

    text_id: str | None = None
    after_tools: bool = False


def event_parts(
    event: Event, ref: GenerationRef, state: PartsState
) -> tuple[list[Part], PartsState]:
    """The UI message stream parts for one event, and the state for the next one.

    The same events always give the same parts (text part ids come from seqs), so a
    replay of a generation rebuilds exactly the message the first stream built."""
    if isinstance(event, Start):
        about = {
            "conversationId": ref.conversation_id,
            "generationId": ref.generation_id,
            "model": event.model,
            "agent": event.agent,
        }
        start = {"type": "start", "messageId": ref.generation_id, "messageMetadata": about}
        return [start, {"type": "start-step"}], PartsState()
    if isinstance(event, Chunk):
        if not event.content:
            return [], state
        parts = _new_step(state)
        text_id = state.text_id
        if text_id is None:
            text_id = f"text-{event.seq}"
            parts.append({"type": "text-start", "id": text_id})
        parts.append({"type": "text-delta", "id": text_id, "delta": event.content})
        return parts, PartsState(text_id=text_id)
    if isinstance(event, ToolCalled):
        parts = [*_close_text(state), *_new_step(state), tool_input_part(event)]
        return parts, PartsState()
    if isinstance(event, ToolReturned):
        return [*_close_text(state), tool_output_part(event)], PartsState(after_tools=True)
    parts = [*_close_text(state), {"type": "finish-step"}]
    if isinstance(event, Done):
        if event.finish_reason == "cancelled":
            parts.append({"type": "abort", "reason": "cancelled"})
        usage = event.usage
        metadata: dict[str, Any] = {
            "finishReason": event.finish_reason,
            "usage": {
                "inputTokens": usage.prompt_tokens,
                "outputTokens": usage.completion_tokens,
                "totalTokens": usage.total_tokens,
            },
        }
        if event.metadata:
            metadata["metadata"] = event.metadata
        finish_reason = FINISH_REASONS[event.finish_reason]
        parts.append({"type": "finish", "finishReason": finish_reason, "messageMetadata": metadata})
        return parts, PartsState()
    return [*parts, *failure_parts(event.code, event.message, event.retryable)], PartsState()


def failure_parts(code: str, message: str, retryable: bool) -> list[Part]:
    """How a stream ends in failure: the error code as message metadata, the error, finish."""
    error = {"code": code, "retryable": retryable}
    return [
        {"type": "message-metadata", "messageMetadata": {"error": error}},
        {"type": "error", "errorText": message},
        {"type": "finish", "finishReason": "error"},
    ]


def fell_behind_parts(state: PartsState) -> list[Part]:
    """How a stream ends when its client fell `MAX_QUEUED_FRAMES` behind."""
    closing = [*_close_text(state), {"type": "finish-step"}]
    return [*closing, *failure_parts("slow_client", FELL_BEHIND, True)]


def tool_input_part(event: ToolCalled) -> Part:
    """`tool-input-available` with the parsed arguments (none written: `{}`), or
    `tool-input-error` carrying the raw text when the model wrote invalid JSON."""
    part: Part = {"toolCallId": event.call_id, "toolName": event.name}
    if not event.arguments.strip():
        return {"type": "tool-input-available", **part, "input": {}}
    try:
        arguments = json.loads(event.arguments)
    except ValueError:
        error = "The tool arguments are not valid JSON."
        return {"type": "tool-input-error", **part, "input": event.arguments, "errorText": error}
    return {"type": "tool-input-available", **part, "input": arguments}


def tool_output_part(event: ToolReturned) -> Part:
    """`tool-output-error` for a failed tool, else `tool-output-available` whose output is
    the JSON object or array the tool returned, or its text as a string."""
    if event.is_error:
        return {"type": "tool-output-error", "toolCallId": event.call_id, "errorText": event.result}
    output: Any = event.result
    try:
        parsed = json.loads(event.result)
    except ValueError:
        parsed = None
    if isinstance(parsed, dict | list):
        output = parsed
    return {"type": "tool-output-available", "toolCallId": event.call_id, "output": output}


def _close_text(state: PartsState) -> list[Part]:
    return [{"type": "text-end", "id": state.text_id}] if state.text_id is not None else []


def _new_step(state: PartsState) -> list[Part]:
    return [{"type": "finish-step"}, {"type": "start-step"}] if state.after_tools else []


def sse_data(parts: list[Part]) -> str:
    return "".join(f"data: {dumps(part)}\n\n" for part in parts)


def event_data(event: Event, ref: GenerationRef, state: PartsState) -> tuple[str, PartsState]:
    """`sse_data` of `event_parts`. A chunk that goes on with the open text part, the line
    sent once per token, is formatted around json's string encoder instead of built as a
    part and dumped."""
    if (
        isinstance(event, Chunk)
        and event.content
        and state.text_id is not None
        and not state.after_tools
    ):
        text_id, delta = json_string(state.text_id), json_string(event.content)
        return f'data: {{"type":"text-delta","id":{text_id},"delta":{delta}}}\n\n', state
    parts, state = event_parts(event, ref, state)
    return sse_data(parts), state


# I/O.


async def chat(request: Request) -> Response:
    """Start a turn in the conversation named by the chat id; stream the answer."""
    principal = await authenticate(request)
    services = services_of(request)
    body = parse_json_object(await read_body(request, services.settings.max_frame_bytes))
    completion_request = chat_request(body, request.headers.get("idempotency-key"))
    listener = Listener(services.settings.max_queued_frames)
    # A model that cannot stream sends its whole answer as one text delta.
    follow = await services.chat.start(principal, completion_request, listener)
    cancel_on_leave = services.settings.on_disconnect == "cancel"

    async def abandoned() -> None:
        # ON_DISCONNECT=cancel: the client that asked left before the end (not a drain).
        if cancel_on_leave and not services.generations.draining.is_set():
            await services.chat.cancel(principal, follow.generation_id)

    return ui_message_stream(follow, listener, abandoned)


async def resume(request: Request) -> Response:
    """Replay the chat's running generation from its start and follow it to its end;
    204 when nothing runs (unknown and foreign chats included: nobody learns of them)."""
    principal = await authenticate(request)
    services = services_of(request)
    chat_id = request.path_params["chat_id"]
    if not CONVERSATION_ID_RE.fullmatch(chat_id):
        raise BadRequest(BAD_CHAT_ID)
    try:
        generation = await services.conversations.latest_generation(principal, chat_id)
        if generation is None or generation["status"] != "running":
            return Response(status_code=204)
        meta = await services.chat.locate(principal, generation["id"])
    except NotFound:
        return Response(status_code=204)
    slot = await Slot.take(services, principal)  # 429 when the user has too many open
    listener = Listener(services.settings.max_queued_frames)
    # Even if it ended meanwhile: the replay then holds the whole answer and its end.
    return ui_message_stream(services.chat.attach(meta, 0, listener), listener, slot=slot)


def ui_message_stream(
    follow: Follow,
    listener: Listener,
    abandoned: Callable[[], Awaitable[None]] | None = None,
    slot: Slot | None = None,
) -> StreamingResponse:
    """The UI message stream; a stream that only follows holds `slot` until it ends."""
    # No drain hook: the stream follows its generation through a drain (ended or
    # interrupted, it ends with `finish`), since a UI stream that stops short looks complete.
    body = _parts_stream(follow, listener, abandoned)
    if slot is not None:
        return SlotStream(body, UI_STREAM_HEADERS, slot, on_close=follow.stop)
    return StreamingResponse(body, media_type="text/event-stream", headers=UI_STREAM_HEADERS)


async def _parts_stream(
    follow: Follow,
    listener: Listener,
    abandoned: Callable[[], Awaitable[None]] | None,
) -> AsyncIterator[str]:
    state = PartsState()
    ended = False
    try:
        while True:
            item = await listener.next()
            if item == "heartbeat":
                yield KEEP_ALIVE
                continue
            if item is None:  # the client fell MAX_QUEUED_FRAMES behind
                yield sse_data(fell_behind_parts(state)) + DONE_LINE
                return
            ref, event = item
            data, state = event_data(event, ref, state)
            if is_final(event):
                ended = True
                yield data + DONE_LINE
                return
            if data:
                yield data
    finally:
        follow.stop()
        if abandoned is not None and not ended:
            await asyncio.shield(abandoned())

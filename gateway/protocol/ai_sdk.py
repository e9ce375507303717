"""The Vercel AI SDK's UI message stream (pure): a `DefaultChatTransport` body as a
completion request (`chat_request`), and each of our events as a few UI message stream parts
(`event_parts`), written as SSE whose `data:` is one part, ended by `data: [DONE]`
(`UiParts`, the stream's renderer). The assistant message's id is the generation id, so a
replay of the same generation updates the same message.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from typing import Any

from gateway.errors import BadRequest
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
from gateway.protocol.requests import CompletionRequest, parse_completion
from gateway.protocol.server_frames import json_string
from gateway.protocol.sse import DONE_LINE, FELL_BEHIND, KEEP_ALIVE, SSE_HEADERS, sse_data
from gateway.protocol.wire import ACTIVE_LEAF, CONVERSATION_ID_RE, GENERATION_ID_RE, answer_id

UI_STREAM_HEADERS = {**SSE_HEADERS, "x-vercel-ai-ui-message-stream": "v1"}
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
    generation's id), else the active path's last answer."""
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


class UiParts:
    """The UI message stream's renderer: the parts of each event, given what the parts so
    far left open; a stream ends with `data: [DONE]`, also when its client fell behind."""

    heartbeat = KEEP_ALIVE

    def __init__(self) -> None:
        self.state = PartsState()

    def event(self, ref: GenerationRef, event: Event) -> str:
        data, self.state = event_data(event, ref, self.state)
        return data + DONE_LINE if is_final(event) else data

    def notice(self, ref: GenerationRef, code: str, message: str) -> str:
        return ""  # the UI message stream has no place for them

    def closed(self) -> str:
        return sse_data(fell_behind_parts(self.state)) + DONE_LINE

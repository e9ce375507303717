"""The OpenAI chat completions API's answer side (pure): a generation's events as
`chat.completion.chunk` objects (`ChunkTranslator`, the stream's renderer) or one
`chat.completion` (`completion_object`), the model objects, and OpenAI's error shape and
HTTP status for the gateway's errors (`error_of`, `failure_of`).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field

from gateway.errors import OutputFormatRefused, RequestError, status_of
from gateway.events import (
    Chunk,
    Done,
    Event,
    Failed,
    GenerationRef,
    Start,
    ToolCalled,
    ToolReturned,
)
from gateway.protocol.openai import (
    FINISH_REASONS,
    OWNED_BY,
    Body,
    InvalidParameter,
    ModelNotFound,
)
from gateway.protocol.server_frames import json_string
from gateway.protocol.sse import DONE_LINE, FELL_BEHIND, KEEP_ALIVE, sse_data

# OpenAI's error `type` and `code` for each of the gateway's codes (the HTTP status comes
# from the error tree: `status_of`).
ERROR_KINDS: dict[str, tuple[str, str | None]] = {
    "bad_request": ("invalid_request_error", None),
    "unauthorized": ("invalid_request_error", "invalid_api_key"),
    "forbidden": ("invalid_request_error", "forbidden"),
    "not_found": ("invalid_request_error", "not_found"),
    "rate_limited": ("requests", "rate_limit_exceeded"),
    "context_too_long": ("invalid_request_error", "context_length_exceeded"),
    "upstream_error": ("server_error", "upstream_error"),
    "upstream_credentials": ("server_error", "upstream_credentials"),
    "upstream_unavailable": ("server_error", "upstream_unavailable"),
    "interrupted": ("server_error", "interrupted"),
    "unavailable": ("server_error", "unavailable"),
    "internal": ("server_error", "internal_error"),
}


def completion_id(ref: GenerationRef) -> str:
    """The OpenAI id of a generation's answer: `chatcmpl-` and the generation id."""
    return f"chatcmpl-{ref.generation_id}"


@dataclass
class ChunkTranslator:
    """Turns one generation's events into `chat.completion.chunk` objects, in order.

    Tool calls are held until the generation ends: those the agent answered itself (a
    `ToolReturned` followed) are the gateway's business and not shown; the rest are the
    client's to run and come as `tool_calls` deltas just before the finishing chunk. A
    failure becomes an `{"error": ...}` object, after which nothing more comes. As the
    stream's renderer (`event`, `notice`, `closed`) it gives the text of each event."""

    created: int
    include_usage: bool = False
    model: str = ""
    _pending: list[ToolCalled] = field(default_factory=list)

    def chunks(self, ref: GenerationRef, event: Event) -> list[Body]:
        if isinstance(event, Start):
            self.model = event.model
            return [self._chunk(ref, {"role": "assistant", "content": "", "refusal": None})]
        if isinstance(event, Chunk):
            return [self._chunk(ref, {"content": event.content})] if event.content else []
        if isinstance(event, ToolCalled):
            self._pending.append(event)
            return []
        if isinstance(event, ToolReturned):
            self._pending = [c for c in self._pending if c.call_id != event.call_id]
            return []
        if isinstance(event, Failed):
            return [failure_of(event)[1]]
        calls = [
            self._chunk(ref, {"tool_calls": [tool_call_object(call, index)]})
            for index, call in enumerate(self._pending)
        ]
        finish = self._chunk(ref, {}, FINISH_REASONS[event.finish_reason])
        if not self.include_usage:
            return [*calls, finish]
        usage = {**self._head(ref), "choices": [], "usage": event.usage.as_dict()}
        return [*calls, finish, usage]

    heartbeat = KEEP_ALIVE

    def event(self, ref: GenerationRef, event: Event) -> str:
        """The stream's text for one event; a finished answer ends with `data: [DONE]`."""
        data = self.data(ref, event)
        return data + DONE_LINE if isinstance(event, Done) else data

    def notice(self, ref: GenerationRef, code: str, message: str) -> str:
        return ""  # OpenAI's stream has no place for them

    def closed(self) -> str:
        """The stream's end when its client fell `MAX_QUEUED_FRAMES` behind."""
        return sse_data([error_object(FELL_BEHIND, "server_error", None, "slow_client")])

    def data(self, ref: GenerationRef, event: Event) -> str:
        """`sse_data(self.chunks(ref, event))`. A text chunk, the line sent once per token,
        is formatted around json's string encoder instead of built as objects and dumped."""
        if isinstance(event, Chunk) and event.content:
            return self._text_data(ref, event.content)
        return sse_data(self.chunks(ref, event))

    def _text_data(self, ref: GenerationRef, text: str) -> str:
        usage = ',"usage":null' if self.include_usage else ""
        return (
            f'data: {{"id":{json_string(completion_id(ref))},"object":"chat.completion.chunk",'
            f'"created":{self.created},"model":{json_string(self.model)},'
            f'"system_fingerprint":null,"choices":[{{"index":0,"delta":{{"content":'
            f'{json_string(text)}}},"logprobs":null,"finish_reason":null}}]{usage}}}\n\n'
        )

    def _chunk(self, ref: GenerationRef, delta: Body, finish_reason: str | None = None) -> Body:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        chunk = {**self._head(ref), "choices": [choice]}
        if self.include_usage:
            chunk["usage"] = None  # as OpenAI: every chunk but the last has a null usage
        return chunk

    def _head(self, ref: GenerationRef) -> Body:
        return {
            "id": completion_id(ref),
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": None,
        }


def tool_call_object(call: ToolCalled, index: int | None = None) -> Body:
    obj: Body = {} if index is None else {"index": index}
    obj.update(
        id=call.call_id,
        type="function",
        function={"name": call.name, "arguments": call.arguments},
    )
    return obj


def completion_object(ref: GenerationRef, events: Sequence[Event], created: int) -> Body:
    """The `chat.completion` object for a generation's events, which end with `Done`."""
    done = events[-1]
    assert isinstance(done, Done)
    model = next((e.model for e in events if isinstance(e, Start)), "")
    text = "".join(e.content for e in events if isinstance(e, Chunk))
    answered = {e.call_id for e in events if isinstance(e, ToolReturned)}
    calls = [e for e in events if isinstance(e, ToolCalled) and e.call_id not in answered]
    message: Body = {"role": "assistant", "content": text, "refusal": None}
    if calls:
        message["content"] = text or None
        message["tool_calls"] = [tool_call_object(call) for call in calls]
    return {
        "id": completion_id(ref),
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": FINISH_REASONS[done.finish_reason],
            }
        ],
        "usage": done.usage.as_dict(),
        "system_fingerprint": None,
    }


def model_object(name: str) -> Body:
    return {"id": name, "object": "model", "created": 0, "owned_by": OWNED_BY}


def model_list(names: Collection[str]) -> Body:
    return {"object": "list", "data": [model_object(name) for name in names]}


def error_object(
    message: str, error_type: str, param: str | None = None, code: str | None = None
) -> Body:
    return {"error": {"message": message, "type": error_type, "param": param, "code": code}}


def error_of(error: RequestError) -> tuple[int, Body]:
    """The HTTP status and OpenAI error body for an error raised before any answer."""
    error_type, code = ERROR_KINDS.get(error.code, ERROR_KINDS["internal"])
    param = None
    if isinstance(error, InvalidParameter):
        param, code = error.param, error.openai_code
    elif isinstance(error, ModelNotFound):
        code = "model_not_found"
    elif isinstance(error, OutputFormatRefused):
        param, code = "response_format", "unsupported_value"
    return error.http_status, error_object(error.message, error_type, param, code)


def failure_of(failed: Failed) -> tuple[int, Body]:
    """The HTTP status and OpenAI error body for a generation that failed."""
    error_type, code = ERROR_KINDS.get(failed.code, ("server_error", failed.code))
    return status_of(failed.code), error_object(failed.message, error_type, None, code)

"""The native protocol's server frames, pure: events in, JSON text out.

Every transport shares the JSON shape of an event (a WebSocket frame, an SSE `data:`). The
frames are built by hand, for speed (a chunk is written around json's string encoder); their
wire models, which the API documents publish, are in `server_models.py`, and the tests hold
each renderer's output to its model.
"""

from __future__ import annotations

import json
from json.encoder import encode_basestring
from typing import Any

from gateway.errors import RequestError
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

PROTOCOL_VERSION = 1
# How `dumps` writes a string (ensure_ascii=False), for the frames formatted by hand.
json_string = encode_basestring


def event_payload(event: Event) -> dict[str, Any]:
    """An event's own fields: the tail of every frame (the log stores a record of its own,
    see `store/records.py`)."""
    if isinstance(event, Start):
        return {
            "type": "start",
            "seq": event.seq,
            "content": "",
            "done": False,
            "model": event.model,
            "agent": event.agent,
        }
    if isinstance(event, Chunk):
        return {
            "type": "chunk",
            "seq": event.seq,
            "content": event.content,
            "done": False,
            "metadata": event.metadata,
        }
    if isinstance(event, ToolCalled):
        return {
            "type": "tool_call",
            "seq": event.seq,
            "content": "",
            "done": False,
            "call_id": event.call_id,
            "name": event.name,
            "arguments": event.arguments,
        }
    if isinstance(event, ToolReturned):
        return {
            "type": "tool_result",
            "seq": event.seq,
            "content": "",
            "done": False,
            "call_id": event.call_id,
            "name": event.name,
            "result": event.result,
            "is_error": event.is_error,
        }
    if isinstance(event, Done):
        return {
            "type": "done",
            "seq": event.seq,
            "content": "",
            "done": True,
            "finish_reason": event.finish_reason,
            "usage": event.usage.as_dict(),
            "metadata": event.metadata,
        }
    payload: dict[str, Any] = {
        "type": "error",
        "seq": event.seq,
        "content": "",
        "done": True,
        "code": event.code,
        "message": event.message,
        "retryable": event.retryable,
        "error": event.message,
    }
    if event.retry_after is not None:
        payload["retry_after"] = event.retry_after
    return payload


def event_object(event: Event, ref: GenerationRef, request_id: str | None) -> dict[str, Any]:
    """The JSON object for one event: the same on the WebSocket and in SSE `data:`."""
    payload = event_payload(event)
    return {
        "type": payload.pop("type"),
        "id": request_id,
        "generation_id": ref.generation_id,
        "conversation_id": ref.conversation_id,
        **payload,
    }


def encode_event(event: Event, ref: GenerationRef, request_id: str | None) -> str:
    if isinstance(event, Chunk) and not event.metadata:
        return encode_text_chunk(event, ref, request_id)
    return dumps(event_object(event, ref, request_id))


def encode_text_chunk(chunk: Chunk, ref: GenerationRef, request_id: str | None) -> str:
    """`encode_event` of a chunk without metadata, the frame sent once per token: the same
    text, formatted around json's string encoder instead of built as a dict and dumped."""
    rid = "null" if request_id is None else json_string(request_id)
    return (
        f'{{"type":"chunk","id":{rid},"generation_id":{json_string(ref.generation_id)},'
        f'"conversation_id":{json_string(ref.conversation_id)},"seq":{chunk.seq},'
        f'"content":{json_string(chunk.content)},"done":false,"metadata":{{}}}}'
    )


def error_frame(request_id: str | None, error: RequestError, *, done: bool) -> str:
    """An error outside a generation. `done` is true when nothing more will come for
    `request_id` (a refused completion), false when the frame started nothing."""
    frame: dict[str, Any] = {
        "type": "error",
        "id": request_id,
        "code": error.code,
        "message": error.message,
        "retryable": error.retryable,
        "done": done,
    }
    if error.retry_after is not None:
        frame["retry_after"] = error.retry_after
    return dumps(frame)


def failed_from(error: RequestError, seq: int) -> Failed:
    return Failed(seq, error.code, error.message, error.retryable, error.retry_after)


def resumed_frame(
    request_id: str | None, generation_id: str, from_seq: int, status: str, last_seq: int | None
) -> str:
    """Introduces a replay. `last_seq` is the final event's seq once the generation has
    ended (nothing follows when from_seq >= last_seq), else null."""
    return dumps(
        {
            "type": "resumed",
            "id": request_id,
            "generation_id": generation_id,
            "from_seq": from_seq,
            "status": status,
            "last_seq": last_seq,
        }
    )


def ready_frame(user: str, connection_id: str, expires_at: int | None) -> str:
    return dumps(
        {
            "type": "ready",
            "protocol": PROTOCOL_VERSION,
            "user": user,
            "connection_id": connection_id,
            "expires_at": expires_at,
        }
    )


def notice_object(
    request_id: str | None, ref: GenerationRef, code: str, message: str
) -> dict[str, Any]:
    """News about a generation that is not one of its events: no seq, not stored, not
    replayed. The same object is a WebSocket frame and an SSE `event: notice`."""
    return {
        "type": "notice",
        "id": request_id,
        "generation_id": ref.generation_id,
        "conversation_id": ref.conversation_id,
        "code": code,
        "message": message,
    }


def token_expiring_frame(expires_in: int) -> str:
    return dumps({"type": "token_expiring", "expires_in": expires_in})


def authenticated_frame(user: str, expires_at: int) -> str:
    """The answer to an `auth` frame on a live socket: the new token is in force."""
    return dumps({"type": "authenticated", "user": user, "expires_at": expires_at})


PONG_FRAME = '{"type":"pong"}'


def dumps(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))

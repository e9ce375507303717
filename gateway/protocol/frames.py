"""The wire protocol, pure: client frames in, typed requests out; events in, frames out.

Nothing here does I/O. The WebSocket handler and the HTTP handlers share the parsing of a
completion request, and all transports share the JSON shape of an event.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from json.encoder import encode_basestring
from typing import Any

from gateway.errors import BadRequest, RequestError
from gateway.events import (
    Chunk,
    Done,
    Event,
    Failed,
    GenerationRef,
    Message,
    Start,
    ToolCalled,
    ToolChoice,
    ToolReturned,
    ToolSpec,
    UseTool,
)

PROTOCOL_VERSION = 1
SUBPROTOCOL = "chat-gateway.v1"
BEARER_PREFIX = "bearer."
CONVERSATION_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
GENERATION_ID_RE = re.compile(r"^gen_[A-Za-z0-9_-]{1,60}$")
MAX_ID_CHARS = 128
MAX_HISTORY_MESSAGES = 1000
MAX_SOURCES = 50
MAX_TOOLS = 128
# How `dumps` writes a string (ensure_ascii=False), for the frames formatted by hand.
json_string = encode_basestring


@dataclass(frozen=True, slots=True)
class Source:
    content: str
    title: str | None = None
    url: str | None = None
    id: str | None = None


@dataclass(frozen=True, slots=True)
class CompletionRequest:
    # None: no new user message; the model answers `conversation_history` as it stands
    # (an OpenAI client continuing after its own tool results).
    message: str | None
    id: str | None = None
    model: str | None = None
    agent: str | None = None
    conversation_id: str | None = None
    temperature: float | None = None
    max_tokens: int | None = None
    conversation_history: tuple[Message, ...] | None = None
    project_id: str | None = None
    sources: tuple[Source, ...] = ()
    stream: bool = False
    idempotency_key: str | None = None
    stop: tuple[str, ...] = ()
    tools: tuple[ToolSpec, ...] = ()
    tool_choice: ToolChoice | None = None


@dataclass(frozen=True, slots=True)
class Cancel:
    """Names the generation by the request `id` it runs under on this socket, or by
    `generation_id` (from any socket or instance)."""

    id: str | None = None
    generation_id: str | None = None


@dataclass(frozen=True, slots=True)
class Resume:
    generation_id: str
    after: int = 0
    id: str | None = None


@dataclass(frozen=True, slots=True)
class Ping:
    pass


@dataclass(frozen=True, slots=True)
class Auth:
    token: str


ClientFrame = CompletionRequest | Cancel | Resume | Ping | Auth


def parse_client_frame(text: str) -> ClientFrame:
    """Parse one WebSocket text frame; raise BadRequest with a readable message."""
    return parse_frame_object(parse_json_object(text))


def parse_json_object(text: str | bytes) -> dict[str, Any]:
    try:
        obj = json.loads(text)
    except (ValueError, UnicodeDecodeError):
        raise BadRequest("The body is not valid JSON.") from None
    except RecursionError:  # json's C parser recurses once per level of nesting
        raise BadRequest("The JSON is nested too deeply.") from None
    if not isinstance(obj, dict):
        raise BadRequest("Expected a JSON object.")
    return obj


def parse_frame_object(obj: dict[str, Any]) -> ClientFrame:
    kind = obj.get("type")
    if kind == "completion":
        return parse_completion(obj, require_id=True)
    if kind == "cancel":
        return _cancel(obj)
    if kind == "resume":
        return Resume(
            generation_id=_generation_id(obj.get("generation_id")),
            after=parse_after(obj.get("after", 0)),
            id=_request_id(obj) if obj.get("id") is not None else None,
        )
    if kind == "ping":
        return Ping()
    if kind == "auth":
        token = obj.get("token")
        if not isinstance(token, str) or not token:
            raise BadRequest("An auth frame needs a non-empty 'token' string.")
        return Auth(token=token)
    if kind is None:
        raise BadRequest("Every frame needs a 'type' field.")
    raise BadRequest(f"Unknown frame type {json.dumps(kind)[:40]}.")


def refused_id(obj: dict[str, Any]) -> tuple[str | None, bool]:
    """For a frame that failed to parse: the `id` to answer with, and whether nothing more
    will come for it (true for a refused completion or resume)."""
    rid = obj.get("id")
    if not isinstance(rid, str) or not 0 < len(rid) <= MAX_ID_CHARS:
        return None, False
    return rid, obj.get("type") in ("completion", "resume")


def parse_completion(obj: dict[str, Any], *, require_id: bool) -> CompletionRequest:
    message = obj.get("message")
    if not isinstance(message, str) or not message.strip():
        raise BadRequest("'message' must be a non-empty string.")
    conversation_id = _optional_str(obj, "conversation_id")
    if conversation_id is not None and not CONVERSATION_ID_RE.fullmatch(conversation_id):
        raise BadRequest("'conversation_id' must be 1-64 characters of A-Z, a-z, 0-9, _ or -.")
    stream = obj.get("stream")
    stream = False if stream is None else stream
    if not isinstance(stream, bool):
        raise BadRequest("'stream' must be true or false.")
    return CompletionRequest(
        id=_request_id(obj) if require_id or obj.get("id") is not None else None,
        message=message,
        model=_optional_str(obj, "model"),
        agent=_optional_str(obj, "agent"),
        conversation_id=conversation_id,
        temperature=_temperature(obj.get("temperature")),
        max_tokens=_max_tokens(obj.get("max_tokens")),
        conversation_history=_history(obj.get("conversation_history")),
        project_id=_optional_str(obj, "project_id"),
        sources=_sources(obj.get("sources")),
        stream=stream,
        idempotency_key=_optional_str(obj, "idempotency_key"),
        stop=parse_stop(obj.get("stop")),
        tools=parse_tools(obj.get("tools")),
        tool_choice=_tool_choice_with(obj),
    )


def _cancel(obj: dict[str, Any]) -> Cancel:
    if obj.get("generation_id") is not None:
        return Cancel(generation_id=_generation_id(obj["generation_id"]))
    if obj.get("id") is None:
        raise BadRequest("A cancel frame needs 'id' or 'generation_id'.")
    return Cancel(id=_request_id(obj))


def _generation_id(value: Any) -> str:
    if not isinstance(value, str) or not GENERATION_ID_RE.fullmatch(value):
        raise BadRequest("'generation_id' must be a generation id such as 'gen_…'.")
    return value


# The largest seq a client may name: the largest integer a JSON number holds exactly.
MAX_SEQ = 2**53 - 1


def parse_after(value: Any) -> int:
    """The last seq a client has seen: a whole number, 0 for "everything"."""
    if value is None:
        return 0
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 16:
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_SEQ:
        raise BadRequest(f"'after' must be a whole number from 0 to {MAX_SEQ}.")
    return value


def parse_stop(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    stops = [value] if isinstance(value, str) else value
    if (
        not isinstance(stops, list)
        or len(stops) > 4
        or not all(isinstance(s, str) and s for s in stops)
    ):
        raise BadRequest("'stop' must be a string or a list of at most 4 strings.")
    return tuple(stops)


def parse_tools(value: Any) -> tuple[ToolSpec, ...]:
    """Tools the caller's own code runs, given in OpenAI's function-tool shape (the shape of
    both APIs), as provider-neutral specs."""
    if value is None:
        return ()
    if not isinstance(value, list) or len(value) > MAX_TOOLS:
        raise BadRequest(f"'tools' must be a list of at most {MAX_TOOLS} function tools.")
    return tuple(_tool(tool) for tool in value)


def _tool(tool: Any) -> ToolSpec:
    function = tool.get("function") if isinstance(tool, dict) else None
    if (
        not isinstance(tool, dict)
        or tool.get("type") != "function"
        or not isinstance(function, dict)
        or not (isinstance(function.get("name"), str) and function["name"])
    ):
        raise BadRequest(
            'Each tool must look like {"type": "function", "function": {"name": ...}}.'
        )
    description = function.get("description")
    parameters = function.get("parameters")
    strict = function.get("strict")
    if (
        not isinstance(description, str | None)
        or not isinstance(parameters, dict | None)
        or not isinstance(strict, bool | None)
    ):
        raise BadRequest(
            "A function tool's 'description' must be a string, its 'parameters' a JSON "
            "Schema object and its 'strict' true or false."
        )
    return ToolSpec(function["name"], description, parameters, strict)


def _tool_choice_with(obj: dict[str, Any]) -> ToolChoice | None:
    choice = parse_tool_choice(obj.get("tool_choice"))
    if choice is not None and not obj.get("tools"):
        raise BadRequest("'tool_choice' is only allowed together with 'tools'.")
    return choice


def parse_tool_choice(value: Any) -> ToolChoice | None:
    if value is None or value in ("auto", "none", "required"):
        return value  # type: ignore[no-any-return]
    function = value.get("function") if isinstance(value, dict) else None
    if isinstance(function, dict) and isinstance(function.get("name"), str):
        return UseTool(function["name"])
    raise BadRequest("'tool_choice' must be auto, none, required or a named function.")


def _request_id(obj: dict[str, Any]) -> str:
    rid = obj.get("id")
    if not isinstance(rid, str) or not 0 < len(rid) <= MAX_ID_CHARS:
        raise BadRequest(f"'id' must be a string of 1-{MAX_ID_CHARS} characters.")
    return rid


def _optional_str(obj: dict[str, Any], name: str) -> str | None:
    value = obj.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or not 0 < len(value) <= MAX_ID_CHARS:
        raise BadRequest(f"'{name}' must be a string of 1-{MAX_ID_CHARS} characters.")
    return value


def _temperature(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 2:
        raise BadRequest("'temperature' must be a number from 0 to 2.")
    return float(value)


def _max_tokens(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise BadRequest("'max_tokens' must be a positive integer.")
    return value


def _history(value: Any) -> tuple[Message, ...] | None:
    if value is None:
        return None
    if not isinstance(value, list) or len(value) > MAX_HISTORY_MESSAGES:
        raise BadRequest(
            f"'conversation_history' must be a list of at most {MAX_HISTORY_MESSAGES} messages."
        )
    messages = []
    for item in value:
        role = item.get("role") if isinstance(item, dict) else None
        content = item.get("content") if isinstance(item, dict) else None
        if role not in ("user", "assistant", "system") or not isinstance(content, str):
            raise BadRequest(
                "Each 'conversation_history' entry needs 'role' (user, assistant or system) "
                "and 'content' (a string)."
            )
        messages.append(Message(role=role, content=content))
    return tuple(messages)


def _sources(value: Any) -> tuple[Source, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or len(value) > MAX_SOURCES:
        raise BadRequest(f"'sources' must be a list of at most {MAX_SOURCES} items.")
    return tuple(_source(item) for item in value)


def _source(item: Any) -> Source:
    if isinstance(item, str):
        return Source(content=item)
    if isinstance(item, dict) and isinstance(item.get("content"), str):
        extra = {k: item.get(k) for k in ("title", "url", "id")}
        if all(v is None or isinstance(v, str) for v in extra.values()):
            return Source(content=item["content"], **extra)
    raise BadRequest(
        "Each source is a string or an object with 'content' and optional 'id', 'title', 'url'."
    )


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

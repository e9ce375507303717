"""The native protocol's client frames, pure: a WebSocket text frame in, a typed frame out.

Each frame type is a wire model (validated by pydantic, published as its JSON Schema in the
AsyncAPI document) turned into the small frozen object the handlers match on. This module also
names the whole native protocol for its users: the completion request (`requests.py`) and the
server's frames (`server_frames.py`) are importable from here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Annotated, Any, Literal, NotRequired

from pydantic import Field, TypeAdapter
from typing_extensions import TypedDict

from gateway.errors import BadRequest
from gateway.protocol.requests import (
    COMPLETION_FRAME,
    After,
    CompletionFrame,
    CompletionRequest,
    Source,
    completion_request,
    parse_after,
    parse_completion,
    parse_json_object,
    parse_stop,
    parse_tool_choice,
    parse_tools,
    with_message,
)
from gateway.protocol.server_frames import (
    PONG_FRAME,
    PROTOCOL_VERSION,
    authenticated_frame,
    dumps,
    encode_event,
    encode_text_chunk,
    error_frame,
    event_object,
    event_payload,
    failed_from,
    json_string,
    notice_object,
    ready_frame,
    resumed_frame,
    token_expiring_frame,
)
from gateway.protocol.wire import (
    CONVERSATION_ID_RE,
    GENERATION_ID_RE,
    MAX_HISTORY_MESSAGES,
    MAX_ID_CHARS,
    MAX_SEQ,
    MAX_SOURCES,
    MAX_TOOLS,
    STRICT,
    GenerationId,
    NonEmpty,
    RequestId,
    validate,
)

__all__ = [
    "CONVERSATION_ID_RE",
    "GENERATION_ID_RE",
    "MAX_HISTORY_MESSAGES",
    "MAX_ID_CHARS",
    "MAX_SEQ",
    "MAX_SOURCES",
    "MAX_TOOLS",
    "PONG_FRAME",
    "PROTOCOL_VERSION",
    "Auth",
    "Cancel",
    "ClientFrame",
    "CompletionRequest",
    "Ping",
    "Resume",
    "Source",
    "authenticated_frame",
    "dumps",
    "encode_event",
    "encode_text_chunk",
    "error_frame",
    "event_object",
    "event_payload",
    "failed_from",
    "json_string",
    "notice_object",
    "parse_after",
    "parse_client_frame",
    "parse_completion",
    "parse_frame_object",
    "parse_json_object",
    "parse_stop",
    "parse_tool_choice",
    "parse_tools",
    "ready_frame",
    "refused_id",
    "resumed_frame",
    "token_expiring_frame",
]

SUBPROTOCOL = "chat-gateway.v1"
BEARER_PREFIX = "bearer."


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


# The wire models of the frames other than `completion` (requests.CompletionFrame).


class AuthFrame(TypedDict):
    __pydantic_config__ = STRICT  # type: ignore[misc]
    type: Literal["auth"]
    token: Annotated[NonEmpty, Field(description="A JWT.")]


class ResumeFrame(TypedDict):
    __pydantic_config__ = STRICT  # type: ignore[misc]
    type: Literal["resume"]
    generation_id: GenerationId
    after: NotRequired[After | None]
    id: NotRequired[RequestId | None]


class CancelFrame(TypedDict):
    """By the `id` it runs under on this socket, or by `generation_id` (which wins)."""

    __pydantic_config__ = STRICT  # type: ignore[misc]
    type: Literal["cancel"]
    id: NotRequired[RequestId]
    generation_id: NotRequired[GenerationId]


class PingFrame(TypedDict):
    __pydantic_config__ = STRICT  # type: ignore[misc]
    type: Literal["ping"]


# In the order the AsyncAPI document lists them.
CLIENT_FRAMES: dict[str, type] = {
    "auth": AuthFrame,
    "completion": CompletionFrame,
    "resume": ResumeFrame,
    "cancel": CancelFrame,
    "ping": PingFrame,
}
CLIENT_FRAMES_BY_NAME = {kind.__name__: kind for kind in CLIENT_FRAMES.values()}
AUTH = TypeAdapter(AuthFrame)
RESUME = TypeAdapter(ResumeFrame)
CANCEL = TypeAdapter(CancelFrame)


def parse_client_frame(text: str) -> ClientFrame:
    """Parse one WebSocket text frame; raise BadRequest with a readable message."""
    return parse_frame_object(parse_json_object(text))


def parse_frame_object(obj: dict[str, Any]) -> ClientFrame:
    kind = obj.get("type")
    if kind == "completion":
        return completion_request(validate(COMPLETION_FRAME, with_message(obj)))
    if kind == "cancel":
        return _cancel(obj)
    if kind == "resume":
        resume = validate(RESUME, obj)
        return Resume(resume["generation_id"], resume.get("after") or 0, resume.get("id"))
    if kind == "ping":
        return Ping()
    if kind == "auth":
        return Auth(validate(AUTH, obj)["token"])
    if kind is None:
        raise BadRequest("Every frame needs a 'type' field.")
    raise BadRequest(f"Unknown frame type {json.dumps(kind)[:40]}.")


def _cancel(obj: dict[str, Any]) -> Cancel:
    # A generation id, when given, names the generation: the `id` is not read.
    if obj.get("generation_id") is not None:
        return Cancel(generation_id=validate(CANCEL, _only(obj, "generation_id"))["generation_id"])
    if obj.get("id") is None:
        raise BadRequest("A cancel frame needs 'id' or 'generation_id'.")
    return Cancel(id=validate(CANCEL, _only(obj, "id")).get("id"))


def _only(obj: dict[str, Any], name: str) -> dict[str, Any]:
    return {"type": "cancel", name: obj[name]}


def refused_id(obj: dict[str, Any]) -> tuple[str | None, bool]:
    """For a frame that failed to parse: the `id` to answer with, and whether nothing more
    will come for it (true for a refused completion or resume)."""
    rid = obj.get("id")
    if not isinstance(rid, str) or not 0 < len(rid) <= MAX_ID_CHARS:
        return None, False
    return rid, obj.get("type") in ("completion", "resume")

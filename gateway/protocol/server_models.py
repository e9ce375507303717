"""The wire types of what the server sends on the native protocol: a generation's events
(the WebSocket's event frames and the `data:` of the native SSE streams), notices, and the
socket's own frames. The API documents publish their JSON Schemas; the tests hold every
renderer of `server_frames.py` to them.

The enumerations that name store and core states (a generation's status, a notice's code)
are stated here, where the wire is, and the tests hold them equal to the store's and the
core's own.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, NotRequired

from pydantic import ConfigDict, Field
from typing_extensions import TypedDict

from gateway.errors import ErrorCode
from gateway.events import FinishReason
from gateway.protocol.wire import GenerationId

SENT = ConfigDict(extra="forbid")  # a frame has exactly these fields
GenerationStatus = Literal["running", "complete", "cancelled", "failed", "interrupted"]
NoticeCode = Literal["persistence_degraded", "persistence_lost", "store_unreachable"]
Count = Annotated[int, Field(ge=0)]
Seq = Annotated[int, Field(ge=1)]
RetryAfter = Annotated[
    float, Field(ge=0, description="Seconds to wait before retrying; only when the wait is known.")
]


class Usage(TypedDict):
    __pydantic_config__ = SENT  # type: ignore[misc]
    prompt_tokens: Count
    completion_tokens: Count
    total_tokens: Count


class _Event(TypedDict):
    """What every event of a generation carries."""

    __pydantic_config__ = SENT  # type: ignore[misc]
    id: Annotated[str | None, Field(description="The request id the events answer.")]
    generation_id: GenerationId
    conversation_id: str
    seq: Seq
    content: str


class StartEvent(_Event):
    type: Literal["start"]
    done: Literal[False]
    model: str
    agent: str


class ChunkEvent(_Event):
    type: Literal["chunk"]
    done: Literal[False]
    metadata: dict[str, Any]


class ToolCallEvent(_Event):
    type: Literal["tool_call"]
    done: Literal[False]
    call_id: str
    name: str
    arguments: Annotated[
        str, Field(description="The JSON text the model wrote (possibly invalid).")
    ]


class ToolResultEvent(_Event):
    type: Literal["tool_result"]
    done: Literal[False]
    call_id: str
    name: str
    result: str
    is_error: bool


class DoneEvent(_Event):
    type: Literal["done"]
    done: Literal[True]
    finish_reason: FinishReason
    usage: Usage
    metadata: dict[str, Any]


class ErrorEvent(_Event):
    """The final event of a failed generation."""

    type: Literal["error"]
    done: Literal[True]
    code: Annotated[ErrorCode, Field(description="A stable error code.")]
    message: str
    retryable: bool
    error: Annotated[str, Field(description="The same text as `message`.")]
    retry_after: NotRequired[RetryAfter]


# In the order of a generation.
EVENTS: dict[str, type] = {
    "StartEvent": StartEvent,
    "ChunkEvent": ChunkEvent,
    "ToolCallEvent": ToolCallEvent,
    "ToolResultEvent": ToolResultEvent,
    "DoneEvent": DoneEvent,
    "ErrorEvent": ErrorEvent,
}


class Notice(TypedDict):
    """News about a generation that is not one of its events: no seq, not stored."""

    __pydantic_config__ = SENT  # type: ignore[misc]
    type: Literal["notice"]
    id: str | None
    generation_id: GenerationId
    conversation_id: str
    code: NoticeCode
    message: str


# The socket's own frames.


class ErrorFrame(TypedDict):
    """The refusal of a frame that started no generation. `done` is true when nothing more
    will come for `id`."""

    __pydantic_config__ = SENT  # type: ignore[misc]
    type: Literal["error"]
    id: str | None
    code: ErrorCode
    message: str
    retryable: bool
    done: bool
    retry_after: NotRequired[RetryAfter]


class RunningGeneration(TypedDict):
    """A generation of the user's still running on some instance: `resume` it with
    `after: 0` to show it from its start."""

    __pydantic_config__ = SENT  # type: ignore[misc]
    conversation_id: str
    generation_id: GenerationId
    last_seq: Annotated[Count, Field(description="The last seq its log holds (0: none yet).")]


ActivityId = Annotated[
    str,
    Field(
        pattern=r"^[0-9]+-[0-9]+$",
        description="Opaque and increasing: give the last one seen as Last-Event-ID to "
        "`GET /activity` to get what followed it.",
    ),
]


class ReadyFrame(TypedDict):
    __pydantic_config__ = SENT  # type: ignore[misc]
    type: Literal["ready"]
    protocol: Literal[1]
    user: Annotated[str, Field(description="The token's `sub`.")]
    connection_id: Annotated[str, Field(pattern="^conn_")]
    expires_at: Annotated[int | None, Field(description="The token's `exp` (Unix seconds).")]
    running: Annotated[
        list[RunningGeneration] | None,
        Field(description="The user's running generations; null when activity is off."),
    ]
    activity_id: Annotated[
        ActivityId | None,
        Field(description="The user's latest activity when the socket opened; null when off."),
    ]


class ActivityMessage(TypedDict):
    __pydantic_config__ = SENT  # type: ignore[misc]
    id: NotRequired[Annotated[str, Field(description="The stored message's id.")]]
    content: Annotated[str, Field(description="The user's message, its first 2,000 characters.")]
    truncated: bool


class ActivityFrame(TypedDict):
    """One event of the user's activity, from any socket, device or instance
    (docs/activity.md). Which fields come depends on `event`."""

    __pydantic_config__ = SENT  # type: ignore[misc]
    type: Literal["activity"]
    event: Literal[
        "generation.started", "generation.ended", "conversation.updated", "conversation.deleted"
    ]
    activity_id: ActivityId
    conversation_id: str
    generation_id: NotRequired[GenerationId]
    model: NotRequired[str]
    agent: NotRequired[str]
    message: NotRequired[ActivityMessage | None]
    status: NotRequired[GenerationStatus]
    finish_reason: NotRequired[FinishReason | None]
    error: NotRequired[ErrorCode | Literal["interrupted"] | None]
    title: NotRequired[str]
    updated_at: NotRequired[int]


class AuthenticatedFrame(TypedDict):
    __pydantic_config__ = SENT  # type: ignore[misc]
    type: Literal["authenticated"]
    user: str
    expires_at: int


class TokenExpiringFrame(TypedDict):
    __pydantic_config__ = SENT  # type: ignore[misc]
    type: Literal["token_expiring"]
    expires_in: Annotated[int, Field(description="Seconds until `exp`.")]


class ResumedFrame(TypedDict):
    __pydantic_config__ = SENT  # type: ignore[misc]
    type: Literal["resumed"]
    id: Annotated[str | None, Field(description="The id the following events carry.")]
    generation_id: GenerationId
    from_seq: Count
    status: GenerationStatus
    last_seq: Annotated[
        int | None,
        Field(description="The final event's seq once ended; null while running."),
    ]


class PongFrame(TypedDict):
    __pydantic_config__ = SENT  # type: ignore[misc]
    type: Literal["pong"]


SOCKET_FRAMES: dict[str, type] = {
    "ReadyFrame": ReadyFrame,
    "AuthenticatedFrame": AuthenticatedFrame,
    "TokenExpiringFrame": TokenExpiringFrame,
    "ResumedFrame": ResumedFrame,
    "PongFrame": PongFrame,
    "ErrorFrame": ErrorFrame,
    "ActivityFrame": ActivityFrame,
}

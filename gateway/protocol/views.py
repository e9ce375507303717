"""The wire types of the native HTTP API's answers and of its one other request body: the
answer of `POST /completion`, a cancel's answer, conversations and their messages, a rename,
a fork, the catalog, the probes, and the error body of every native route.

The OpenAPI document publishes their JSON Schemas; the tests hold real answers to them.
"""

from __future__ import annotations

from typing import Annotated, Literal, NotRequired

from pydantic import ConfigDict, Field
from typing_extensions import TypedDict

from gateway.errors import ErrorCode
from gateway.events import FinishReason
from gateway.protocol.server_models import GenerationStatus, RetryAfter, Usage
from gateway.protocol.wire import NON_BLANK, ConversationId, GenerationId, MessageId

SENT = ConfigDict(extra="forbid")
MessageStatus = Literal["complete", "incomplete", "cancelled"]
MAX_TITLE_CHARS = 200
Millis = Annotated[int, Field(ge=0, description="Unix time in milliseconds.")]


class Error(TypedDict):
    """The error body of every native HTTP route."""

    __pydantic_config__ = SENT  # type: ignore[misc]
    error: Annotated[ErrorCode, Field(description="A stable error code.")]
    detail: Annotated[str, Field(description="What went wrong, for people.")]
    timestamp: Annotated[
        str,
        Field(
            description="UTC time, ISO 8601 with milliseconds.",
            json_schema_extra={"format": "date-time"},
        ),
    ]
    retry_after: NotRequired[RetryAfter]


class CompletionAnswer(TypedDict):
    __pydantic_config__ = SENT  # type: ignore[misc]
    content: str
    model: str
    agent: str
    conversation_id: str
    generation_id: GenerationId
    finish_reason: FinishReason
    usage: Usage


class CancelAnswer(TypedDict):
    __pydantic_config__ = SENT  # type: ignore[misc]
    generation_id: GenerationId
    status: GenerationStatus


class LatestGeneration(TypedDict):
    __pydantic_config__ = SENT  # type: ignore[misc]
    id: GenerationId
    status: GenerationStatus


class ConversationSummary(TypedDict):
    __pydantic_config__ = SENT  # type: ignore[misc]
    id: ConversationId
    title: str
    project_id: str | None
    created_at: Millis
    updated_at: Millis
    generation: LatestGeneration | None


class ConversationPage(TypedDict):
    __pydantic_config__ = SENT  # type: ignore[misc]
    data: list[ConversationSummary]
    next_cursor: str | None


class Branch(TypedDict):
    """Where a message stands among its siblings: the other answers to the same message, or
    the other versions of an edited one."""

    __pydantic_config__ = SENT  # type: ignore[misc]
    index: Annotated[int, Field(ge=0, description="Its place among `ids`, from 0.")]
    count: Annotated[int, Field(ge=2)]
    ids: Annotated[list[MessageId], Field(description="The siblings, in creation order.")]


class StoredMessage(TypedDict):
    __pydantic_config__ = SENT  # type: ignore[misc]
    id: MessageId
    parent_id: Annotated[MessageId | None, Field(description="`null` for a first message.")]
    branch: NotRequired[
        Annotated[Branch, Field(description="Only on a message that has siblings.")]
    ]
    role: Literal["user", "assistant"]
    content: str
    created_at: Millis
    status: MessageStatus
    model: NotRequired[str]
    agent: NotRequired[str]
    generation_id: NotRequired[GenerationId]
    usage: NotRequired[Usage]


class Conversation(ConversationSummary):
    messages: Annotated[
        list[StoredMessage],
        Field(
            description="A page of the active path's messages, oldest first: the newest "
            "ones, or those above the page whose `next_cursor` was sent. At most `limit` messages "
            "and CONVERSATION_PAGE_BYTES of them, but at least one when any is left."
        ),
    ]
    next_cursor: Annotated[
        str | None,
        Field(
            description="Send it as `cursor` for the page of older messages; `null` when "
            "this page holds the oldest."
        ),
    ]


class Rename(TypedDict):
    """A PATCH: a new title, a switch of the active branch, or both."""

    __pydantic_config__ = SENT  # type: ignore[misc]
    active_message_id: NotRequired[
        Annotated[
            MessageId,
            Field(
                description="Makes the active leaf the newest descendant of this message "
                "(following the most recently created child at each step)."
            ),
        ]
    ]
    title: NotRequired[
        Annotated[
            str,
            Field(
                description=f"One line: whitespace runs become one space; 1-{MAX_TITLE_CHARS}"
                " characters after that.",
                pattern=NON_BLANK,
                max_length=MAX_TITLE_CHARS,
            ),
        ]
    ]


class Changed(ConversationSummary):
    """The conversation after a PATCH or a fork."""

    active_message_id: NotRequired[
        Annotated[MessageId, Field(description="The active leaf, when the branch changed.")]
    ]


class Fork(TypedDict):
    __pydantic_config__ = SENT  # type: ignore[misc]
    message_id: Annotated[
        MessageId, Field(description="The new conversation holds the path down to it.")
    ]


class ModelEntry(TypedDict):
    __pydantic_config__ = SENT  # type: ignore[misc]
    id: str
    streaming: bool
    default: bool


class Models(TypedDict):
    __pydantic_config__ = SENT  # type: ignore[misc]
    data: list[ModelEntry]
    default: str


class AgentEntry(TypedDict):
    __pydantic_config__ = SENT  # type: ignore[misc]
    id: str
    model: str | None
    models: list[str]
    default: bool


class Agents(TypedDict):
    __pydantic_config__ = SENT  # type: ignore[misc]
    data: list[AgentEntry]
    default: str


class Health(TypedDict):
    __pydantic_config__ = SENT  # type: ignore[misc]
    status: Literal["ok"]


class Readiness(TypedDict):
    __pydantic_config__ = SENT  # type: ignore[misc]
    status: Literal["ok", "unavailable"]
    redis: Literal["ok", "unreachable"]


VIEWS: dict[str, type] = {
    "Error": Error,
    "CompletionAnswer": CompletionAnswer,
    "CancelAnswer": CancelAnswer,
    "ConversationSummary": ConversationSummary,
    "ConversationPage": ConversationPage,
    "StoredMessage": StoredMessage,
    "Conversation": Conversation,
    "Rename": Rename,
    "Changed": Changed,
    "Fork": Fork,
    "Branch": Branch,
    "Models": Models,
    "Agents": Agents,
    "Health": Health,
    "Readiness": Readiness,
}

"""The completion request, as the wire models that validate it and the typed request the core
takes: the body of `POST /completion` and the fields of the WebSocket `completion` frame.

`CompletionBody` is the one statement of what a client may send: parsing goes through it, and
the API documents publish its JSON Schema. Its fields are declared in the order they are
checked, so a refusal names the same first problem whatever else is wrong.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Annotated, Any, Literal, NotRequired

from pydantic import BeforeValidator, Field, TypeAdapter, WithJsonSchema
from typing_extensions import TypedDict

from gateway.errors import BadRequest
from gateway.events import Message, OutputFormat, ToolChoice, ToolSpec, UseTool
from gateway.protocol.wire import (
    MAX_HISTORY_MESSAGES,
    MAX_SEQ,
    MAX_SOURCES,
    MAX_STOP_SEQUENCES,
    MAX_TOKENS,
    MAX_TOOLS,
    STRICT,
    ConversationId,
    MessageId,
    NonBlank,
    NonEmpty,
    ParentId,
    RequestId,
    validate,
)


@dataclass(frozen=True, slots=True)
class Source:
    content: str
    title: str | None = None
    url: str | None = None
    id: str | None = None


@dataclass(frozen=True)
class CompletionRequest:
    # None: no new user message; the model answers `conversation_history` as it stands
    # (an OpenAI client continuing after its own tool results), or the answer `regenerate`
    # names is made again.
    message: str | None = None
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
    # Where in the conversation's tree the turn goes: the message to answer after (None: the
    # active leaf; '': a new first message), or the answer to make again (`message` None).
    parent_id: str | None = None
    regenerate: str | None = None
    # The answer's shape (OpenAI's `response_format`); the native protocol does not take one.
    output_format: OutputFormat | None = None
    # Kept with the generation's record for the transport that starts it (GenerationMeta.note).
    note: str = ""

    @classmethod
    def of(cls, values: dict[str, Any]) -> CompletionRequest:
        """A request from the fields that differ from their defaults (the class holds the
        defaults): what a frozen dataclass's `__init__` does, in a fifth of the time, since
        it sets every field through `object.__setattr__`, once per frame."""
        request = object.__new__(cls)
        request.__dict__.update(values)
        return request


# The pieces of a request, as a client sends them.


class HistoryMessage(TypedDict):
    __pydantic_config__ = STRICT  # type: ignore[misc]
    role: Literal["user", "assistant", "system"]
    content: str


class SourceObject(TypedDict):
    __pydantic_config__ = STRICT  # type: ignore[misc]
    content: str
    id: NotRequired[str | None]
    title: NotRequired[str | None]
    url: NotRequired[str | None]


class ToolFunction(TypedDict):
    __pydantic_config__ = STRICT  # type: ignore[misc]
    name: NonEmpty
    description: NotRequired[str | None]
    parameters: NotRequired[Annotated[dict[str, Any] | None, Field(description="A JSON Schema.")]]
    strict: NotRequired[bool | None]


class Tool(TypedDict):
    """A function tool in OpenAI's shape: its name, description, JSON Schema of arguments and
    `strict`, sent on to the model in the shape its API takes; other keys are dropped."""

    __pydantic_config__ = STRICT  # type: ignore[misc]
    type: Literal["function"]
    function: ToolFunction


class NamedFunction(TypedDict):
    __pydantic_config__ = STRICT  # type: ignore[misc]
    name: str


class NamedToolChoice(TypedDict):
    __pydantic_config__ = STRICT  # type: ignore[misc]
    function: NamedFunction


Stop = NonEmpty | Annotated[list[NonEmpty], Field(max_length=MAX_STOP_SEQUENCES)]
Tools = Annotated[list[Tool], Field(max_length=MAX_TOOLS)]
ToolChoiceField = Annotated[
    Literal["auto", "none", "required"] | NamedToolChoice,
    Field(description="Only together with non-empty `tools`."),
]
History = Annotated[list[HistoryMessage], Field(max_length=MAX_HISTORY_MESSAGES)]
Sources = Annotated[list[str | SourceObject], Field(max_length=MAX_SOURCES)]
Message_ = Annotated[
    NonBlank, Field(description="The user's message: not empty, not only whitespace.")
]


class _Completion(TypedDict):
    """The fields a completion request and a completion frame share."""

    __pydantic_config__ = STRICT  # type: ignore[misc]
    message: NotRequired[Message_]
    conversation_id: NotRequired[ConversationId | None]
    parent_id: NotRequired[ParentId | None]
    regenerate: NotRequired[
        Annotated[
            MessageId | None,
            Field(description="An answer to make again, instead of a new `message`."),
        ]
    ]
    model: NotRequired[
        Annotated[RequestId | None, Field(description="A configured model (GET /models).")]
    ]
    agent: NotRequired[
        Annotated[RequestId | None, Field(description="A configured agent (GET /agents).")]
    ]
    temperature: NotRequired[Annotated[float, Field(ge=0, le=2)] | None]
    max_tokens: NotRequired[Annotated[int, Field(ge=1, le=MAX_TOKENS)] | None]
    conversation_history: NotRequired[History | None]
    project_id: NotRequired[RequestId | None]
    sources: NotRequired[Sources | None]
    idempotency_key: NotRequired[RequestId | None]
    stop: NotRequired[Stop | None]
    tools: NotRequired[Tools | None]
    tool_choice: NotRequired[ToolChoiceField | None]


class CompletionBody(_Completion):
    """Unknown fields are ignored; an optional field set to null counts as absent."""

    id: NotRequired[RequestId | None]
    stream: NotRequired[
        Annotated[bool | None, Field(description="true: the events as Server-Sent Events.")]
    ]


class CompletionFrame(_Completion):
    """The WebSocket `completion` frame: a completion request whose `id` is required (its
    events carry it). Unknown fields are ignored; an optional field set to null counts as
    absent."""

    type: Literal["completion"]
    id: Annotated[
        RequestId,
        Field(
            description="Must not equal the id of a completion or resume still running on "
            "this socket."
        ),
    ]
    stream: NotRequired[
        Annotated[
            bool | None,
            Field(description="Validated and otherwise ignored; the socket always streams."),
        ]
    ]


COMPLETION_BODY = TypeAdapter(CompletionBody)
COMPLETION_FRAME = TypeAdapter(CompletionFrame)
# The fields a request takes as they come; the others are turned into the core's types.
PLAIN = frozenset(
    (
        "message",
        "id",
        "model",
        "agent",
        "conversation_id",
        "parent_id",
        "regenerate",
        "max_tokens",
        "project_id",
        "idempotency_key",
    )
)


def completion_request(fields: CompletionBody | CompletionFrame) -> CompletionRequest:
    """The core's request from validated fields (absent and null alike left out)."""
    values: dict[str, Any] = {}
    for name, value in fields.items():
        if value is None or name == "type":
            continue
        values[name] = value if name in PLAIN else CONVERT[name](value)
    if "tool_choice" in values and not values.get("tools"):
        raise BadRequest("'tool_choice' is only allowed together with 'tools'.")
    if ("regenerate" in values or "parent_id" in values) and (
        "conversation_history" in values or "conversation_id" not in values
    ):
        raise BadRequest(
            "'parent_id' and 'regenerate' need a 'conversation_id' and no 'conversation_history'."
        )
    if "regenerate" in values and ("message" in values or "parent_id" in values):
        raise BadRequest("'regenerate' makes an answer again: send no 'message' or 'parent_id'.")
    return CompletionRequest.of(values)


def _history(value: list[HistoryMessage]) -> tuple[Message, ...]:
    return tuple(Message(m["role"], m["content"]) for m in value)


def _source(item: str | SourceObject) -> Source:
    if isinstance(item, str):
        return Source(content=item)
    return Source(item["content"], item.get("title"), item.get("url"), item.get("id"))


def _stop(value: str | list[str] | None) -> tuple[str, ...]:
    if value is None:
        return ()
    return (value,) if isinstance(value, str) else tuple(value)


def _tools(value: list[Tool] | None) -> tuple[ToolSpec, ...]:
    return tuple(_spec(tool["function"]) for tool in value) if value else ()


def _spec(f: ToolFunction) -> ToolSpec:
    return ToolSpec(f["name"], f.get("description"), f.get("parameters"), f.get("strict"))


def _choice(value: str | NamedToolChoice | None) -> ToolChoice | None:
    if isinstance(value, dict):
        return UseTool(value["function"]["name"])
    return value  # type: ignore[return-value]


CONVERT: dict[str, Any] = {
    "conversation_history": _history,
    "sources": lambda items: tuple(map(_source, items)),
    "stream": bool,
    "temperature": float,
    "stop": _stop,
    "tools": _tools,
    "tool_choice": _choice,
}


# A \uD800 to \uDFFF escape. JSON lets one stand alone, which is half a character: a string
# holding one cannot be written as UTF-8 (to Redis, to a client), so it is refused here.
SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
SURROGATE_ESCAPE_BYTES = re.compile(rb"\\u[dD][89a-fA-F]")


def parse_json_object(text: str | bytes) -> dict[str, Any]:
    try:
        obj = json.loads(text)
    except (ValueError, UnicodeDecodeError):
        raise BadRequest("The body is not valid JSON.") from None
    except RecursionError:  # json's C parser recurses once per level of nesting
        raise BadRequest("The JSON is nested too deeply.") from None
    if not isinstance(obj, dict):
        raise BadRequest("Expected a JSON object.")
    if isinstance(text, bytes):
        escaped = SURROGATE_ESCAPE_BYTES.search(text) is not None
    else:
        escaped = SURROGATE_ESCAPE.search(text) is not None
    if escaped and not _whole_characters(obj):
        raise BadRequest(
            "The JSON holds a \\u escape of half a character (a surrogate from \\ud800 to "
            "\\udfff without its pair), which is not text."
        )
    return obj


def _whole_characters(obj: object) -> bool:
    """Whether every string in `obj` can be written as UTF-8 (json reads a pair of surrogate
    escapes as the one character they make, so only one left alone fails)."""
    try:
        json.dumps(obj, ensure_ascii=False).encode()
    except UnicodeEncodeError:
        return False
    return True


def with_message(obj: dict[str, Any]) -> dict[str, Any]:
    """`message` is required unless the request regenerates: one missing is sent as null to
    validation, so that its error is named in the order fields are checked."""
    if "message" not in obj and obj.get("regenerate") is None:
        return {**obj, "message": None}
    return obj


def parse_completion(obj: dict[str, Any], *, require_id: bool) -> CompletionRequest:
    obj = with_message(obj)
    if require_id:
        return completion_request(validate(COMPLETION_FRAME, {**obj, "type": "completion"}))
    return completion_request(validate(COMPLETION_BODY, obj))


# One field at a time, for the OpenAI-compatible API, which reads these fields as ours.


class _StopField(TypedDict):
    __pydantic_config__ = STRICT  # type: ignore[misc]
    stop: Stop | None


class _ToolsField(TypedDict):
    __pydantic_config__ = STRICT  # type: ignore[misc]
    tools: Tools | None


class _ToolChoiceField(TypedDict):
    __pydantic_config__ = STRICT  # type: ignore[misc]
    tool_choice: ToolChoiceField | None


STOP = TypeAdapter(_StopField)
TOOLS = TypeAdapter(_ToolsField)
TOOL_CHOICE = TypeAdapter(_ToolChoiceField)


def parse_stop(value: Any) -> tuple[str, ...]:
    return _stop(validate(STOP, {"stop": value})["stop"])


def parse_tools(value: Any) -> tuple[ToolSpec, ...]:
    """Tools the caller's own code runs, given in OpenAI's function-tool shape (the shape of
    both APIs), as provider-neutral specs."""
    return _tools(validate(TOOLS, {"tools": value})["tools"])


def parse_tool_choice(value: Any) -> ToolChoice | None:
    return _choice(validate(TOOL_CHOICE, {"tool_choice": value})["tool_choice"])


def _seq_text(value: Any) -> Any:
    """A seq may come as a string of ASCII digits (a query parameter, Last-Event-ID)."""
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 16:
        return int(value)
    return value


# A seq: the last one a client has seen, 0 for "everything".
After = Annotated[
    int,
    BeforeValidator(_seq_text),
    Field(ge=0, le=MAX_SEQ),
    WithJsonSchema(
        {
            "description": "The last seq seen (0: everything); a string of ASCII digits is "
            "accepted too.",
            "anyOf": [
                {"type": "integer", "minimum": 0, "maximum": MAX_SEQ},
                {"type": "string", "pattern": "^[0-9]+$"},
            ],
        }
    ),
]


class _AfterField(TypedDict):
    __pydantic_config__ = STRICT  # type: ignore[misc]
    after: After | None


AFTER = TypeAdapter(_AfterField)


def parse_after(value: Any) -> int:
    """The last seq a client has seen: a whole number, 0 for "everything"."""
    return validate(AFTER, {"after": value})["after"] or 0

"""What every wire model shares: its limits and patterns, its field types, and the translation
of pydantic's errors into the readable messages clients get.

A model states a field's limit once; its validation and its JSON Schema (in the API
documents) both come from that statement. A refusal names the first problem found, in the
words of `MESSAGES`, keyed by where pydantic found it.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, TypeVar

from pydantic import AfterValidator, ConfigDict, Field, TypeAdapter, ValidationError
from pydantic_core import ErrorDetails

from gateway.errors import BadRequest

CONVERSATION_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
GENERATION_ID_RE = re.compile(r"^gen_[A-Za-z0-9_-]{1,60}$")
MESSAGE_ID_RE = re.compile(r"^msg_[A-Za-z0-9_-]{1,60}$")
MESSAGE_ID_PREFIX = "msg_"
# The `parent_id` of a turn that continues from the active leaf, and the `regenerate` of one
# that makes the active leaf's answer again: never sent, the gateway's own.
ACTIVE_LEAF = "~"
MAX_ID_CHARS = 128
MAX_HISTORY_MESSAGES = 1000
MAX_SOURCES = 50
MAX_TOOLS = 128
MAX_STOP_SEQUENCES = 4  # as OpenAI's
# The most tokens a request may ask an answer to use: far above any model's, and keeps every
# count the gateway derives from it (its reservation against the user's limits) within 64 bits.
MAX_TOKENS = 2**31 - 1
# The largest seq a client may name: the largest integer a JSON number holds exactly.
MAX_SEQ = 2**53 - 1
NON_BLANK = "\\S"  # at least one character that is not whitespace


# Wire types are TypedDicts validated by pydantic: the same checks and JSON Schema as a
# BaseModel, and about a third of the time per frame, since no model instance is built.
STRICT = ConfigDict(strict=True)  # no coercion: a "1" is not a 1, a 1 not a true


def within(low: int, high: int | None = None) -> AfterValidator:
    """A string of `low` to `high` characters, counted as Python counts them: pydantic's own
    length check refuses a lone surrogate (which JSON's escapes can make) as no string."""

    def check(value: str) -> str:
        if len(value) < low or (high is not None and len(value) > high):
            raise ValueError("length")
        return value

    return AfterValidator(check)


RequestId = Annotated[
    str,
    within(1, MAX_ID_CHARS),
    Field(
        description=f"1-{MAX_ID_CHARS} characters.",
        json_schema_extra={"minLength": 1, "maxLength": MAX_ID_CHARS},
    ),
]
NonEmpty = Annotated[str, within(1), Field(json_schema_extra={"minLength": 1})]
ConversationId = Annotated[
    str,
    Field(
        pattern=CONVERSATION_ID_RE.pattern,
        description="A conversation id: 1-64 characters of A-Z, a-z, 0-9, _ or -.",
    ),
]
GenerationId = Annotated[
    str,
    Field(
        pattern=GENERATION_ID_RE.pattern,
        description="A generation id, `gen_` and 1-60 characters.",
    ),
]


MessageId = Annotated[
    str,
    Field(
        pattern=MESSAGE_ID_RE.pattern,
        description="A stored message's id, `msg_` and 1-60 characters.",
    ),
]
ParentId = Annotated[
    str,
    Field(
        pattern=r"^(msg_[A-Za-z0-9_-]{1,60})?$",
        description="The message to answer after (default: the active leaf); '' for a new "
        "first message.",
    ),
]


def answer_id(generation_id: str) -> str:
    """The id of a generation's answer, fixed by the generation: storing it twice (a write
    retried on a Redis Cluster) finds it stored, and a client that knows the generation
    (the AI SDK's message id) knows its answer."""
    return MESSAGE_ID_PREFIX + generation_id.removeprefix("gen_")


def _not_blank(value: str) -> str:
    # str.strip's idea of whitespace, which a regex engine's \s does not quite share
    if not value.strip():
        raise ValueError("blank")
    return value


# The pattern is for the documents alone: pydantic's regex engine refuses a lone surrogate
# (which JSON's escapes can make), where the check by `strip` lets it through as text.
NonBlank = Annotated[
    str, AfterValidator(_not_blank), Field(json_schema_extra={"pattern": NON_BLANK})
]

# Readable messages, by the field (or the field and what lies inside it) that failed. A key
# with an index, `("tools", "item")`, covers everything inside one item of a list.
MESSAGES: dict[str | tuple[str, str], str] = {
    "id": f"'id' must be a string of 1-{MAX_ID_CHARS} characters.",
    **{
        name: f"'{name}' must be a string of 1-{MAX_ID_CHARS} characters."
        for name in ("model", "agent", "project_id", "idempotency_key")
    },
    "message": "'message' must be a non-empty string.",
    "conversation_id": "'conversation_id' must be 1-64 characters of A-Z, a-z, 0-9, _ or -.",
    ("conversation_id", "not an id"): (
        f"'conversation_id' must be a string of 1-{MAX_ID_CHARS} characters."
    ),
    "generation_id": "'generation_id' must be a generation id such as 'gen_…'.",
    "parent_id": "'parent_id' must be a message id such as 'msg_…', or '' for a first message.",
    "regenerate": "'regenerate' must be the id of an answer, such as 'msg_…'.",
    "active_message_id": "'active_message_id' must be a message id such as 'msg_…'.",
    "message_id": "'message_id' must be a message id such as 'msg_…'.",
    "stream": "'stream' must be true or false.",
    "temperature": "'temperature' must be a number from 0 to 2.",
    "max_tokens": f"'max_tokens' must be an integer from 1 to {MAX_TOKENS}.",
    "conversation_history": (
        f"'conversation_history' must be a list of at most {MAX_HISTORY_MESSAGES} messages."
    ),
    ("conversation_history", "item"): (
        "Each 'conversation_history' entry needs 'role' (user, assistant or system) "
        "and 'content' (a string)."
    ),
    "sources": f"'sources' must be a list of at most {MAX_SOURCES} items.",
    ("sources", "item"): (
        "Each source is a string or an object with 'content' and optional 'id', 'title', 'url'."
    ),
    "stop": f"'stop' must be a string or a list of at most {MAX_STOP_SEQUENCES} strings.",
    "tools": f"'tools' must be a list of at most {MAX_TOOLS} function tools.",
    ("tools", "item"): 'Each tool must look like {"type": "function", "function": {"name": ...}}.',
    ("tools", "types"): (
        "A function tool's 'description' must be a string, its 'parameters' a JSON "
        "Schema object and its 'strict' true or false."
    ),
    "tool_choice": "'tool_choice' must be auto, none, required or a named function.",
    "after": f"'after' must be a whole number from 0 to {MAX_SEQ}.",
    "token": "An auth frame needs a non-empty 'token' string.",
}
# The order fields are checked in; a refusal names the first that fails.
CHECK_ORDER = {
    name: index
    for index, name in enumerate(
        (
            "token",
            "message",
            "conversation_id",
            "parent_id",
            "regenerate",
            "stream",
            "generation_id",
            "after",
            "id",
            "model",
            "agent",
            "temperature",
            "max_tokens",
            "conversation_history",
            "project_id",
            "sources",
            "idempotency_key",
            "stop",
            "tools",
            "tool_choice",
        )
    )
}
TOOL_TYPED_FIELDS = frozenset({"description", "parameters", "strict"})


def message_for(error: ErrorDetails) -> str:
    """The readable message of one pydantic error."""
    loc = error["loc"]
    if not loc:  # the whole value
        return "Expected a JSON object."
    field = str(loc[0])
    if len(loc) > 1 and isinstance(loc[1], int):
        if field == "tools" and TOOL_TYPED_FIELDS.intersection(map(str, loc[2:])):
            return MESSAGES[(field, "types")]
        return MESSAGES.get((field, "item"), MESSAGES[field])
    if field == "conversation_id" and not is_request_id(error["input"]):
        return MESSAGES[(field, "not an id")]
    return MESSAGES.get(field, f"'{field}' is invalid.")


def is_request_id(value: Any) -> bool:
    return isinstance(value, str) and 0 < len(value) <= MAX_ID_CHARS


T = TypeVar("T")


def validate(adapter: TypeAdapter[T], obj: Any) -> T:
    """`obj` as the adapter's type, or BadRequest naming its first problem (in the order
    the fields are checked, whatever order pydantic found them in)."""
    try:
        return adapter.validate_python(obj)
    except ValidationError as error:
        first = min(error.errors(include_url=False), key=_check_order)
        raise BadRequest(message_for(first)) from None


def _check_order(error: ErrorDetails) -> int:
    loc = error["loc"]
    return CHECK_ORDER.get(str(loc[0]), len(CHECK_ORDER)) if loc else len(CHECK_ORDER)

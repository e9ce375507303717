"""JSON Schemas (2020-12, as OpenAPI 3.1 uses them) of the HTTP bodies and events, as data.

Every limit, pattern and enumeration comes from the constant or type the parsers and
renderers use, so the published document changes when the code does. The parsers remain the
authority: a schema says what they accept and what the gateway sends, and tests hold the two
together (documented examples go through the real parsers, real responses through these
schemas). A reference to another schema is `ref("Name")`, resolved under
`#/components/schemas/`.
"""

from __future__ import annotations

from typing import Any, get_args

from gateway.core import conversations
from gateway.core.generations import NOTICES
from gateway.errors import ErrorCode
from gateway.events import FinishReason
from gateway.handlers import ai_sdk, openai_compat
from gateway.protocol.frames import (
    CONVERSATION_ID_RE,
    GENERATION_ID_RE,
    MAX_HISTORY_MESSAGES,
    MAX_ID_CHARS,
    MAX_SOURCES,
    MAX_TOOLS,
)
from gateway.store.messages import MessageStatus
from gateway.store.records import Status

Schema = dict[str, Any]

ERROR_CODES = get_args(ErrorCode)
FINISH_REASONS = get_args(FinishReason)
GENERATION_STATUSES = get_args(Status)
MESSAGE_STATUSES = get_args(MessageStatus)
NOTICE_CODES = tuple(NOTICES)
MAX_STOP_SEQUENCES = 4  # parse_stop's limit, as OpenAI's
EVENT_TYPES = ("start", "chunk", "tool_call", "tool_result", "done", "error")
UI_PART_TYPES = (
    "start",
    "start-step",
    "text-start",
    "text-delta",
    "text-end",
    "tool-input-available",
    "tool-input-error",
    "tool-output-available",
    "tool-output-error",
    "message-metadata",
    "abort",
    "error",
    "finish-step",
    "finish",
)


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def nullable(schema: Schema) -> Schema:
    """A field where null means absent (the parsers treat an optional null as not sent)."""
    return {"anyOf": [schema, {"type": "null"}]}


def obj(properties: dict[str, Schema], required: tuple[str, ...] = (), **extra: Any) -> Schema:
    return {"type": "object", "properties": properties, "required": list(required), **extra}


def text(description: str = "", **extra: Any) -> Schema:
    schema: Schema = {"type": "string", **extra}
    if description:
        schema["description"] = description
    return schema


ID = text(f"1-{MAX_ID_CHARS} characters.", minLength=1, maxLength=MAX_ID_CHARS)
CONVERSATION_ID = text(
    "A conversation id: 1-64 characters of A-Z, a-z, 0-9, _ or -.",
    pattern=CONVERSATION_ID_RE.pattern,
)
GENERATION_ID = text(
    "A generation id, `gen_` and 1-60 characters.", pattern=GENERATION_ID_RE.pattern
)
NON_BLANK = "\\S"  # at least one character that is not whitespace
COUNT = {"type": "integer", "minimum": 0}
MILLIS = {"type": "integer", "minimum": 0, "description": "Unix time in milliseconds."}


# Shared pieces.

USAGE = obj(
    {"prompt_tokens": COUNT, "completion_tokens": COUNT, "total_tokens": COUNT},
    ("prompt_tokens", "completion_tokens", "total_tokens"),
    additionalProperties=False,
)
ERROR = obj(
    {
        "error": {"enum": list(ERROR_CODES), "description": "A stable error code."},
        "detail": text("What went wrong, for people."),
        "timestamp": text("UTC time, ISO 8601 with milliseconds.", format="date-time"),
        "retry_after": {
            "type": "number",
            "minimum": 0,
            "description": "Seconds to wait before retrying; only when the wait is known.",
        },
    },
    ("error", "detail", "timestamp"),
    additionalProperties=False,
    description="The error body of every native HTTP route.",
)
OPENAI_ERROR = obj(
    {
        "error": obj(
            {
                "message": text(),
                "type": text("invalid_request_error, requests or server_error."),
                "param": {"type": ["string", "null"]},
                "code": {"type": ["string", "null"]},
            },
            ("message", "type", "param", "code"),
        )
    },
    ("error",),
    description="OpenAI's error object, answered by every /v1 route.",
)
TOOL = obj(
    {
        "type": {"const": "function"},
        "function": obj(
            {
                "name": text(minLength=1),
                "description": {"type": ["string", "null"]},
                "parameters": {"type": ["object", "null"], "description": "A JSON Schema."},
                "strict": {"type": ["boolean", "null"]},
            },
            ("name",),
        ),
    },
    ("type", "function"),
    description=(
        "A function tool in OpenAI's shape: its name, description, JSON Schema of arguments "
        "and `strict`, sent on to the model in the shape its API takes; other keys are dropped."
    ),
)
TOOLS = {"type": "array", "maxItems": MAX_TOOLS, "items": ref("Tool")}
TOOL_CHOICE = {
    "anyOf": [
        {"enum": ["auto", "none", "required"]},
        obj({"function": obj({"name": {"type": "string"}}, ("name",))}, ("function",)),
    ],
    "description": "Only together with non-empty `tools`.",
}
STOP = {
    "anyOf": [
        text(minLength=1),
        {
            "type": "array",
            "maxItems": MAX_STOP_SEQUENCES,
            "items": text(minLength=1),
        },
    ]
}
SOURCE = {
    "anyOf": [
        {"type": "string"},
        obj(
            {
                "content": {"type": "string"},
                "id": nullable({"type": "string"}),
                "title": nullable({"type": "string"}),
                "url": nullable({"type": "string"}),
            },
            ("content",),
        ),
    ]
}
HISTORY_MESSAGE = obj(
    {"role": {"enum": ["user", "assistant", "system"]}, "content": {"type": "string"}},
    ("role", "content"),
)

# POST /completion and the WebSocket `completion` frame.

COMPLETION_FIELDS: dict[str, Schema] = {
    "id": nullable(ID),
    "message": text("The user's message: not empty, not only whitespace.", pattern=NON_BLANK),
    "model": nullable(ID),
    "agent": nullable(ID),
    "conversation_id": nullable(CONVERSATION_ID),
    "temperature": nullable({"type": "number", "minimum": 0, "maximum": 2}),
    "max_tokens": nullable({"type": "integer", "minimum": 1}),
    "conversation_history": nullable(
        {"type": "array", "maxItems": MAX_HISTORY_MESSAGES, "items": ref("HistoryMessage")}
    ),
    "stop": nullable(STOP),
    "tools": nullable(TOOLS),
    "tool_choice": nullable(TOOL_CHOICE),
    "sources": nullable({"type": "array", "maxItems": MAX_SOURCES, "items": ref("Source")}),
    "project_id": nullable(ID),
    "idempotency_key": nullable(ID),
    "stream": nullable({"type": "boolean"}),
}
COMPLETION_REQUEST = obj(
    COMPLETION_FIELDS,
    ("message",),
    description="Unknown fields are ignored; an optional field set to null counts as absent.",
)
COMPLETION_ANSWER = obj(
    {
        "content": {"type": "string"},
        "model": {"type": "string"},
        "agent": {"type": "string"},
        "conversation_id": {"type": "string"},
        "generation_id": GENERATION_ID,
        "finish_reason": {"enum": list(FINISH_REASONS)},
        "usage": ref("Usage"),
    },
    ("content", "model", "agent", "conversation_id", "generation_id", "finish_reason", "usage"),
    additionalProperties=False,
)


# Generation events: the `data:` of the native SSE streams and the WebSocket's event frames.


def event(kind: str, fields: dict[str, Schema], *, final: bool = False) -> Schema:
    head: dict[str, Schema] = {
        "type": {"const": kind},
        "id": {"type": ["string", "null"]},
        "generation_id": GENERATION_ID,
        "conversation_id": {"type": "string"},
        "seq": {"type": "integer", "minimum": 1},
        "content": {"type": "string"},
        "done": {"const": final},
    }
    return obj({**head, **fields}, (*head, *fields), additionalProperties=False)


METADATA = {"type": "object"}
EVENTS: dict[str, Schema] = {
    "StartEvent": event("start", {"model": {"type": "string"}, "agent": {"type": "string"}}),
    "ChunkEvent": event("chunk", {"metadata": METADATA}),
    "ToolCallEvent": event(
        "tool_call",
        {
            "call_id": {"type": "string"},
            "name": {"type": "string"},
            "arguments": {"type": "string"},
        },
    ),
    "ToolResultEvent": event(
        "tool_result",
        {
            "call_id": {"type": "string"},
            "name": {"type": "string"},
            "result": {"type": "string"},
            "is_error": {"type": "boolean"},
        },
    ),
    "DoneEvent": event(
        "done",
        {
            "finish_reason": {"enum": list(FINISH_REASONS)},
            "usage": ref("Usage"),
            "metadata": METADATA,
        },
        final=True,
    ),
    "ErrorEvent": event(
        "error",
        {
            "code": {"enum": list(ERROR_CODES)},
            "message": {"type": "string"},
            "retryable": {"type": "boolean"},
            "error": text("The same text as `message`."),
        },
        final=True,
    ),
}
# retry_after is the one optional field of an event.
EVENTS["ErrorEvent"]["properties"]["retry_after"] = {"type": "number", "minimum": 0}
EVENT = {"oneOf": [ref(name) for name in EVENTS], "description": "One event of a generation."}
NOTICE = obj(
    {
        "type": {"const": "notice"},
        "id": {"type": ["string", "null"]},
        "generation_id": GENERATION_ID,
        "conversation_id": {"type": "string"},
        "code": {"enum": list(NOTICE_CODES)},
        "message": {"type": "string"},
    },
    ("type", "id", "generation_id", "conversation_id", "code", "message"),
    additionalProperties=False,
    description="News about a generation that is not one of its events: no seq, not stored.",
)
CANCELLED = obj(
    {"generation_id": GENERATION_ID, "status": {"enum": list(GENERATION_STATUSES)}},
    ("generation_id", "status"),
    additionalProperties=False,
)


# Conversations, models, agents.

GENERATION_REF = nullable(
    obj(
        {"id": GENERATION_ID, "status": {"enum": list(GENERATION_STATUSES)}},
        ("id", "status"),
        additionalProperties=False,
    )
)
SUMMARY_FIELDS: dict[str, Schema] = {
    "id": CONVERSATION_ID,
    "title": {"type": "string"},
    "project_id": {"type": ["string", "null"]},
    "created_at": MILLIS,
    "updated_at": MILLIS,
    "generation": GENERATION_REF,
}
SUMMARY = obj(SUMMARY_FIELDS, tuple(SUMMARY_FIELDS), additionalProperties=False)
PAGE = obj(
    {
        "data": {"type": "array", "items": ref("ConversationSummary")},
        "next_cursor": {"type": ["string", "null"]},
    },
    ("data", "next_cursor"),
    additionalProperties=False,
)
STORED_MESSAGE = obj(
    {
        "role": {"enum": ["user", "assistant"]},
        "content": {"type": "string"},
        "created_at": MILLIS,
        "status": {"enum": list(MESSAGE_STATUSES)},
        "model": {"type": "string"},
        "agent": {"type": "string"},
        "generation_id": GENERATION_ID,
        "usage": ref("Usage"),
    },
    ("role", "content", "created_at", "status"),
    additionalProperties=False,
)
CONVERSATION = obj(
    {
        **SUMMARY_FIELDS,
        "messages": {
            "type": "array",
            "items": ref("StoredMessage"),
            "description": "A page of the stored messages, oldest first: the newest ones, or "
            "those before the page whose `next_cursor` was sent. At most `limit` messages "
            "and CONVERSATION_PAGE_BYTES of them, but at least one when any is left.",
        },
        "next_cursor": {
            "type": ["string", "null"],
            "description": "Send it as `cursor` for the page of older messages; `null` when "
            "this page holds the oldest.",
        },
    },
    (*SUMMARY_FIELDS, "messages", "next_cursor"),
    additionalProperties=False,
)
RENAME = obj(
    {
        "title": text(
            f"One line: whitespace runs become one space; 1-{conversations.MAX_TITLE_CHARS}"
            " characters after that.",
            pattern=NON_BLANK,
            maxLength=conversations.MAX_TITLE_CHARS,
        )
    },
    ("title",),
    additionalProperties=False,
)
MODELS = obj(
    {
        "data": {
            "type": "array",
            "items": obj(
                {
                    "id": {"type": "string"},
                    "streaming": {"type": "boolean"},
                    "default": {"type": "boolean"},
                },
                ("id", "streaming", "default"),
                additionalProperties=False,
            ),
        },
        "default": {"type": "string"},
    },
    ("data", "default"),
    additionalProperties=False,
)
AGENTS = obj(
    {
        "data": {
            "type": "array",
            "items": obj(
                {
                    "id": {"type": "string"},
                    "model": {"type": ["string", "null"]},
                    "models": {"type": "array", "items": {"type": "string"}},
                    "default": {"type": "boolean"},
                },
                ("id", "model", "models", "default"),
                additionalProperties=False,
            ),
        },
        "default": {"type": "string"},
    },
    ("data", "default"),
    additionalProperties=False,
)
HEALTH = obj({"status": {"const": "ok"}}, ("status",), additionalProperties=False)
READINESS = obj(
    {"status": {"enum": ["ok", "unavailable"]}, "redis": {"enum": ["ok", "unreachable"]}},
    ("status", "redis"),
    additionalProperties=False,
)


# The OpenAI-compatible API.


def _openai_parameters() -> dict[str, Schema]:
    """One entry per parameter `chat_call` knows; any other is refused as unknown."""
    handled: dict[str, Schema] = {
        "model": text("A configured model name (GET /v1/models)."),
        "messages": {
            "type": "array",
            "minItems": 1,
            "maxItems": MAX_HISTORY_MESSAGES + 1,
            "items": ref("OpenAIMessage"),
            "description": "The last one is a user message or a tool result.",
        },
        "stream": nullable({"type": "boolean"}),
        "stream_options": nullable(
            obj({"include_usage": nullable({"type": "boolean"})}, description="With stream only.")
        ),
        "temperature": nullable({"type": "number", "minimum": 0, "maximum": 2}),
        "max_tokens": nullable({"type": "integer", "minimum": 1}),
        "max_completion_tokens": nullable({"type": "integer", "minimum": 1}),
        "stop": nullable(STOP),
        "n": nullable({"const": 1}),
        "tools": nullable(TOOLS),
        "tool_choice": nullable(TOOL_CHOICE),
        "logprobs": nullable({"const": False}),
        "top_logprobs": nullable({"const": 0}),
        "response_format": nullable(
            obj({"type": {"const": "text"}}, ("type",), additionalProperties=False)
        ),
        "modalities": nullable({"const": ["text"]}),
    }
    ignored = {
        name: {"description": "Accepted and ignored."} for name in openai_compat.IGNORED_PARAMETERS
    }
    refused = {
        name: {"type": "null", "description": f"Refused unless null: {reason}"}
        for name, reason in openai_compat.UNSUPPORTED_PARAMETERS.items()
    }
    return {**handled, **dict(sorted(ignored.items())), **refused}


CONTENT_PART = obj({"type": {"const": "text"}, "text": {"type": "string"}}, ("type", "text"))
OPENAI_MESSAGE = obj(
    {
        "role": {"enum": ["system", "developer", "user", "assistant", "tool"]},
        "content": {
            "anyOf": [
                {"type": "string"},
                {"type": "array", "items": CONTENT_PART},
                {"type": "null", "description": "Assistant messages only."},
            ]
        },
        "tool_calls": nullable({"type": "array", "items": ref("OpenAIToolCall")}),
        "tool_call_id": text("Tool messages: the call this result answers.", minLength=1),
    },
    ("role",),
)
OPENAI_TOOL_CALL = obj(
    {
        "index": {"type": "integer", "minimum": 0},
        "id": {"type": "string"},
        "type": {"const": "function"},
        "function": obj(
            {"name": {"type": "string"}, "arguments": {"type": "string"}}, ("name", "arguments")
        ),
    },
    ("id", "function"),
)
CHAT_REQUEST = obj(
    _openai_parameters(),
    ("model", "messages"),
    additionalProperties=False,
    description="Unknown parameters are refused (400 unknown_parameter).",
)
OPENAI_HEAD: dict[str, Schema] = {
    "id": text(pattern="^chatcmpl-gen_"),
    "created": {"type": "integer"},
    "model": {"type": "string"},
    "system_fingerprint": {"type": "null"},
}
CHAT_COMPLETION = obj(
    {
        **OPENAI_HEAD,
        "object": {"const": "chat.completion"},
        "choices": {
            "type": "array",
            "items": obj(
                {
                    "index": {"const": 0},
                    "message": obj(
                        {
                            "role": {"const": "assistant"},
                            "content": {"type": ["string", "null"]},
                            "refusal": {"type": "null"},
                            "tool_calls": {"type": "array", "items": ref("OpenAIToolCall")},
                        },
                        ("role", "content", "refusal"),
                    ),
                    "logprobs": {"type": "null"},
                    "finish_reason": {"enum": sorted(set(openai_compat.FINISH_REASONS.values()))},
                },
                ("index", "message", "logprobs", "finish_reason"),
            ),
        },
        "usage": ref("Usage"),
    },
    ("id", "object", "created", "model", "choices", "usage", "system_fingerprint"),
)
CHAT_CHUNK = obj(
    {
        **OPENAI_HEAD,
        "object": {"const": "chat.completion.chunk"},
        "choices": {
            "type": "array",
            "items": obj(
                {
                    "index": {"const": 0},
                    "delta": {"type": "object"},
                    "logprobs": {"type": "null"},
                    "finish_reason": {
                        "enum": [None, *sorted(set(openai_compat.FINISH_REASONS.values()))]
                    },
                },
                ("index", "delta", "logprobs", "finish_reason"),
            ),
        },
        "usage": nullable(ref("Usage")),
    },
    ("id", "object", "created", "model", "choices"),
)
MODEL = obj(
    {
        "id": {"type": "string"},
        "object": {"const": "model"},
        "created": {"type": "integer"},
        "owned_by": {"const": openai_compat.OWNED_BY},
    },
    ("id", "object", "created", "owned_by"),
    additionalProperties=False,
)
MODEL_LIST = obj(
    {"object": {"const": "list"}, "data": {"type": "array", "items": ref("Model")}},
    ("object", "data"),
    additionalProperties=False,
)


# The Vercel AI SDK UI message stream.

UI_MESSAGE = obj(
    {
        "id": {"type": "string"},
        "role": {"enum": ["system", "user", "assistant"]},
        "parts": {"type": "array", "items": {"type": "object"}},
    },
    ("role", "parts"),
    description="Only the last message is read: a user message with a non-empty text part.",
)
UI_CHAT_REQUEST = obj(
    {
        "id": CONVERSATION_ID,
        "messages": {"type": "array", "minItems": 1, "items": ref("UIMessage")},
        "trigger": {"type": "string"},
        "messageId": {"type": ["string", "null"]},
        **{name: COMPLETION_FIELDS[name] for name in ai_sdk.BODY_FIELDS},
    },
    ("id", "messages"),
    description="What `useChat` with `DefaultChatTransport` sends; the chat id is the "
    "conversation id. Other fields are ignored.",
)
UI_PART = obj(
    {"type": {"enum": list(UI_PART_TYPES)}},
    ("type",),
    description="One part of a UI message stream (AI SDK 5).",
)


SCHEMAS: dict[str, Schema] = {
    "Error": ERROR,
    "OpenAIError": OPENAI_ERROR,
    "Usage": USAGE,
    "Tool": TOOL,
    "Source": SOURCE,
    "HistoryMessage": HISTORY_MESSAGE,
    "CompletionRequest": COMPLETION_REQUEST,
    "CompletionAnswer": COMPLETION_ANSWER,
    **EVENTS,
    "Event": EVENT,
    "Notice": NOTICE,
    "CancelAnswer": CANCELLED,
    "ConversationSummary": SUMMARY,
    "ConversationPage": PAGE,
    "StoredMessage": STORED_MESSAGE,
    "Conversation": CONVERSATION,
    "Rename": RENAME,
    "Models": MODELS,
    "Agents": AGENTS,
    "Health": HEALTH,
    "Readiness": READINESS,
    "ChatCompletionRequest": CHAT_REQUEST,
    "OpenAIMessage": OPENAI_MESSAGE,
    "OpenAIToolCall": OPENAI_TOOL_CALL,
    "ChatCompletion": CHAT_COMPLETION,
    "ChatCompletionChunk": CHAT_CHUNK,
    "Model": MODEL,
    "ModelList": MODEL_LIST,
    "UIMessage": UI_MESSAGE,
    "UIChatRequest": UI_CHAT_REQUEST,
    "UIMessagePart": UI_PART,
}

"""JSON Schemas of the OpenAI-compatible API and the AI SDK stream, written by hand.

These two APIs' parsers are not wire models yet, so their schemas are stated here, from the
constants and types those parsers use; the tests hold the two together (documented examples
go through the real parsers, real responses through these schemas). The fields they share
with the native completion request (`stop`, `tools`, `tool_choice`, the AI SDK's body
fields) are that request's own generated schemas. A reference to another schema is
`ref("Name")`, resolved under `#/components/schemas/`.
"""

from __future__ import annotations

from typing import Any

from gateway.apidocs.schemas import COMPLETION_FIELDS, CONVERSATION_ID
from gateway.protocol import ai_sdk
from gateway.protocol import openai as openai_compat
from gateway.protocol.output_format import MAX_SCHEMA_BYTES, SCHEMA_NAME_RE
from gateway.protocol.wire import MAX_HISTORY_MESSAGES

Schema = dict[str, Any]
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
STOP = COMPLETION_FIELDS["stop"]
TOOLS = COMPLETION_FIELDS["tools"]
TOOL_CHOICE = COMPLETION_FIELDS["tool_choice"]


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
        "stop": STOP,
        "n": nullable({"const": 1}),
        "tools": TOOLS,
        "tool_choice": TOOL_CHOICE,
        "logprobs": nullable({"const": False}),
        "top_logprobs": nullable({"const": 0}),
        "response_format": nullable(RESPONSE_FORMAT),
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


JSON_SCHEMA_FORMAT = obj(
    {
        "name": text(pattern=SCHEMA_NAME_RE.pattern),
        "description": nullable(text()),
        "schema": nullable(
            {"type": "object", "description": f"A JSON Schema; at most {MAX_SCHEMA_BYTES} bytes."}
        ),
        "strict": nullable({"type": "boolean"}),
    },
    ("name",),
    additionalProperties=False,
)
RESPONSE_FORMAT: Schema = {
    "description": "JSON formats only for a model whose table sets structured_outputs = true.",
    "oneOf": [
        obj({"type": {"enum": ["text", "json_object"]}}, ("type",), additionalProperties=False),
        obj(
            {"type": {"const": "json_schema"}, "json_schema": JSON_SCHEMA_FORMAT},
            ("type", "json_schema"),
            additionalProperties=False,
        ),
    ],
}
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
    "OpenAIError": OPENAI_ERROR,
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

"""JSON Schemas (2020-12, as OpenAPI 3.1 and AsyncAPI use them) of the native protocol,
generated from its wire types.

The wire types in `gateway.protocol` validate what clients send and describe what the
gateway sends; their limits, patterns and enumerations are stated there once, and the
documents publish what pydantic makes of them here. Every type a schema uses gets a schema
of its own, under its class name; a reference is `ref("Name")`, resolved under
`#/components/schemas/` (`#/components/schemas/` in both documents).
"""

from __future__ import annotations

from typing import Any, get_args

from pydantic import TypeAdapter
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaMode
from pydantic_core import CoreSchema

from gateway.errors import ErrorCode
from gateway.events import FinishReason
from gateway.protocol.frames import CLIENT_FRAMES_BY_NAME
from gateway.protocol.requests import CompletionBody
from gateway.protocol.server_models import EVENTS as EVENT_TYPES_BY_NAME
from gateway.protocol.server_models import SOCKET_FRAMES, GenerationStatus, Notice, NoticeCode
from gateway.protocol.views import VIEWS, MessageStatus
from gateway.protocol.wire import ConversationId, GenerationId, RequestId

Schema = dict[str, Any]
REFS = "#/components/schemas/{model}"

ERROR_CODES = get_args(ErrorCode)
FINISH_REASONS = get_args(FinishReason)
GENERATION_STATUSES = get_args(GenerationStatus)
MESSAGE_STATUSES = get_args(MessageStatus)
NOTICE_CODES = get_args(NoticeCode)
EVENT_TYPES = ("start", "chunk", "tool_call", "tool_result", "done", "error")


class _Generator(GenerateJsonSchema):
    """pydantic's schemas without a title on every field (the field's name says it)."""

    def field_title_should_be_set(self, schema: CoreSchema) -> bool:
        return False


def generated(types: dict[str, Any]) -> dict[str, Schema]:
    """The schema of each type under the given name, and of every type they use under its
    class name."""
    mode: JsonSchemaMode = "validation"
    inputs = [(name, mode, TypeAdapter(kind)) for name, kind in types.items()]
    tops, defs = TypeAdapter.json_schemas(inputs, ref_template=REFS, schema_generator=_Generator)
    used: dict[str, Schema] = dict(defs.get("$defs", {}))
    named = {name: used.pop(top["$ref"].rsplit("/", 1)[-1]) for (name, _), top in tops.items()}
    return {name: _one_line(schema) for name, schema in {**named, **used}.items()}


def _one_line(schema: Any) -> Any:
    """A docstring's line breaks are for the source; a description is one paragraph."""
    if isinstance(schema, dict):
        return {
            key: " ".join(value.split())
            if key == "description" and isinstance(value, str)
            else _one_line(value)
            for key, value in schema.items()
        }
    if isinstance(schema, list):
        return [_one_line(item) for item in schema]
    return schema


def ref(name: str) -> Schema:
    return {"$ref": REFS.format(model=name)}


def field_schema(kind: Any) -> Schema:
    """The schema of a field's type on its own, such as an id's for a parameter."""
    schema: Schema = TypeAdapter(kind).json_schema(schema_generator=_Generator)
    return schema


ID = field_schema(RequestId)
CONVERSATION_ID = field_schema(ConversationId)
GENERATION_ID = field_schema(GenerationId)

NATIVE = generated(
    {"CompletionRequest": CompletionBody, **VIEWS, **EVENT_TYPES_BY_NAME, "Notice": Notice}
)
COMPLETION_FIELDS: dict[str, Schema] = NATIVE["CompletionRequest"]["properties"]
EVENTS: dict[str, Schema] = {name: NATIVE[name] for name in EVENT_TYPES_BY_NAME}
EVENT = {"oneOf": [ref(name) for name in EVENTS], "description": "One event of a generation."}
SCHEMAS: dict[str, Schema] = {**NATIVE, "Event": EVENT}

# The socket's frames, both ways, for the AsyncAPI document.
SOCKET = generated({**CLIENT_FRAMES_BY_NAME, **SOCKET_FRAMES})

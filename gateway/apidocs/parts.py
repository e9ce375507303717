"""The building blocks of the OpenAPI document: bodies, SSE responses, parameters, shared
error responses, and `Operation`, one method of one route as the document describes it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from gateway.apidocs.schemas import GENERATION_ID, ID, Schema, ref

Json = dict[str, Any]


def json_body(schema: Schema, description: str, **extra: Any) -> Json:
    return {
        "description": description,
        "content": {"application/json": {"schema": schema}},
        **extra,
    }


def sse(data: Schema, description: str, *, notices: bool = False, done_line: bool = False) -> Json:
    """An SSE response. Its schema describes one event (OpenAPI 3.2's reading of a 3.1
    `schema` on text/event-stream): `data` is JSON of the given schema, or `[DONE]`."""
    events: list[Schema] = [
        {
            "type": "object",
            "properties": {
                "event": {"const": "message"},
                "id": {"type": "string", "pattern": "^[0-9]+$"},
                "data": {
                    "type": "string",
                    "contentMediaType": "application/json",
                    "contentSchema": data,
                },
            },
            "required": ["data"],
        }
    ]
    if notices:
        events.append(
            {
                "type": "object",
                "properties": {
                    "event": {"const": "notice"},
                    "data": {
                        "type": "string",
                        "contentMediaType": "application/json",
                        "contentSchema": ref("Notice"),
                    },
                },
                "required": ["event", "data"],
            }
        )
    if done_line:
        events.append(
            {
                "type": "object",
                "properties": {"event": {"const": "message"}, "data": {"const": "[DONE]"}},
                "required": ["data"],
            }
        )
    schema = events[0] if len(events) == 1 else {"anyOf": events}
    return {
        "description": description,
        "content": {"text/event-stream": {"schema": schema}},
    }


def error(status: int, shape: str = "native") -> Json:
    return {"$ref": f"#/components/responses/{'OpenAI' if shape == 'openai' else ''}{status}"}


def header(name: str, schema: Schema, description: str, *, required: bool = False) -> Json:
    return {
        "name": name,
        "in": "header",
        "required": required,
        "schema": schema,
        "description": description,
    }


def path_param(name: str, schema: Schema, description: str) -> Json:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "schema": schema,
        "description": description,
    }


def query(name: str, schema: Schema, description: str) -> Json:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "schema": schema,
        "description": description,
    }


IDEMPOTENCY_KEY = header(
    "Idempotency-Key",
    ID,
    "A retry with the same key re-attaches to the generation the key started.",
)
CONVERSATION_PARAM = {
    **path_param("conversation_id", {"type": "string"}, "A conversation id."),
    "example": "trip-planning",
}
MESSAGE_PARAM = {
    **path_param("message_id", {"type": "string"}, "A message id of the conversation."),
    "example": "msg_p8Zq1xWm3kTb0aLs",
}
GENERATION_PARAM = path_param("generation_id", GENERATION_ID, "A generation id.")
NATIVE_ERRORS = (400, 401, 404, 429, 500, 503)


@dataclass(frozen=True)
class Example:
    """A documented request body and, for a refusal, the exact answer (less `timestamp`).
    Tests send each one to a real gateway and compare."""

    body: Json
    status: int = 200
    answer: Json | None = None


@dataclass(frozen=True)
class Operation:
    summary: str
    description: str
    tag: str
    responses: dict[int, Json]
    body: Json | None = None
    parameters: Sequence[Json] = ()
    security: str | None = "bearer"  # None: open; "metrics": METRICS_TOKEN
    errors: Sequence[int] = field(default=NATIVE_ERRORS)
    shape: str = "native"  # "openai": errors in OpenAI's shape
    examples: dict[str, Example] = field(default_factory=dict)


EXAMPLE_TIME = "2026-01-31T12:00:00.000Z"


def refused(detail: str, code: str = "bad_request") -> Json:
    return {"error": code, "detail": detail, "timestamp": EXAMPLE_TIME}


def openai_refused(message: str, param: str | None, code: str | None) -> Json:
    error = {"message": message, "type": "invalid_request_error", "param": param, "code": code}
    return {"error": error}


EVENT_STREAM = sse(
    ref("Event"),
    "The generation's events as SSE: `id:` is the seq, `data:` the event; `notice` events "
    "have no `id:`; a `: keep-alive` comment every 15 s of silence. Ends after the event "
    "whose `done` is true (a stream cut earlier can be resumed).",
    notices=True,
)

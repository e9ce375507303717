"""The OpenAPI 3.1 document of the HTTP API, built from the app's own routes and schemas.

`build(routes)` walks the Starlette routes the app serves and describes each method of each
one from `OPERATIONS`; a route without an entry raises `Undocumented`, so a new route cannot
ship undescribed, and an entry without a route is an error too. Bodies come from
`gateway.apidocs.schemas`. The WebSocket at `/ws` is described by docs/asyncapi.yaml instead.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from starlette.routing import BaseRoute, Mount, Route

from gateway.apidocs.schemas import (
    CONVERSATION_ID,
    GENERATION_ID,
    ID,
    SCHEMAS,
    Schema,
    ref,
)
from gateway.core import conversations
from gateway.handlers import openai_compat
from gateway.protocol.frames import MAX_ID_CHARS, PROTOCOL_VERSION
from gateway.server.timing import UNTIMED_PATHS

OPENAPI_VERSION = "3.1.0"
Json = dict[str, Any]


class Undocumented(LookupError):
    """A route the document does not describe, or a description of no route."""


# Building blocks.


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

OPERATIONS: dict[tuple[str, str], Operation] = {
    ("GET", "/"): Operation(
        "The bundled chat page",
        "HTML, `Cache-Control: no-cache`. The page talks to `/ws`.",
        "Pages",
        {
            200: {
                "description": "The page.",
                "content": {"text/html": {"schema": {"type": "string"}}},
            }
        },
        security=None,
        errors=(),
    ),
    ("GET", "/static/{path}"): Operation(
        "The page's assets",
        "Files of the bundled page.",
        "Pages",
        {200: {"description": "The file.", "content": {"*/*": {"schema": {"type": "string"}}}}},
        parameters=[path_param("path", {"type": "string"}, "The file's path.")],
        security=None,
        errors=(404,),
    ),
    ("GET", "/openapi.json"): Operation(
        "This document",
        "The OpenAPI 3.1 description of the HTTP API.",
        "Documentation",
        {200: json_body({"type": "object"}, "The OpenAPI document.")},
        security=None,
        errors=(),
    ),
    ("GET", "/docs"): Operation(
        "The API reference page",
        "This document as a self-contained HTML page (no scripts, nothing loaded from elsewhere).",
        "Documentation",
        {
            200: {
                "description": "The page.",
                "content": {"text/html": {"schema": {"type": "string"}}},
            }
        },
        security=None,
        errors=(),
    ),
    ("GET", "/healthz"): Operation(
        "Liveness",
        "The process is up and serving HTTP. Does not look at Redis.",
        "Health",
        {200: json_body(ref("Health"), "Serving.")},
        security=None,
        errors=(),
    ),
    ("GET", "/readyz"): Operation(
        "Readiness",
        "Ready when Redis answers a ping within 1 s (on a Redis Cluster, every primary).",
        "Health",
        {
            200: json_body(ref("Readiness"), "Ready."),
            503: json_body(ref("Readiness"), "Redis is unreachable."),
        },
        security=None,
        errors=(),
    ),
    ("GET", "/metrics"): Operation(
        "Prometheus metrics",
        "This process's metrics in the Prometheus text format 0.0.4. Open when METRICS_TOKEN "
        "is unset; otherwise it needs `Authorization: Bearer <METRICS_TOKEN>` (a user's JWT "
        "does not open it).",
        "Health",
        {
            200: {
                "description": "The metrics.",
                "content": {"text/plain": {"schema": {"type": "string"}}},
            }
        },
        security="metrics",
        errors=(401,),
    ),
    ("POST", "/completion"): Operation(
        "Start a completion",
        "One turn of a conversation. `stream: false` (default): one JSON answer once the "
        "generation has ended, or the error of its code. `stream: true`: Server-Sent Events. "
        "The body is at most MAX_FRAME_BYTES (413 beyond).",
        "Completions",
        {
            200: {
                "description": "The answer (`stream: false`), or its events (`stream: true`).",
                "content": {
                    "application/json": {"schema": ref("CompletionAnswer")},
                    **EVENT_STREAM["content"],
                },
            },
            413: {"$ref": "#/components/responses/413"},
            502: {"$ref": "#/components/responses/502"},
        },
        body={
            "required": True,
            "content": {"application/json": {"schema": ref("CompletionRequest")}},
        },
        parameters=[IDEMPOTENCY_KEY],
        examples={
            "answer": Example(
                {"message": "What is the capital of France?", "conversation_id": "trip-planning"}
            ),
            "stream": Example({"message": "hello there", "stream": True, "id": "r1"}),
            "emptyMessage": Example(
                {"message": " "}, 400, refused("'message' must be a non-empty string.")
            ),
            "badTemperature": Example(
                {"message": "hi", "temperature": 3},
                400,
                refused("'temperature' must be a number from 0 to 2."),
            ),
            "tooManyStops": Example(
                {"message": "hi", "stop": ["a", "b", "c", "d", "e"]},
                400,
                refused("'stop' must be a string or a list of at most 4 strings."),
            ),
        },
    ),
    ("GET", "/generations/{generation_id}/events"): Operation(
        "Replay and follow a generation",
        "Every event after `Last-Event-ID` (else `?after=`, else 0), then live events, on any "
        "instance. 204 when the generation has ended and nothing is after that seq: an "
        "EventSource stops reconnecting. The token may come as `?token=` for clients that "
        "cannot set headers. An open stream holds one of the user's LIMIT_CONNECTIONS slots, "
        "as a WebSocket does: 429 with Retry-After when none is free.",
        "Completions",
        {
            200: EVENT_STREAM,
            204: {"description": "The generation has ended; nothing more will come."},
        },
        parameters=[
            GENERATION_PARAM,
            header(
                "Last-Event-ID",
                {"type": "string", "pattern": "^[0-9]*$"},
                "The last seq seen; an empty value counts as absent.",
            ),
            query("after", {"type": "string", "pattern": "^[0-9]+$"}, "The last seq seen."),
            query("token", {"type": "string"}, "The JWT, for an EventSource."),
        ],
    ),
    ("POST", "/generations/{generation_id}/cancel"): Operation(
        "Cancel a generation",
        "Wherever it runs. It ends with `done`, `finish_reason: cancelled`, for every subscriber.",
        "Completions",
        {
            202: json_body(ref("CancelAnswer"), "It was running: the cancel was sent."),
            200: json_body(ref("CancelAnswer"), "It had already ended; its final status."),
        },
        parameters=[GENERATION_PARAM],
    ),
    ("GET", "/conversations"): Operation(
        "List conversations",
        "The caller's conversations, most recently updated first, a page at a time.",
        "Conversations",
        {200: json_body(ref("ConversationPage"), "A page.")},
        parameters=[
            query(
                "limit",
                {"type": "integer", "minimum": 1, "maximum": conversations.MAX_LIMIT},
                f"Page size, default {conversations.DEFAULT_LIMIT}.",
            ),
            query("cursor", {"type": "string"}, "`next_cursor` of the previous page."),
        ],
    ),
    ("GET", "/conversations/{conversation_id}"): Operation(
        "Read a conversation",
        "Its latest generation and its stored messages, a page at a time from the newest: "
        "follow `next_cursor` for older ones. A page holds at most `limit` messages and "
        "CONVERSATION_PAGE_BYTES of them, and always one at least.",
        "Conversations",
        {200: json_body(ref("Conversation"), "The conversation, with a page of messages.")},
        parameters=[
            CONVERSATION_PARAM,
            query(
                "limit",
                {"type": "integer", "minimum": 1, "maximum": conversations.MAX_MESSAGE_LIMIT},
                f"Messages per page, default {conversations.DEFAULT_MESSAGE_LIMIT}.",
            ),
            query("cursor", {"type": "string"}, "`next_cursor` of the previous page."),
        ],
    ),
    ("PATCH", "/conversations/{conversation_id}"): Operation(
        "Rename a conversation",
        "Only `title` can be changed; `updated_at` does not move.",
        "Conversations",
        {200: json_body(ref("ConversationSummary"), "The renamed conversation."), 413: error(413)},
        body={"required": True, "content": {"application/json": {"schema": ref("Rename")}}},
        parameters=[CONVERSATION_PARAM],
        examples={
            "rename": Example({"title": "Trip to Paris"}),
            "unknownField": Example(
                {"title": "Trip", "color": "red"},
                400,
                refused("Unknown field 'color'; only 'title' can be changed."),
            ),
        },
    ),
    ("DELETE", "/conversations/{conversation_id}"): Operation(
        "Delete a conversation",
        "With its generations; those still running are cancelled first.",
        "Conversations",
        {204: {"description": "Deleted."}},
        parameters=[CONVERSATION_PARAM],
    ),
    ("GET", "/models"): Operation(
        "Models",
        "The models a request may name.",
        "Conversations",
        {200: json_body(ref("Models"), "The configured models.")},
    ),
    ("GET", "/agents"): Operation(
        "Agents",
        "The agents a request may name, with the models each allows.",
        "Conversations",
        {200: json_body(ref("Agents"), "The configured agents.")},
    ),
    ("POST", "/api/chat"): Operation(
        "A turn as a Vercel AI SDK UI message stream",
        "For `useChat` with `DefaultChatTransport`. The answer is SSE whose `data:` is one UI "
        "message stream part, ended by `data: [DONE]`.",
        "AI SDK",
        {
            200: sse(ref("UIMessagePart"), "The UI message stream.", done_line=True),
            413: error(413),
        },
        body={"required": True, "content": {"application/json": {"schema": ref("UIChatRequest")}}},
        parameters=[IDEMPOTENCY_KEY],
        examples={
            "turn": Example(
                {
                    "id": "trip-planning",
                    "messages": [
                        {"id": "m1", "role": "user", "parts": [{"type": "text", "text": "Hello"}]}
                    ],
                    "trigger": "submit-message",
                }
            ),
            "badChatId": Example(
                {"id": "no spaces", "messages": []},
                400,
                refused("'id' (the chat id) must be 1-64 characters of A-Z, a-z, 0-9, _ or -."),
            ),
        },
    ),
    ("GET", "/api/chat/{chat_id}/stream"): Operation(
        "Resume a chat's running answer",
        "Replays the running generation from its start and follows it; 204 when none runs. "
        "An open stream holds one of the user's LIMIT_CONNECTIONS slots: 429 with Retry-After "
        "when none is free.",
        "AI SDK",
        {
            200: sse(ref("UIMessagePart"), "The UI message stream.", done_line=True),
            204: {"description": "No answer is running in this chat."},
        },
        parameters=[path_param("chat_id", {"type": "string"}, "The chat (conversation) id.")],
    ),
    ("POST", "/v1/chat/completions"): Operation(
        "OpenAI-compatible chat completion",
        "Works with the official OpenAI SDKs: the API key is the JWT. Stateless unless "
        "`X-Conversation-Id` binds it to a stored conversation. Errors have OpenAI's shape and "
        "`x-should-retry`.",
        "OpenAI",
        {
            200: {
                "description": "A `chat.completion`, or a stream of `chat.completion.chunk`.",
                "content": {
                    "application/json": {"schema": ref("ChatCompletion")},
                    **sse(
                        {"anyOf": [ref("ChatCompletionChunk"), ref("OpenAIError")]},
                        "",
                        done_line=True,
                    )["content"],
                },
            },
            413: error(413, "openai"),
            502: error(502, "openai"),
        },
        body={
            "required": True,
            "content": {"application/json": {"schema": ref("ChatCompletionRequest")}},
        },
        parameters=[
            IDEMPOTENCY_KEY,
            header("X-Conversation-Id", CONVERSATION_ID, "Bind the call to a stored conversation."),
            header("X-Agent", ID, "The agent to answer with."),
        ],
        shape="openai",
        examples={
            "chat": Example(
                {"model": "echo", "messages": [{"role": "user", "content": "Hello there"}]}
            ),
            "stream": Example(
                {
                    "model": "echo",
                    "messages": [{"role": "user", "content": "Hello there"}],
                    "stream": True,
                    "stream_options": {"include_usage": True},
                }
            ),
            "unknownParameter": Example(
                {"model": "echo", "messages": [{"role": "user", "content": "Hi"}], "colour": 1},
                400,
                openai_refused("Unknown parameter: 'colour'.", "colour", "unknown_parameter"),
            ),
            "lastNotUser": Example(
                {"model": "echo", "messages": [{"role": "assistant", "content": "Hi"}]},
                400,
                openai_refused(openai_compat.NOT_LAST_USER, "messages", "invalid_value"),
            ),
        },
    ),
    ("GET", "/v1/models"): Operation(
        "OpenAI-compatible model list",
        "The configured models in OpenAI's shape.",
        "OpenAI",
        {200: json_body(ref("ModelList"), "The models.")},
        shape="openai",
        errors=(401, 500, 503),
    ),
    ("GET", "/v1/models/{model}"): Operation(
        "OpenAI-compatible model",
        "One configured model; 404 `model_not_found` otherwise.",
        "OpenAI",
        {200: json_body(ref("Model"), "The model.")},
        parameters=[path_param("model", {"type": "string"}, "A model name.")],
        shape="openai",
        errors=(401, 404, 500, 503),
    ),
}
# Any other path under /v1 is answered with OpenAI's 404, for every method.
for _method in ("GET", "POST", "PUT", "PATCH", "DELETE"):
    OPERATIONS[(_method, "/v1/{path}")] = Operation(
        "Any other /v1 path",
        "Answered as OpenAI answers an unknown URL: 404 `Invalid URL (METHOD /v1/...)`.",
        "OpenAI",
        {},
        parameters=[path_param("path", {"type": "string"}, "Any path not served above.")],
        security=None,
        shape="openai",
        errors=(404,),
    )


# The document.


def openapi_path(path: str) -> str:
    """Starlette's `{name:converter}` as OpenAPI's `{name}`."""
    return re.sub(r"\{(\w+):\w+\}", r"{\1}", path)


def served(routes: Iterable[BaseRoute]) -> list[tuple[str, str]]:
    """(method, OpenAPI path) for every HTTP route; a Mount serves GET below its path."""
    found: list[tuple[str, str]] = []
    for route in routes:
        if isinstance(route, Route):
            methods = sorted((route.methods or {"GET"}) - {"HEAD"})
            found += [(method, openapi_path(route.path)) for method in methods]
        elif isinstance(route, Mount):
            found.append(("GET", f"{route.path}/{{path}}"))
    return found


def build(routes: Iterable[BaseRoute]) -> Json:
    """The OpenAPI document for these routes; Undocumented if they and OPERATIONS differ."""
    keys = served(routes)
    missing = [key for key in keys if key not in OPERATIONS]
    if missing:
        raise Undocumented(f"Routes without a description: {missing}")
    stale = sorted(set(OPERATIONS) - set(keys))
    if stale:
        raise Undocumented(f"Descriptions of no route: {stale}")
    paths: dict[str, Json] = {}
    for method, path in keys:
        paths.setdefault(path, {})[method.lower()] = operation_object(method, path)
    return {
        "openapi": OPENAPI_VERSION,
        "info": INFO,
        "tags": [{"name": name, "description": text} for name, text in TAGS.items()],
        "paths": paths,
        "components": components(),
    }


def operation_object(method: str, path: str) -> Json:
    op = OPERATIONS[(method, path)]
    responses: dict[str, Json] = {str(s): response for s, response in op.responses.items()}
    for status in op.errors:
        responses.setdefault(str(status), error(status, op.shape))
    if path not in UNTIMED_PATHS:
        responses = {status: _timed(response) for status, response in responses.items()}
    result: Json = {
        "operationId": _operation_id(method, path),
        "summary": op.summary,
        "description": op.description,
        "tags": [op.tag],
        "responses": responses,
    }
    if op.parameters:
        result["parameters"] = list(op.parameters)
    if op.body is not None:
        result["requestBody"] = op.body
    if op.examples:
        result["requestBody"], result["responses"] = _with_examples(op, responses)
    result["security"] = {
        None: [],
        "bearer": [{"bearer": []}],
        "metrics": [{}, {"metricsToken": []}],
    }[op.security]
    return result


def _with_examples(op: Operation, responses: dict[str, Json]) -> tuple[Json, dict[str, Json]]:
    """The request examples under the body's media type; each refusal's answer under its
    status, with the same name (the shared response is copied for that)."""
    assert op.body is not None
    body = {**op.body, "content": {"application/json": {**op.body["content"]["application/json"]}}}
    body["content"]["application/json"]["examples"] = {
        name: {"value": example.body} for name, example in op.examples.items()
    }
    responses = dict(responses)
    for name, example in op.examples.items():
        if example.answer is None:
            continue
        status = str(example.status)
        response = responses[status]
        if "$ref" in response:
            response = components()["responses"][response["$ref"].rsplit("/", 1)[-1]]
        media = dict(response["content"]["application/json"])
        media["examples"] = {**media.get("examples", {}), name: {"value": example.answer}}
        responses[status] = {**response, "content": {"application/json": media}}
    return body, responses


def _timed(response: Json) -> Json:
    """Every response outside UNTIMED_PATHS carries X-Gateway-Overhead-Ms."""
    if "$ref" in response:
        return response  # the shared responses carry it already
    overhead = {"$ref": "#/components/headers/X-Gateway-Overhead-Ms"}
    return {
        **response,
        "headers": {**response.get("headers", {}), "X-Gateway-Overhead-Ms": overhead},
    }


def _operation_id(method: str, path: str) -> str:
    words = re.findall(r"[A-Za-z0-9]+", path) or ["root"]
    return method.lower() + "".join(word.capitalize() for word in words)


ERROR_STATUSES: dict[int, str] = {
    400: "The request is invalid; `detail` names the first problem found.",
    401: "No token, or a refused one (`WWW-Authenticate: Bearer`).",
    404: "Unknown, expired, deleted, or another user's resource; or an unknown path.",
    413: f"The body is larger than MAX_FRAME_BYTES (ids are at most {MAX_ID_CHARS} characters).",
    429: "A per-user limit refused the request, or the model's API did: see Retry-After.",
    500: "The gateway failed to handle the request.",
    502: "The model's API failed (`upstream_error`, `upstream_credentials`).",
    503: "Draining, Redis unreachable, the model's API unreachable, or the generation was "
    "interrupted. Retryable; Retry-After when the wait is known.",
}


def components() -> Json:
    responses: Json = {}
    overhead = {"X-Gateway-Overhead-Ms": {"$ref": "#/components/headers/X-Gateway-Overhead-Ms"}}
    for status, description in ERROR_STATUSES.items():
        headers: Json = dict(overhead)
        if status in (429, 503):
            headers["Retry-After"] = {"$ref": "#/components/headers/Retry-After"}
        if status == 401:
            headers["WWW-Authenticate"] = {"schema": {"const": "Bearer"}}
        native = json_body(ref("Error"), description, headers=headers)
        openai_headers = {**headers, "x-should-retry": {"schema": {"enum": ["true", "false"]}}}
        openai = json_body(ref("OpenAIError"), description, headers=openai_headers)
        responses[str(status)] = native
        responses[f"OpenAI{status}"] = openai
    return {
        "schemas": SCHEMAS,
        "responses": responses,
        "headers": {
            "Retry-After": {
                "description": "Whole seconds to wait (rounded up, at least 1).",
                "schema": {"type": "string", "pattern": "^[0-9]+$"},
            },
            "X-Gateway-Overhead-Ms": {
                "description": "Milliseconds from the request reaching the application to the "
                "start of its response, three decimals.",
                "schema": {"type": "string", "pattern": "^[0-9]+\\.[0-9]{3}$"},
            },
        },
        "securitySchemes": {
            "bearer": {
                "type": "http",
                "scheme": "bearer",
                "bearerFormat": "JWT",
                "description": "The user's JWT (`sub` is the user); on /v1, the SDK's API key.",
            },
            "metricsToken": {
                "type": "http",
                "scheme": "bearer",
                "description": "METRICS_TOKEN, when it is set.",
            },
        },
    }


INFO: Json = {
    "title": "chat-gateway HTTP API",
    "version": f"{PROTOCOL_VERSION}",
    "summary": "Completions, resumable streams, conversations and the OpenAI and AI SDK APIs.",
    "description": "The HTTP side of the gateway. The WebSocket protocol at `/ws` is described "
    "by docs/asyncapi.yaml and docs/protocol.md. Native routes answer errors as "
    "`{error, detail, timestamp, retry_after?}`; the /v1 routes use OpenAI's error object.",
    "license": {"name": "MIT", "identifier": "MIT"},
}
TAGS: dict[str, str] = {
    "Completions": "Native completions and resumable generations.",
    "Conversations": "Conversations, and the models and agents a request may name.",
    "OpenAI": "The OpenAI-compatible API.",
    "AI SDK": "The Vercel AI SDK UI message stream.",
    "Health": "Probes and metrics.",
    "Pages": "The bundled chat page.",
    "Documentation": "This document.",
}

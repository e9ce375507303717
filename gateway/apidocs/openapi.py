"""The OpenAPI 3.1 document of the HTTP API, built from the app's own routes and schemas.

`build(routes)` walks the Starlette routes the app serves and describes each method of each
one from `OPERATIONS`; a route without an entry raises `Undocumented`, so a new route cannot
ship undescribed, and an entry without a route is an error too. The entries are in
`operations.py`, made of the blocks in `parts.py`; the native bodies' schemas are generated
from the protocol's wire types (`schemas.py`), the OpenAI and AI SDK ones written by hand
(`compat_schemas.py`). The WebSocket at `/ws` is described by docs/asyncapi.yaml instead.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from starlette.routing import BaseRoute, Mount, Route

from gateway.apidocs import compat_schemas
from gateway.apidocs.operations import OPERATIONS
from gateway.apidocs.parts import Operation, error, json_body
from gateway.apidocs.schemas import SCHEMAS, ref
from gateway.protocol.frames import MAX_ID_CHARS, PROTOCOL_VERSION
from gateway.server.timing import UNTIMED_PATHS

OPENAPI_VERSION = "3.1.0"
Json = dict[str, Any]
__all__ = ["OPERATIONS", "Undocumented", "build", "served"]


class Undocumented(LookupError):
    """A route the document does not describe, or a description of no route."""


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
    409: "The conversation is full: MAX_STORED_MESSAGES messages in its branches, or "
    "MAX_SIBLINGS answers or versions of the message (`conversation_full`).",
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
        "schemas": {**SCHEMAS, **compat_schemas.SCHEMAS},
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

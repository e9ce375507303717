"""What the OpenAPI document says of each route: `OPERATIONS`, keyed by method and path, with
its words, its responses and its examples (which tests send to a real gateway).

`openapi.build` describes every route the app serves from here, and refuses a route with no
entry or an entry with no route.
"""

from __future__ import annotations

from gateway.apidocs import compat_operations as _compat
from gateway.apidocs import responses as _responses
from gateway.apidocs.parts import (
    CONVERSATION_PARAM,
    EVENT_STREAM,
    GENERATION_PARAM,
    IDEMPOTENCY_KEY,
    MESSAGE_PARAM,
    Example,
    Operation,
    error,
    header,
    json_body,
    path_param,
    query,
    refused,
)
from gateway.apidocs.schemas import ref
from gateway.core import conversations
from gateway.protocol import activity

ACTIVITY_ID = "^[0-9]+-[0-9]+$"
RUNNING_PAGE = {
    "type": "object",
    "properties": {
        "data": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "conversation_id": {"type": "string"},
                    "generation_id": {"type": "string"},
                    "last_seq": {"type": "integer", "minimum": 0},
                },
                "required": ["conversation_id", "generation_id", "last_seq"],
            },
        }
    },
    "required": ["data"],
}
ACTIVITY_STREAM = {
    "description": "The activity as SSE, a `: keep-alive` comment every 15 s of silence.",
    "content": {
        "text/event-stream": {
            "schema": {
                "type": "object",
                "properties": {
                    "event": {"enum": list(activity.NAMES)},
                    "id": {"type": "string", "pattern": ACTIVITY_ID},
                    "data": {"type": "string", "contentMediaType": "application/json"},
                },
                "required": ["event", "id", "data"],
            }
        }
    },
}

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
            409: {"$ref": "#/components/responses/409"},
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
    ("GET", "/generations"): Operation(
        "List running generations",
        "The caller's generations still running on any instance (at most 64, oldest first): "
        "`resume` one with `after: 0`, or follow `/generations/{id}/events`, to show it. "
        "`status=running` is required; ended generations are not listed.",
        "Completions",
        {200: json_body(RUNNING_PAGE, "The running generations.")},
        parameters=[query("status", {"const": "running"}, "Must be `running`.")],
        errors=(400, 401, 500, 503),
    ),
    ("GET", "/activity"): Operation(
        "Follow the user's activity",
        "The caller's activity from every socket, device and instance as server-sent events "
        "(docs/activity.md): `event:` its name, `id:` its activity_id, `data:` its fields. "
        "From now on, or, with `Last-Event-ID` (else `?after=`), everything after that id "
        "still kept (ACTIVITY_TTL), then live events. The token may come as `?token=`. An "
        "open stream holds one of the user's LIMIT_CONNECTIONS slots: 429 with Retry-After "
        "when none is free.",
        "Completions",
        {200: ACTIVITY_STREAM},
        parameters=[
            header(
                "Last-Event-ID",
                {"type": "string", "pattern": ACTIVITY_ID},
                "The last activity_id seen.",
            ),
            query("after", {"type": "string", "pattern": ACTIVITY_ID}, "The last id seen."),
            query("token", {"type": "string"}, "The JWT, for an EventSource."),
        ],
        errors=(400, 401, 429, 500, 503),
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
        "Rename a conversation, or switch its branch",
        "`title` renames it (`updated_at` does not move); `active_message_id` makes the "
        "active leaf the newest descendant of that message. Send one or both.",
        "Conversations",
        {200: json_body(ref("Changed"), "The conversation after the change."), 413: error(413)},
        body={"required": True, "content": {"application/json": {"schema": ref("Rename")}}},
        parameters=[CONVERSATION_PARAM],
        examples={
            "rename": Example({"title": "Trip to Paris"}),
            "unknownField": Example(
                {"title": "Trip", "color": "red"},
                400,
                refused(
                    "Unknown field 'color'; only 'title' and 'active_message_id' can be changed."
                ),
            ),
            "badMessageId": Example(
                {"active_message_id": "m1"},
                400,
                refused("'active_message_id' must be a message id such as 'msg_…'."),
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
    ("POST", "/conversations/{conversation_id}/fork"): Operation(
        "Fork a conversation",
        "A new conversation of the caller holding the path from the first message down to "
        "`message_id` (the same message ids, title and project), that message active. It "
        "counts against LIMIT_STORAGE_BYTES like any other.",
        "Conversations",
        {
            201: json_body(ref("Changed"), "The new conversation."),
            409: error(409),
            413: error(413),
        },
        body={"required": True, "content": {"application/json": {"schema": ref("Fork")}}},
        parameters=[CONVERSATION_PARAM],
        examples={
            "badMessageId": Example(
                {"message_id": 7},
                400,
                refused("'message_id' must be a message id such as 'msg_…'."),
            ),
        },
    ),
    ("DELETE", "/conversations/{conversation_id}/messages/{message_id}"): Operation(
        "Delete a message and its branch",
        "Removes the message and every message below it; a generation still answering one "
        "of them is cancelled and its answer not stored. The active leaf, if removed, moves "
        "to the newest remaining sibling's newest descendant, else to the parent.",
        "Conversations",
        {204: {"description": "Deleted."}},
        parameters=[CONVERSATION_PARAM, MESSAGE_PARAM],
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
    **_compat.OPERATIONS,
    **_responses.OPERATIONS,
}

"""What the OpenAPI document says of the Responses API's routes (see docs/api/responses.md
for every field and event)."""

from __future__ import annotations

from gateway.apidocs.parts import (
    IDEMPOTENCY_KEY,
    Example,
    Json,
    Operation,
    header,
    json_body,
    openai_refused,
    path_param,
)
from gateway.apidocs.parts import query as query_param
from gateway.apidocs.schemas import ID

RESPONSE = {
    "type": "object",
    "description": "OpenAI's response object: `id` (`resp_…`), `object: response`, `status`, "
    "`output` (message items with `output_text` parts, `function_call` items), "
    "`output_text`, `usage`, `error`, `incomplete_details` and the request's parameters.",
    "properties": {
        "id": {"type": "string", "pattern": "^resp_"},
        "object": {"const": "response"},
        "status": {
            "enum": ["queued", "in_progress", "completed", "failed", "cancelled", "incomplete"]
        },
        "output": {"type": "array", "items": {"type": "object"}},
        "output_text": {"type": "string"},
        "usage": {"type": ["object", "null"]},
    },
    "required": ["id", "object", "status", "output"],
}
EVENTS = {
    "schema": {
        "type": "string",
        "description": "OpenAI's streamed events (`event: <type>`, `data: <json>`), each with a "
        "strictly increasing `sequence_number`: response.created, response.in_progress, "
        "response.output_item.added, response.content_part.added, response.output_text.delta, "
        "response.output_text.done, response.content_part.done, response.output_item.done, "
        "response.function_call_arguments.delta/.done, then response.completed, "
        "response.incomplete or response.failed.",
    }
}
RESPONSE_ID = path_param("response_id", {"type": "string", "pattern": "^resp_"}, "A response id.")
ERRORS = (400, 401, 404, 429, 500, 503)


def _answer(description: str, *, stream: bool = False) -> Json:
    body = json_body(RESPONSE, description)
    if stream:
        body["content"]["text/event-stream"] = EVENTS
    return body


OPERATIONS: dict[tuple[str, str], Operation] = {
    ("POST", "/v1/responses"): Operation(
        "OpenAI Responses API: create",
        "Works with the official OpenAI SDKs' `responses.create`: the API key is the JWT. "
        "`previous_response_id` continues that response's conversation; `background: true` "
        "answers at once and the response runs on.",
        "OpenAI",
        {200: _answer("The response, or its events with `stream: true`.", stream=True)},
        body={"required": True, "content": {"application/json": {"schema": {"type": "object"}}}},
        parameters=[IDEMPOTENCY_KEY, header("X-Agent", ID, "The agent to answer with.")],
        shape="openai",
        errors=(*ERRORS, 413, 502),
        examples={
            "webSearch": Example(
                {"model": "echo", "input": "hi", "tools": [{"type": "web_search"}]},
                400,
                openai_refused(
                    "Only function tools are supported; tools[0] is 'web_search'.",
                    "tools[0].type",
                    "unsupported_value",
                ),
            ),
            "tooMuchMetadata": Example(
                {"model": "echo", "input": "hi", "metadata": {"k": "v" * 513}},
                400,
                openai_refused(
                    "Metadata values are at most 512 characters.",
                    "metadata.k",
                    "string_above_max_length",
                ),
            ),
        },
    ),
    ("GET", "/v1/responses/{response_id}"): Operation(
        "OpenAI Responses API: retrieve",
        "The response as it stands; with `stream=true`, its events after `starting_after` "
        "and then the live ones, on any instance, with no gap or duplicate.",
        "OpenAI",
        {200: _answer("The response, or its events with `stream=true`.", stream=True)},
        parameters=[
            RESPONSE_ID,
            query_param("stream", {"enum": ["true", "false"]}, "Stream its events."),
            query_param(
                "starting_after",
                {"type": "integer", "minimum": 0},
                "The last sequence_number seen: stream the events after it.",
            ),
        ],
        shape="openai",
        errors=ERRORS,
    ),
    ("DELETE", "/v1/responses/{response_id}"): Operation(
        "OpenAI Responses API: delete",
        "Deletes an ended response (a running one is refused: cancel it first). Its "
        "conversation keeps the answer.",
        "OpenAI",
        {200: json_body({"type": "object"}, "`{id, object: response.deleted, deleted: true}`.")},
        parameters=[RESPONSE_ID],
        shape="openai",
        errors=ERRORS,
    ),
    ("POST", "/v1/responses/{response_id}/cancel"): Operation(
        "OpenAI Responses API: cancel",
        "Cancels the response wherever it runs and answers it as it ended.",
        "OpenAI",
        {200: _answer("The response, `status: cancelled` when it was still running.")},
        parameters=[RESPONSE_ID],
        shape="openai",
        errors=ERRORS,
    ),
    ("GET", "/v1/responses/{response_id}/input_items"): Operation(
        "OpenAI Responses API: input items",
        "The response's input items, a page at a time.",
        "OpenAI",
        {200: json_body({"type": "object"}, "A list of input items.")},
        parameters=[
            RESPONSE_ID,
            query_param("order", {"enum": ["asc", "desc"]}, "desc (the default) or asc."),
            query_param("limit", {"type": "integer", "minimum": 1, "maximum": 100}, "1-100."),
            query_param("after", {"type": "string"}, "An item id: the page after it."),
        ],
        shape="openai",
        errors=ERRORS,
    ),
}

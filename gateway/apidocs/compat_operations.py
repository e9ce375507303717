"""What the OpenAPI document says of the routes in other APIs' shapes: the Vercel AI SDK's UI
message stream and the OpenAI-compatible chat completions and models (the Responses API's are
in `responses.py`), with any other /v1 path answered as OpenAI answers it."""

from __future__ import annotations

from gateway.apidocs.parts import (
    IDEMPOTENCY_KEY,
    Example,
    Operation,
    error,
    header,
    json_body,
    openai_refused,
    path_param,
    refused,
    sse,
)
from gateway.apidocs.schemas import CONVERSATION_ID, ID, ref
from gateway.protocol import openai as openai_compat

OPERATIONS: dict[tuple[str, str], Operation] = {
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
            "jsonSchema": Example(
                {
                    "model": "echo",
                    "messages": [{"role": "user", "content": "Lisbon"}],
                    "response_format": {
                        "type": "json_schema",
                        "json_schema": {
                            "name": "Place",
                            "schema": {
                                "type": "object",
                                "properties": {"city": {"type": "string"}},
                                "required": ["city"],
                                "additionalProperties": False,
                            },
                            "strict": True,
                        },
                    },
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

"""The OpenAI-compatible API: `POST /v1/chat/completions`, `GET /v1/models` and
`GET /v1/models/{model}`, so the official OpenAI SDKs work against the gateway unchanged.

The API key an SDK sends (`Authorization: Bearer <key>`) is the user's JWT. A request is
stateless like OpenAI's (its messages are the history) unless `X-Conversation-Id` binds it
to a stored conversation; `X-Agent` picks an agent. See docs/api/openai.md.

Translation is pure and kept apart from the I/O at the end of the module: `chat_call` turns
a request body into a `CompletionRequest`; `ChunkTranslator` and `completion_object` turn a
generation's events into `chat.completion.chunk` and `chat.completion` objects;
`error_of` and `failure_of` give OpenAI's error shape and HTTP status.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from gateway.core.generations import Follow
from gateway.errors import (
    BadRequest,
    InternalError,
    NotFound,
    RequestError,
    Unauthorized,
    excerpt,
    retry_after_seconds,
    status_of,
)
from gateway.events import (
    Chunk,
    Done,
    Event,
    Failed,
    FinishReason,
    GenerationRef,
    Message,
    Start,
    ToolCall,
    ToolCalled,
    ToolReturned,
    is_final,
)
from gateway.handlers.common import (
    authenticate,
    counted,
    read_body,
    services_of,
    translate_unexpected,
)
from gateway.handlers.sse import HEARTBEAT_SECONDS, KEEP_ALIVE, SSE_HEADERS, Listener
from gateway.protocol.frames import (
    CONVERSATION_ID_RE,
    MAX_HISTORY_MESSAGES,
    MAX_ID_CHARS,
    CompletionRequest,
    dumps,
    json_string,
    parse_json_object,
    parse_stop,
    parse_tool_choice,
    parse_tools,
)

log = logging.getLogger("gateway.openai")

OWNED_BY = "chat-gateway"
ALL_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE"]
DONE_LINE = "data: [DONE]\n\n"
# How long a stream waits for its first token before sending the 200 and headers: a failure
# within this time is answered with an HTTP error status, as OpenAI does, not a data line.
FIRST_EVENT_WAIT = HEARTBEAT_SECONDS

# Parameters the gateway cannot forward to the model; accepted and ignored, so clients and
# frameworks that send their defaults keep working.
IGNORED_PARAMETERS = frozenset(
    {
        "frequency_penalty",
        "presence_penalty",
        "top_p",
        "seed",
        "logit_bias",
        "user",
        "metadata",
        "store",
        "service_tier",
        "parallel_tool_calls",
        "prompt_cache_key",
        "prompt_cache_retention",
        "prompt_cache_options",
        "safety_identifier",
        "reasoning_effort",
        "verbosity",
    }
)
# Parameters whose effect the answer would silently lack: refused unless null.
UNSUPPORTED_PARAMETERS = {
    "audio": "Audio output is not supported.",
    "functions": "'functions' is not supported; use 'tools'.",
    "function_call": "'function_call' is not supported; use 'tool_choice'.",
    "prediction": "Predicted outputs are not supported.",
    "web_search_options": "Web search is not supported.",
    "moderation": "Moderation is not supported.",
}
HANDLED_PARAMETERS = frozenset(
    {
        "model",
        "messages",
        "stream",
        "stream_options",
        "temperature",
        "max_tokens",
        "max_completion_tokens",
        "stop",
        "n",
        "tools",
        "tool_choice",
        "logprobs",
        "top_logprobs",
        "response_format",
        "modalities",
    }
)
KNOWN_PARAMETERS = HANDLED_PARAMETERS | IGNORED_PARAMETERS | UNSUPPORTED_PARAMETERS.keys()

NOT_LAST_USER = "The last message must be a user message or a tool result."
FELL_BEHIND = "The client is not reading fast enough."

# Our error codes as OpenAI errors: (HTTP status, error type, error code).
# OpenAI's error `type` and `code` for each of the gateway's codes (the HTTP status comes
# from the error tree: `status_of`).
ERROR_KINDS: dict[str, tuple[str, str | None]] = {
    "bad_request": ("invalid_request_error", None),
    "unauthorized": ("invalid_request_error", "invalid_api_key"),
    "forbidden": ("invalid_request_error", "forbidden"),
    "not_found": ("invalid_request_error", "not_found"),
    "rate_limited": ("requests", "rate_limit_exceeded"),
    "context_too_long": ("invalid_request_error", "context_length_exceeded"),
    "upstream_error": ("server_error", "upstream_error"),
    "upstream_credentials": ("server_error", "upstream_credentials"),
    "upstream_unavailable": ("server_error", "upstream_unavailable"),
    "interrupted": ("server_error", "interrupted"),
    "unavailable": ("server_error", "unavailable"),
    "internal": ("server_error", "internal_error"),
}
FINISH_REASONS: dict[FinishReason, str] = {
    "stop": "stop",
    "length": "length",
    "tool_calls": "tool_calls",
    "cancelled": "stop",  # OpenAI has no cancel; the partial answer ends like a normal one
}

Body = dict[str, Any]


class InvalidParameter(BadRequest):
    """A 400 that names the offending parameter and carries OpenAI's error code."""

    def __init__(self, message: str, param: str | None, openai_code: str | None = None) -> None:
        super().__init__(message)
        self.param = param
        self.openai_code = openai_code


class ModelNotFound(NotFound):
    def __init__(self, model: str) -> None:
        shown = excerpt(model)
        super().__init__(f"The model `{shown}` does not exist or you do not have access to it.")


# The request: pure.


@dataclass(frozen=True, slots=True)
class ChatCall:
    """A chat completion request as the core takes it, and how to answer it."""

    request: CompletionRequest
    include_usage: bool


def chat_call(
    body: Body,
    models: Collection[str],
    *,
    conversation_id: str | None = None,
    agent: str | None = None,
    idempotency_key: str | None = None,
) -> ChatCall:
    """Translate a `/v1/chat/completions` body and the gateway's headers.

    The last message is the turn's user message, or a tool result (the model then answers
    the messages as they stand). Without a bound conversation the messages before it are the
    history the model sees; with one, the stored history is used and extended, and earlier
    messages are not read (except when continuing after tool results)."""
    _refuse_unsupported(body)
    model = body.get("model")
    if model is None:
        raise InvalidParameter(
            "Missing required parameter: 'model'.", "model", "missing_required_parameter"
        )
    if not isinstance(model, str):
        raise _invalid_type("model", "a string")
    if model not in models:
        raise ModelNotFound(model)
    messages = parse_messages(body.get("messages"))
    last = messages[-1]
    # After the client ran its tools, the model answers the messages as they stand.
    continuation = last.role == "tool"
    if last.role not in ("user", "tool"):
        raise InvalidParameter(NOT_LAST_USER, "messages", "invalid_value")
    stream = _optional_bool(body, "stream")
    options = body.get("stream_options")
    if options is not None and not stream:
        raise InvalidParameter(
            "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
            "stream_options",
            "invalid_value",
        )
    if options is not None and not isinstance(options, dict):
        raise _invalid_type("stream_options", "an object")
    include_usage = _optional_bool(options or {}, "include_usage", "stream_options.include_usage")
    tools = _parsed("tools", parse_tools, body.get("tools"))
    tool_choice = _parsed("tool_choice", parse_tool_choice, body.get("tool_choice"))
    if tool_choice is not None and not tools:
        raise InvalidParameter(
            "'tool_choice' is only allowed when 'tools' are specified.",
            "tool_choice",
            "invalid_value",
        )
    if conversation_id is not None and not CONVERSATION_ID_RE.fullmatch(conversation_id):
        raise InvalidParameter(
            "The X-Conversation-Id header must be 1-64 characters of A-Z, a-z, 0-9, _ or -.",
            None,
            "invalid_value",
        )
    if continuation:
        # Stored messages do not keep tool calls, so the request's own messages are used.
        history: tuple[Message, ...] | None = tuple(messages)
    else:
        history = None if conversation_id is not None else tuple(messages[:-1])
    request = CompletionRequest(
        message=None if continuation else last.content,
        model=model,
        agent=_header_value("X-Agent", agent),
        conversation_id=conversation_id,
        temperature=_temperature(body.get("temperature")),
        max_tokens=_max_tokens(body),
        conversation_history=history,
        stream=stream,
        idempotency_key=_header_value("Idempotency-Key", idempotency_key),
        stop=_parsed("stop", parse_stop, body.get("stop")),
        tools=tools,
        tool_choice=tool_choice,
    )
    return ChatCall(request, include_usage)


def parse_messages(value: Any) -> list[Message]:
    """OpenAI chat messages as ours: system (and developer), user, assistant with its tool
    calls, and tool results. Content is a string or a list of text parts (joined by
    newlines)."""
    if value is None:
        raise InvalidParameter(
            "Missing required parameter: 'messages'.", "messages", "missing_required_parameter"
        )
    if not isinstance(value, list):
        raise _invalid_type("messages", "an array")
    if not value:
        raise InvalidParameter("'messages' must not be empty.", "messages", "empty_array")
    if len(value) > MAX_HISTORY_MESSAGES + 1:
        raise InvalidParameter(
            f"'messages' may hold at most {MAX_HISTORY_MESSAGES + 1} messages.",
            "messages",
            "array_above_max_length",
        )
    return [_message(item, f"messages[{i}]") for i, item in enumerate(value)]


def _message(item: Any, where: str) -> Message:
    if not isinstance(item, dict):
        raise _invalid_type(where, "an object")
    role = item.get("role")
    if role in ("system", "developer", "user"):
        content = _content(item.get("content"), f"{where}.content", required=True)
        return Message("user" if role == "user" else "system", content)
    if role == "assistant":
        content = _content(item.get("content"), f"{where}.content", required=False)
        calls = _tool_calls(item.get("tool_calls"), f"{where}.tool_calls")
        return Message("assistant", content, tool_calls=calls)
    if role == "tool":
        content = _content(item.get("content"), f"{where}.content", required=True)
        call_id = item.get("tool_call_id")
        if not isinstance(call_id, str) or not call_id:
            raise InvalidParameter(
                f"A tool message needs 'tool_call_id': {where}.tool_call_id is missing.",
                f"{where}.tool_call_id",
                "missing_required_parameter",
            )
        return Message("tool", content, tool_call_id=call_id)
    if role == "function":
        raise InvalidParameter(
            "The 'function' role is not supported; use tool messages.",
            f"{where}.role",
            "unsupported_value",
        )
    raise InvalidParameter(
        f"Invalid value for {where}.role: expected one of system, developer, user, assistant "
        "or tool.",
        f"{where}.role",
        "invalid_value",
    )


def _content(value: Any, where: str, *, required: bool) -> str:
    if isinstance(value, str):
        return value
    if value is None and not required:
        return ""
    if not isinstance(value, list):
        raise _invalid_type(where, "a string or an array of content parts")
    texts: list[str] = []
    for j, part in enumerate(value):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text" and isinstance(part.get("text"), str):
            texts.append(part["text"])
        elif kind == "refusal" and not required:
            continue  # an assistant's refusal part is not text the model wrote
        else:
            shown = excerpt(kind) if isinstance(kind, str) else "invalid"
            raise InvalidParameter(
                f"Only text content parts are supported; {where}[{j}] is '{shown}'.",
                f"{where}[{j}].type",
                "unsupported_value",
            )
    return "\n".join(texts)


def _tool_calls(value: Any, where: str) -> tuple[ToolCall, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise _invalid_type(where, "an array")
    calls = []
    for j, call in enumerate(value):
        function = call.get("function") if isinstance(call, dict) else None
        if (
            not isinstance(call, dict)
            or call.get("type", "function") != "function"
            or not isinstance(call.get("id"), str)
            or not isinstance(function, dict)
            or not isinstance(function.get("name"), str)
            or not isinstance(function.get("arguments"), str)
        ):
            raise InvalidParameter(
                f"{where}[{j}] must look like {{'id': ..., 'type': 'function', "
                "'function': {'name': ..., 'arguments': ...}}.",
                f"{where}[{j}]",
                "invalid_value",
            )
        calls.append(ToolCall(call["id"], function["name"], function["arguments"]))
    return tuple(calls)


def _refuse_unsupported(body: Body) -> None:
    for name in body:
        if name not in KNOWN_PARAMETERS:
            shown = excerpt(name)
            raise InvalidParameter(f"Unknown parameter: '{shown}'.", shown, "unknown_parameter")
    for name, reason in UNSUPPORTED_PARAMETERS.items():
        if body.get(name) is not None:
            raise InvalidParameter(reason, name, "unsupported_parameter")
    n = body.get("n")
    if n is not None and (isinstance(n, bool) or n != 1):
        raise InvalidParameter(
            "Only n=1 is supported: one choice per request.", "n", "unsupported_value"
        )
    if body.get("logprobs") not in (None, False) or body.get("top_logprobs") not in (None, 0):
        param = "logprobs" if body.get("logprobs") not in (None, False) else "top_logprobs"
        raise InvalidParameter("Log probabilities are not supported.", param, "unsupported_value")
    response_format = body.get("response_format")
    if response_format is not None and response_format != {"type": "text"}:
        raise InvalidParameter(
            "Only the 'text' response format is supported.", "response_format", "unsupported_value"
        )
    modalities = body.get("modalities")
    if modalities is not None and modalities != ["text"]:
        raise InvalidParameter(
            "Only the 'text' modality is supported.", "modalities", "unsupported_value"
        )


def _parsed(name: str, parse: Callable[[Any], Any], value: Any) -> Any:
    """The gateway's own parser for a field, its BadRequest naming the parameter."""
    try:
        return parse(value)
    except BadRequest as exc:
        raise InvalidParameter(exc.message, name, "invalid_value") from None


def _temperature(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _invalid_type("temperature", "a number")
    if not 0 <= value <= 2:
        raise InvalidParameter(
            "'temperature' must be a number from 0 to 2.", "temperature", "invalid_value"
        )
    return float(value)


def _max_tokens(body: Body) -> int | None:
    """`max_completion_tokens` and the older `max_tokens`; when both are set, the smaller."""
    limits = []
    for name in ("max_completion_tokens", "max_tokens"):
        value = body.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int):
            raise _invalid_type(name, "an integer")
        if value < 1:
            raise InvalidParameter(f"'{name}' must be at least 1.", name, "integer_below_min_value")
        limits.append(value)
    return min(limits) if limits else None


def _optional_bool(obj: Body, name: str, param: str | None = None) -> bool:
    value = obj.get(name)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise _invalid_type(param or name, "a boolean")
    return value


def _header_value(header: str, value: str | None) -> str | None:
    if value is not None and not 0 < len(value) <= MAX_ID_CHARS:
        raise InvalidParameter(
            f"The {header} header must be 1-{MAX_ID_CHARS} characters.", None, "invalid_value"
        )
    return value


def _invalid_type(param: str, expected: str) -> InvalidParameter:
    return InvalidParameter(
        f"Invalid type for '{param}': expected {expected}.", param, "invalid_type"
    )


# The response: pure.


def completion_id(ref: GenerationRef) -> str:
    """The OpenAI id of a generation's answer: `chatcmpl-` and the generation id."""
    return f"chatcmpl-{ref.generation_id}"


@dataclass
class ChunkTranslator:
    """Turns one generation's events into `chat.completion.chunk` objects, in order.

    Tool calls are held until the generation ends: those the agent answered itself (a
    `ToolReturned` followed) are the gateway's business and not shown; the rest are the
    client's to run and come as `tool_calls` deltas just before the finishing chunk. A
    failure becomes an `{"error": ...}` object, after which nothing more comes."""

    created: int
    include_usage: bool = False
    model: str = ""
    _pending: list[ToolCalled] = field(default_factory=list)

    def chunks(self, ref: GenerationRef, event: Event) -> list[Body]:
        if isinstance(event, Start):
            self.model = event.model
            return [self._chunk(ref, {"role": "assistant", "content": "", "refusal": None})]
        if isinstance(event, Chunk):
            return [self._chunk(ref, {"content": event.content})] if event.content else []
        if isinstance(event, ToolCalled):
            self._pending.append(event)
            return []
        if isinstance(event, ToolReturned):
            self._pending = [c for c in self._pending if c.call_id != event.call_id]
            return []
        if isinstance(event, Failed):
            return [failure_of(event)[1]]
        calls = [
            self._chunk(ref, {"tool_calls": [tool_call_object(call, index)]})
            for index, call in enumerate(self._pending)
        ]
        finish = self._chunk(ref, {}, FINISH_REASONS[event.finish_reason])
        if not self.include_usage:
            return [*calls, finish]
        usage = {**self._head(ref), "choices": [], "usage": event.usage.as_dict()}
        return [*calls, finish, usage]

    def data(self, ref: GenerationRef, event: Event) -> str:
        """`sse_data(self.chunks(ref, event))`. A text chunk, the line sent once per token,
        is formatted around json's string encoder instead of built as objects and dumped."""
        if isinstance(event, Chunk) and event.content:
            return self._text_data(ref, event.content)
        return sse_data(self.chunks(ref, event))

    def _text_data(self, ref: GenerationRef, text: str) -> str:
        usage = ',"usage":null' if self.include_usage else ""
        return (
            f'data: {{"id":{json_string(completion_id(ref))},"object":"chat.completion.chunk",'
            f'"created":{self.created},"model":{json_string(self.model)},'
            f'"system_fingerprint":null,"choices":[{{"index":0,"delta":{{"content":'
            f'{json_string(text)}}},"logprobs":null,"finish_reason":null}}]{usage}}}\n\n'
        )

    def _chunk(self, ref: GenerationRef, delta: Body, finish_reason: str | None = None) -> Body:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        chunk = {**self._head(ref), "choices": [choice]}
        if self.include_usage:
            chunk["usage"] = None  # as OpenAI: every chunk but the last has a null usage
        return chunk

    def _head(self, ref: GenerationRef) -> Body:
        return {
            "id": completion_id(ref),
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": None,
        }


def tool_call_object(call: ToolCalled, index: int | None = None) -> Body:
    obj: Body = {} if index is None else {"index": index}
    obj.update(
        id=call.call_id,
        type="function",
        function={"name": call.name, "arguments": call.arguments},
    )
    return obj


def completion_object(ref: GenerationRef, events: Sequence[Event], created: int) -> Body:
    """The `chat.completion` object for a generation's events, which end with `Done`."""
    done = events[-1]
    assert isinstance(done, Done)
    model = next((e.model for e in events if isinstance(e, Start)), "")
    text = "".join(e.content for e in events if isinstance(e, Chunk))
    answered = {e.call_id for e in events if isinstance(e, ToolReturned)}
    calls = [e for e in events if isinstance(e, ToolCalled) and e.call_id not in answered]
    message: Body = {"role": "assistant", "content": text, "refusal": None}
    if calls:
        message["content"] = text or None
        message["tool_calls"] = [tool_call_object(call) for call in calls]
    return {
        "id": completion_id(ref),
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": FINISH_REASONS[done.finish_reason],
            }
        ],
        "usage": done.usage.as_dict(),
        "system_fingerprint": None,
    }


def model_object(name: str) -> Body:
    return {"id": name, "object": "model", "created": 0, "owned_by": OWNED_BY}


def model_list(names: Collection[str]) -> Body:
    return {"object": "list", "data": [model_object(name) for name in names]}


def error_object(
    message: str, error_type: str, param: str | None = None, code: str | None = None
) -> Body:
    return {"error": {"message": message, "type": error_type, "param": param, "code": code}}


def error_of(error: RequestError) -> tuple[int, Body]:
    """The HTTP status and OpenAI error body for an error raised before any answer."""
    error_type, code = ERROR_KINDS.get(error.code, ERROR_KINDS["internal"])
    param = None
    if isinstance(error, InvalidParameter):
        param, code = error.param, error.openai_code
    elif isinstance(error, ModelNotFound):
        code = "model_not_found"
    return error.http_status, error_object(error.message, error_type, param, code)


def failure_of(failed: Failed) -> tuple[int, Body]:
    """The HTTP status and OpenAI error body for a generation that failed."""
    error_type, code = ERROR_KINDS.get(failed.code, ("server_error", failed.code))
    return status_of(failed.code), error_object(failed.message, error_type, None, code)


def sse_data(objects: Sequence[Body]) -> str:
    return "".join(f"data: {dumps(obj)}\n\n" for obj in objects)


# I/O.

Handler = Callable[[Request], Awaitable[Response]]


def openai_errors(handler: Handler) -> Handler:
    """Answer every error in OpenAI's shape, with `x-should-retry` for the SDKs' retries."""

    @functools.wraps(handler)
    async def wrapped(request: Request) -> Response:
        try:
            return await handler(request)
        except RequestError as exc:
            error: RequestError = counted(request, exc)
        except Exception as exc:
            error = translate_unexpected(request, exc)
        status, body = error_of(error)
        return error_response(status, body, error.retryable, error.retry_after)

    return wrapped


def error_response(
    status: int, body: Body, retryable: bool, retry_after: float | None = None
) -> JSONResponse:
    headers = {"x-should-retry": "true" if retryable else "false"}
    if retry_after is not None:
        headers["Retry-After"] = str(retry_after_seconds(retry_after))
    if status == Unauthorized.http_status:
        headers["WWW-Authenticate"] = "Bearer"
    return JSONResponse(body, status, headers)


@openai_errors
async def chat_completions(request: Request) -> Response:
    principal = await authenticate(request)
    services = services_of(request)
    body = parse_json_object(await read_body(request, services.settings.max_frame_bytes))
    call = chat_call(
        body,
        services.settings.models.keys(),
        conversation_id=request.headers.get("x-conversation-id"),
        agent=request.headers.get("x-agent"),
        idempotency_key=request.headers.get("idempotency-key"),
    )
    listener = Listener(services.settings.max_queued_frames)
    # A model that cannot stream sends its whole answer as one content delta.
    follow = await services.chat.start(principal, call.request, listener)
    created = int(time.time())
    if not call.request.stream:
        return await _whole_answer(follow, listener, created)
    opening = await _opening(listener)
    failed = next((event for _, event in opening if isinstance(event, Failed)), None)
    if failed is not None:
        follow.stop()
        status, error = failure_of(failed)
        return error_response(status, error, failed.retryable, failed.retry_after)
    cancel_on_leave = services.settings.on_disconnect == "cancel"

    async def abandoned() -> None:
        # ON_DISCONNECT=cancel: the client that asked left before the end (not a drain).
        if cancel_on_leave and not services.generations.draining.is_set():
            await services.chat.cancel(principal, follow.generation_id)

    translator = ChunkTranslator(created, call.include_usage)
    # No drain hook: an SDK cannot resume, so the stream follows its generation through a
    # drain to its end (finished, or interrupted: an error line).
    return StreamingResponse(
        _chunk_stream(follow, listener, opening, translator, abandoned),
        media_type="text/event-stream",
        headers={**SSE_HEADERS, **_id_headers(opening[0][0] if opening else None)},
    )


@openai_errors
async def list_models(request: Request) -> Response:
    await authenticate(request)
    return JSONResponse(model_list(list(services_of(request).settings.models)))


@openai_errors
async def retrieve_model(request: Request) -> Response:
    await authenticate(request)
    name = request.path_params["model"]
    if name not in services_of(request).settings.models:
        raise ModelNotFound(name)
    return JSONResponse(model_object(name))


@openai_errors
async def unknown_path(request: Request) -> Response:
    """Any other path under /v1, answered like OpenAI answers one."""
    message = f"Invalid URL ({request.method} {request.url.path})"
    return error_response(404, error_object(message, "invalid_request_error"), False)


Item = tuple[GenerationRef, Event]


async def _opening(listener: Listener) -> list[Item]:
    """The events up to the first one after `Start`, or what came in FIRST_EVENT_WAIT."""
    items: list[Item] = []
    try:
        async with asyncio.timeout(FIRST_EVENT_WAIT):
            while (item := await listener.outbox.get()) is not None:
                items.append(item)
                if not isinstance(item[1], Start):
                    break
    except TimeoutError:
        pass  # a slow first token: start the stream, keep-alives fill the wait
    return items


def _id_headers(ref: GenerationRef | None) -> dict[str, str]:
    if ref is None:
        return {}
    return {"X-Conversation-Id": ref.conversation_id, "X-Generation-Id": ref.generation_id}


async def _chunk_stream(
    follow: Follow,
    listener: Listener,
    opening: list[Item],
    translator: ChunkTranslator,
    abandoned: Callable[[], Awaitable[None]],
) -> AsyncIterator[str]:
    ended = False
    waiting = deque(opening)
    try:
        while True:
            item = waiting.popleft() if waiting else await listener.next()
            if item == "heartbeat":
                yield KEEP_ALIVE
                continue
            if item is None:  # the client fell MAX_QUEUED_FRAMES behind
                yield sse_data([error_object(FELL_BEHIND, "server_error", None, "slow_client")])
                return
            ref, event = item
            if is_final(event):
                ended = True
                done = DONE_LINE if isinstance(event, Done) else ""
                yield sse_data(translator.chunks(ref, event)) + done
                return
            if data := translator.data(ref, event):
                yield data
    finally:
        follow.stop()
        if not ended:
            await asyncio.shield(abandoned())


async def _whole_answer(follow: Follow, listener: Listener, created: int) -> Response:
    events: list[Event] = []
    try:
        while (item := await listener.outbox.get()) is not None:
            ref, event = item
            events.append(event)
            if isinstance(event, Done):
                body = completion_object(ref, events, created)
                return JSONResponse(body, headers=_id_headers(ref))
            if isinstance(event, Failed):
                status, error = failure_of(event)
                return error_response(status, error, event.retryable, event.retry_after)
    finally:
        follow.stop()
    raise InternalError("The answer could not be collected.")

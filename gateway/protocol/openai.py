"""The OpenAI chat completions API's request side (pure): the parameters the gateway
handles, ignores or refuses, and `chat_call`, which turns a `/v1/chat/completions` body and
the gateway's headers into a `CompletionRequest`, refusing with OpenAI's error codes
(`InvalidParameter`, `ModelNotFound`). The answer's side is `openai_response.py`.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any

from gateway.errors import BadRequest, NotFound, excerpt
from gateway.events import FinishReason, Message, ToolCall
from gateway.protocol.output_format import parse_response_format
from gateway.protocol.requests import (
    CompletionRequest,
    parse_stop,
    parse_tool_choice,
    parse_tools,
)
from gateway.protocol.wire import (
    CONVERSATION_ID_RE,
    MAX_HISTORY_MESSAGES,
    MAX_ID_CHARS,
    MAX_TOKENS,
)

OWNED_BY = "chat-gateway"

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
# Our finish reasons in OpenAI's terms, for the answer's side and the API documents.
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
    model = required_model(body, models)
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
        # Whether the model takes a JSON format is its table's say: the core checks.
        output_format=_parsed(
            "response_format", parse_response_format, body.get("response_format")
        ),
    )
    return ChatCall(request, include_usage)


def required_model(body: Body, models: Collection[str]) -> str:
    """The body's `model`, one of `models`."""
    model = body.get("model")
    if model is None:
        raise InvalidParameter(
            "Missing required parameter: 'model'.", "model", "missing_required_parameter"
        )
    if not isinstance(model, str):
        raise _invalid_type("model", "a string")
    if model not in models:
        raise ModelNotFound(model)
    return model


def parse_messages(value: Any) -> list[Message]:
    """OpenAI chat messages as ours: system (and developer), user, assistant with its tool
    calls, and tool results. Content is a string or a list of text parts (joined by
    newlines)."""
    items = bounded_list(value, "messages", "an array", "messages")
    return [_message(item, f"messages[{i}]") for i, item in enumerate(items)]


def bounded_list(value: Any, param: str, expected: str, noun: str) -> list[Any]:
    """A required, non-empty array of at most MAX_HISTORY_MESSAGES + 1 entries."""
    if value is None:
        raise InvalidParameter(
            f"Missing required parameter: '{param}'.", param, "missing_required_parameter"
        )
    if not isinstance(value, list):
        raise _invalid_type(param, expected)
    if not value:
        raise InvalidParameter(f"'{param}' must not be empty.", param, "empty_array")
    if len(value) > MAX_HISTORY_MESSAGES + 1:
        raise InvalidParameter(
            f"'{param}' may hold at most {MAX_HISTORY_MESSAGES + 1} {noun}.",
            param,
            "array_above_max_length",
        )
    return value


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
    return text_parts(value, where, ("text",), refusals=not required)


def text_parts(value: Any, where: str, kinds: Collection[str], *, refusals: bool) -> str:
    """Text content parts of the given `kinds`, joined by newlines; `refusals` skips an
    assistant's refusal parts (not text the model wrote). Any other part is refused."""
    if not isinstance(value, list):
        raise _invalid_type(where, "a string or an array of content parts")
    texts: list[str] = []
    for j, part in enumerate(value):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in kinds and isinstance(part.get("text"), str):
            texts.append(part["text"])
        elif not (kind == "refusal" and refusals):
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


def refuse_parameters(body: Body, known: Collection[str], unsupported: dict[str, str]) -> None:
    """Refuse a parameter not `known`, and an `unsupported` one unless null."""
    for name in body:
        if name not in known:
            shown = excerpt(name)
            raise InvalidParameter(f"Unknown parameter: '{shown}'.", shown, "unknown_parameter")
    for name, reason in unsupported.items():
        if body.get(name) is not None:
            raise InvalidParameter(reason, name, "unsupported_parameter")


def _refuse_unsupported(body: Body) -> None:
    refuse_parameters(body, KNOWN_PARAMETERS, UNSUPPORTED_PARAMETERS)
    n = body.get("n")
    if n is not None and (isinstance(n, bool) or n != 1):
        raise InvalidParameter(
            "Only n=1 is supported: one choice per request.", "n", "unsupported_value"
        )
    if body.get("logprobs") not in (None, False) or body.get("top_logprobs") not in (None, 0):
        param = "logprobs" if body.get("logprobs") not in (None, False) else "top_logprobs"
        raise InvalidParameter("Log probabilities are not supported.", param, "unsupported_value")
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
        limits.append(_token_count(name, value, least=1))
    return min(limits) if limits else None


def _token_count(name: str, value: object, least: int) -> int:
    """A cap on an answer's tokens: an integer from `least` to MAX_TOKENS."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise _invalid_type(name, "an integer")
    if value < least:
        raise InvalidParameter(
            f"'{name}' must be at least {least}.", name, "integer_below_min_value"
        )
    if value > MAX_TOKENS:
        raise InvalidParameter(
            f"'{name}' must be at most {MAX_TOKENS}.", name, "integer_above_max_value"
        )
    return value


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

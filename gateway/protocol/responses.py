"""The OpenAI Responses API's request side (pure): a `POST /v1/responses` body as a
`CompletionRequest` and what its answer echoes (`ResponsesCall`), and response ids.

A response is a generation: its id is `resp_` and the generation id without `gen_`, so any
instance finds it through the generation log. The answer's side (the response object and
the streamed events) is `responses_render.py`. See docs/api/responses.md.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

from gateway.errors import BadRequest, NotFound, excerpt
from gateway.events import (
    Chunk,
    Event,
    Message,
    OutputFormat,
    ToolCall,
    ToolCalled,
    ToolReturned,
)
from gateway.protocol.openai import (
    Body,
    InvalidParameter,
    _header_value,
    _invalid_type,
    _optional_bool,
    _parsed,
    _temperature,
    _token_count,
    refuse_parameters,
    required_model,
)
from gateway.protocol.output_format import json_schema_format, parse_response_format
from gateway.protocol.requests import CompletionRequest, parse_tool_choice, parse_tools
from gateway.protocol.responses_input import ID_SUFFIX, input_items, parse_input

RESPONSE_ID_RE = re.compile(rf"^resp_({ID_SUFFIX})$")
# OpenAI's bounds on `metadata`.
MAX_METADATA_PAIRS = 16
MAX_METADATA_KEY_CHARS = 64
MAX_METADATA_VALUE_CHARS = 512

# Accepted and ignored: defaults clients and frameworks send, with nothing to forward.
IGNORED_PARAMETERS = frozenset(
    {
        "top_p",
        "user",
        "parallel_tool_calls",
        "truncation",
        "service_tier",
        "prompt_cache_key",
        "prompt_cache_retention",
        "safety_identifier",
        "include",
        "reasoning",
        "top_logprobs",
        "stream_options",
    }
)
# Refused unless null: the answer would silently lack their effect.
UNSUPPORTED_PARAMETERS = {
    "conversation": "'conversation' is not supported; use 'previous_response_id'.",
    "prompt": "Prompt templates are not supported.",
    "max_tool_calls": "'max_tool_calls' is not supported.",
}
HANDLED_PARAMETERS = frozenset(
    {
        "model",
        "input",
        "instructions",
        "stream",
        "store",
        "background",
        "previous_response_id",
        "tools",
        "tool_choice",
        "text",
        "max_output_tokens",
        "temperature",
        "metadata",
    }
)
KNOWN_PARAMETERS = HANDLED_PARAMETERS | IGNORED_PARAMETERS | UNSUPPORTED_PARAMETERS.keys()
NOT_LAST_USER = "The last input item must be a user message or a function_call_output."


class ResponseNotFound(NotFound):
    """An unknown response id, or another user's: the same answer for both."""

    def __init__(self, response_id: str) -> None:
        super().__init__(f"Response with id '{excerpt(response_id)}' not found.")


def response_id(generation_id: str) -> str:
    """The response id of a generation: `resp_` and the generation id without `gen_`."""
    return "resp_" + generation_id.removeprefix("gen_")


def generation_of(response_id: str) -> str:
    """The generation id a response id names; ResponseNotFound for anything else."""
    match = RESPONSE_ID_RE.fullmatch(response_id)
    if match is None:
        raise ResponseNotFound(response_id)
    return "gen_" + match.group(1)


@dataclass(frozen=True, slots=True)
class Echo:
    """What a response object repeats of its request, and its input items; kept with the
    generation's record (`note`) so that any instance answers a retrieve the same."""

    model: str = ""
    created_at: int = 0
    instructions: str | None = None
    tools: list[Body] = field(default_factory=list)
    tool_choice: Any = "auto"
    temperature: float | None = None
    max_output_tokens: int | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    previous_response_id: str | None = None
    store: bool = True
    background: bool = False
    text: Body = field(default_factory=lambda: {"format": {"type": "text"}})
    input: list[Body] = field(default_factory=list)

    def note(self) -> str:
        return json.dumps(dataclasses.asdict(self), separators=(",", ":"))

    @staticmethod
    def of_note(note: str, model: str) -> Echo:
        """The echo a record keeps; one started elsewhere than here keeps none."""
        if not note:
            return Echo(model=model)
        values = json.loads(note)
        names = {f.name for f in dataclasses.fields(Echo)}
        return Echo(**{k: v for k, v in values.items() if k in names})


@dataclass(frozen=True, slots=True)
class ResponsesCall:
    """A `POST /v1/responses` as the core takes it (`request`: its conversation is set by
    the handler from `previous_generation`), and what its answer echoes."""

    request: CompletionRequest
    echo: Echo
    previous_generation: str | None
    background: bool


def responses_call(
    body: Body,
    models: Collection[str],
    created_at: int = 0,
    *,
    agent: str | None = None,
    idempotency_key: str | None = None,
) -> ResponsesCall:
    """Translate a `/v1/responses` body. The last input item is the turn's user message, or
    a function_call_output (the model then answers the input as it stands). Without
    `previous_response_id`, the items before it are the history the model sees; with one,
    the stored conversation is (and the request's own items when continuing after
    function_call_outputs)."""
    _refuse_unsupported(body)
    model = required_model(body, models)
    store = _bool_default(body, "store", True)
    background = _optional_bool(body, "background")
    if background and not store:
        raise InvalidParameter(
            "Background mode requires 'store' to be true.", "background", "invalid_value"
        )
    previous = body.get("previous_response_id")
    if previous is not None and not isinstance(previous, str):
        raise _invalid_type("previous_response_id", "a string")
    previous_generation = None if previous is None else _previous(previous)
    instructions = body.get("instructions")
    if instructions is not None and not isinstance(instructions, str):
        raise _invalid_type("instructions", "a string")
    messages = parse_input(body.get("input"))
    last = messages[-1]
    if last.role not in ("user", "tool"):
        raise InvalidParameter(NOT_LAST_USER, "input", "invalid_value")
    continuation = last.role == "tool"
    if instructions:
        messages = [Message("system", instructions), *messages]
    raw_tools = _raw_tools(body.get("tools"))
    tools = _parsed("tools", parse_tools, [_chat_tool(tool) for tool in raw_tools] or None)
    raw_choice = body.get("tool_choice")
    tool_choice = _parsed("tool_choice", parse_tool_choice, _chat_choice(raw_choice))
    if continuation:
        history: tuple[Message, ...] | None = tuple(messages)
    else:
        history = None if previous_generation is not None else tuple(messages[:-1])
    max_tokens = _max_output_tokens(body.get("max_output_tokens"))
    temperature = _temperature(body.get("temperature"))
    request = CompletionRequest(
        message=None if continuation else last.content,
        model=model,
        agent=_header_value("X-Agent", agent),
        temperature=temperature,
        max_tokens=max_tokens,
        conversation_history=history,
        stream=_optional_bool(body, "stream"),
        idempotency_key=_header_value("Idempotency-Key", idempotency_key),
        tools=tools,
        tool_choice=tool_choice,
        output_format=parse_text_format(body.get("text")),
    )
    echo = Echo(
        model=model,
        created_at=created_at,
        instructions=instructions,
        tools=raw_tools,
        tool_choice="auto" if raw_choice is None else raw_choice,
        temperature=temperature,
        max_output_tokens=max_tokens,
        metadata=parse_metadata(body.get("metadata")),
        previous_response_id=previous,
        store=store,
        background=background,
        text=_text_echo(body.get("text")),
        input=input_items(body["input"]),
    )
    request = dataclasses.replace(request, note=echo.note())
    return ResponsesCall(request, echo, previous_generation, background)


def parse_metadata(value: Any) -> dict[str, str]:
    """Up to 16 string pairs, keys of at most 64 characters and values of at most 512."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _invalid_type("metadata", "an object")
    if len(value) > MAX_METADATA_PAIRS:
        raise InvalidParameter(
            f"'metadata' may hold at most {MAX_METADATA_PAIRS} pairs.",
            "metadata",
            "object_above_max_properties",
        )
    for key, item in value.items():
        if len(key) > MAX_METADATA_KEY_CHARS:
            raise InvalidParameter(
                f"Metadata keys are at most {MAX_METADATA_KEY_CHARS} characters.",
                "metadata",
                "string_above_max_length",
            )
        if not isinstance(item, str):
            raise _invalid_type(f"metadata.{excerpt(key)}", "a string")
        if len(item) > MAX_METADATA_VALUE_CHARS:
            raise InvalidParameter(
                f"Metadata values are at most {MAX_METADATA_VALUE_CHARS} characters.",
                f"metadata.{excerpt(key)}",
                "string_above_max_length",
            )
    return dict(value)


def _raw_tools(value: Any) -> list[Body]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise _invalid_type("tools", "an array")
    for i, tool in enumerate(value):
        kind = tool.get("type") if isinstance(tool, dict) else None
        if kind != "function":
            shown = excerpt(kind) if isinstance(kind, str) else "invalid"
            raise InvalidParameter(
                f"Only function tools are supported; tools[{i}] is '{shown}'.",
                f"tools[{i}].type",
                "unsupported_value",
            )
    return list(value)


def _chat_tool(tool: Body) -> Body:
    """A Responses function tool (flat) in the chat completions shape the gateway parses."""
    function = {k: v for k, v in tool.items() if k in ("name", "description", "parameters")}
    if tool.get("strict") is not None:
        function["strict"] = tool["strict"]
    return {"type": "function", "function": function}


def _chat_choice(value: Any) -> Any:
    if isinstance(value, dict) and value.get("type") == "function" and "name" in value:
        return {"type": "function", "function": {"name": value["name"]}}
    return value


def _previous(value: str) -> str:
    match = RESPONSE_ID_RE.fullmatch(value)
    if match is None:
        raise InvalidParameter(
            f"Invalid 'previous_response_id': '{excerpt(value)}'. Expected an ID that begins "
            "with 'resp_'.",
            "previous_response_id",
            "invalid_value",
        )
    return "gen_" + match.group(1)


def _max_output_tokens(value: Any) -> int | None:
    if value is None:
        return None
    return _token_count("max_output_tokens", value, least=16)  # OpenAI's minimum


def parse_text_format(text: Any) -> OutputFormat | None:
    """`text.format`: `{"type": "text"}`, `{"type": "json_object"}`, or `{"type":
    "json_schema", name, schema, strict, description}` (the fields beside `type`, unlike chat's
    `response_format`). Whether the model takes a JSON format is the core's say."""
    if text is None:
        return None
    if not isinstance(text, dict):
        raise _invalid_type("text", "an object")
    unknown = next((key for key in text if key not in ("format", "verbosity")), None)
    if unknown is not None:
        shown = f"text.{excerpt(str(unknown))}"
        raise InvalidParameter(f"Unknown parameter: '{shown}'.", shown, "unknown_parameter")
    value = text.get("format")
    if value is None:
        return None
    if not isinstance(value, dict):
        raise _invalid_type("text.format", "an object")
    try:
        if value.get("type") == "json_schema":
            spec = {k: v for k, v in value.items() if k != "type"}
            return json_schema_format(spec, "text.format")
        return parse_response_format(value, "text.format")
    except BadRequest as exc:
        raise InvalidParameter(exc.message, "text.format", "invalid_value") from None


def _text_echo(text: dict[str, Any] | None) -> Body:
    """The response's `text`: the request's, its format `text` when it gave none."""
    return {"format": {"type": "text"}, **(text or {})}


def _bool_default(body: Body, name: str, default: bool) -> bool:
    return default if body.get(name) is None else _optional_bool(body, name)


def _refuse_unsupported(body: Body) -> None:
    refuse_parameters(body, KNOWN_PARAMETERS, UNSUPPORTED_PARAMETERS)


def parse_starting_after(value: str | None) -> int:
    """`starting_after`: the last sequence_number seen; none means every event."""
    if value is None:
        return -1
    if not (value.isascii() and value.isdigit() and len(value) <= 16):
        raise InvalidParameter(
            "'starting_after' must be a whole number.", "starting_after", "invalid_value"
        )
    return int(value)


def after_calls(call: ResponsesCall, earlier: Echo, events: Sequence[Event]) -> ResponsesCall:
    """Function call outputs continuing `previous_response_id` without its function_call
    items: the model sees that response's input, its calls and then this input (a turn
    continuing after tool results reads no stored conversation). Unchanged when the input
    carries the calls itself."""
    history = call.request.conversation_history or ()
    if call.request.message is not None or any(m.tool_calls for m in history):
        return call
    answered = {e.call_id for e in events if isinstance(e, ToolReturned)}
    calls = tuple(
        ToolCall(e.call_id, e.name, e.arguments)
        for e in events
        if isinstance(e, ToolCalled) and e.call_id not in answered
    )
    text = "".join(e.content for e in events if isinstance(e, Chunk))
    before = parse_input(earlier.input) if earlier.input else []
    if earlier.instructions:
        before.insert(0, Message("system", earlier.instructions))
    joined = (*before, Message("assistant", text, calls), *history)
    return dataclasses.replace(
        call, request=dataclasses.replace(call.request, conversation_history=joined)
    )

"""A lean reader for OpenAI's streaming chat completions (`data: {...}` lines): the OpenAI
dialect's stream reader.

The openai SDK's own iterator builds a pydantic object per chunk (~100 µs); reading the
JSON ourselves costs a fraction of that on the hot path. The body is fed as it arrives, a
network read at a time: the text of every token in one read comes out as one piece, so a
gateway that falls behind sends fewer, larger chunks instead of falling further behind.

Every input is bounded (`UpstreamBounds`): a line that never ends, a turn of countless tool
calls or megabytes of their arguments raise `Overrun`; the work per byte is constant, however
the upstream splits its bytes.
"""

from __future__ import annotations

import json
from typing import Any, NamedTuple

from gateway.events import FinishReason, ToolCall, Usage
from gateway.llm.bounds import DEFAULT_BOUNDS, StreamFormatError, UpstreamBounds
from gateway.llm.sse import LineStream, data_lines
from gateway.llm.tool_calls import ToolCalls


class StreamPiece(NamedTuple):
    """One line's worth; a tuple because one is made per token (a frozen dataclass costs
    several times as much to build)."""

    text: str = ""
    finish_reason: str | None = None
    usage: Usage | None = None
    error: str | None = None
    end: bool = False
    tool_calls: tuple[dict[str, Any], ...] = ()  # raw `delta.tool_calls` fragments


END = StreamPiece(end=True)
NOTHING = StreamPiece()
# A data line's JSON, read from its text: `json.loads` of bytes would first guess their
# encoding (SSE is UTF-8) and match whitespace around it twice (the line is stripped).
_decode = json.JSONDecoder().raw_decode


class ChatStream(LineStream):
    """What an OpenAI chat completion stream has said so far, fed a piece of its body at a
    time. Lines after `[DONE]` are read and ignored (the connection goes back to the pool
    only once the body is read to its end); an `error` event stops the reading."""

    def __init__(self, bounds: UpstreamBounds = DEFAULT_BOUNDS) -> None:
        super().__init__(bounds)
        self.ended = False  # [DONE] seen
        self.error: str | None = None
        self.finish_reason: str | None = None
        self.usage: Usage | None = None
        self.tokens = 0  # text deltas seen
        self.calls = ToolCallAssembler(bounds)
        self.answering = False  # text or a tool call has started

    def complete(self) -> bool:
        return self.ended or self.finish_reason is not None

    def finish(self) -> FinishReason:
        return finish_reason(self.finish_reason)

    def tool_calls(self) -> list[ToolCall]:
        return self.calls.calls()

    def _read(self, block: bytes) -> str:
        """The text of the `data:` lines in `block` (whole lines joined by newlines)."""
        texts: list[str] = []
        for line in data_lines(block):
            if self.ended or self.error is not None:
                break
            piece = parse_line(line)
            if piece.end:
                self.ended = True
            elif piece.error is not None:
                self.error = piece.error
            else:
                self._take(piece, texts)
        return "".join(texts)

    def _take(self, piece: StreamPiece, texts: list[str]) -> None:
        if piece.text:
            texts.append(piece.text)
            self.tokens += 1
            self.answering = True
        if piece.tool_calls:
            self.calls.add(piece.tool_calls)
            self.answering = True
        self.finish_reason = piece.finish_reason or self.finish_reason
        self.usage = piece.usage or self.usage


def parse_line(line: bytes) -> StreamPiece:
    """Interpret one line of the upstream's SSE body."""
    if not line.startswith(b"data:"):
        return NOTHING  # blank separators, comments, `event:` and `id:` lines
    payload = line[5:].strip()
    if payload == b"[DONE]":
        return END
    try:
        text = payload.decode()
        obj, end = _decode(text)
    except (ValueError, RecursionError):  # RecursionError: nested past the parser's depth
        raise StreamFormatError("a data line is not JSON") from None
    if end != len(text):
        raise StreamFormatError("a data line is not JSON")
    if type(obj) is not dict:
        raise StreamFormatError("a data line is not a JSON object")
    if "error" in obj:
        return StreamPiece(error=_error_message(obj["error"]))
    return _piece(obj)


def _piece(obj: dict[str, Any]) -> StreamPiece:
    # Exact type checks (JSON gives no subclasses) and no keyword arguments: this runs once
    # per token.
    choices = obj.get("choices")
    usage = obj.get("usage")
    usage = usage_of(usage) if usage is not None else None
    if not choices:
        return StreamPiece("", None, usage)
    choice = choices[0] if type(choices) is list else None
    delta = choice.get("delta") or {} if type(choice) is dict else None
    if type(delta) is not dict:
        raise StreamFormatError("a chunk's choice is not an object")
    text = delta.get("content") or ""
    finish = choice.get("finish_reason")  # type: ignore[union-attr]
    if type(text) is not str or not (finish is None or type(finish) is str):
        raise StreamFormatError("a chunk's content or finish reason is not a string")
    raw_calls = delta.get("tool_calls")
    if not raw_calls:
        return StreamPiece(text, finish, usage)
    if type(raw_calls) is not list:
        raise StreamFormatError("a chunk's tool calls are not a list")
    return StreamPiece(text, finish, usage, None, False, tuple(raw_calls))


class ToolCallAssembler(ToolCalls):
    """Joins streamed `tool_calls` fragments (by index) into whole calls, within bounds."""

    def add(self, fragments: tuple[Any, ...]) -> None:
        for fragment in fragments:
            if not isinstance(fragment, dict):
                raise StreamFormatError("a tool call fragment is not an object")
            index = fragment.get("index", 0)
            if not isinstance(index, int) or isinstance(index, bool):
                raise StreamFormatError("a tool call's index is not a number")
            function = fragment.get("function") or {}
            if not isinstance(function, dict):
                raise StreamFormatError("a tool call's function is not an object")
            call_id, name = _text(fragment.get("id")), _text(function.get("name"))
            self.part(index, call_id, name, _text(function.get("arguments")))


def _text(value: Any) -> str:
    if value is None or isinstance(value, str):
        return value or ""
    raise StreamFormatError("a tool call field is not a string")


def finish_reason(raw: Any) -> FinishReason:
    """OpenAI's finish reasons are the gateway's; any other (`content_filter`, none) is `stop`."""
    if raw in ("length", "tool_calls"):
        return raw  # type: ignore[no-any-return]
    return "stop"


def usage_of(raw: Any) -> Usage | None:
    if not isinstance(raw, dict):
        return None
    prompt = raw.get("prompt_tokens")
    completion = raw.get("completion_tokens")
    if not isinstance(prompt, int) or not isinstance(completion, int):
        return None
    return Usage(prompt_tokens=prompt, completion_tokens=completion)


def _error_message(raw: Any) -> str:
    if isinstance(raw, dict) and isinstance(raw.get("message"), str):
        return str(raw["message"])
    return "the model reported an error"

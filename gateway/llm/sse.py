"""A lean reader for OpenAI's streaming chat completions (`data: {...}` lines).

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
from collections.abc import Iterator
from typing import Any, NamedTuple

from gateway.events import Usage
from gateway.llm.bounds import Overrun, StreamFormatError, UpstreamBounds, size

DEFAULT_BOUNDS = UpstreamBounds()


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


class ChatStream:
    """What an OpenAI chat completion stream has said so far, fed a piece of its body at a
    time. Lines after `[DONE]` are read and ignored (the connection goes back to the pool
    only once the body is read to its end); an `error` event stops the reading."""

    def __init__(self, bounds: UpstreamBounds = DEFAULT_BOUNDS) -> None:
        # A line not yet ended; a bytearray, so that a line dripped a byte at a time costs
        # linear time to gather (bytes concatenation would copy it once per byte).
        self._tail = bytearray()
        self._max_line = bounds.max_line_bytes
        self.ended = False  # [DONE] seen
        self.error: str | None = None
        self.finish_reason: str | None = None
        self.usage: Usage | None = None
        self.tokens = 0  # text deltas seen
        self.calls = ToolCallAssembler(bounds)
        self.answering = False  # text or a tool call has started

    def feed(self, piece: bytes) -> str:
        """The text of the complete lines so far (a line may span pieces). Overrun when a
        line grows past the bound."""
        end = piece.rfind(b"\n")
        if end < 0:
            self._tail += piece
            if len(self._tail) > self._max_line:
                raise Overrun(f"a line longer than {size(self._max_line)}")
            return ""
        if self._tail:
            self._tail += piece[:end]
            block = bytes(self._tail)
            self._tail.clear()
        else:
            block = piece if end == len(piece) - 1 else piece[:end]
        self._tail += piece[end + 1 :]
        return self._read(block)

    def close(self) -> str:
        """The text of a last line left without its newline."""
        tail = bytes(self._tail)
        self._tail.clear()
        return self._read(tail)

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


def data_lines(block: bytes) -> Iterator[bytes]:
    """The lines of `block` that start with `data:`. Only these carry anything; the others
    (blank separators, comments, `event:` and `id:` lines) are skipped by `bytes.find`, not
    one by one, so a body of millions of blank lines costs a scan, not a loop."""
    start = 0 if block.startswith(b"data:") else _next_data_line(block, 0)
    while start >= 0:
        end = block.find(b"\n", start)
        if end < 0:
            yield block[start:]
            return
        yield block[start:end]
        start = _next_data_line(block, end)


def _next_data_line(block: bytes, after: int) -> int:
    found = block.find(b"\ndata:", after)
    return found + 1 if found >= 0 else -1


def parse_line(line: bytes) -> StreamPiece:
    """Interpret one line of the upstream's SSE body."""
    if not line.startswith(b"data:"):
        return NOTHING  # blank separators, comments, `event:` and `id:` lines
    payload = line[5:].strip()
    if payload == b"[DONE]":
        return END
    try:
        obj = json.loads(payload)
    except (ValueError, RecursionError):  # RecursionError: nested past the parser's depth
        raise StreamFormatError("a data line is not JSON") from None
    if not isinstance(obj, dict):
        raise StreamFormatError("a data line is not a JSON object")
    if "error" in obj:
        return StreamPiece(error=_error_message(obj["error"]))
    return _piece(obj)


def _piece(obj: dict[str, Any]) -> StreamPiece:
    text, finish, calls = "", None, ()
    choices = obj.get("choices")
    if choices:
        choice = choices[0] if isinstance(choices, list) else None
        delta = choice.get("delta") or {} if isinstance(choice, dict) else None
        if not isinstance(delta, dict):
            raise StreamFormatError("a chunk's choice is not an object")
        text = delta.get("content") or ""
        finish = choice.get("finish_reason")  # type: ignore[union-attr]
        raw_calls = delta.get("tool_calls") or ()
        if not (isinstance(text, str) and isinstance(finish, str | None)):
            raise StreamFormatError("a chunk's content or finish reason is not a string")
        if not isinstance(raw_calls, list | tuple):
            raise StreamFormatError("a chunk's tool calls are not a list")
        calls = tuple(raw_calls)
    usage = usage_of(obj.get("usage"))
    return StreamPiece(text=text, finish_reason=finish, usage=usage, tool_calls=calls)


class _PartialCall:
    __slots__ = ("arguments", "id", "name")

    def __init__(self) -> None:
        self.id = ""
        self.name = ""
        self.arguments: list[str] = []  # joined once at the end: linear in their length


class ToolCallAssembler:
    """Joins streamed `tool_calls` fragments (by index) into whole calls, at most
    `max_tool_calls` of them with `max_tool_argument_bytes` of arguments in all."""

    def __init__(self, bounds: UpstreamBounds = DEFAULT_BOUNDS) -> None:
        self._calls: dict[int, _PartialCall] = {}
        self._max_calls = bounds.max_tool_calls
        self._max_bytes = bounds.max_tool_argument_bytes
        self._bytes = 0

    def add(self, fragments: tuple[Any, ...]) -> None:
        for fragment in fragments:
            if not isinstance(fragment, dict):
                raise StreamFormatError("a tool call fragment is not an object")
            call = self._call(fragment.get("index", 0))
            function = fragment.get("function") or {}
            if not isinstance(function, dict):
                raise StreamFormatError("a tool call's function is not an object")
            call.id = _text(fragment.get("id")) or call.id
            call.name = _text(function.get("name")) or call.name
            if arguments := _text(function.get("arguments")):
                self._bytes += len(arguments.encode())
                if self._bytes > self._max_bytes:
                    raise Overrun(f"more than {size(self._max_bytes)} of tool call arguments")
                call.arguments.append(arguments)

    def _call(self, index: Any) -> _PartialCall:
        if not isinstance(index, int) or isinstance(index, bool):
            raise StreamFormatError("a tool call's index is not a number")
        call = self._calls.get(index)
        if call is None:
            if len(self._calls) >= self._max_calls:
                raise Overrun(f"more than {self._max_calls} tool calls in one turn")
            call = self._calls[index] = _PartialCall()
        return call

    def calls(self) -> list[dict[str, str]]:
        """The whole calls, by index. A call without a name cannot be run or answered: a
        format error. One without an id gets one, as some compatible servers send none."""
        whole = []
        for index, call in sorted(self._calls.items()):
            if not call.name:
                raise StreamFormatError("a tool call has no function name")
            call_id = call.id or f"call_{index}"
            whole.append({"id": call_id, "name": call.name, "arguments": "".join(call.arguments)})
        return whole


def _text(value: Any) -> str:
    if value is None or isinstance(value, str):
        return value or ""
    raise StreamFormatError("a tool call field is not a string")


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

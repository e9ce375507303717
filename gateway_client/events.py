"""What a generation sends, as typed values: `parse_frame` turns one server frame into one.

Pure: no I/O. The shapes follow docs/protocol.md §5 (events) and §6.1 (errors); unknown
fields are kept out, unknown frame types give `None` so a newer gateway does not break an
older client.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, kw_only=True)
class Event:
    """Every event of a generation. `seq` numbers them from 1 (`start`) with no gap; `done`
    is true on the final one (`Done` or `ErrorEvent`)."""

    id: str | None
    generation_id: str
    conversation_id: str
    seq: int
    done: bool = False


@dataclass(frozen=True, kw_only=True)
class Start(Event):
    model: str
    agent: str


@dataclass(frozen=True, kw_only=True)
class Chunk(Event):
    content: str
    metadata: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class ToolCall(Event):
    call_id: str
    name: str
    arguments: str  # the JSON text the model wrote, not parsed (it may be invalid)


@dataclass(frozen=True, kw_only=True)
class ToolResult(Event):
    call_id: str
    name: str
    result: str
    is_error: bool


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0


@dataclass(frozen=True, kw_only=True)
class Done(Event):
    finish_reason: str  # stop, length, tool_calls or cancelled
    usage: Usage = field(default_factory=Usage)
    metadata: Mapping[str, Any] = field(default_factory=dict)
    done: bool = True


@dataclass(frozen=True, kw_only=True)
class ErrorEvent:
    """The end of a run that failed: a generation's final `error` event, or the refusal of a
    request that started no generation (then `generation_id`, `conversation_id` and `seq` are
    `None`). `retry_after` is the wait in seconds, when the gateway knows it."""

    id: str | None
    code: str
    message: str
    retryable: bool
    retry_after: float | None = None
    generation_id: str | None = None
    conversation_id: str | None = None
    seq: int | None = None
    done: bool = True


@dataclass(frozen=True, kw_only=True)
class Notice:
    """News about a generation that is not one of its events (protocol §5, `notice`): no seq,
    never replayed, and the run goes on to its final event either way."""

    id: str | None
    generation_id: str
    conversation_id: str
    code: str  # persistence_degraded, persistence_lost, store_unreachable, or a later one
    message: str


Item = Start | Chunk | ToolCall | ToolResult | Done | ErrorEvent | Notice
"""What iterating a run yields."""


def parse_frame(frame: Mapping[str, Any]) -> Item | None:
    """The typed value of a server frame about a generation or request; `None` for frames of
    the connection (`ready`, `pong`, …) and for types this client does not know."""
    kind = frame.get("type")
    if kind == "error":
        return _error(frame)
    if kind == "notice":
        return Notice(
            id=_opt_str(frame, "id"),
            generation_id=str(frame.get("generation_id", "")),
            conversation_id=str(frame.get("conversation_id", "")),
            code=str(frame.get("code", "")),
            message=str(frame.get("message", "")),
        )
    parse = _EVENTS.get(str(kind))
    if parse is None or not isinstance(frame.get("seq"), int):
        return None
    return parse(frame, _common(frame))


def _common(frame: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "id": _opt_str(frame, "id"),
        "generation_id": str(frame.get("generation_id", "")),
        "conversation_id": str(frame.get("conversation_id", "")),
        "seq": int(frame["seq"]),
    }


def _start(frame: Mapping[str, Any], common: dict[str, Any]) -> Start:
    return Start(**common, model=str(frame.get("model", "")), agent=str(frame.get("agent", "")))


def _chunk(frame: Mapping[str, Any], common: dict[str, Any]) -> Chunk:
    return Chunk(**common, content=str(frame.get("content", "")), metadata=_dict(frame))


def _tool_call(frame: Mapping[str, Any], common: dict[str, Any]) -> ToolCall:
    return ToolCall(
        **common,
        call_id=str(frame.get("call_id", "")),
        name=str(frame.get("name", "")),
        arguments=str(frame.get("arguments", "")),
    )


def _tool_result(frame: Mapping[str, Any], common: dict[str, Any]) -> ToolResult:
    return ToolResult(
        **common,
        call_id=str(frame.get("call_id", "")),
        name=str(frame.get("name", "")),
        result=str(frame.get("result", "")),
        is_error=bool(frame.get("is_error", False)),
    )


def _done(frame: Mapping[str, Any], common: dict[str, Any]) -> Done:
    usage = frame.get("usage")
    counts = usage if isinstance(usage, dict) else {}
    return Done(
        **common,
        finish_reason=str(frame.get("finish_reason", "stop")),
        usage=Usage(
            prompt_tokens=int(counts.get("prompt_tokens", 0)),
            completion_tokens=int(counts.get("completion_tokens", 0)),
            total_tokens=int(counts.get("total_tokens", 0)),
        ),
        metadata=_dict(frame),
    )


def _error(frame: Mapping[str, Any]) -> ErrorEvent:
    seq = frame.get("seq")
    retry_after = frame.get("retry_after")
    message = frame.get("message") or frame.get("error") or "The gateway refused the request."
    return ErrorEvent(
        id=_opt_str(frame, "id"),
        code=str(frame.get("code", "internal")),
        message=str(message),
        retryable=bool(frame.get("retryable", False)),
        retry_after=float(retry_after) if isinstance(retry_after, int | float) else None,
        generation_id=_opt_str(frame, "generation_id"),
        conversation_id=_opt_str(frame, "conversation_id"),
        seq=seq if isinstance(seq, int) else None,
        # A refused resume has done: false (§6.2), yet nothing more comes for the run.
        done=True,
    )


_EVENTS: dict[str, Callable[[Mapping[str, Any], dict[str, Any]], Item]] = {
    "start": _start,
    "chunk": _chunk,
    "tool_call": _tool_call,
    "tool_result": _tool_result,
    "done": _done,
}


def _opt_str(frame: Mapping[str, Any], key: str) -> str | None:
    value = frame.get(key)
    return value if isinstance(value, str) else None


def _dict(frame: Mapping[str, Any]) -> dict[str, Any]:
    metadata = frame.get("metadata")
    return dict(metadata) if isinstance(metadata, dict) else {}

"""How a generation's events are stored in its log: a versioned record of their own, not the
wire format.

Other instances read these records (a resume, a follower, a dead owner's interruption), also
during a rolling deploy while two versions run. So the record is defined here, apart from the
frames clients see, with a version: a change to the wire format changes nothing stored, and a
change to the record is a new version that the reader of the next one still accepts.

    version 2 (written): {"v":2,"k":"chunk","s":5,"text":"…"} — `k` the kind, `s` the seq
    version 1 (read):    the event's WebSocket payload, {"type":"chunk","seq":5,…}

Pure: JSON in, events out. The Lua script that ends an abandoned generation writes a version 2
`error` record of its own (see `store/logs.py`), which `tests/store/test_store.py` reads back.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any, Literal

from gateway.events import Chunk, Done, Event, Failed, Start, ToolCalled, ToolReturned, Usage
from gateway.protocol.frames import json_string

VERSION = 2


class RecordError(ValueError):
    """A stored record this version cannot read."""


def encode(event: Event) -> str:
    """The stored record of an event (version 2). A chunk without metadata, one per token,
    is formatted around json's string encoder rather than built as a dict and dumped."""
    if isinstance(event, Chunk) and not event.metadata:
        return f'{{"v":2,"k":"chunk","s":{event.seq},"text":{json_string(event.content)}}}'
    return json.dumps(_fields(event), ensure_ascii=False, separators=(",", ":"))


def _fields(event: Event) -> dict[str, Any]:
    head: dict[str, Any] = {"v": VERSION, "s": event.seq}
    if isinstance(event, Start):
        return {**head, "k": "start", "model": event.model, "agent": event.agent}
    if isinstance(event, Chunk):
        return {**head, "k": "chunk", "text": event.content, "meta": event.metadata}
    if isinstance(event, ToolCalled):
        call = {"call": event.call_id, "name": event.name, "args": event.arguments}
        return {**head, "k": "tool_call", **call}
    if isinstance(event, ToolReturned):
        result = {"call": event.call_id, "name": event.name, "result": event.result}
        return {**head, "k": "tool_result", **result, "error": event.is_error}
    if isinstance(event, Done):
        usage = [event.usage.prompt_tokens, event.usage.completion_tokens]
        done = {"reason": event.finish_reason, "usage": usage, "meta": event.metadata}
        return {**head, "k": "done", **done}
    failed = {"code": event.code, "msg": event.message, "retry": event.retryable}
    if event.retry_after is not None:
        failed["after"] = event.retry_after
    return {**head, "k": "error", **failed}


def decode(raw: str | bytes) -> Event:
    """The event of a stored record, version 2 or 1; RecordError for anything else."""
    try:
        obj = json.loads(raw)
        if not isinstance(obj, dict):
            raise TypeError
        version = obj.get("v", 1)
        if version == VERSION:
            return _event(obj)
        if version == 1:
            return _event_v1(obj)
    except (ValueError, TypeError, KeyError, IndexError) as exc:
        raise RecordError(f"a stored event cannot be read: {type(exc).__name__}") from None
    raise RecordError(f"a stored event has version {version!r}, newer than this gateway reads")


def _event(obj: dict[str, Any]) -> Event:
    kind, seq = obj["k"], obj["s"]
    if kind == "chunk":
        return Chunk(seq, obj["text"], obj.get("meta") or {})
    if kind == "start":
        return Start(seq, obj["model"], obj["agent"])
    if kind == "tool_call":
        return ToolCalled(seq, obj["call"], obj["name"], obj["args"])
    if kind == "tool_result":
        return ToolReturned(seq, obj["call"], obj["name"], obj["result"], obj["error"])
    if kind == "done":
        prompt, completion = obj["usage"]
        return Done(seq, obj["reason"], Usage(prompt, completion), obj.get("meta") or {})
    if kind == "error":
        return Failed(seq, obj["code"], obj["msg"], obj["retry"], obj.get("after"))
    raise KeyError(kind)


def _event_v1(obj: dict[str, Any]) -> Event:
    """Version 1 stored the event's WebSocket payload (before version 2, up to 0.1.0)."""
    kind, seq = obj["type"], obj["seq"]
    if kind == "start":
        return Start(seq, obj["model"], obj["agent"])
    if kind == "chunk":
        return Chunk(seq, obj["content"], obj.get("metadata") or {})
    if kind == "tool_call":
        return ToolCalled(seq, obj["call_id"], obj["name"], obj["arguments"])
    if kind == "tool_result":
        return ToolReturned(seq, obj["call_id"], obj["name"], obj["result"], obj["is_error"])
    if kind == "done":
        usage = Usage(obj["usage"]["prompt_tokens"], obj["usage"]["completion_tokens"])
        return Done(seq, obj["finish_reason"], usage, obj.get("metadata") or {})
    if kind == "error":
        return Failed(seq, obj["code"], obj["message"], obj["retryable"], obj.get("retry_after"))
    raise KeyError(kind)


Status = Literal["running", "complete", "cancelled", "failed", "interrupted"]
# What became of a generation's end: stored, waiting in the log writer, or lost.
Persisted = Literal["stored", "pending", "lost"]
Trouble = Literal["degraded", "lost"]
# Events one read of a log returns at most; a follower that got this many reads again.
READ_PAGE = 1000


@dataclass(frozen=True, slots=True)
class GenerationMeta:
    generation_id: str
    owner: str
    conversation_id: str
    request_id: str | None
    model: str
    agent: str
    status: Status = "running"
    last_seq: int = 0
    # The generation span's W3C context, when tracing is on: a follower anywhere links to it.
    trace: str = ""
    # What the transport that started it keeps with it, opaque here (the Responses API: the
    # request's parameters its response object repeats, and its input).
    note: str = ""

    def fields(self) -> dict[str, str | int]:
        traced = {"trace": self.trace} if self.trace else {}
        noted = {"note": self.note} if self.note else {}
        return {
            **traced,
            **noted,
            "owner": self.owner,
            "conversation_id": self.conversation_id,
            "request_id": self.request_id or "",
            "model": self.model,
            "agent": self.agent,
            "status": self.status,
            "last_seq": self.last_seq,
            "created_at": int(time.time() * 1000),
        }

    @staticmethod
    def from_fields(generation_id: str, raw: dict[str, str]) -> GenerationMeta:
        return GenerationMeta(
            generation_id=generation_id,
            owner=raw["owner"],
            conversation_id=raw["conversation_id"],
            request_id=raw.get("request_id") or None,
            model=raw["model"],
            agent=raw["agent"],
            status=raw["status"],  # type: ignore[arg-type]
            last_seq=int(raw.get("last_seq", 0)),
            trace=raw.get("trace", ""),
            note=raw.get("note", ""),
        )

"""Server-sent events as the gateway writes them (pure): the framing every HTTP stream
shares, and the gateway's own event stream (`POST /completion` with `stream: true`,
`GET /generations/{id}/events`), whose events are `id: <seq>` and `data: <event>`.

An event ends with a blank line and its `data:` is JSON, which never holds a raw newline,
so the events in a piece of stream text are its blank lines (`event_count`). A comment (the
keep-alive) is not an event: it is written on its own and not counted.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from gateway.events import Event, GenerationRef
from gateway.protocol.server_frames import dumps, encode_event, notice_object

# Proxies buffer or drop what they think is an idle response unless told otherwise.
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
KEEP_ALIVE = ": keep-alive\n\n"
# How the OpenAI API and the AI SDK's UI message stream end a stream that reached its end.
DONE_LINE = "data: [DONE]\n\n"
# How they say that a stream ended because its client fell `MAX_QUEUED_FRAMES` behind.
FELL_BEHIND = "The client is not reading fast enough."


def sse_data(objects: Sequence[Any]) -> str:
    """One `data:` event per JSON object."""
    return "".join(f"data: {dumps(obj)}\n\n" for obj in objects)


def event_count(text: str) -> int:
    """How many events a piece of stream text holds (see the module's docstring)."""
    return text.count("\n\n")


@dataclass(frozen=True, slots=True)
class NativeEvents:
    """The gateway's own events as SSE: each event with its seq as the SSE id (what
    `Last-Event-ID` resumes from), notices as `event: notice`. A stream that stops short
    (a drain, a client that fell behind) just ends: the client resumes from its last id."""

    request_id: str | None
    heartbeat: str = KEEP_ALIVE

    def event(self, ref: GenerationRef, event: Event) -> str:
        return f"id: {event.seq}\ndata: {encode_event(event, ref, self.request_id)}\n\n"

    def notice(self, ref: GenerationRef, code: str, message: str) -> str:
        notice = notice_object(self.request_id, ref, code, message)
        return f"event: notice\ndata: {dumps(notice)}\n\n"

    def closed(self) -> str:
        return ""

"""A user's activity on the wire (docs/activity.md): the events, what they hold, and how one
read from the store becomes a WebSocket frame and a server-sent event.

An event is stored as its name and the JSON of its fields; its `activity_id` is the id the
store gave it (opaque to clients, increasing). Each instance reads an event once and renders
it once per transport, however many sockets of the user it serves: the frame is the stored
JSON with `type`, `event` and `activity_id` put in front, a string join and no encoding.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Literal

from gateway.protocol.server_frames import dumps

ActivityName = Literal[
    "generation.started", "generation.ended", "conversation.updated", "conversation.deleted"
]
NAMES: tuple[ActivityName, ...] = (
    "generation.started",
    "generation.ended",
    "conversation.updated",
    "conversation.deleted",
)
# A message's content in `generation.started` is cut here (the whole message is in the
# conversation), so one event stays small whatever the user sent.
CONTENT_CHARS = 2000
# What `ready.running` and GET /generations?status=running list at most.
MAX_RUNNING = 64


@dataclass(frozen=True, slots=True)
class ActivityEvent:
    """An event to publish: its name and its fields."""

    name: ActivityName
    fields: dict[str, Any]

    def stored(self) -> str:
        return dumps(self.fields)


def generation_started(
    conversation_id: str,
    generation_id: str,
    model: str,
    agent: str,
    content: str | None,
    message_id: str | None = None,
) -> ActivityEvent:
    message: dict[str, Any] | None = None
    if content is not None:
        cut = len(content) > CONTENT_CHARS
        message = {"content": content[:CONTENT_CHARS], "truncated": cut}
        if message_id:
            message["id"] = message_id
    return ActivityEvent(
        "generation.started",
        {
            "conversation_id": conversation_id,
            "generation_id": generation_id,
            "model": model,
            "agent": agent,
            "message": message,
        },
    )


def generation_ended(
    conversation_id: str,
    generation_id: str,
    status: str,
    finish_reason: str | None,
    error: str | None = None,
) -> ActivityEvent:
    return ActivityEvent(
        "generation.ended",
        {
            "conversation_id": conversation_id,
            "generation_id": generation_id,
            "status": status,
            "finish_reason": finish_reason,
            "error": error,
        },
    )


def conversation_updated(conversation_id: str, title: str, updated_at: int) -> ActivityEvent:
    return ActivityEvent(
        "conversation.updated",
        {"conversation_id": conversation_id, "title": title, "updated_at": updated_at},
    )


def conversation_deleted(conversation_id: str) -> ActivityEvent:
    return ActivityEvent("conversation.deleted", {"conversation_id": conversation_id})


@dataclass(slots=True)
class ActivityEntry:
    """One event as read from the store, rendered at most once per transport."""

    id: str
    name: str
    raw: str  # the JSON object of its fields
    _frame: str | None = field(default=None, repr=False)
    _sse: str | None = field(default=None, repr=False)

    def _head(self, typed: bool) -> str:
        kind = '"type":"activity",' if typed else ""
        head = f'{{{kind}"event":"{self.name}","activity_id":"{self.id}"'
        return head + ("}" if self.raw == "{}" else "," + self.raw[1:])

    def frame(self) -> str:
        """The WebSocket frame."""
        if self._frame is None:
            self._frame = self._head(True)
        return self._frame

    def sse(self) -> str:
        """The server-sent event: its name, its data, its id (for Last-Event-ID)."""
        if self._sse is None:
            self._sse = f"event: {self.name}\ndata: {self._head(False)}\nid: {self.id}\n\n"
        return self._sse

    def data(self) -> dict[str, Any]:
        found: dict[str, Any] = json.loads(self._head(False))
        return found


def stream_id(value: str) -> tuple[int, int] | None:
    """An activity id (`<ms>-<n>`) as numbers to compare; None for anything else."""
    ms, dash, n = value.partition("-")
    if not (dash and ms.isascii() and ms.isdigit() and n.isascii() and n.isdigit()):
        return None
    if len(ms) > 15 or len(n) > 15:
        return None
    return int(ms), int(n)


def running_object(conversation_id: str, generation_id: str, last_seq: int) -> dict[str, Any]:
    return {
        "conversation_id": conversation_id,
        "generation_id": generation_id,
        "last_seq": last_seq,
    }

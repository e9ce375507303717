"""What a conversation holds, as the store keeps and hands it out, free of any Redis client:
its messages (`StoredMessage`, stored in a shape of their own apart from the API's view), its
summary, its place in its owner's list, a page of its messages."""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from typing import Any, Literal

from gateway.events import Message, Usage
from gateway.protocol.wire import ACTIVE_LEAF, MESSAGE_ID_PREFIX, answer_id

__all__ = ["ACTIVE_LEAF", "answer_id"]  # with the rest of what a stored message is

TITLE_CHARS = 80
ELLIPSIS = "\u2026"


def new_message_id() -> str:
    """The id of a new message; ids of messages stored before the tree are `msg_<n>`."""
    return f"{MESSAGE_ID_PREFIX}{secrets.token_urlsafe(12)}"


MessageStatus = Literal["complete", "incomplete", "cancelled"]


@dataclass(frozen=True, slots=True)
class Position:
    """Where a conversation sits in its owner's index: last update (ms), then id. The index
    lists the greatest first; ties in `updated` go by id, greatest first, as Redis orders them."""

    updated: int
    id: str


@dataclass(frozen=True, slots=True)
class Summary:
    """A conversation without its messages."""

    id: str
    title: str
    project_id: str | None
    created_at: int
    updated_at: int
    generation_id: str | None

    @staticmethod
    def from_record(conversation_id: str, record: dict[str, str]) -> Summary:
        return Summary(
            id=conversation_id,
            title=record.get("title", ""),
            project_id=record.get("project_id") or None,
            created_at=int(record["created_at"]),
            updated_at=int(record["updated_at"]),
            generation_id=record.get("generation") or None,
        )


@dataclass(frozen=True, slots=True)
class StoredMessage:
    role: Literal["user", "assistant"]
    content: str
    created_at: int
    status: MessageStatus = "complete"
    model: str | None = None
    agent: str | None = None
    generation_id: str | None = None
    usage: Usage | None = None
    # Where it stands in the conversation's tree, which the store keeps apart from the record:
    # its id (`msg_…`), its parent's (None for a first message), and its siblings' in creation
    # order, itself included (empty when the store did not read them).
    id: str | None = None
    parent_id: str | None = None
    siblings: tuple[str, ...] = ()

    def to_json(self) -> str:
        """The stored record: its own shape, not the API's view (`as_dict`), so that a change
        to what clients see changes nothing stored. Version 1; the scripts that store answers
        read `role` and `generation_id` from it."""
        record: dict[str, Any] = {
            "role": self.role,
            "content": self.content,
            "created_at": self.created_at,
            "status": self.status,
        }
        for name in ("model", "agent", "generation_id"):
            if getattr(self, name) is not None:
                record[name] = getattr(self, name)
        if self.usage is not None:
            usage = self.usage
            record["usage"] = {
                "prompt_tokens": usage.prompt_tokens,
                "completion_tokens": usage.completion_tokens,
            }
        return json.dumps(record, ensure_ascii=False, separators=(",", ":"))

    def as_dict(self) -> dict[str, Any]:
        """The message as the conversations API shows it: with `branch` when it has siblings."""
        obj: dict[str, Any] = {
            "id": self.id,
            "parent_id": self.parent_id,
            "role": self.role,
            "content": self.content,
            "created_at": self.created_at,
            "status": self.status,
        }
        for name in ("model", "agent", "generation_id"):
            if getattr(self, name) is not None:
                obj[name] = getattr(self, name)
        if self.usage is not None:
            obj["usage"] = self.usage.as_dict()
        if len(self.siblings) > 1 and self.id in self.siblings:
            obj["branch"] = {
                "index": self.siblings.index(self.id),
                "count": len(self.siblings),
                "ids": list(self.siblings),
            }
        return obj

    @staticmethod
    def from_json(
        raw: str, id: str | None = None, parent_id: str | None = None, siblings: str = ""
    ) -> StoredMessage:
        """A stored record (version 1) read back, with its place in the tree when given
        (`siblings`: their ids, separated by spaces, as the store keeps them)."""
        obj = json.loads(raw)
        usage = obj.get("usage")
        return StoredMessage(
            role=obj["role"],
            content=obj["content"],
            created_at=obj["created_at"],
            status=obj.get("status", "complete"),
            model=obj.get("model"),
            agent=obj.get("agent"),
            generation_id=obj.get("generation_id"),
            usage=None
            if usage is None
            else Usage(usage["prompt_tokens"], usage["completion_tokens"]),
            id=id,
            parent_id=parent_id or None,
            siblings=tuple(siblings.split()),
        )


def model_message_of(raw: str) -> Message:
    """A stored record (version 1) as the model is sent it: its role and content. A turn reads
    up to HISTORY_TURNS pairs of them, and needs nothing else of a record (half the CPU of
    `StoredMessage.from_json`)."""
    obj = json.loads(raw)
    return Message(obj["role"], obj["content"])


def stored_size(raw: str) -> int:
    """Bytes a message takes as stored: its JSON in UTF-8, as Redis (and Lua's `#`) counts."""
    return len(raw.encode("utf-8", "surrogatepass"))


@dataclass(frozen=True, slots=True)
class OpenedTurn:
    history: list[Message]
    # What the conversation's messages take once the user's message is stored (and room was
    # made for the answer): with the answer's size, what it will hold when the turn ends.
    stored_bytes: int
    # The id of the user's message stored (unused when the turn stored none).
    message_id: str = ""
    title: str = ""  # the conversation's, as the turn opened
    updated_at: int = 0


@dataclass(frozen=True, slots=True)
class Page:
    """Some of a conversation's messages, oldest first, with its record."""

    summary: Summary
    messages: list[StoredMessage]
    # The oldest message shown, whose ancestors the next page holds; None when none are left.
    older: str | None


def title_of(message: str) -> str:
    """A conversation's first title: its first message on one line, at most TITLE_CHARS
    characters; a longer one is cut after a word when that keeps most of it, and ends with an
    ellipsis."""
    line = " ".join(message.split())
    if len(line) <= TITLE_CHARS:
        return line
    room = TITLE_CHARS - len(ELLIPSIS)
    space = line.rfind(" ", 0, room + 1)
    cut = line[:space] if space >= room // 2 else line[:room]
    return cut.rstrip() + ELLIPSIS

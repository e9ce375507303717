"""The Conversations API's logic: list a user's conversations a page at a time, rename one,
delete one with everything it owns. Combines the conversation store with the generations that
ran in it; knows no wire format beyond the JSON objects it returns.

Pages are walked by position, not by offset: a cursor names the last conversation a page
showed (its last update and id), and the next page starts just after it. Scores in the index
only grow, so a conversation that is updated moves to the front and never back down; hence
no conversation appears twice in one walk, and deleting or adding conversations shifts
nothing. See docs/api/conversations.md for the guarantee as clients read it.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
from collections.abc import Sequence
from typing import Any

from gateway.auth import Principal
from gateway.chat import ChatService
from gateway.errors import BadRequest, NotFound, excerpt
from gateway.events import Event, GenerationRef, is_final
from gateway.protocol import CONVERSATION_ID_RE
from gateway.store.conversations import ConversationStore, Position, Summary
from gateway.store.logs import GenerationLog

log = logging.getLogger("gateway.conversations")

DEFAULT_LIMIT = 20
MAX_LIMIT = 100
MAX_TITLE_CHARS = 200
BAD_LIMIT = f"'limit' must be an integer from 1 to {MAX_LIMIT}."
BAD_CURSOR = "'cursor' must be a 'next_cursor' value from an earlier page."
BAD_TITLE = f"'title' must be a string of 1-{MAX_TITLE_CHARS} characters."


def parse_limit(raw: str | None) -> int:
    if raw is None or raw == "":
        return DEFAULT_LIMIT
    if not raw.isascii() or not raw.isdigit() or not 1 <= int(raw) <= MAX_LIMIT:
        raise BadRequest(BAD_LIMIT)
    return int(raw)


def encode_cursor(position: Position) -> str:
    raw = json.dumps([position.updated, position.id], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> Position:
    """The position a cursor names; BadRequest for anything `encode_cursor` did not make."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        updated, conversation_id = json.loads(raw)
    except (ValueError, TypeError, binascii.Error):
        raise BadRequest(BAD_CURSOR) from None
    valid_time = isinstance(updated, int) and not isinstance(updated, bool) and updated >= 0
    valid_id = isinstance(conversation_id, str) and CONVERSATION_ID_RE.fullmatch(conversation_id)
    if not (valid_time and valid_id):
        raise BadRequest(BAD_CURSOR)
    return Position(updated, conversation_id)


def parse_title(body: dict[str, Any]) -> str:
    """The new title from a PATCH body: one line (whitespace runs become one space), trimmed,
    1-MAX_TITLE_CHARS characters. Other fields cannot be changed."""
    unknown = sorted(set(body) - {"title"})
    if unknown:
        raise BadRequest(f"Unknown field '{excerpt(unknown[0])}'; only 'title' can be changed.")
    title = body.get("title")
    if not isinstance(title, str):
        raise BadRequest(BAD_TITLE)
    title = " ".join(title.split())
    if not 1 <= len(title) <= MAX_TITLE_CHARS:
        raise BadRequest(BAD_TITLE)
    return title


def summary_object(summary: Summary, generation: dict[str, str] | None) -> dict[str, Any]:
    return {
        "id": summary.id,
        "title": summary.title,
        "project_id": summary.project_id,
        "created_at": summary.created_at,
        "updated_at": summary.updated_at,
        "generation": generation,
    }


class EndWatcher:
    """Follows a generation only to learn that it has ended: its final event is written to
    Redis (with its status and answer) before any follower receives it."""

    def __init__(self) -> None:
        self.ended = asyncio.Event()

    def __call__(self, ref: GenerationRef, event: Event) -> None:
        if is_final(event):
            self.ended.set()

    async def room(self) -> bool:
        return True  # it keeps nothing, so it never falls behind


class ConversationService:
    def __init__(
        self,
        chat: ChatService,
        store: ConversationStore,
        generation_log: GenerationLog,
        stop_timeout: float,
    ) -> None:
        """`stop_timeout`: how long a delete waits for a cancelled generation to end (its
        process may have died, which a follower notices once its lease lapses)."""
        self._chat = chat
        self._store = store
        self._log = generation_log
        self._stop_timeout = stop_timeout

    async def page(self, principal: Principal, limit: int, cursor: str | None) -> dict[str, Any]:
        """`limit` conversations after `cursor` (from the newest without one), and the cursor
        of the next page, None when this page is the last."""
        after = None if cursor is None else decode_cursor(cursor)
        found = await self._store.newest(principal.sub, limit + 1, after)
        shown = found[:limit]
        more = len(found) > limit
        generations = await self._generations(principal, [s.generation_id for _, s in shown])
        return {
            "data": [
                summary_object(summary, generation)
                for (_, summary), generation in zip(shown, generations, strict=True)
            ],
            "next_cursor": encode_cursor(shown[-1][0]) if more else None,
        }

    async def rename(
        self, principal: Principal, conversation_id: str, title: str
    ) -> dict[str, Any]:
        summary = await self._store.rename(principal.sub, conversation_id, title)
        (generation,) = await self._generations(principal, [summary.generation_id])
        return summary_object(summary, generation)

    async def delete(self, principal: Principal, conversation_id: str) -> None:
        """Delete the conversation, stop its running generations, then remove their records.

        The conversation goes first, in one step: from then on it is not found, its id may
        start a new conversation, and a cancelled generation's answer is refused by the store
        instead of bringing it back. Generation keys go last, once each generation has
        written its final event, so nothing is written after them."""
        generation_ids = await self._store.delete(principal.sub, conversation_id)
        statuses = await self._log.statuses(generation_ids)
        running = [
            g for g, status in zip(generation_ids, statuses, strict=True) if status == "running"
        ]
        await asyncio.gather(*(self._stop(principal, g) for g in running))
        await self._log.delete(generation_ids)

    async def _stop(self, principal: Principal, generation_id: str) -> None:
        """Cancel a generation wherever it runs and wait for its final event."""
        try:
            meta = await self._chat.locate(principal, generation_id)
        except NotFound:
            return  # its record expired meanwhile
        if meta.status != "running":
            return
        watcher = EndWatcher()
        follow = self._chat.attach(meta, 0, watcher)
        try:
            await self._chat.cancel(principal, generation_id)
            async with asyncio.timeout(self._stop_timeout):
                await watcher.ended.wait()
        except TimeoutError:
            log.warning("generation %s did not end after a cancel; removing it", generation_id)
        finally:
            follow.stop()

    async def _generations(
        self, principal: Principal, generation_ids: Sequence[str | None]
    ) -> list[dict[str, str] | None]:
        """`{id, status}` of each generation, None where there is none or its record expired.
        A generation still marked running is looked up in full, which ends it as interrupted
        if its process died."""
        known = [g for g in generation_ids if g is not None]
        statuses = dict(zip(known, await self._log.statuses(known), strict=True))
        for generation_id, status in statuses.items():
            if status == "running":
                try:
                    statuses[generation_id] = (
                        await self._chat.locate(principal, generation_id)
                    ).status
                except NotFound:
                    statuses[generation_id] = None
        return [
            None if g is None or statuses[g] is None else {"id": g, "status": str(statuses[g])}
            for g in generation_ids
        ]

"""The Conversations API's logic: list a user's conversations a page at a time, read one's
messages a page at a time, rename one, delete one with everything it owns. Combines the
conversation store with the generations that ran in it; knows no wire format beyond the JSON
objects it returns.

Pages are walked by position, not by offset: a cursor names the last conversation a page
showed (its last update and id), and the next page starts just after it. Scores in the index
only grow, so a conversation that is updated moves to the front and never back down; hence
no conversation appears twice in one walk, and deleting or adding conversations shifts
nothing. See docs/api/conversations.md for the guarantee as clients read it. A page of
messages ends at a message's number, which never changes (Conversations.page): new
messages and trimmed ones shift nothing either.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from gateway.config import Settings
from gateway.core.chat import ChatService, new_id
from gateway.core.ports import Conversations, GenerationLogs, UserLimits
from gateway.errors import BadRequest, NotFound, RateLimited, excerpt
from gateway.events import Event, GenerationRef, is_final
from gateway.limits import limits_for, size_text
from gateway.principal import Principal
from gateway.protocol import activity as activity_events
from gateway.protocol.frames import CONVERSATION_ID_RE
from gateway.protocol.wire import MESSAGE_ID_RE
from gateway.store.messages import Page, Position, Summary
from gateway.store.records import Status

log = logging.getLogger("gateway.core.conversations")

DEFAULT_LIMIT = 20
MAX_LIMIT = 100
# Messages per page of one conversation; CONVERSATION_PAGE_BYTES bounds their size too.
DEFAULT_MESSAGE_LIMIT = 100
MAX_MESSAGE_LIMIT = 1000
MAX_TITLE_CHARS = 200
BAD_CURSOR = "'cursor' must be a 'next_cursor' value from an earlier page."
BAD_TITLE = f"'title' must be a string of 1-{MAX_TITLE_CHARS} characters."


def bad_limit(maximum: int) -> str:
    return f"'limit' must be an integer from 1 to {maximum}."


def parse_limit(raw: str | None, default: int = DEFAULT_LIMIT, maximum: int = MAX_LIMIT) -> int:
    if raw is None or raw == "":
        return default
    if not raw.isascii() or not raw.isdigit() or not 1 <= int(raw) <= maximum:
        raise BadRequest(bad_limit(maximum))
    return int(raw)


def parse_message_limit(raw: str | None) -> int:
    return parse_limit(raw, DEFAULT_MESSAGE_LIMIT, MAX_MESSAGE_LIMIT)


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


def encode_message_cursor(oldest: str) -> str:
    """A page of messages ends at a message (see Conversations.page), whose id names it for
    good: the next page holds the messages above it on its path."""
    return base64.urlsafe_b64encode(json.dumps([oldest]).encode()).decode().rstrip("=")


def decode_message_cursor(cursor: str) -> str:
    """The message id a messages cursor names; BadRequest for anything else (a list's
    cursor). A cursor given before conversations were trees names a message's number, which
    its id holds (`msg_<n>`)."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        (before,) = json.loads(raw)
    except (ValueError, TypeError, binascii.Error):
        raise BadRequest(BAD_CURSOR) from None
    if isinstance(before, int) and not isinstance(before, bool) and 0 <= before < 2**53:
        return f"msg_{before}"
    if not isinstance(before, str) or not MESSAGE_ID_RE.fullmatch(before):
        raise BadRequest(BAD_CURSOR)
    return before


@dataclass(frozen=True, slots=True)
class Change:
    """What a PATCH changes: the title, the active branch, or both."""

    title: str | None
    active_message_id: str | None


def parse_change(body: dict[str, Any]) -> Change:
    """A PATCH body: `title` and `active_message_id`, at least one of them."""
    unknown = sorted(set(body) - {"title", "active_message_id"})
    if unknown:
        raise BadRequest(
            f"Unknown field '{excerpt(unknown[0])}'; only 'title' and 'active_message_id' "
            "can be changed."
        )
    if "active_message_id" not in body:
        return Change(parse_title(body), None)
    active = parse_message_id(body, "active_message_id")
    return Change(parse_title(body) if "title" in body else None, active)


def parse_message_id(body: dict[str, Any], name: str) -> str:
    value = body.get(name)
    if not isinstance(value, str) or not MESSAGE_ID_RE.fullmatch(value):
        raise BadRequest(f"'{name}' must be a message id such as 'msg_…'.")
    return value


def parse_fork(body: dict[str, Any]) -> str:
    """The message a fork copies the path down to: the body's only field."""
    unknown = sorted(set(body) - {"message_id"})
    if unknown:
        raise BadRequest(f"Unknown field '{excerpt(unknown[0])}'; a fork takes 'message_id'.")
    return parse_message_id(body, "message_id")


def parse_title(body: dict[str, Any]) -> str:
    """The new title from a PATCH body: one line (whitespace runs become one space), trimmed,
    1-MAX_TITLE_CHARS characters."""
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
        store: Conversations,
        generation_log: GenerationLogs,
        limits: UserLimits,
        stop_timeout: float,
        page_bytes: int,
        settings: Settings,
    ) -> None:
        """`stop_timeout`: how long a delete waits for a cancelled generation to end (its
        process may have died, which a follower notices once its lease lapses).
        `page_bytes`: CONVERSATION_PAGE_BYTES, the most message bytes one read returns."""
        self._chat = chat
        self._store = store
        self._log = generation_log
        self._limits = limits
        self._stop_timeout = stop_timeout
        self._page_bytes = page_bytes
        self._settings = settings

    async def view(
        self, principal: Principal, conversation_id: str, limit: int, cursor: str | None
    ) -> dict[str, Any]:
        """A page of the conversation's messages, oldest first: the newest ones without a
        cursor, else those before the page that gave it. At most `limit` messages and
        CONVERSATION_PAGE_BYTES of them, but one at least, so every message can be read."""
        before = None if cursor is None else decode_message_cursor(cursor)
        page = await self._page(principal, conversation_id, limit, before)
        generation = None
        generation_id = page.summary.generation_id
        if generation_id is not None:
            (status,) = await self._log.statuses([generation_id])
            if status == "running":
                status = await self._status(principal, generation_id)
                if status == "interrupted":
                    # Ending it has just stored its partial answer: read the page again.
                    page = await self._page(principal, conversation_id, limit, before)
            # None once its record expired: the messages say how it ended.
            generation = None if status is None else {"id": generation_id, "status": status}
        return {
            **summary_object(page.summary, generation),
            "messages": [m.as_dict() for m in page.messages],
            "next_cursor": None if page.older is None else encode_message_cursor(page.older),
        }

    async def latest_generation(
        self, principal: Principal, conversation_id: str
    ) -> dict[str, str] | None:
        """`{id, status}` of the conversation's latest generation, reading none of its
        messages; None when there is none. NotFound unless it is yours."""
        summary = await self._store.summary(principal.sub, conversation_id)
        (generation,) = await self._generations(principal, [summary.generation_id])
        return generation

    async def _page(
        self, principal: Principal, conversation_id: str, limit: int, before: str | None
    ) -> Page:
        return await self._store.page(
            principal.sub, conversation_id, limit, self._page_bytes, before
        )

    async def _status(self, principal: Principal, generation_id: str) -> Status | None:
        """A running generation's status, once it is ended as interrupted if its process
        died; None when its record is gone."""
        try:
            return (await self._chat.locate(principal, generation_id)).status
        except NotFound:
            return None

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

    async def change(
        self, principal: Principal, conversation_id: str, change: Change
    ) -> dict[str, Any]:
        """Switch the active branch to the newest descendant of `active_message_id`, then
        rename; the summary, with the new active leaf when it was switched."""
        leaf = None
        if change.active_message_id is not None:
            leaf = await self._store.switch(
                principal.sub, conversation_id, change.active_message_id
            )
        if change.title is not None:
            summary = await self._store.rename(principal.sub, conversation_id, change.title)
        else:
            summary = await self._store.summary(principal.sub, conversation_id)
        updated = activity_events.conversation_updated(
            conversation_id, summary.title, summary.updated_at
        )
        await self._chat.activity.publish(principal.sub, [updated])
        (generation,) = await self._generations(principal, [summary.generation_id])
        found = summary_object(summary, generation)
        return found if leaf is None else {**found, "active_message_id": leaf}

    async def fork(
        self, principal: Principal, conversation_id: str, message_id: str
    ) -> dict[str, Any]:
        """A new conversation of the caller holding the path down to the message (its ids
        kept), counted against their storage like any other; its summary."""
        sub = principal.sub
        limits = limits_for(principal, self._settings)
        new = new_id("conv")
        summary, stored = await self._store.copy_path(sub, conversation_id, message_id, new)
        held = await self._limits.stored_bytes(sub)
        if limits.storage_bytes and held + stored > limits.storage_bytes:
            await self._store.delete(sub, new)
            raise RateLimited(
                f"Your stored conversations take {size_text(held)} of the "
                f"{size_text(limits.storage_bytes)} you may keep, and the fork needs "
                f"{size_text(stored)} more. Delete conversations you no longer need to free "
                "space, then fork again."
            )
        await self._limits.count_stored(sub, new, stored, new=True)
        forked = activity_events.conversation_updated(new, summary.title, summary.updated_at)
        await self._chat.activity.publish(sub, [forked])
        return {**summary_object(summary, None), "active_message_id": message_id}

    async def delete_message(
        self, principal: Principal, conversation_id: str, message_id: str
    ) -> None:
        """Remove the message and everything below it; generations still answering one of
        them are cancelled (their answers are not stored), and the storage count follows."""
        sub = principal.sub
        stored, generation_ids = await self._store.delete_message(sub, conversation_id, message_id)
        await self._limits.count_stored(sub, conversation_id, stored)
        await asyncio.gather(*(self._stop(principal, g) for g in generation_ids))
        # The active branch may have moved: the user's other devices read the path again.
        summary = await self._store.summary(sub, conversation_id)
        updated = activity_events.conversation_updated(
            conversation_id, summary.title, summary.updated_at
        )
        await self._chat.activity.publish(sub, [updated])

    async def delete(self, principal: Principal, conversation_id: str) -> None:
        """Delete the conversation, stop its running generations, then remove their records.

        The conversation goes first, in one step: from then on it is not found, its id may
        start a new conversation, and a cancelled generation's answer is refused by the store
        instead of bringing it back. Generation keys go last, once each generation has
        written its final event, so nothing is written after them."""
        sub = principal.sub
        generation_ids = await self._store.delete(
            sub,
            conversation_id,
            also=lambda pipe: self._limits.queue_forget(pipe, sub, conversation_id),
        )
        statuses = await self._log.statuses(generation_ids)
        running = [
            g for g, status in zip(generation_ids, statuses, strict=True) if status == "running"
        ]
        await self._chat.activity.publish(
            sub, [activity_events.conversation_deleted(conversation_id)]
        )
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
        # Only the end matters: here, from the last event on (the final one, if it has ended;
        # the older ones could be far back in the log).
        local = self._chat.generations.get(generation_id)
        after = 0 if local is None else max(0, local.last_seq - 1)
        follow = self._chat.attach(meta, after, watcher)
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
                statuses[generation_id] = await self._status(principal, generation_id)
        return [
            None if g is None or statuses[g] is None else {"id": g, "status": str(statuses[g])}
            for g in generation_ids
        ]

"""Conversations and their messages in Redis.

A turn costs two round trips: one when it starts (claim the conversation, read its history,
append the user's message: one Lua script) and one when it ends (append the answer, trim,
refresh TTLs: one pipeline). Nothing is written per chunk.

Each user's conversations are indexed in a sorted set scored by last update (ms). Scores only
grow, so a conversation never moves down the list; pages walk it by position (see `Position`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import cast

from gateway.errors import NotFound
from gateway.store.client import StoreClient, StorePipeline
from gateway.store.conversation_scripts import (
    DELETE,
    OPEN_TURN,
    PAGE,
    PRUNE,
    RENAME,
    STORE_ANSWER,
)
from gateway.store.keys import Keys
from gateway.store.lua import Lua
from gateway.store.messages import (
    OpenedTurn,
    Page,
    Position,
    StoredMessage,
    Summary,
    stored_size,
    title_of,
)


class ConversationStore:
    def __init__(
        self,
        redis: StoreClient,
        keys: Keys,
        ttl: int,
        max_stored_turns: int,
        *,
        generation_retention: int | None = None,
        history_bytes: int = 2**62,
    ) -> None:
        """`generation_retention`: seconds after its start by which a generation has no keys
        left (see GenerationLog.retention); older ids are dropped from a conversation's list of
        generations. None keeps them all. `history_bytes`: the most bytes of stored messages a
        turn reads as its history (CONVERSATION_PAGE_BYTES), the newest message at least."""
        self._redis = redis
        self._keys = keys
        self._ttl = ttl
        self._history_bytes = history_bytes
        self._max_messages = 2 * max_stored_turns
        self._retention_ms = None if generation_retention is None else generation_retention * 1000
        self._open_turn = Lua(redis, OPEN_TURN)
        self._store_answer = Lua(redis, STORE_ANSWER)
        self._rename = Lua(redis, RENAME)
        self._page = Lua(redis, PAGE)
        self._delete = Lua(redis, DELETE)
        self._prune = Lua(redis, PRUNE)

    async def open_turn(
        self,
        owner: str,
        conversation_id: str,
        user_message: StoredMessage | None,
        history_messages: int,
        generation_id: str = "",
        project_id: str | None = None,
    ) -> OpenedTurn:
        """Claim or check the conversation, return its last `history_messages` messages (at
        most `history_bytes` of them, the newest one at least), and append the user's message,
        dropping the oldest beyond MAX_STORED_TURNS with room for the answer. Another user's
        conversation raises NotFound."""
        now = user_message.created_at if user_message else int(time.time() * 1000)
        forget_before = "" if self._retention_ms is None else now - self._retention_ms
        index = self._keys.user_conversations(owner)
        async with self._redis.pipeline(transaction=False) as pipe:
            await self._open_turn(
                keys=[
                    self._keys.conversation(owner, conversation_id),
                    self._keys.messages(owner, conversation_id),
                    self._keys.conversation_generations(owner, conversation_id),
                ],
                args=[
                    owner,
                    now,
                    self._ttl,
                    history_messages,
                    user_message.to_json() if user_message else "",
                    title_of(user_message.content) if user_message else "",
                    generation_id,
                    project_id or "",
                    forget_before,
                    self._max_messages,
                    self._history_bytes,
                ],
                client=pipe,
            )
            # GT: a score never goes down (clocks of instances may disagree), so a conversation
            # never moves below a position a client has already paged past.
            pipe.zadd(index, {conversation_id: now}, gt=True)
            pipe.expire(index, self._ttl)
            result, _, _ = await pipe.execute()
        if result[0] == 0:
            # The index is another round trip away (another slot): take back the entry the
            # pipeline added for an id this user does not own.
            await self._redis.zrem(index, conversation_id)
            raise NotFound(f"Conversation '{conversation_id}' was not found.")
        return OpenedTurn([StoredMessage.from_json(raw) for raw in result[2:]], int(result[1]))

    async def append_answer(self, owner: str, conversation_id: str, answer: StoredMessage) -> None:
        async with self._redis.pipeline(transaction=False) as pipe:
            self.queue_answer(pipe, owner, conversation_id, answer)
            await pipe.execute()

    def queue_answer(
        self, pipe: StorePipeline, owner: str, conversation_id: str, answer: StoredMessage
    ) -> int:
        """Add the commands that store the assistant's answer and keep the caps to `pipe`;
        returns the bytes the answer takes as stored. Nothing is stored if the conversation
        was deleted while the answer ran: a late answer must not bring it back."""
        raw = answer.to_json()
        self._store_answer.queue(
            pipe,
            [
                self._keys.conversation(owner, conversation_id),
                self._keys.messages(owner, conversation_id),
                self._keys.conversation_generations(owner, conversation_id),
            ],
            [
                owner,
                raw,
                self._max_messages,
                self._ttl,
                answer.created_at,
                answer.generation_id or "",
            ],
        )
        # XX: never adds back a deleted conversation.
        index = self._keys.user_conversations(owner)
        pipe.zadd(index, {conversation_id: answer.created_at}, xx=True, gt=True)
        return stored_size(raw)

    async def page(
        self, owner: str, conversation_id: str, limit: int, max_bytes: int, before: int | None
    ) -> Page:
        """The newest messages numbered below `before` (all when None): at most `limit` of
        them and `max_bytes` of stored JSON together, but at least one if any is left. Reads
        only those from Redis. NotFound unless `owner` owns the conversation."""
        result = await self._page(
            keys=[
                self._keys.conversation(owner, conversation_id),
                self._keys.messages(owner, conversation_id),
            ],
            args=[owner, "" if before is None else before, limit, max_bytes],
        )
        if result[0] == 0:
            raise NotFound(f"Conversation '{conversation_id}' was not found.")
        _, flat, older, *raw = result
        record = dict(zip(flat[::2], flat[1::2], strict=True))
        return Page(
            Summary.from_record(conversation_id, record),
            [StoredMessage.from_json(item) for item in raw],
            None if older < 0 else int(older),
        )

    async def summary(self, owner: str, conversation_id: str) -> Summary:
        """The conversation without its messages; NotFound unless `owner` owns it."""
        record = cast(
            dict[str, str],
            await self._redis.hgetall(self._keys.conversation(owner, conversation_id)),
        )
        if record.get("owner") != owner:
            raise NotFound(f"Conversation '{conversation_id}' was not found.")
        return Summary.from_record(conversation_id, record)

    async def messages(self, owner: str, conversation_id: str) -> list[StoredMessage]:
        """Every stored message of a conversation `owner` owns, oldest first, however many;
        NotFound otherwise. For tests and tools: a response reads a page."""
        found = await self.page(owner, conversation_id, 2**31, 2**62, None)
        return found.messages

    async def newest(
        self, owner: str, limit: int, after: Position | None = None
    ) -> list[tuple[Position, Summary]]:
        """Up to `limit` of the owner's conversations, most recently updated first, starting
        just after `after` in that order. Index entries whose conversation has expired or been
        deleted are skipped and removed."""
        found: list[tuple[Position, Summary]] = []
        while len(found) < limit:
            wanted = limit - len(found)
            batch = await self._index_after(owner, after, wanted)
            if not batch:
                break
            records = await self._records(owner, [position.id for position in batch])
            gone = []
            for position, record in zip(batch, records, strict=True):
                if record.get("owner") == owner:
                    found.append((position, Summary.from_record(position.id, record)))
                else:
                    gone.append(position)
            if gone:
                await self._forget(owner, gone)
            if len(batch) < wanted:
                break
            after = batch[-1]
        return found

    async def rename(self, owner: str, conversation_id: str, title: str) -> Summary:
        """Set the title; NotFound unless `owner` owns the conversation. The last update time
        and the TTL stay: a new title is not new activity."""
        raw = await self._rename(
            keys=[self._keys.conversation(owner, conversation_id)], args=[owner, title]
        )
        if not raw:
            raise NotFound(f"Conversation '{conversation_id}' was not found.")
        record = dict(zip(raw[::2], raw[1::2], strict=True))
        return Summary.from_record(conversation_id, record)

    async def delete(
        self,
        owner: str,
        conversation_id: str,
        also: Callable[[StorePipeline], None] | None = None,
    ) -> list[str]:
        """Delete the conversation: its record, its messages and its index entry, at once, so
        its id is free again. Returns the ids of its generations, whose keys the caller
        removes. NotFound unless `owner` owns it. `also` queues commands into the same round
        trip (the owner's storage count), whatever the answer."""
        async with self._redis.pipeline(transaction=False) as pipe:
            await self._delete(
                keys=[
                    self._keys.conversation(owner, conversation_id),
                    self._keys.messages(owner, conversation_id),
                    self._keys.conversation_generations(owner, conversation_id),
                ],
                args=[owner],
                client=pipe,
            )
            # Also drops an index entry left by a conversation that expired.
            pipe.zrem(self._keys.user_conversations(owner), conversation_id)
            if also is not None:
                also(pipe)
            result, *_ = await pipe.execute()
        if result[0] == 0:
            raise NotFound(f"Conversation '{conversation_id}' was not found.")
        return list(dict.fromkeys(gid for gid in result[1:] if gid))

    async def _index_after(self, owner: str, after: Position | None, count: int) -> list[Position]:
        """The next `count` positions of the owner's index after `after`, greatest first."""
        index = self._keys.user_conversations(owner)
        if after is None:
            rows = await self._redis.zrevrangebyscore(
                index, "+inf", "-inf", start=0, num=count, withscores=True
            )
            return _positions(cast(list[tuple[str, float]], rows))
        async with self._redis.pipeline(transaction=False) as pipe:
            # Conversations updated in the same millisecond as `after`: a handful at most.
            pipe.zrevrangebyscore(index, after.updated, after.updated, withscores=True)
            pipe.zrevrangebyscore(
                index, f"({after.updated}", "-inf", start=0, num=count, withscores=True
            )
            same, older = await pipe.execute()
        tied = [position for position in _positions(same) if position.id < after.id]
        return (tied + _positions(older))[:count]

    async def _records(self, owner: str, conversation_ids: Sequence[str]) -> list[dict[str, str]]:
        async with self._redis.pipeline(transaction=False) as pipe:
            for conversation_id in conversation_ids:
                pipe.hgetall(self._keys.conversation(owner, conversation_id))
            return cast(list[dict[str, str]], await pipe.execute())

    async def _forget(self, owner: str, positions: Sequence[Position]) -> None:
        args: list[str | int] = []
        for position in positions:
            args += [position.id, position.updated]
        await self._prune(keys=[self._keys.user_conversations(owner)], args=args)


def _positions(rows: list[tuple[str, float]]) -> list[Position]:
    return [Position(int(score), member) for member, score in rows]

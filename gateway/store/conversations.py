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

from gateway.errors import BadRequest, ConversationFull, NotFound
from gateway.store.client import StoreClient, StorePipeline
from gateway.store.conversation_scripts import DELETE, PRUNE, RENAME
from gateway.store.keys import Keys
from gateway.store.lua import Arg, Lua
from gateway.store.messages import (
    ACTIVE_LEAF,
    OpenedTurn,
    Page,
    Position,
    StoredMessage,
    Summary,
    answer_id,
    model_message_of,
    new_message_id,
    stored_size,
    title_of,
)
from gateway.store.tree_scripts import (
    CREATE_PATH,
    DELETE_MESSAGE,
    OPEN_TURN,
    PAGE,
    PATH,
    STORE_ANSWER,
    SWITCH,
)

# Most stored messages and answers or edits of one message, when not configured.
UNBOUNDED = 2**31


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
        max_stored_messages: int = UNBOUNDED,
        max_siblings: int = UNBOUNDED,
    ) -> None:
        """`generation_retention`: seconds after its start by which a generation has no keys
        left (see GenerationLog.retention); older ids are dropped from a conversation's list of
        generations. None keeps them all. `history_bytes`: the most bytes of stored messages a
        turn reads as its history (CONVERSATION_PAGE_BYTES), the newest message at least.
        `max_stored_messages`, `max_siblings`: MAX_STORED_MESSAGES and MAX_SIBLINGS."""
        self._redis = redis
        self._keys = keys
        self._ttl = ttl
        self._history_bytes = history_bytes
        self._max_messages = 2 * max_stored_turns
        self._max_stored = max_stored_messages
        self._max_siblings = max_siblings
        self._retention_ms = None if generation_retention is None else generation_retention * 1000
        # By hash in its pipeline too: the index's commands there do not need it first.
        self._open_turn = Lua(redis, OPEN_TURN, by_hash_in_pipelines=True)
        self._store_answer = Lua(redis, STORE_ANSWER)
        self._rename = Lua(redis, RENAME)
        self._page = Lua(redis, PAGE)
        self._delete = Lua(redis, DELETE)
        self._prune = Lua(redis, PRUNE)
        self._switch = Lua(redis, SWITCH)
        self._delete_message = Lua(redis, DELETE_MESSAGE)
        self._path = Lua(redis, PATH)
        self._create_path = Lua(redis, CREATE_PATH)

    async def open_turn(
        self,
        owner: str,
        conversation_id: str,
        user_message: StoredMessage | None,
        history_messages: int,
        generation_id: str = "",
        project_id: str | None = None,
        *,
        parent_id: str = ACTIVE_LEAF,
        regenerate: str | None = None,
    ) -> OpenedTurn:
        """Claim or check the conversation, return the path up to the message answered (its
        last `history_messages` messages, at most `history_bytes` of them, the newest one at
        least), and store the user's message below `parent_id` (the active leaf by default,
        '' for a new first message), dropping the oldest messages every branch shares beyond
        MAX_STORED_TURNS with room for the answer. `regenerate` names an answer to make
        again: the path is its question's, and no message is stored. The new message (else
        the question) becomes the active leaf. Another user's conversation raises NotFound,
        as does a named message that is not stored; a full conversation ConversationFull."""
        now = user_message.created_at if user_message else int(time.time() * 1000)
        forget_before = "" if self._retention_ms is None else now - self._retention_ms
        index = self._keys.user_conversations(owner)
        message_id = (user_message.id if user_message else None) or new_message_id()
        keys = self._keys.conversation_keys(owner, conversation_id)
        args: list[Arg] = [
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
            ACTIVE_LEAF if regenerate else parent_id,
            regenerate or "",
            message_id,
            self._max_stored,
            self._max_siblings,
        ]
        async with self._redis.pipeline(transaction=False) as pipe:
            self._open_turn.queue(pipe, keys, args)
            # GT: a score never goes down (clocks of instances may disagree), so a conversation
            # never moves below a position a client has already paged past.
            pipe.zadd(index, {conversation_id: now}, gt=True)
            pipe.expire(index, self._ttl)
            results = await pipe.execute(raise_on_error=False)
        result = await self._open_turn.settle(results, 0, keys, args)
        if result[0] != 1:
            # The index is another round trip away (another slot): take back the entry the
            # pipeline added, unless the conversation is there.
            if result[0] == 0:
                await self._redis.zrem(index, conversation_id)
            raise self._refusal(conversation_id, result)
        history = [model_message_of(raw) for raw in result[4:]]
        return OpenedTurn(history, int(result[1]), message_id, str(result[2]), int(result[3]))

    def _refusal(self, conversation_id: str, result: list[object]) -> Exception:
        code, detail = result[0], (result[1] if len(result) > 1 else "")
        if code == 2:
            return NotFound(f"Message '{detail}' was not found.")
        if code == 3:
            return BadRequest(
                f"'regenerate' must name an answer to a stored message; '{detail}' is not one."
            )
        if code == 4:
            return ConversationFull(
                f"That message already has {detail} answers or versions, the most one may "
                f"have (MAX_SIBLINGS is {self._max_siblings}); delete one first."
            )
        if code == 5:
            return ConversationFull(
                f"Conversation '{conversation_id}' holds {detail} messages in all its "
                f"branches (MAX_STORED_MESSAGES is {self._max_stored}); delete a branch or "
                "fork the conversation."
            )
        return NotFound(f"Conversation '{conversation_id}' was not found.")

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
        generation_id = answer.generation_id or ""
        self._store_answer.queue(
            pipe,
            self._keys.conversation_keys(owner, conversation_id),
            [
                owner,
                raw,
                self._max_messages,
                self._ttl,
                answer.created_at,
                generation_id,
                answer.id or (answer_id(generation_id) if generation_id else new_message_id()),
            ],
        )
        # XX: never adds back a deleted conversation.
        index = self._keys.user_conversations(owner)
        pipe.zadd(index, {conversation_id: answer.created_at}, xx=True, gt=True)
        return stored_size(raw)

    async def page(
        self, owner: str, conversation_id: str, limit: int, max_bytes: int, before: str | None
    ) -> Page:
        """The newest messages of the active path, or of the path above message `before`:
        at most `limit` of them and `max_bytes` of stored JSON together, but at least one if
        any is left. Reads only those from Redis. NotFound unless `owner` owns the
        conversation; no messages when `before` is no longer stored."""
        result = await self._page(
            keys=self._keys.conversation_keys(owner, conversation_id),
            args=[owner, before or "", limit, max_bytes],
        )
        if result[0] == 0:
            raise NotFound(f"Conversation '{conversation_id}' was not found.")
        if result[0] == 2:
            return Page(await self.summary(owner, conversation_id), [], None)
        _, flat, more, *items = result
        record = dict(zip(flat[::2], flat[1::2], strict=True))
        messages = [
            StoredMessage.from_json(raw, id, parent, siblings)
            for id, parent, siblings, raw in zip(*[iter(items)] * 4, strict=True)
        ]
        older = messages[0].id if more and messages else None
        return Page(Summary.from_record(conversation_id, record), messages, older)

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
        """Every message of the active path of a conversation `owner` owns, oldest first,
        however many; NotFound otherwise. For tests and tools: a response reads a page."""
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
                keys=self._keys.conversation_keys(owner, conversation_id),
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

    async def switch(self, owner: str, conversation_id: str, message_id: str) -> str:
        """Make the newest descendant of the message (following the most recently created
        child at each step) the active leaf, and return it. NotFound unless `owner` owns the
        conversation and it holds the message."""
        result = await self._switch(
            keys=self._keys.conversation_keys(owner, conversation_id), args=[owner, message_id]
        )
        self._check(conversation_id, message_id, result)
        return str(result[1])

    async def delete_message(
        self, owner: str, conversation_id: str, message_id: str
    ) -> tuple[int, list[str]]:
        """Remove the message and its descendants; the active leaf, if removed, moves to the
        newest remaining sibling's newest descendant, else to the parent. Returns the bytes
        the conversation holds after, and the generations still answering a removed message
        (their answers will not be stored). NotFound as for `switch`."""
        result = await self._delete_message(
            keys=self._keys.conversation_keys(owner, conversation_id), args=[owner, message_id]
        )
        self._check(conversation_id, message_id, result)
        return int(result[1]), [str(g) for g in result[2:]]

    async def copy_path(
        self, owner: str, conversation_id: str, message_id: str, new_id: str
    ) -> tuple[Summary, int]:
        """A new conversation `new_id` of `owner` holding the path from the first message down
        to `message_id`, with the same ids, title and project; its summary and stored bytes.
        NotFound as for `switch`."""
        found = await self._path(
            keys=self._keys.conversation_keys(owner, conversation_id),
            args=[owner, message_id, self._max_stored],
        )
        self._check(conversation_id, message_id, found)
        flat = found[1]
        record = dict(zip(flat[::2], flat[1::2], strict=True))
        now = int(time.time() * 1000)
        title, project = record.get("title", ""), record.get("project_id", "")
        index = self._keys.user_conversations(owner)
        async with self._redis.pipeline(transaction=False) as pipe:
            await self._create_path(
                keys=self._keys.conversation_keys(owner, new_id),
                args=[owner, now, self._ttl, title, project, *found[2:]],
                client=pipe,
            )
            pipe.zadd(index, {new_id: now}, gt=True)
            pipe.expire(index, self._ttl)
            created, _, _ = await pipe.execute()
        if created[0] != 1:
            raise NotFound(f"Conversation '{new_id}' was not found.")  # a new id: never
        return Summary(new_id, title, project or None, now, now, None), int(created[1])

    @staticmethod
    def _check(conversation_id: str, message_id: str, result: list[object]) -> None:
        if result[0] == 0:
            raise NotFound(f"Conversation '{conversation_id}' was not found.")
        if result[0] == 2:
            raise NotFound(f"Message '{message_id}' was not found.")

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

"""The per-user storage quota in Redis: what a user's conversations hold, counted next to the
user's other limits (another hash tag than the conversations), exact across trims and deletes,
lapsing with expired conversations; a refused turn takes nothing."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from redis.asyncio import Redis

from gateway.config import Limits
from gateway.limits import Admission, Refusal, Turn
from gateway.store.client import StoreClient
from gateway.store.conversations import ConversationStore
from gateway.store.keys import Keys
from gateway.store.limits import LimitStore
from gateway.store.messages import StoredMessage, stored_size
from tests.support.redis import RedisServer

TTL = 600


@dataclass
class Account:
    """One user's turns, taken the way the chat service takes them: admit (counts the
    message), open the turn (the conversation's bytes), store the answer and count the
    conversation in one pipeline."""

    redis: StoreClient
    keys: Keys
    conversations: ConversationStore
    limits: LimitStore
    sub: str = "alice"

    @classmethod
    def on(cls, redis: StoreClient, max_stored_turns: int = 100) -> Account:
        keys = Keys(f"s{uuid.uuid4().hex[:8]}:")
        conversations = ConversationStore(redis, keys, TTL, max_stored_turns)
        limits = LimitStore(redis, keys, generation_slot_ttl=60, storage_ttl=TTL)
        return cls(redis, keys, conversations, limits)

    async def admit(self, conversation_id: str, message: str, quota: int = 0) -> Admission:
        taken = await self.try_admit(conversation_id, message, quota)
        assert isinstance(taken, Admission), taken
        return taken

    async def try_admit(
        self, conversation_id: str, message: str, quota: int = 0
    ) -> Admission | Refusal:
        question = StoredMessage("user", message, 1)
        turn = Turn(f"gen_{uuid.uuid4().hex}", conversation_id, 0, stored_size(question.to_json()))
        limits = Limits(requests_per_minute=0, concurrent_generations=0, storage_bytes=quota)
        return await self.limits.admit(self.sub, limits, turn, self._running)

    async def turn(self, conversation_id: str, message: str, answer: str, quota: int = 0) -> None:
        admission = await self.admit(conversation_id, message, quota)
        opened = await self.conversations.open_turn(
            self.sub, conversation_id, StoredMessage("user", message, 1), 0
        )
        async with self.redis.pipeline(transaction=False) as pipe:
            size = self.conversations.queue_answer(
                pipe, self.sub, conversation_id, StoredMessage("assistant", answer, 2)
            )
            self.limits.queue_release(pipe, admission, None)
            self.limits.queue_stored(pipe, self.sub, conversation_id, opened.stored_bytes + size)
            await pipe.execute()

    async def delete(self, conversation_id: str) -> None:
        await self.conversations.delete(
            self.sub,
            conversation_id,
            also=lambda pipe: self.limits.queue_forget(pipe, self.sub, conversation_id),
        )

    async def counted(self) -> int:
        return await self.limits.stored_bytes(self.sub)

    async def held(self, *conversation_ids: str) -> int:
        """What the conversations' messages really take, byte for byte."""
        total = 0
        for conversation_id in conversation_ids:
            raw = await self.redis.hvals(self.keys.nodes(self.sub, conversation_id))
            total += sum(stored_size(str(item)) for item in raw)
        return total

    async def _running(self, generation_id: str) -> bool:
        return False


@pytest.fixture
async def redis(redis_server: RedisServer) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_server.url, decode_responses=True)
    yield client
    await client.aclose()


async def turns_count_every_stored_byte_across_trims(account: Account) -> None:
    """Shared with the Redis Cluster tests."""
    for n in range(5):  # two turns are kept: three are trimmed away
        await account.turn("trip", f"question {n} " + "é" * n * 100, f"answer {n}")
        assert await account.counted() == await account.held("trip")
    await account.turn("notes", "another conversation", "ok")
    assert await account.counted() == await account.held("trip", "notes")
    record = await account.redis.hget(account.keys.conversation("alice", "trip"), "bytes")
    assert int(record or 0) == await account.held("trip")


async def a_turn_over_the_quota_takes_nothing_until_space_is_freed(account: Account) -> None:
    """Shared with the Redis Cluster tests."""
    await account.turn("big", "x" * 500, "ok")
    stored = await account.counted()
    message = "y" * 300
    needed = stored_size(StoredMessage("user", message, 1).to_json())
    refused = await account.try_admit("next", message, quota=stored + needed - 1)
    assert isinstance(refused, Refusal) and refused.limit == "storage_bytes"
    assert (refused.stored, refused.needed, refused.retry_after) == (stored, needed, None)
    assert await account.counted() == stored  # a refused turn counts nothing
    await account.delete("big")
    assert await account.counted() == 0
    await account.turn("next", message, "ok", quota=stored + needed - 1)
    assert await account.counted() == await account.held("next")


async def test_turns_count_every_stored_byte_across_trims(redis: Redis) -> None:
    await turns_count_every_stored_byte_across_trims(Account.on(redis, max_stored_turns=2))


async def test_a_turn_over_the_quota_takes_nothing_until_space_is_freed(redis: Redis) -> None:
    await a_turn_over_the_quota_takes_nothing_until_space_is_freed(Account.on(redis))


async def test_a_turn_that_never_starts_gives_its_bytes_back(redis: Redis) -> None:
    account = Account.on(redis)
    await account.turn("kept", "hello", "hi")
    stored = await account.counted()
    admission = await account.admit("kept", "a message refused later")
    assert await account.counted() > stored  # counted at once, before the answer
    await account.limits.release(admission)
    assert await account.counted() == stored
    await account.limits.release(await account.admit("never-made", "someone else's id"))
    assert not await redis.hexists(account.keys.user_storage("alice"), "never-made")
    assert await account.counted() == stored


async def test_an_expired_conversation_stops_counting_at_the_next_turn(redis: Redis) -> None:
    account = Account.on(redis)
    await account.turn("old", "x" * 1000, "ok")
    await account.turn("new", "hello", "hi")
    # As if CONVERSATION_TTL had passed since "old" was last used: its count lapses now.
    await redis.zadd(account.keys.user_storage_lapses("alice"), {"old": 0})
    await redis.delete(
        *(account.keys.conversation("alice", "old"), account.keys.messages("alice", "old"))
    )
    await account.admit("new", "again")
    held = await account.held("new")
    assert held < await account.counted() < held + 200  # "new", and its message counted early
    assert not await redis.hexists(account.keys.user_storage("alice"), "old")


async def test_a_conversation_stored_before_bytes_were_counted_is_counted_once(
    redis: Redis,
) -> None:
    account = Account.on(redis, max_stored_turns=2)
    await account.turn("legacy", "first", "one")
    await account.turn("legacy", "second", "two")
    await redis.hdel(account.keys.conversation("alice", "legacy"), "bytes")
    await account.turn("legacy", "third", "three")  # trims the first turn
    assert await account.counted() == await account.held("legacy")


async def test_an_answer_that_ends_after_a_delete_is_not_counted(redis: Redis) -> None:
    account = Account.on(redis)
    admission = await account.admit("gone", "question")
    opened = await account.conversations.open_turn(
        "alice", "gone", StoredMessage("user", "question", 1), 0, "gen_late"
    )
    await account.delete("gone")
    async with redis.pipeline(transaction=False) as pipe:
        answer = StoredMessage("assistant", "late", 2, generation_id="gen_late")
        size = account.conversations.queue_answer(pipe, "alice", "gone", answer)
        account.limits.queue_release(pipe, admission, None)
        account.limits.queue_stored(pipe, "alice", "gone", opened.stored_bytes + size)
        await pipe.execute()
    assert await account.counted() == 0


async def test_deleting_a_branch_and_forking_count_what_is_held(redis: Redis) -> None:
    account = Account.on(redis)
    await account.turn("tree", "q1", "a1")
    await account.turn("tree", "q2", "a2")
    _, a1, q2, _ = await account.conversations.messages("alice", "tree")
    assert a1.id is not None and q2.id is not None
    stored, running = await account.conversations.delete_message("alice", "tree", q2.id)
    assert running == []
    await account.limits.count_stored("alice", "tree", stored)
    assert await account.counted() == await account.held("tree") == stored
    _, size = await account.conversations.copy_path("alice", "tree", a1.id, "copy")
    await account.limits.count_stored("alice", "copy", size, new=True)
    assert await account.counted() == await account.held("tree", "copy") == 2 * stored

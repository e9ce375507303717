"""Conversations and their messages in Redis.

A turn costs two round trips: one when it starts (claim the conversation, read its history,
append the user's message: one Lua script) and one when it ends (append the answer, trim,
refresh TTLs: one pipeline). Nothing is written per chunk.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from gateway.errors import NotFound
from gateway.events import Message, Usage
from gateway.store.keys import Keys

MessageStatus = Literal["complete", "incomplete", "cancelled"]
TITLE_CHARS = 80

# KEYS: conversation, messages.
# ARGV: owner, now_ms, ttl, history_messages, user_message, title, generation_id, project_id.
# Returns {0} when another user owns the conversation, else {1, <json message>...} (history).
_OPEN_TURN = """
local owner = redis.call('HGET', KEYS[1], 'owner')
if owner and owner ~= ARGV[1] then return {0} end
if not owner then
  redis.call('HSET', KEYS[1], 'owner', ARGV[1], 'title', ARGV[6],
             'created_at', ARGV[2], 'updated_at', ARGV[2])
end
local n = tonumber(ARGV[4])
local history = {}
if n > 0 then history = redis.call('LRANGE', KEYS[2], -n, -1) end
if ARGV[8] ~= '' then redis.call('HSET', KEYS[1], 'project_id', ARGV[8]) end
redis.call('RPUSH', KEYS[2], ARGV[5])
redis.call('HSET', KEYS[1], 'updated_at', ARGV[2], 'generation', ARGV[7])
redis.call('EXPIRE', KEYS[1], ARGV[3])
redis.call('EXPIRE', KEYS[2], ARGV[3])
return {1, unpack(history)}
"""


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

    def to_json(self) -> str:
        return json.dumps(self.as_dict(), ensure_ascii=False, separators=(",", ":"))

    def as_dict(self) -> dict[str, Any]:
        obj: dict[str, Any] = {
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
        return obj

    @staticmethod
    def from_json(raw: str) -> StoredMessage:
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
        )

    def as_model_message(self) -> Message:
        return Message(self.role, self.content)


class ConversationStore:
    def __init__(self, redis: Redis, keys: Keys, ttl: int, max_stored_turns: int) -> None:
        self._redis = redis
        self._keys = keys
        self._ttl = ttl
        self._max_messages = 2 * max_stored_turns
        self._open_turn = redis.register_script(_OPEN_TURN)

    async def open_turn(
        self,
        owner: str,
        conversation_id: str,
        user_message: StoredMessage,
        history_messages: int,
        generation_id: str = "",
        project_id: str | None = None,
    ) -> list[StoredMessage]:
        """Claim or check the conversation, return its last `history_messages` messages, and
        append the user's message. Another user's conversation raises NotFound."""
        async with self._redis.pipeline(transaction=False) as pipe:
            await self._open_turn(
                keys=[
                    self._keys.conversation(conversation_id),
                    self._keys.messages(conversation_id),
                ],
                args=[
                    owner,
                    user_message.created_at,
                    self._ttl,
                    history_messages,
                    user_message.to_json(),
                    user_message.content[:TITLE_CHARS],
                    generation_id,
                    project_id or "",
                ],
                client=pipe,
            )
            pipe.zadd(
                self._keys.user_conversations(owner), {conversation_id: user_message.created_at}
            )
            pipe.expire(self._keys.user_conversations(owner), self._ttl)
            result, _, _ = await pipe.execute()
        if result[0] == 0:
            raise NotFound(f"Conversation '{conversation_id}' was not found.")
        return [StoredMessage.from_json(raw) for raw in result[1:]]

    async def append_answer(self, owner: str, conversation_id: str, answer: StoredMessage) -> None:
        async with self._redis.pipeline(transaction=False) as pipe:
            self.queue_answer(pipe, owner, conversation_id, answer)
            await pipe.execute()

    def queue_answer(
        self, pipe: Pipeline, owner: str, conversation_id: str, answer: StoredMessage
    ) -> None:
        """Add the commands that store the assistant's answer and keep the caps to `pipe`."""
        messages = self._keys.messages(conversation_id)
        conversation = self._keys.conversation(conversation_id)
        pipe.rpush(messages, answer.to_json())
        pipe.ltrim(messages, -self._max_messages, -1)
        pipe.expire(messages, self._ttl)
        pipe.hset(conversation, "updated_at", answer.created_at)
        pipe.expire(conversation, self._ttl)
        pipe.zadd(self._keys.user_conversations(owner), {conversation_id: answer.created_at})

    async def view(
        self, owner: str, conversation_id: str
    ) -> tuple[dict[str, str], list[StoredMessage]]:
        """The conversation's record and all its messages; NotFound unless `owner` owns it."""
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(self._keys.conversation(conversation_id))
            pipe.lrange(self._keys.messages(conversation_id), 0, -1)
            record, raw = await pipe.execute()
        if record.get("owner") != owner:
            raise NotFound(f"Conversation '{conversation_id}' was not found.")
        return record, [StoredMessage.from_json(item) for item in raw]

    async def messages(self, owner: str, conversation_id: str) -> list[StoredMessage]:
        """All stored messages of a conversation `owner` owns; NotFound otherwise."""
        return (await self.view(owner, conversation_id))[1]

"""The roles the core needs from the store and the models, as small interfaces.

The core (chat, generations, conversations) runs on these, so importing it loads no Redis
client and no upstream SDK; `gateway.services` hands it the concrete classes of
`gateway.store` and `gateway.llm`, and mypy checks there that they fit. Each interface lists
only the calls the core makes.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, Protocol

from gateway.config import Limits
from gateway.events import Event
from gateway.limits import Admission, Refusal, Turn
from gateway.llm.base import ChatModel
from gateway.protocol.activity import ActivityEntry, ActivityEvent
from gateway.store.messages import OpenedTurn, Page, Position, StoredMessage, Summary
from gateway.store.records import GenerationMeta, Persisted, Status, Trouble

# A pipeline of the store's client: the core hands it from one store call to another and
# never queues a command on it itself.
Pipeline = Any
ExtraCommands = Callable[[Pipeline], object]


class Models(Protocol):
    def get(self, name: str) -> ChatModel | None: ...
    def names(self) -> list[str]: ...


class Conversations(Protocol):
    async def open_turn(
        self,
        owner: str,
        conversation_id: str,
        user_message: StoredMessage | None,
        history_messages: int,
        generation_id: str = "",
        project_id: str | None = None,
        *,
        parent_id: str = ...,
        regenerate: str | None = None,
    ) -> OpenedTurn: ...
    async def append_answer(
        self, owner: str, conversation_id: str, answer: StoredMessage
    ) -> None: ...
    def queue_answer(
        self, pipe: Pipeline, owner: str, conversation_id: str, answer: StoredMessage
    ) -> int: ...
    async def page(
        self, owner: str, conversation_id: str, limit: int, max_bytes: int, before: str | None
    ) -> Page: ...
    async def summary(self, owner: str, conversation_id: str) -> Summary: ...
    async def newest(
        self, owner: str, limit: int, after: Position | None = None
    ) -> list[tuple[Position, Summary]]: ...
    async def rename(self, owner: str, conversation_id: str, title: str) -> Summary: ...
    async def delete(
        self, owner: str, conversation_id: str, also: Callable[[Pipeline], None] | None = None
    ) -> list[str]: ...
    async def switch(self, owner: str, conversation_id: str, message_id: str) -> str: ...
    async def delete_message(
        self, owner: str, conversation_id: str, message_id: str
    ) -> tuple[int, list[str]]: ...
    async def copy_path(
        self, owner: str, conversation_id: str, message_id: str, new_id: str
    ) -> tuple[Summary, int]: ...


class UserLimits(Protocol):
    async def admit(
        self,
        sub: str,
        limits: Limits,
        turn: Turn,
        still_running: Callable[[str], Awaitable[bool]],
        also: Callable[[Pipeline], None] | None = None,
    ) -> Admission | Refusal: ...
    def queue_release(
        self, pipe: Pipeline, admission: Admission, used_tokens: int | None
    ) -> None: ...
    async def release(self, admission: Admission) -> None: ...
    def queue_stored(
        self, pipe: Pipeline, sub: str, conversation_id: str, stored_bytes: int
    ) -> None: ...
    def queue_forget(self, pipe: Pipeline, sub: str, conversation_id: str) -> None: ...
    async def count_stored(
        self, sub: str, conversation_id: str, stored_bytes: int, *, new: bool = False
    ) -> None: ...
    async def stored_bytes(self, sub: str) -> int: ...


class GenerationLogs(Protocol):
    """The generations' records and event logs, leases, cancels and idempotency keys."""

    def queue_create(self, pipe: Pipeline, meta: GenerationMeta) -> None: ...
    async def meta(self, generation_id: str) -> GenerationMeta | None: ...
    async def statuses(self, generation_ids: Sequence[str]) -> list[Status | None]: ...
    async def delete(self, generation_ids: Sequence[str]) -> None: ...
    async def read_after(self, generation_id: str, after: int, count: int = ...) -> list[Event]: ...
    async def last_event(self, generation_id: str) -> Event | None: ...
    async def renew(self, generation_ids: Sequence[str]) -> dict[str, str]: ...
    async def request_cancel(self, generation_id: str) -> None: ...
    def cancel_requests(self) -> AsyncIterator[str]: ...
    async def interrupt_if_abandoned(self, generation_id: str) -> int: ...
    async def discard(
        self, generation_id: str, sub: str | None = None, key: str | None = None
    ) -> None: ...
    async def idempotent(self, sub: str, key: str) -> str | None: ...
    async def claim_idempotency(self, sub: str, key: str, generation_id: str, ttl: int) -> str: ...


class LogWriting(Protocol):
    """Batched, ordered appends to the logs, buffered while the store fails."""

    on_trouble: Callable[[str, Trouble], None]
    on_written: Callable[[str, int], None]

    def add(self, generation_id: str, event: Event) -> None: ...
    def forget(self, generation_id: str) -> None: ...
    def give_up(self, generation_id: str) -> None: ...
    async def finish(
        self,
        generation_id: str,
        final: Event,
        status: Status,
        extra: ExtraCommands | None = None,
        again: ExtraCommands | None = None,
    ) -> Persisted: ...
    def unstored_ends(self) -> set[str]: ...


class ActivityStore(Protocol):
    """Each user's activity stream, and what the user runs."""

    def queue_publish(self, pipe: Pipeline, sub: str, events: Sequence[ActivityEvent]) -> None: ...
    async def publish(
        self,
        sub: str,
        events: Sequence[ActivityEvent],
        also: Callable[[Pipeline], None] | None = None,
    ) -> None: ...
    async def after(self, sub: str, after: str) -> list[ActivityEntry]: ...
    async def snapshot(self, sub: str) -> tuple[str, list[tuple[str, str, int]]]: ...

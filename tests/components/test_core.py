"""The core without HTTP: turns started, followed from memory or from another instance's log,
retried with an idempotency key, cancelled, and the conversations they leave, on the
session's Redis with the echo model. Each instance is opened by `open_services`, as the app
opens it; nothing of ours is replaced."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from typing import Any, cast

import pytest

from gateway.config import Settings
from gateway.core.conversations import Change
from gateway.core.generations import LocalFollow, RemoteFollow
from gateway.errors import NotFound
from gateway.events import Chunk, Done, Event, Failed, GenerationRef, Start, is_final
from gateway.principal import Principal
from gateway.protocol.frames import CompletionRequest
from gateway.services import Services, open_services
from gateway.store.keys import Keys
from gateway.store.records import GenerationMeta

WITHIN = 10.0  # seconds for a short answer to end, on a loaded machine


@dataclass
class Collector:
    """A subscriber that keeps every event; it always has room."""

    events: list[Event] = field(default_factory=list)
    first_chunk: asyncio.Event = field(default_factory=asyncio.Event)
    ended: asyncio.Event = field(default_factory=asyncio.Event)

    def __call__(self, ref: GenerationRef, event: Event) -> None:
        self.events.append(event)
        if isinstance(event, Chunk):
            self.first_chunk.set()
        if is_final(event):
            self.ended.set()

    async def room(self) -> bool:
        return True

    async def until_ended(self) -> list[Event]:
        await asyncio.wait_for(self.ended.wait(), WITHIN)
        return self.events

    @property
    def text(self) -> str:
        return "".join(e.content for e in self.events if isinstance(e, Chunk))


def principal(sub: str = "alice") -> Principal:
    return Principal(sub, int(time.time()) + 600, {"sub": sub})


def turn(message: str, conversation_id: str | None = None, **fields: Any) -> CompletionRequest:
    return CompletionRequest(message, model="echo", conversation_id=conversation_id, **fields)


def words(count: int) -> str:
    return " ".join(f"w{i}" for i in range(count))


@pytest.fixture
def core_settings(settings: Settings) -> Settings:
    # A few milliseconds a word: a long answer is still running when the test acts on it.
    return replace(settings, echo_delay_ms=5)


@pytest.fixture
async def core(core_settings: Settings) -> AsyncIterator[Services]:
    async with open_services(core_settings) as services:
        yield services


@pytest.fixture
async def other(core_settings: Settings) -> AsyncIterator[Services]:
    """A second instance of the same deployment: the same Redis and key prefix."""
    async with open_services(core_settings) as services:
        yield services


async def test_services_close_at_once_however_far_their_tasks_got(
    core_settings: Settings,
) -> None:
    """Closing stops the background tasks wherever it finds them: here after each of the
    first turns of the event loop, while the cancel listener connects and subscribes. A
    cancel that lands as a redis-py command's write completes is lost on Python 3.11 (its
    wait_for returns instead), and the closing waited for that task until its own deadline,
    17 s with the default drain."""
    for turns in range(24):
        async with open_services(core_settings):
            for _ in range(turns):
                await asyncio.sleep(0)  # one turn of the loop: the tasks take a step
            closing = time.monotonic()
        assert time.monotonic() - closing < 2.0, f"closing after {turns} turns was slow"


async def test_a_started_turn_publishes_numbered_events_and_stores_the_answer(
    core: Services,
) -> None:
    sink = Collector()
    follow = await core.chat.start(principal(), turn("one two three", "c-start"), sink)
    events = await sink.until_ended()
    assert isinstance(events[0], Start) and events[0].model == "echo"
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert sink.text == "one two three"
    assert isinstance(events[-1], Done) and events[-1].finish_reason == "stop"
    # The answer is stored before the final event is published.
    view = await core.conversations.view(principal(), "c-start", 10, None)
    messages = [(m["role"], m["content"], m["status"]) for m in view["messages"]]
    assert messages == [
        ("user", "one two three", "complete"),
        ("assistant", "one two three", "complete"),
    ]
    assert view["generation"] == {"id": follow.generation_id, "status": "complete"}


async def test_another_instance_follows_a_running_generation_from_its_log(
    core: Services, other: Services
) -> None:
    owner = Collector()
    follow = await core.chat.start(principal(), turn(words(60)), owner)
    await asyncio.wait_for(owner.first_chunk.wait(), WITHIN)
    meta = await other.chat.locate(principal(), follow.generation_id)
    assert meta.status == "running"
    follower, late = Collector(), Collector()
    followed = other.chat.attach(meta, 0, follower)
    assert isinstance(followed, RemoteFollow)  # not running there: read from Redis
    other.chat.attach(meta, 5, late)
    events = await owner.until_ended()
    assert await follower.until_ended() == events
    assert await late.until_ended() == events[5:]
    assert follower.text == words(60)


async def test_a_resume_on_the_running_instance_replays_from_memory(core: Services) -> None:
    owner = Collector()
    follow = await core.chat.start(principal(), turn(words(60)), owner)
    await asyncio.wait_for(owner.first_chunk.wait(), WITHIN)
    meta = await core.chat.locate(principal(), follow.generation_id)
    resumed = Collector()
    assert isinstance(core.chat.attach(meta, 2, resumed), LocalFollow)
    events = await owner.until_ended()
    assert await resumed.until_ended() == events[2:]


async def test_a_repeated_idempotency_key_attaches_to_the_generation_it_started(
    core: Services, other: Services
) -> None:
    first, again = Collector(), Collector()
    request = turn("only once", "c-idem", idempotency_key=f"k-{uuid.uuid4().hex}")
    started = await core.chat.start(principal(), request, first)
    retried = await other.chat.start(principal(), request, again)
    assert retried.generation_id == started.generation_id
    assert await again.until_ended() == await first.until_ended()
    stored = await core.conversations.view(principal(), "c-idem", 10, None)
    assert [m["content"] for m in stored["messages"]] == ["only once", "only once"]


async def test_a_cancel_from_another_instance_stops_the_generation_where_it_runs(
    core: Services, other: Services
) -> None:
    owner = Collector()
    follow = await core.chat.start(principal(), turn(words(2000), "c-cancel"), owner)
    await asyncio.wait_for(owner.first_chunk.wait(), WITHIN)
    assert await other.chat.cancel(principal(), follow.generation_id) == "running"
    events = await owner.until_ended()
    assert isinstance(events[-1], Done) and events[-1].finish_reason == "cancelled"
    assert len(owner.text.split()) < 2000
    stored = await core.conversations.view(principal(), "c-cancel", 10, None)
    assert stored["messages"][-1]["status"] == "cancelled"
    assert stored["messages"][-1]["content"] == owner.text
    # Idempotent: a second cancel, from either instance, finds it ended.
    assert await other.chat.cancel(principal(), follow.generation_id) == "cancelled"
    assert await core.chat.cancel(principal(), follow.generation_id) == "cancelled"


async def test_a_generation_is_not_found_by_another_user(core: Services) -> None:
    sink = Collector()
    follow = await core.chat.start(principal(), turn("mine"), sink)
    await sink.until_ended()
    with pytest.raises(NotFound):
        await core.chat.locate(principal("mallory"), follow.generation_id)
    with pytest.raises(NotFound):
        await core.chat.cancel(principal("mallory"), follow.generation_id)


async def test_conversations_are_listed_newest_first_renamed_and_deleted(core: Services) -> None:
    user = principal(f"u-{uuid.uuid4().hex[:8]}")
    for conversation_id in ("first", "second"):
        sink = Collector()
        await core.chat.start(user, turn(f"hello {conversation_id}", conversation_id), sink)
        await sink.until_ended()
    listed = await core.conversations.page(user, 10, None)
    assert [c["id"] for c in listed["data"]] == ["second", "first"]
    assert listed["next_cursor"] is None
    assert all(c["generation"]["status"] == "complete" for c in listed["data"])
    one = await core.conversations.page(user, 1, None)
    rest = await core.conversations.page(user, 1, one["next_cursor"])
    assert [c["id"] for c in one["data"] + rest["data"]] == ["second", "first"]

    renamed = await core.conversations.change(user, "first", Change("Greetings", None))
    assert renamed["title"] == "Greetings"
    with pytest.raises(NotFound):
        await core.conversations.view(principal("mallory"), "first", 10, None)

    await core.conversations.delete(user, "first")
    with pytest.raises(NotFound):
        await core.conversations.view(user, "first", 10, None)
    assert [c["id"] for c in (await core.conversations.page(user, 10, None))["data"]] == ["second"]


async def test_deleting_a_conversation_stops_its_running_generation(
    core: Services, other: Services
) -> None:
    """Deleted on another instance while the answer runs here: the generation is cancelled,
    its record removed, and the conversation is not brought back by its answer."""
    owner = Collector()
    follow = await core.chat.start(principal(), turn(words(2000), "c-delete"), owner)
    await asyncio.wait_for(owner.first_chunk.wait(), WITHIN)
    await other.conversations.delete(principal(), "c-delete")
    events = await owner.until_ended()
    assert isinstance(events[-1], Done) and events[-1].finish_reason == "cancelled"
    with pytest.raises(NotFound):
        await core.chat.locate(principal(), follow.generation_id)
    with pytest.raises(NotFound):
        await core.conversations.view(principal(), "c-delete", 10, None)


async def test_a_follower_of_an_unreadable_log_ends_with_an_error_instead_of_waiting(
    core: Services, core_settings: Settings
) -> None:
    """A record this gateway cannot read (say, from a newer version) ends the follower with a
    retryable `internal` error numbered after what it delivered; before, its task died and
    the client waited for ever."""
    generation_id = f"gen_{uuid.uuid4().hex[:12]}"
    meta = GenerationMeta(generation_id, "alice", "c-unreadable", None, "echo", "chat")
    keys = Keys(core_settings.redis_prefix)
    await core.redis.hset(keys.generation(generation_id), mapping=cast(Any, meta.fields()))
    await core.redis.xadd(keys.events(generation_id), {"e": '{"v":99}'}, id="1-0")
    sink = Collector()
    core.chat.attach(meta, 0, sink)
    [event] = await sink.until_ended()
    assert isinstance(event, Failed) and event.seq == 1
    assert (event.code, event.retryable) == ("internal", True)

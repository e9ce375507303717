"""The conversation store and the embedded Redis, against real redis-server processes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis as sync_redis
from redis.asyncio import Redis
from redis.crc import key_slot

from gateway.config import Settings
from gateway.errors import NotFound
from gateway.events import Chunk, Done, Failed, Start, Usage
from gateway.store.conversations import ConversationStore
from gateway.store.embedded import EmbeddedRedis, EmbeddedRedisError
from gateway.store.keys import Keys, tag
from gateway.store.logs import GenerationLog
from gateway.store.messages import StoredMessage, title_of
from gateway.store.records import GenerationMeta
from tests.support.redis import RedisServer


def message(role: str, content: str, at: int = 1) -> StoredMessage:
    return StoredMessage(role, content, at)  # type: ignore[arg-type]


@pytest.fixture
async def redis(redis_server: RedisServer) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_server.url, decode_responses=True)
    yield client
    await client.aclose()


def test_a_conversations_keys_share_one_cluster_slot() -> None:
    keys = Keys("cgw:")
    assert key_slot(keys.conversation("u", "c1").encode()) == key_slot(
        keys.messages("u", "c1").encode()
    )
    assert keys.conversation("u", "c1").startswith("cgw:")


async def test_turns_claim_return_history_and_append(redis: Redis, settings: Settings) -> None:
    store = ConversationStore(redis, Keys(settings.redis_prefix), ttl=60, max_stored_turns=2)
    assert (await store.open_turn("alice", "c", message("user", "q1"), 10)).history == []
    await store.append_answer("alice", "c", message("assistant", "a1"))
    history = (await store.open_turn("alice", "c", message("user", "q2"), 10)).history
    assert [m.content for m in history] == ["q1", "a1"]
    opened = await store.open_turn("alice", "c", message("user", "q3"), 1)
    assert [m.content for m in opened.history] == ["q2"]
    # Ids are per user: bob's "c" is a conversation of his own, and alice's is untouched.
    alices = await store.messages("alice", "c")
    assert (await store.open_turn("bob", "c", message("user", "mine"), 10)).history == []
    assert [m.content for m in await store.messages("bob", "c")] == ["mine"]
    assert await store.messages("alice", "c") == alices
    with pytest.raises(NotFound):
        await store.messages("alice", "never-made")


async def test_a_page_takes_messages_while_their_bytes_fit(
    redis: Redis, settings: Settings
) -> None:
    store = ConversationStore(redis, Keys(settings.redis_prefix), ttl=60, max_stored_turns=10)
    sizes = []
    for n in range(3):
        question, answer = message("user", f"q{n}" * 10), message("assistant", f"a{n}")
        await store.open_turn("alice", "bytes", question, 0)
        await store.append_answer("alice", "bytes", answer)
        sizes += [len(question.to_json().encode()), len(answer.to_json().encode())]
    exactly_two = await store.page("alice", "bytes", 10, sizes[-1] + sizes[-2], None)
    assert [m.content for m in exactly_two.messages] == ["q2" * 10, "a2"]
    assert exactly_two.older == exactly_two.messages[0].id  # q2: the next page is above it
    one_byte_short = await store.page("alice", "bytes", 10, sizes[-1] + sizes[-2] - 1, None)
    assert [m.content for m in one_byte_short.messages] == ["a2"]
    rest = await store.page("alice", "bytes", 10, 10**6, exactly_two.older)
    assert [m.content for m in rest.messages] == ["q0" * 10, "a0", "q1" * 10, "a1"]
    assert rest.older is None and rest.summary.title == "q0" * 10
    with pytest.raises(NotFound):
        await store.page("bob", "bytes", 10, 10**6, None)


async def test_stored_turns_are_capped_and_expire(redis: Redis, settings: Settings) -> None:
    keys = Keys(settings.redis_prefix)
    store = ConversationStore(redis, keys, ttl=120, max_stored_turns=2)
    for n in range(5):
        await store.open_turn("alice", "cap", message("user", f"q{n}"), 0)
        await store.append_answer("alice", "cap", message("assistant", f"a{n}"))
    stored = await store.messages("alice", "cap")
    assert [m.content for m in stored] == ["q3", "a3", "q4", "a4"]
    for key in (
        keys.conversation("alice", "cap"),
        keys.nodes("alice", "cap"),
        keys.links("alice", "cap"),
        keys.user_conversations("alice"),
    ):
        assert 0 < await redis.ttl(key) <= 120
    assert await redis.hget(keys.conversation("alice", "cap"), "title") == "q0"


def _ping(url: str) -> bool:
    client = sync_redis.Redis.from_url(url, socket_connect_timeout=1)
    try:
        return bool(client.ping())
    except sync_redis.ConnectionError:
        return False
    finally:
        client.close()


def test_embedded_redis_keeps_data_across_a_restart(tmp_path: Path) -> None:
    embedded = EmbeddedRedis(tmp_path / "data")
    url = embedded.start()
    client = sync_redis.Redis.from_url(url)
    client.set("k", "kept")
    client.close()
    with pytest.raises(EmbeddedRedisError, match="Another gateway is using"):
        EmbeddedRedis(tmp_path / "data").start()
    assert _ping(url)  # the refused second start left the running server alone
    embedded.stop()
    assert not _ping(url)
    again = EmbeddedRedis(tmp_path / "data")
    client = sync_redis.Redis.from_url(again.start())
    try:
        assert client.get("k") == b"kept"
    finally:
        client.close()
        again.stop()


@pytest.mark.parametrize(
    ("message", "title"),
    [
        ("  Hello\n\tthere  ", "Hello there"),
        ("x" * 80, "x" * 80),
        ("x" * 81, "x" * 79 + "\u2026"),
        ("word " * 30, ("word " * 16).strip() + "\u2026"),
        ("a" * 70 + " " + "b" * 20, "a" * 70 + "\u2026"),
        ("a" * 10 + " " + "b" * 100, "a" * 10 + " " + "b" * 68 + "\u2026"),
        (" \n ", ""),
    ],
)
def test_a_title_is_one_line_and_ends_with_an_ellipsis_when_cut(message: str, title: str) -> None:
    assert title_of(message) == title
    assert len(title_of(message)) <= 80


async def test_a_late_answer_never_brings_back_a_deleted_conversation(
    redis: Redis, settings: Settings
) -> None:
    keys = Keys(settings.redis_prefix)
    store = ConversationStore(redis, keys, ttl=60, max_stored_turns=10)
    await store.open_turn("alice", "c", message("user", "q1"), 0, generation_id="g1")
    assert await store.delete("alice", "c") == ["g1"]
    late = StoredMessage("assistant", "a1", 2, generation_id="g1")
    await store.append_answer("alice", "c", late)
    assert await redis.exists(keys.conversation("alice", "c"), keys.messages("alice", "c")) == 0
    assert await redis.zscore(keys.user_conversations("alice"), "c") is None
    # Started afresh under the same id: the old generation's answer still does not land.
    await store.open_turn("alice", "c", message("user", "q2"), 0, generation_id="g2")
    await store.append_answer("alice", "c", late)
    await store.append_answer("alice", "c", StoredMessage("assistant", "a2", 3, generation_id="g2"))
    assert [m.content for m in await store.messages("alice", "c")] == ["q2", "a2"]


async def test_a_conversation_forgets_generations_older_than_their_keys(
    redis: Redis, settings: Settings
) -> None:
    keys = Keys(settings.redis_prefix)
    store = ConversationStore(redis, keys, 60, 10, generation_retention=10)
    await store.open_turn("alice", "c", message("user", "q1", at=1_000), 0, generation_id="g1")
    await store.open_turn("alice", "c", message("user", "q2", at=5_000), 0, generation_id="g2")
    await store.open_turn("alice", "c", message("user", "q3", at=12_000), 0, generation_id="g3")
    assert await redis.zrange(keys.conversation_generations("alice", "c"), 0, -1) == ["g2", "g3"]
    # None of them stored an answer: the link of the one forgotten goes with it.
    links = [str(link) for link in await redis.hkeys(keys.links("alice", "c"))]
    assert sorted(link for link in links if link.startswith("g:")) == ["g:g2", "g:g3"]
    assert sorted(await store.delete("alice", "c")) == ["g2", "g3"]


async def test_one_users_id_names_nothing_of_another_users(
    redis: Redis, settings: Settings
) -> None:
    keys = Keys(settings.redis_prefix)
    store = ConversationStore(redis, keys, ttl=60, max_stored_turns=10)
    await store.open_turn("alice", "c", message("user", "mine"), 0)
    # Ids are per user: bob can neither read, rename nor delete alice's "c", and his own
    # turn under that id makes a conversation of his.
    assert await store.newest("bob", 10) == []
    with pytest.raises(NotFound):
        await store.rename("bob", "c", "taken")
    with pytest.raises(NotFound):
        await store.delete("bob", "c")
    await store.open_turn("bob", "c", message("user", "his"), 0)
    assert [s.title for _, s in await store.newest("bob", 10)] == ["his"]
    assert [s.title for _, s in await store.newest("alice", 10)] == ["mine"]


async def test_nothing_follows_an_interrupted_generations_terminal_event(
    redis: Redis, settings: Settings
) -> None:
    keys = Keys(settings.redis_prefix)
    log = GenerationLog(redis, keys, ended_ttl=60, max_events=1000, lease_ttl=5, instance="i")
    async with redis.pipeline(transaction=False) as pipe:
        log.queue_create(pipe, GenerationMeta("gen_x", "alice", "c", None, "m", "a"))
        log.queue_append(pipe, "gen_x", [Start(1, "m", "a"), Chunk(2, "a")])
        log.queue_append(pipe, "gen_x", [Chunk(2, "a"), Chunk(3, "b")])  # a retried batch
        await pipe.execute()
    await redis.delete(keys.lease("gen_x"))  # its process died
    assert await log.interrupt_if_abandoned("gen_x") == 0  # first found lapsed: noted
    await lapsed_long_ago(redis, keys, "gen_x")
    assert await log.interrupt_if_abandoned("gen_x") == 4
    assert await log.interrupt_if_abandoned("gen_x") == 0  # exactly one instance wins
    async with redis.pipeline(transaction=False) as pipe:  # the stalled process wakes up
        log.queue_append(pipe, "gen_x", [Chunk(4, "late")])
        log.queue_finish(pipe, "gen_x", [Chunk(5, "late"), Done(6, "stop", Usage())], "complete")
        assert await pipe.execute() == [0, 0]
    events = await log.read_after("gen_x", 0)
    assert [e.seq for e in events] == [1, 2, 3, 4]
    assert isinstance(events[-1], Failed) and events[-1].code == "interrupted"
    meta = await log.meta("gen_x")
    assert meta is not None and (meta.status, meta.last_seq) == ("interrupted", 4)


async def test_a_turn_reads_at_most_history_bytes_of_history(
    redis: Redis, settings: Settings
) -> None:
    keys = Keys(settings.redis_prefix)
    questions = [message("user", f"q{n}" + "x" * 100) for n in range(3)]
    size = len(questions[0].to_json().encode())
    store = ConversationStore(redis, keys, ttl=60, max_stored_turns=10, history_bytes=2 * size)
    for question in questions:
        await store.open_turn("alice", "h", question, 0)
    opened = await store.open_turn("alice", "h", message("user", "next"), 10)
    assert [m.content[:2] for m in opened.history] == ["q1", "q2"]  # two fit of the three
    tiny = ConversationStore(redis, keys, ttl=60, max_stored_turns=10, history_bytes=1)
    opened = await tiny.open_turn("alice", "h", message("user", "last"), 10)
    assert [m.content for m in opened.history] == ["next"]  # the newest, whatever its size


@pytest.mark.parametrize(
    ("sub", "key"), [("x}:k", "z"), ("x", "k}:z"), ("}x", "k"), ("a%7Db", "k"), ("a}b", "k")]
)
def test_a_sub_stands_in_a_key_escaped(sub: str, key: str) -> None:
    keys = Keys("p:")
    named = keys.idempotency(sub, key)
    tagged = named[named.index("{") + 1 : named.index("}")]
    assert tagged and "{" not in tagged and tag(sub) == tagged
    assert key_slot(keys.user_rate(sub).encode()) == key_slot(named.encode())


def test_escaped_subs_never_meet() -> None:
    subs = ["x}:k", "x", "}x", "a%7Db", "a}b", "a%b", "a/b", "a%2Fb", "%", "%25"]
    assert len({tag(sub) for sub in subs}) == len(subs)
    keys = Keys("p:")
    assert keys.idempotency("x}:k", "z") != keys.idempotency("x", "k}:z")
    assert keys.conversation("a/b", "c") != keys.conversation("a", "b/c")


async def lapsed_long_ago(redis: Redis, keys: Keys, generation_id: str) -> None:
    """As if an instance had found the generation's lease lapsed more than a lease ago."""
    await redis.hset(keys.generation(generation_id), "lapsed_at", 0)


async def test_a_lapsed_lease_ends_a_generation_only_a_lease_after_it_was_found(
    redis: Redis, settings: Settings
) -> None:
    """A live owner that could not renew (the store was unreachable to it) gets a whole lease
    after the store is back: its renewal clears the finding, and nothing is interrupted."""
    keys = Keys(settings.redis_prefix)
    log = GenerationLog(redis, keys, ended_ttl=60, max_events=1000, lease_ttl=5, instance="i")
    async with redis.pipeline(transaction=False) as pipe:
        log.queue_create(pipe, GenerationMeta("gen_y", "alice", "c", None, "m", "a"))
        log.queue_append(pipe, "gen_y", [Start(1, "m", "a")])
        await pipe.execute()
    await redis.delete(keys.lease("gen_y"))  # not renewed for a while
    assert await log.interrupt_if_abandoned("gen_y") == 0
    assert await log.interrupt_if_abandoned("gen_y") == 0  # found again, within the lease
    assert await log.renew(["gen_y"]) == {}  # the owner is back: the finding is cleared
    assert await redis.hget(keys.generation("gen_y"), "lapsed_at") is None
    await redis.delete(keys.lease("gen_y"))
    await lapsed_long_ago(redis, keys, "gen_y")
    await log.renew(["gen_y"])  # a renewal, even late, keeps the generation its owner's
    assert await log.interrupt_if_abandoned("gen_y") == 0
    meta = await log.meta("gen_y")
    assert meta is not None and meta.status == "running"


async def test_a_turn_opened_before_the_tree_is_answered_below_its_question(
    redis: Redis, settings: Settings
) -> None:
    """An instance that predates the tree opened the turn (a list); this one stores the
    answer."""
    keys = Keys(settings.redis_prefix)
    store = ConversationStore(redis, keys, ttl=60, max_stored_turns=10)
    question = message("user", "asked before")
    await redis.rpush(keys.messages("alice", "rolling"), question.to_json())
    await redis.hset(
        keys.conversation("alice", "rolling"),
        mapping={"owner": "alice", "title": "t", "created_at": 1, "updated_at": 1},
    )
    answer = StoredMessage("assistant", "answered after", 2, generation_id="gen_rolling")
    await store.append_answer("alice", "rolling", answer)
    await store.append_answer("alice", "rolling", answer)  # sent again: stored once
    stored = await store.messages("alice", "rolling")
    assert [(m.id, m.parent_id, m.content) for m in stored] == [
        ("msg_0", None, "asked before"),
        ("msg_rolling", "msg_0", "answered after"),
    ]
    bytes_ = await redis.hget(keys.conversation("alice", "rolling"), "bytes")
    assert int(bytes_ or 0) == sum(len(m.to_json().encode()) for m in stored)

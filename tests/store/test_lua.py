"""Lua scripts by hash, and what a call and the log writer do when the server forgot them."""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
from redis.asyncio import Redis

from gateway.config import Limits
from gateway.events import Chunk, Done, Start, Usage
from gateway.limits import Admission, Turn
from gateway.store.client import StorePipeline
from gateway.store.conversations import ConversationStore
from gateway.store.keys import Keys
from gateway.store.limits import LimitStore
from gateway.store.log_writer import LogWriter
from gateway.store.logs import GenerationLog
from gateway.store.lua import Lua
from gateway.store.messages import StoredMessage
from gateway.store.records import GenerationMeta, Trouble
from tests.support.redis import RedisServer, running_redis

COUNT = "return redis.call('INCR', KEYS[1])"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A server of these tests' own: they empty its script cache and count its commands."""
    with running_redis(tmp_path_factory.mktemp("lua")) as server:
        yield server


@pytest.fixture
async def redis(server: RedisServer) -> AsyncIterator[Redis]:
    client = Redis.from_url(server.url, decode_responses=True)
    await client.script_flush()
    await client.config_resetstat()
    yield client
    await client.aclose()


async def calls(redis: Redis) -> dict[str, int]:
    """EVALs and EVALSHAs the server ran since its counts were reset, and the EVALSHAs of
    those that answered NOSCRIPT."""
    stats = await redis.info("commandstats")
    whole = stats.get("cmdstat_eval", {})
    by_hash = stats.get("cmdstat_evalsha", {})
    return {
        "eval": whole.get("calls", 0),
        "evalsha": by_hash.get("calls", 0),
        "noscript": by_hash.get("failed_calls", 0),
    }


def key() -> str:
    return f"t{uuid.uuid4().hex[:12]}:n"


async def test_a_script_goes_by_hash_once_a_call_of_it_succeeded(redis: Redis) -> None:
    count, name = Lua(redis, COUNT), key()
    assert [await count([name]) for _ in range(3)] == [1, 2, 3]
    assert await calls(redis) == {"eval": 1, "evalsha": 2, "noscript": 0}


async def test_a_call_runs_once_after_the_server_forgot_the_script(redis: Redis) -> None:
    count, name = Lua(redis, COUNT), key()
    assert await count([name]) == 1
    await redis.script_flush()
    assert await count([name]) == 2  # NOSCRIPT, then whole: it ran once
    assert await count([name]) == 3  # by hash again
    assert await calls(redis) == {"eval": 2, "evalsha": 2, "noscript": 1}


async def test_only_scripts_made_for_it_go_by_hash_in_pipelines(redis: Redis) -> None:
    plain, fast = Lua(redis, COUNT), Lua(redis, COUNT, by_hash_in_pipelines=True)
    names = key(), key()
    await plain([names[0]])
    await fast([names[1]])
    await redis.config_resetstat()
    async with redis.pipeline(transaction=False) as pipe:
        plain.queue(pipe, [names[0]])
        fast.queue(pipe, [names[1]])
        assert await pipe.execute() == [2, 2]
    assert await calls(redis) == {"eval": 1, "evalsha": 1, "noscript": 0}


async def test_log_writes_go_by_hash_after_the_first(redis: Redis) -> None:
    log, (generation_id,) = await generations(redis, 1)
    writer = LogWriter(log, window_ms=1)
    for seq in range(1, 4):
        writer.add(generation_id, Chunk(seq, "x"))
        await writer.flush()
    assert await calls(redis) == {"eval": 1, "evalsha": 2, "noscript": 0}
    assert [e.seq for e in await log.read_after(generation_id, 0)] == [1, 2, 3]


async def test_a_log_write_after_the_server_forgot_the_script_lands_once_in_order(
    redis: Redis, caplog: pytest.LogCaptureFixture
) -> None:
    """The appends and the final event come back NOSCRIPT while the end's extra commands run:
    the writer writes the appends and the final event again, whole, at once, and not the
    extra commands (counting them twice would be wrong)."""
    log, (running, ending) = await generations(redis, 2)
    writer = LogWriter(log, window_ms=1)
    troubles: list[tuple[str, Trouble]] = []
    writer.on_trouble = lambda generation_id, trouble: troubles.append((generation_id, trouble))
    ended = key()

    def extra(pipe: StorePipeline) -> None:
        pipe.incr(ended)

    start = Start(1, "m", "a")
    for generation_id in (running, ending):
        writer.add(generation_id, start)
    await writer.flush()
    await redis.script_flush()
    await redis.config_resetstat()
    chunks = [Chunk(2, "a"), Chunk(3, "b"), Chunk(4, "c")]
    for chunk in chunks[:2]:
        writer.add(running, chunk)
        writer.add(ending, chunk)
    done = Done(4, "stop", Usage())
    with caplog.at_level(logging.WARNING, logger="gateway.store"):
        persisted = await writer.finish(ending, done, "complete", extra)
    assert persisted == "stored"
    assert await calls(redis) == {"eval": 2, "evalsha": 2, "noscript": 2}
    assert await redis.get(ended) == "1"
    meta = await log.meta(ending)
    assert meta is not None and (meta.status, meta.last_seq) == ("complete", 4)
    writer.add(running, chunks[2])
    await writer.flush()
    assert await calls(redis) == {"eval": 2, "evalsha": 3, "noscript": 2}
    assert await log.read_after(running, 0) == [start, *chunks]
    assert await log.read_after(ending, 0) == [start, *chunks[:2], done]
    assert troubles == [] and caplog.records == []


async def test_a_turn_is_admitted_and_opened_by_hash_and_once_after_the_server_forgot_them(
    redis: Redis,
) -> None:
    """The admission's and the opening's pipelines carry their scripts by hash; a NOSCRIPT
    there runs the script again, whole, once, and the pipeline's other commands run once."""
    keys = Keys(f"t{uuid.uuid4().hex[:12]}:")
    limits = LimitStore(redis, keys, generation_slot_ttl=60, storage_ttl=600)
    conversations = ConversationStore(redis, keys, 600, 100)
    records = key()

    async def ended(generation_id: str) -> bool:
        return False

    def record(pipe: StorePipeline) -> None:
        pipe.incr(records)

    async def turn(n: int) -> list[str]:
        taken = await limits.admit(
            "alice",
            Limits(requests_per_minute=0, concurrent_generations=0),
            Turn(f"gen_{n}", "c", 0, 10),
            ended,
            also=record,
        )
        assert isinstance(taken, Admission)
        opened = await conversations.open_turn("alice", "c", StoredMessage("user", f"q{n}", n), 9)
        return [m.content for m in opened.history]

    assert await turn(1) == []  # whole: the server's cache was empty
    await redis.config_resetstat()
    assert await turn(2) == ["q1"]
    assert await calls(redis) == {"eval": 0, "evalsha": 2, "noscript": 0}
    await redis.script_flush()
    await redis.config_resetstat()
    assert await turn(3) == ["q1", "q2"]  # each question stored once
    assert await calls(redis) == {"eval": 2, "evalsha": 2, "noscript": 2}
    assert await redis.get(records) == "3"
    assert await redis.hget(keys.user_storage("alice"), "c") == "30"  # each message once
    assert await redis.zcard(keys.user_generations("alice")) == 3


async def generations(redis: Redis, count: int) -> tuple[GenerationLog, list[str]]:
    """A generation log under a prefix of its own, with `count` running generations."""
    keys = Keys(f"t{uuid.uuid4().hex[:12]}:")
    log = GenerationLog(redis, keys, ended_ttl=60, max_events=1000, lease_ttl=5, instance="t")
    ids = [f"gen_{uuid.uuid4().hex[:12]}" for _ in range(count)]
    async with redis.pipeline(transaction=False) as pipe:
        for generation_id in ids:
            log.queue_create(pipe, GenerationMeta(generation_id, "alice", "c", None, "m", "a"))
        await pipe.execute()
    return log, ids

"""The log writer's buffer is shared by every generation of a process: each gets a fair share,
so one that floods it loses its own log, never another's. Events are added without a flush
(as while Redis is down), then written to the test's Redis to see what was kept."""

from __future__ import annotations

import asyncio
import signal
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from redis.asyncio import Redis

from gateway.events import Chunk, Done, Usage
from gateway.store.client import StorePipeline
from gateway.store.keys import Keys
from gateway.store.log_writer import LogWriter
from gateway.store.logs import GenerationLog
from gateway.store.records import GenerationMeta, Trouble
from tests.support.lossy_proxy import LossyProxy
from tests.support.redis import RedisServer, running_redis

DEADLINE = 1.0  # seconds a write on the writer's own connection may take


@pytest.fixture
async def log(redis_server: RedisServer) -> AsyncIterator[GenerationLog]:
    client = Redis.from_url(redis_server.url, decode_responses=True)
    keys = Keys(f"b{uuid.uuid4().hex[:6]}:")
    yield GenerationLog(client, keys, ended_ttl=60, max_events=1000, lease_ttl=5, instance="t")
    await client.aclose()


async def generations(log: GenerationLog, *names: str) -> None:
    async with log.redis.pipeline(transaction=False) as pipe:
        for name in names:
            log.queue_create(pipe, GenerationMeta(name, "alice", "c", None, "m", "a"))
        await pipe.execute()


def writer_with(
    log: GenerationLog,
    troubles: list[tuple[str, Trouble]],
    *,
    max_buffered: int,
    max_per_generation: int,
) -> LogWriter:
    writer = LogWriter(log, 1, max_buffered, max_per_generation)
    writer.on_trouble = lambda generation_id, trouble: troubles.append((generation_id, trouble))
    return writer


def add(writer: LogWriter, generation_id: str, seqs: range) -> None:
    for seq in seqs:
        writer.add(generation_id, Chunk(seq, f" t{seq}"))


async def stored(log: GenerationLog, generation_id: str) -> list[int]:
    return [event.seq for event in await log.read_after(generation_id, 0)]


async def test_a_generation_past_its_share_loses_its_log_alone(log: GenerationLog) -> None:
    big, small = f"gen_{uuid.uuid4().hex[:8]}", f"gen_{uuid.uuid4().hex[:8]}"
    await generations(log, big, small)
    troubles: list[tuple[str, Trouble]] = []
    writer = writer_with(log, troubles, max_buffered=100, max_per_generation=5)
    add(writer, small, range(1, 4))
    add(writer, big, range(1, 9))  # the sixth is past its share
    add(writer, small, range(4, 6))
    assert troubles == [(big, "lost")]
    await writer.flush()
    assert await stored(log, small) == [1, 2, 3, 4, 5]
    assert await stored(log, big) == []  # nothing more is written for it


async def test_a_full_buffer_gives_up_the_largest_generation_not_the_newcomer(
    log: GenerationLog,
) -> None:
    hog, other, newcomer = (f"gen_{uuid.uuid4().hex[:8]}" for _ in range(3))
    await generations(log, hog, other, newcomer)
    troubles: list[tuple[str, Trouble]] = []
    writer = writer_with(log, troubles, max_buffered=10, max_per_generation=100)
    add(writer, hog, range(1, 7))
    add(writer, other, range(1, 4))
    add(writer, newcomer, range(1, 2))  # the buffer is full now
    add(writer, newcomer, range(2, 4))
    assert troubles == [(hog, "lost")]
    add(writer, other, range(4, 11))  # full again, and now `other` holds the most
    assert troubles == [(hog, "lost"), (other, "lost")]
    await writer.flush()
    assert await stored(log, newcomer) == [1, 2, 3]
    assert await stored(log, hog) == await stored(log, other) == []


async def test_a_write_on_its_own_connection_is_timed_as_a_whole_and_loses_nothing(
    tmp_path: Path,
) -> None:
    """With a connection of its own (no timeout per reply), a write to a frozen server
    (SIGSTOP) fails after `deadline`, keeps its events, and writes them once the server goes
    on: each event once, in order."""
    with running_redis(tmp_path) as server:
        client = Redis.from_url(server.url, decode_responses=True)
        own = Redis.from_url(server.url, decode_responses=True, single_connection_client=True)
        keys = Keys(f"b{uuid.uuid4().hex[:6]}:")
        log = GenerationLog(client, keys, ended_ttl=60, max_events=1000, lease_ttl=5, instance="t")
        troubles: list[tuple[str, Trouble]] = []
        writer = LogWriter(log, 1, own=own, deadline=DEADLINE)
        writer.on_trouble = lambda generation_id, trouble: troubles.append((generation_id, trouble))
        try:
            await generations(log, "g")
            add(writer, "g", range(1, 4))
            await writer.flush()
            server.process.send_signal(signal.SIGSTOP)
            try:
                add(writer, "g", range(4, 7))
                loop = asyncio.get_running_loop()
                started = loop.time()
                with pytest.raises(TimeoutError):
                    await writer.flush()
                assert loop.time() - started < DEADLINE + 2, "the write outlived its deadline"
                assert troubles == [("g", "degraded")]
            finally:
                server.process.send_signal(signal.SIGCONT)
            await writer.flush()
            events = await log.read_after("g", 0, count=100)
            assert [event.seq for event in events] == list(range(1, 7))
        finally:
            await writer.close()
            await client.aclose()


async def test_an_end_cut_off_after_its_final_event_still_stores_its_answer(
    redis_server: RedisServer,
) -> None:
    """A write that fails without saying what landed (its final event did, the commands
    after it did not: on a Redis Cluster they go to another node, which failed): the answer
    is stored when it is written again, and what may not run twice is not sent again."""
    proxy = LossyProxy(redis_server.port)
    port = await proxy.start()
    client = Redis.from_url(redis_server.url, decode_responses=True)
    own = Redis.from_url(
        f"redis://127.0.0.1:{port}/0", decode_responses=True, single_connection_client=True
    )
    keys = Keys(f"b{uuid.uuid4().hex[:6]}:")
    log = GenerationLog(client, keys, ended_ttl=60, max_events=1000, lease_ttl=5, instance="t")
    writer = LogWriter(log, 1, own=own, deadline=DEADLINE)
    answer, counted = f"{keys.prefix}answer", f"{keys.prefix}counted"

    def extra(pipe: StorePipeline) -> None:
        pipe.incrby(counted, 1)  # as a token count's correction: not to run twice
        pipe.set(answer, "stored")

    def again(pipe: StorePipeline) -> None:
        pipe.set(answer, "stored")

    try:
        await generations(log, "g")
        proxy.cut_at = b"*3\r\n$6\r\nINCRBY"  # the end's own commands go, the rest is lost
        assert await writer.finish("g", Done(1, "stop", Usage()), "complete", extra, again) == (
            "pending"
        )
        assert proxy.lost and (await log.statuses(["g"])) == ["complete"]
        assert await client.get(answer) is None
        proxy.reset()
        await writer.flush()
        assert await client.get(answer) == "stored"
        assert await client.get(counted) is None
        assert not writer.unstored_ends()
    finally:
        await writer.close()
        await proxy.close()
        await client.aclose()

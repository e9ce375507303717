"""Commands carried by the log writer's next write (`LogWriter.carry`, a turn's start activity):
they go once, ahead of the logs in that write, so before any end written with it or after it,
and a write that fails drops them with a warning instead of sending them again later."""

from __future__ import annotations

import logging
import socket
import uuid
from collections.abc import AsyncIterator, Callable

import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError

from gateway.events import Chunk, Done, Usage
from gateway.store.client import StorePipeline
from gateway.store.keys import Keys
from gateway.store.log_writer import LogWriter
from gateway.store.logs import GenerationLog
from gateway.store.records import GenerationMeta
from tests.support.redis import RedisServer


def generation_log(client: Redis) -> GenerationLog:
    keys = Keys(f"c{uuid.uuid4().hex[:6]}:")
    return GenerationLog(client, keys, ended_ttl=60, max_events=1000, lease_ttl=5, instance="t")


@pytest.fixture
async def log(redis_server: RedisServer) -> AsyncIterator[GenerationLog]:
    client = Redis.from_url(redis_server.url, decode_responses=True)
    yield generation_log(client)
    await client.aclose()


async def running(log: GenerationLog) -> str:
    generation_id = f"gen_{uuid.uuid4().hex[:8]}"
    async with log.redis.pipeline(transaction=False) as pipe:
        log.queue_create(pipe, GenerationMeta(generation_id, "alice", "c", None, "m", "a"))
        await pipe.execute()
    return generation_id


def push(key: str, value: str) -> Callable[[StorePipeline], None]:
    def commands(pipe: StorePipeline) -> None:
        pipe.rpush(key, value)

    return commands


async def test_carried_commands_go_once_and_before_an_end_written_with_them(
    log: GenerationLog,
) -> None:
    generation_id = await running(log)
    order = f"order:{uuid.uuid4().hex[:6]}"
    writer = LogWriter(log, window_ms=1)
    writer.add(generation_id, Chunk(1, "a"))
    writer.carry(push(order, "start"), "the start")
    # Carried after the event, and the end in the same write: the start still goes first.
    done = Done(2, "stop", Usage())
    persisted = await writer.finish(generation_id, done, "complete", push(order, "end"))
    assert persisted == "stored"
    await writer.flush()  # nothing is left to send: the start does not go again
    assert await log.redis.lrange(order, 0, -1) == ["start", "end"]
    assert [event.seq for event in await log.read_after(generation_id, 0)] == [1, 2]


async def test_a_carried_command_the_store_refuses_is_logged_and_the_logs_are_written(
    log: GenerationLog, caplog: pytest.LogCaptureFixture
) -> None:
    generation_id = await running(log)
    text = f"text:{uuid.uuid4().hex[:6]}"
    await log.redis.set(text, "not a list")
    writer = LogWriter(log, window_ms=1)
    writer.carry(push(text, "x"), "the refused commands")
    writer.add(generation_id, Chunk(1, "a"))
    with caplog.at_level(logging.WARNING, logger="gateway.store"):
        await writer.flush()
    assert "the refused commands lost: ResponseError" in caplog.text
    assert [event.seq for event in await log.read_after(generation_id, 0)] == [1]


async def test_a_write_that_fails_drops_what_it_carried_and_keeps_the_logs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with socket.socket() as unused:  # a port nothing listens on: every write fails
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    client = Redis(host="127.0.0.1", port=port, socket_connect_timeout=1)
    writer = LogWriter(generation_log(client), window_ms=1)
    writer.carry(push("k", "v"), "the carried commands")
    writer.add("gen_x", Chunk(1, "a"))
    with caplog.at_level(logging.WARNING, logger="gateway.store"):
        for _ in range(2):
            with pytest.raises(ConnectionError):
                await writer.flush()
    assert caplog.text.count("the carried commands lost: the write failed") == 1
    assert writer.unstored_ends() == set()
    assert writer._buffered == 1  # the event is kept for the next try
    await client.aclose()

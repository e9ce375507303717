"""The process's reader of followed generation logs (`LogHub`), on a redis-server of the
test's own: followers of many generations share one blocked connection, a new generation
wakes the read in flight, and a follower that falls behind rereads the log."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from gateway.events import Chunk, Event
from gateway.store.keys import Keys
from gateway.store.log_hub import LogHub, Subscription
from gateway.store.log_reads import BlockingReads, PollSchedule
from gateway.store.logs import GenerationLog
from gateway.store.records import GenerationMeta
from gateway.store.unreachable import store_error
from tests.support.polling import settle
from tests.support.redis import RedisServer, running_redis


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A server of this test alone, so that its count of blocked clients is the hub's."""
    with running_redis(tmp_path) as server:
        yield server


@dataclass
class Parts:
    url: str
    client: Redis
    log: GenerationLog
    keys: Keys

    async def create(self) -> str:
        generation_id = f"gen_{uuid.uuid4().hex[:12]}"
        meta = GenerationMeta(generation_id, "alice", "c", None, "m", "a")
        async with self.client.pipeline(transaction=False) as pipe:
            self.log.queue_create(pipe, meta)
            await pipe.execute()
        return generation_id

    async def append(self, generation_id: str, seqs: range) -> None:
        async with self.client.pipeline(transaction=False) as pipe:
            self.log.queue_append(pipe, generation_id, [Chunk(s, f" t{s}") for s in seqs])
            await pipe.execute()

    def hub(self, block_ms: int = 1000, buffered: int = 1000) -> LogHub:
        """A hub as the gateway builds one for a single server, with its own connection."""
        own = Redis.from_url(
            self.url,
            decode_responses=True,
            single_connection_client=True,
            socket_timeout=block_ms / 1000 + 5,
        )
        wake = self.keys.log_wake(f"test:{uuid.uuid4().hex[:6]}")
        reads = BlockingReads(own, self.client, self.keys, wake, block_ms=block_ms)
        return LogHub(reads, buffered=buffered)


@pytest.fixture
async def parts(own_redis: RedisServer) -> AsyncIterator[Parts]:
    client = Redis.from_url(own_redis.url, decode_responses=True)
    keys = Keys(f"h{uuid.uuid4().hex[:6]}:")
    log = GenerationLog(client, keys, ended_ttl=60, max_events=1000, lease_ttl=5, instance="t")
    yield Parts(own_redis.url, client, log, keys)
    await client.aclose()


async def follow(
    log: GenerationLog, subscription: Subscription, after: int, through: int
) -> list[int]:
    """A follower as `ChatService` is one: the log while stale, else what the hub gives."""
    seqs: list[int] = []
    last = after
    try:
        while last < through:
            if subscription.stale:
                subscription.stale = False
                events: list[Event] = await log.read_after(subscription.generation_id, last)
            else:
                events = subscription.take(last)
                if not events and not subscription.stale:
                    await subscription.wait(5.0)
            for event in events:
                seqs.append(event.seq)
                last = event.seq
    finally:
        subscription.close()
    return seqs


async def blocked_clients(client: Redis) -> int:
    return int((await client.info("clients"))["blocked_clients"])


async def settle_at(client: Redis, blocked: int) -> int:
    """The number of blocked clients once it is `blocked`, or after 10 s."""

    async def reached() -> bool:
        return await blocked_clients(client) == blocked

    await settle(reached)
    return await blocked_clients(client)


async def test_sixty_followers_of_three_generations_share_one_blocked_read(parts: Parts) -> None:
    generations = [await parts.create() for _ in range(3)]
    for generation_id in generations:
        await parts.append(generation_id, range(1, 11))
    hub = parts.hub()
    hub.start()
    try:
        followers = [
            asyncio.create_task(follow(parts.log, hub.subscribe(g), after, 60))
            for g in generations
            for after in (0, 5, 10) * 7
        ]
        # Every follower has read the backlog and waits: one read blocks for all of them.
        assert await settle_at(parts.client, 1) == 1
        assert hub.followed == 3
        for start in range(11, 61, 10):
            for generation_id in generations:
                await parts.append(generation_id, range(start, start + 10))
        async with asyncio.timeout(20):
            results = await asyncio.gather(*followers)
        for index, seqs in enumerate(results):
            after = (0, 5, 10)[index % 3]
            assert seqs == list(range(after + 1, 61))
        assert hub.followed == 0
    finally:
        await hub.close()


async def test_a_new_generation_wakes_the_read_in_flight(parts: Parts) -> None:
    """The read blocks for a minute; a follower of another generation still gets its events
    at once."""
    first, second = await parts.create(), await parts.create()
    hub = parts.hub(block_ms=60_000)
    hub.start()
    try:
        waiting = asyncio.create_task(follow(parts.log, hub.subscribe(first), 0, 1))
        assert await settle_at(parts.client, 1) == 1
        newcomer = asyncio.create_task(follow(parts.log, hub.subscribe(second), 0, 3))
        await parts.append(second, range(1, 4))
        async with asyncio.timeout(10):
            assert await newcomer == [1, 2, 3]
        await parts.append(first, range(1, 2))
        async with asyncio.timeout(10):
            assert await waiting == [1]
    finally:
        await hub.close()


async def test_a_follower_that_does_not_take_is_dropped_to_the_log(parts: Parts) -> None:
    generation_id = await parts.create()
    hub = parts.hub(buffered=5)
    hub.start()
    try:
        slow = hub.subscribe(generation_id)
        slow.stale = False
        assert slow.take(0) == []  # joined, then it does not take for a while
        keeping_up = asyncio.create_task(follow(parts.log, hub.subscribe(generation_id), 0, 20))
        for seq in range(1, 21):
            await parts.append(generation_id, range(seq, seq + 1))
        async with asyncio.timeout(10):
            assert await keeping_up == list(range(1, 21))
        assert slow.stale  # more than five waited for it: it reads the log again
        async with asyncio.timeout(10):
            assert await follow(parts.log, slow, 0, 20) == list(range(1, 21))
    finally:
        await hub.close()


async def test_a_failed_read_reaches_every_follower_as_a_store_error(
    parts: Parts, own_redis: RedisServer
) -> None:
    """Redis goes away under the blocked read: each waiting follower gets the error once
    (its client is told the store is unreachable) and must read the log again after."""
    generation_id = await parts.create()
    hub = parts.hub()
    hub.start()
    try:
        followers = [hub.subscribe(generation_id) for _ in range(3)]
        for subscription in followers:
            subscription.stale = False
            assert subscription.take(0) == []
        assert await settle_at(parts.client, 1) == 1
        own_redis.kill()
        for subscription in followers:
            assert await subscription.wait(10.0)
            with pytest.raises(RedisConnectionError) as failed:
                subscription.take(0)
            assert store_error(failed.value) is not None  # unavailable, for the client
            assert subscription.stale
            assert subscription.take(0) == []  # said once
    finally:
        await hub.close()


def test_a_quiet_log_is_polled_less_often_and_a_busy_one_every_window() -> None:
    schedule = PollSchedule(window=0.05, longest=0.2)
    assert schedule.due(["a", "b"], now=0.0) == ["a", "b"]  # never read: due at once
    schedule.read("a", True, 0.0)
    schedule.read("b", False, 0.0)
    assert schedule.wait(["a", "b"], 0.0) == pytest.approx(0.05)
    intervals = []
    now = 0.05
    for _ in range(5):
        assert schedule.due(["b"], now) == ["b"]
        schedule.read("b", False, now)
        intervals.append(round(schedule.wait(["b"], now), 3))
        now += intervals[-1]
    assert intervals == [0.1, 0.2, 0.2, 0.2, 0.2]
    schedule.read("b", True, now)  # news: back to every window
    assert schedule.wait(["b"], now) == pytest.approx(0.05)
    assert schedule.due(["c"], now) == ["c"]  # "a" and "b" are forgotten
    assert schedule.wait(["a", "b"], now) == 0.0

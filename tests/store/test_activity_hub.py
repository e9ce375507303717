"""The process's reader of its users' activity (`ActivityHub`), on a redis-server of the
test's own: it reads only the streams the channel names, so an event costs the same however
many users listen; news missed while the channel was down, or lost on the way, still arrives."""

from __future__ import annotations

import asyncio
import logging
import signal
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import pytest
import redis.exceptions
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff

from gateway.protocol.activity import ActivityEntry, conversation_updated
from gateway.store.activity import ActivityLog
from gateway.store.activity_hub import ActivityHub
from gateway.store.keys import Keys
from tests.support.lossy_proxy import LossyProxy
from tests.support.polling import settle
from tests.support.redis import RedisServer, running_redis, start_redis

CROWD = 20_000  # users listening on one instance
# As the gateway's clients retry a refused or reset connection (gateway/services.py).
RETRIES = Retry(
    ExponentialWithJitterBackoff(base=0.05, cap=0.5),
    retries=2,
    supported_errors=(redis.exceptions.ConnectionError,),
)


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A server of this test alone, so that its command counts are the hub's."""
    with running_redis(tmp_path) as server:
        yield server


@dataclass(eq=False)
class Heard:
    """What one listener was handed: each entry's conversation id, in order."""

    conversations: list[str] = field(default_factory=list)

    def __call__(self, entry: ActivityEntry) -> None:
        self.conversations.append(entry.data()["conversation_id"])


@dataclass
class Parts:
    client: Redis
    log: ActivityLog
    keys: Keys

    async def publish(self, sub: str, *conversations: str) -> None:
        await self.log.publish(sub, [conversation_updated(c, "t", 1) for c in conversations])

    async def append_unannounced(self, sub: str, conversation_id: str) -> None:
        """An event in the user's stream whose news never reached the channel."""
        event = conversation_updated(conversation_id, "t", 1)
        await self.client.xadd(self.keys.user_activity(sub), {"e": event.name, "a": event.stored()})

    async def lookups(self) -> int:
        """Keys the server has looked up since its statistics were reset."""
        stats = await self.client.info("stats")
        return int(stats["keyspace_hits"]) + int(stats["keyspace_misses"])

    async def channel_joined(self) -> bool:
        return await self.subscribers(self.keys.activity_channel()) >= 1

    async def subscribers(self, channel: str) -> int:
        counts = await self.client.pubsub_numsub(channel)
        return int(counts[0][1]) if counts else 0

    async def heard_here(self, *subs: str) -> list[int]:
        """How many readers hear each user's channel."""
        return [await self.subscribers(self.keys.user_activity_channel(s)) for s in subs]


@pytest.fixture
async def parts(own_redis: RedisServer) -> AsyncIterator[Parts]:
    client = Redis.from_url(own_redis.url, decode_responses=True)
    keys = Keys(f"a{uuid.uuid4().hex[:6]}:")
    yield Parts(client, ActivityLog(client, keys, ttl=60), keys)
    await client.aclose()


@pytest.fixture
async def hub(parts: Parts) -> AsyncIterator[ActivityHub]:
    hub = ActivityHub(parts.log)
    hub.start()
    assert await settle(parts.channel_joined), "the hub never joined the activity channel"
    yield hub
    await hub.close()


async def test_an_event_reads_only_its_users_stream_however_many_listen(
    parts: Parts, hub: ActivityHub
) -> None:
    heard = {f"u{n}": Heard() for n in range(300)}
    for sub, listener in heard.items():
        hub.join(sub, listener, "0-0")
    await parts.publish("u0", "first")  # once u0 is heard, every user has been read once
    assert await settle(lambda: heard["u0"].conversations == ["first"])
    await parts.client.config_resetstat()
    for n in range(20):
        await parts.publish("u7", f"c{n}")
    assert await settle(lambda: len(heard["u7"].conversations) == 20)
    assert heard["u7"].conversations == [f"c{n}" for n in range(20)]
    assert all(not h.conversations for sub, h in heard.items() if sub not in ("u0", "u7"))
    # A read looks up u7's stream once (at most one read per news; the writes of a script are
    # not counted); a read of every listening user's stream per event would be 300 lookups.
    lookups = await parts.lookups()
    assert lookups <= 2 * 20, f"{lookups} keys looked up for 20 events of one user"


async def test_an_instance_hears_the_channels_of_its_listening_users_alone(
    parts: Parts, hub: ActivityHub
) -> None:
    """A user's news reaches only the readers where the user listens: an instance where the
    user has no listener hears none of it (once it did, every event of every user)."""
    alice, again = Heard(), Heard()
    hub.join("alice", alice, "0-0")
    hub.join("alice", again, "0-0")
    assert await settle(lambda: _equal(parts.heard_here("alice", "bob"), [1, 0]))
    await parts.publish("bob", "not-here")
    await parts.publish("alice", "here")
    assert await settle(lambda: alice.conversations == ["here"] == again.conversations)
    hub.leave("alice", alice)
    await parts.publish("alice", "still")
    assert await settle(lambda: again.conversations == ["here", "still"])
    assert await parts.heard_here("alice") == [1], "left while another listener stays"
    hub.leave("alice", again)
    assert await settle(lambda: _equal(parts.heard_here("alice"), [0]))
    hub.join("alice", alice, "0-0")  # back: what was published meanwhile comes first
    assert await settle(lambda: alice.conversations == ["here", "here", "still"])


async def _equal(counts: Awaitable[list[int]], expected: list[int]) -> bool:
    return await counts == expected


async def test_news_missed_while_the_channel_was_down_is_read_when_it_is_back(
    parts: Parts, hub: ActivityHub
) -> None:
    alice = Heard()
    hub.join("alice", alice, "0-0")
    await parts.publish("alice", "before")
    assert await settle(lambda: alice.conversations == ["before"])
    await parts.append_unannounced("alice", "while-down")
    killed = await parts.client.client_kill_filter(_type="pubsub")
    assert killed == 1
    assert await settle(lambda: alice.conversations == ["before", "while-down"]), (
        f"heard {alice.conversations}; this reader has no sweep"
    )


async def test_news_lost_on_the_way_arrives_with_the_next_sweep(parts: Parts) -> None:
    hub = ActivityHub(parts.log, sweep=0.2)
    hub.start()
    try:
        assert await settle(parts.channel_joined)
        bob = Heard()
        hub.join("bob", bob, "0-0")
        await parts.append_unannounced("bob", "lost-news")
        assert await settle(lambda: bob.conversations == ["lost-news"], within=5)
    finally:
        await hub.close()


async def test_a_user_who_joins_gets_what_followed_the_id_it_knew(
    parts: Parts, hub: ActivityHub
) -> None:
    await parts.publish("carol", "old", "seen")
    seen = (await parts.log.after("carol", "0-0"))[-1].id
    await parts.publish("carol", "missed")
    carol = Heard()
    hub.join("carol", carol, seen)
    assert await settle(lambda: carol.conversations == ["missed"])
    await parts.publish("carol", "live")
    assert await settle(lambda: carol.conversations == ["missed", "live"])


async def test_a_burst_longer_than_one_read_arrives_whole_and_in_order(
    parts: Parts, hub: ActivityHub
) -> None:
    dave = Heard()
    hub.join("dave", dave, "0-0")
    names = [f"c{n}" for n in range(700)]
    await parts.publish("dave", *names)
    assert await settle(lambda: len(dave.conversations) >= 700)
    assert dave.conversations == names


async def test_the_hub_listens_again_after_redis_restarts(
    own_redis: RedisServer, parts: Parts, hub: ActivityHub, tmp_path: Path
) -> None:
    erin = Heard()
    hub.join("erin", erin, "0-0")
    own_redis.kill()
    again = start_redis(own_redis.port, tmp_path / "again")
    try:
        await parts.client.connection_pool.disconnect()  # the test's own, left from before
        await parts.publish("erin", "after-restart")
        assert await settle(lambda: erin.conversations == ["after-restart"])
    finally:
        again.kill()


@dataclass(eq=False)
class Counted:
    """A listener that only counts what it was handed, in a count shared with others."""

    shared: list[int]

    def __call__(self, entry: ActivityEntry) -> None:
        self.shared[0] += 1


async def cpu_per_user_to_read_everyone(parts: Parts, hub: ActivityHub, users: int) -> float:
    """CPU seconds this process spends per user for the hub to read `users` users who join at
    once, each with one event waiting (as after a sweep or a rejoined channel, all are due)."""
    subs = [f"crowd-{uuid.uuid4().hex[:6]}-{n}" for n in range(users)]
    async with parts.client.pipeline(transaction=False) as pipe:
        for sub in subs:
            parts.log.queue_publish(pipe, sub, [conversation_updated("c", "t", 1)])
        await pipe.execute()
    heard = [0]
    listener = Counted(heard)
    start = time.process_time()
    for sub in subs:
        hub.join(sub, listener, "0-0")
    assert await settle(lambda: heard[0] == users, within=120), f"{heard[0]} of {users} heard"
    used = time.process_time() - start
    for sub in subs:
        hub.leave(sub, listener)
    return used / users


async def test_reading_a_crowd_costs_each_user_the_same_however_large_the_crowd(
    parts: Parts, hub: ActivityHub
) -> None:
    """A sweep, a rejoined channel or a crowd joining at once make every user due. Taking
    them a read at a time must cost each read its own users, not a pass over all those still
    due: that made a user's share grow with the crowd, and held the event loop for seconds
    every sweep at tens of thousands of users."""
    small = await cpu_per_user_to_read_everyone(parts, hub, CROWD // 10)
    large = await cpu_per_user_to_read_everyone(parts, hub, CROWD)
    assert large < 2 * small, (
        f"{large * 1e6:.0f} µs per user among {CROWD}, {small * 1e6:.0f} among {CROWD // 10}"
    )


async def test_a_frozen_store_loses_and_repeats_nothing_and_is_logged_once(
    own_redis: RedisServer, parts: Parts, caplog: pytest.LogCaptureFixture
) -> None:
    """Redis stopped (SIGSTOP) for longer than a reply may take, with a publish queued on it,
    then continued: the hub notices the silent channel, joins it again once Redis answers,
    and its listener gets each event once, in order; each loop logs the trouble once."""
    hub_client = Redis.from_url(own_redis.url, decode_responses=True, socket_timeout=0.5)
    hub = ActivityHub(ActivityLog(hub_client, parts.keys, ttl=60), sweep=None)
    fran = Heard()
    with caplog.at_level(logging.WARNING, logger="gateway.store"):
        hub.start()
        try:
            assert await settle(parts.channel_joined)
            hub.join("fran", fran, "0-0")
            await parts.publish("fran", "before")
            assert await settle(lambda: fran.conversations == ["before"])
            own_redis.process.send_signal(signal.SIGSTOP)
            try:
                during = asyncio.create_task(parts.publish("fran", "during"))  # waits on Redis
                assert await settle(lambda: noted(caplog, "listening for activity failed") > 0), (
                    "the hub never noticed the silent channel"
                )
            finally:
                own_redis.process.send_signal(signal.SIGCONT)
            await asyncio.wait_for(during, 10)
            await parts.publish("fran", "after")
            assert await settle(lambda: len(fran.conversations) >= 3)
            assert await settle(lambda: noted(caplog, "listening for activity works again") > 0)
            await parts.publish("fran", "last")  # everything before it has been handed out
            assert await settle(lambda: fran.conversations[-1:] == ["last"])
            assert fran.conversations == ["before", "during", "after", "last"]
        finally:
            await hub.close()
            await hub_client.aclose()
    for what in ("listening for activity", "reading activity"):
        assert noted(caplog, f"{what} failed") <= 1
        assert noted(caplog, f"{what} works again") <= 1


def has_heard(heard: Heard, count: int) -> bool:
    return len(heard.conversations) >= count


def noted(caplog: pytest.LogCaptureFixture, text: str) -> int:
    return sum(text in record.getMessage() for record in caplog.records)


async def test_an_entry_the_hub_cannot_read_holds_back_no_other_user(
    parts: Parts, hub: ActivityHub
) -> None:
    """An entry without the fields an event is stored with (written by another version of
    the gateway, or by anything else with access to Redis) in one user's stream: the users
    read with that user still hear their news, and so does that user."""
    gina, hank = Heard(), Heard()
    hub.join("gina", gina, "0-0")
    hub.join("hank", hank, "0-0")
    await parts.publish("gina", "first")
    assert await settle(lambda: gina.conversations == ["first"])
    await parts.client.xadd(parts.keys.user_activity("gina"), {"unknown": "field"})
    await parts.publish("gina", "after-the-bad-one")
    await parts.publish("hank", "news")
    assert await settle(lambda: hank.conversations == ["news"]), "hank's news never came"
    assert await settle(lambda: gina.conversations == ["first", "after-the-bad-one"])


NEWS_IN_A_ROW = 20


async def test_a_stream_that_keeps_failing_slows_no_other_users_news(
    parts: Parts, hub: ActivityHub, caplog: pytest.LogCaptureFixture
) -> None:
    """One user's stream fails at every read (its key holds another type here; on a Redis
    Cluster, a node that is down fails its users' streams the same way): that user is read
    again now and then, the others' news is read at once, and the trouble is logged once."""
    gina, hank = Heard(), Heard()
    gina_key = parts.keys.user_activity("gina")
    await parts.client.set(gina_key, "not a stream")
    with caplog.at_level(logging.WARNING, logger="gateway.store"):
        hub.join("gina", gina, "0-0")
        hub.join("hank", hank, "0-0")
        started = time.monotonic()
        for n in range(NEWS_IN_A_ROW):
            await parts.publish("hank", f"c{n}")
            assert await settle(partial(has_heard, hank, n + 1))
        took = time.monotonic() - started
        assert noted(caplog, "reading activity failed") == 1
        await parts.client.delete(gina_key)
        await parts.publish("gina", "back")
        assert await settle(lambda: gina.conversations == ["back"])
        assert await settle(lambda: noted(caplog, "reading activity works again") == 1)
    assert hank.conversations == [f"c{n}" for n in range(NEWS_IN_A_ROW)]
    # One read a second for everyone, while gina's failed, took about 15 s here.
    assert took < 5.0, f"{NEWS_IN_A_ROW} of hank's events, each waited for, took {took:.1f} s"


async def test_a_listener_that_raises_is_dropped_and_stops_no_one_else(
    parts: Parts, hub: ActivityHub
) -> None:
    def broken(entry: ActivityEntry) -> None:
        raise RuntimeError("a listener's bug")

    frank, grace = Heard(), Heard()
    hub.join("frank", broken, "0-0")
    hub.join("frank", frank, "0-0")
    hub.join("grace", grace, "0-0")
    await parts.publish("frank", "one")
    await parts.publish("grace", "two")
    await parts.publish("frank", "three")
    assert await settle(lambda: frank.conversations == ["one", "three"])
    assert await settle(lambda: grace.conversations == ["two"])
    hub.leave("frank", frank)
    assert hub.users == 1  # the broken listener was dropped with frank's last good one


async def test_a_listener_gets_nothing_its_client_had_though_the_reader_is_behind_it(
    parts: Parts, hub: ActivityHub
) -> None:
    """A user's listeners on one instance share the reader's cursor, set by the first: one
    that joins knowing more (a socket's `ready.activity_id`) must not be handed the older."""
    first, later = Heard(), Heard()
    hub.join("hal", first, "0-0")
    await parts.publish("hal", "e0")
    assert await settle(lambda: first.conversations == ["e0"])
    await parts.append_unannounced("hal", "e1")  # stored; the reader has not read it
    await parts.append_unannounced("hal", "e2")
    known = (await parts.log.after("hal", "0-0"))[-1].id
    hub.join("hal", later, known)
    await parts.publish("hal", "e3")
    assert await settle(lambda: first.conversations == ["e0", "e1", "e2", "e3"])
    assert await settle(lambda: later.conversations == ["e3"])
    assert later.conversations == ["e3"]


async def test_a_channel_left_while_the_connection_fails_is_not_heard_again(
    own_redis: RedisServer,
) -> None:
    """The reader's UNSUBSCRIBE is lost and its connection reset: redis-py, reconnecting,
    subscribes again every channel it still counts, the one being left too. The reader
    unsubscribes it once more, so that no instance keeps hearing a user who left."""
    proxy = LossyProxy(own_redis.port)
    port = await proxy.start()
    client = Redis.from_url(f"redis://127.0.0.1:{port}/0", decode_responses=True, retry=RETRIES)
    admin = Redis.from_url(own_redis.url, decode_responses=True)
    keys = Keys(f"l{uuid.uuid4().hex[:6]}:")
    hub = ActivityHub(ActivityLog(client, keys, ttl=60))
    hub.start()
    heard = Parts(admin, ActivityLog(admin, keys, ttl=60), keys).heard_here
    try:
        alice, bob = Heard(), Heard()
        hub.join("alice", alice, "0-0")
        hub.join("bob", bob, "0-0")
        assert await settle(lambda: _equal(heard("alice", "bob"), [1, 1]))
        proxy.losing = b"UNSUBSCRIBE"
        hub.leave("alice", alice)
        assert await settle(lambda: proxy.lost > 0), "the reader sent no UNSUBSCRIBE"
        proxy.reset()
        assert await settle(lambda: _equal(heard("alice", "bob"), [0, 1])), (
            "alice's channel is still heard"
        )
        await Parts(admin, ActivityLog(admin, keys, ttl=60), keys).publish("bob", "after")
        assert await settle(lambda: bob.conversations == ["after"])
    finally:
        await hub.close()
        await proxy.close()
        await client.aclose()
        await admin.aclose()

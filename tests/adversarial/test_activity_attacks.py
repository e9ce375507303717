"""Attacks on the activity fan-out (docs/activity.md): a signed-in user whose token's `sub` is
built to hurt the process's one activity reader, or who opens and drops listeners in a loop.
Every other user of the instance must get their activity as before, and the reader must hold
nothing of a listener once it is gone."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Callable
from dataclasses import replace

import httpx2
import pytest
from redis.asyncio import Redis

from gateway.config import Settings
from gateway.protocol.activity import conversation_updated
from gateway.store.activity import ActivityLog
from gateway.store.keys import Keys
from tests.adversarial.conftest import Survives
from tests.conftest import GatewayFactory
from tests.support.gateways import RunningGateway
from tests.support.polling import settle
from tests.support.raw_ws import RawSocket

Mint = Callable[..., str]
ATTEMPTS = 60


def activity_store(settings: Settings) -> tuple[Redis, ActivityLog]:
    assert settings.redis_url is not None
    redis = Redis.from_url(settings.redis_url, decode_responses=True)
    return redis, ActivityLog(redis, Keys(settings.redis_prefix), settings.activity_ttl)


async def test_a_sub_no_store_key_can_hold_is_refused_before_it_reaches_the_reader(
    start_gateway: GatewayFactory,
    settings: Settings,
    token: Mint,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """JSON lets a token's `sub` hold a lone surrogate ("\\udc80"), which cannot be encoded
    into a Redis key. Let in, an `/activity` stream resumed with `Last-Event-ID` (with no
    connection limit, nothing touches the store before it listens) put that user into the
    reader's next read of many users, which then failed as a whole: every user of the
    instance lost their activity for as long as the attack went on."""
    redis, store = activity_store(settings)
    mallory = token("mallory-\udc80")
    with (
        caplog.at_level(logging.WARNING, logger="gateway.store"),
        start_gateway(limits=replace(settings.limits, connections=0)) as url,
    ):
        victim = f"victim-{uuid.uuid4().hex[:8]}"
        socket = await RawSocket.connect(url, token(victim), activity=True)
        await socket.ready()
        statuses: list[int] = []
        async with httpx2.AsyncClient(base_url=url, timeout=10) as client:

            async def attack() -> None:
                headers = {"Authorization": f"Bearer {mallory}", "Last-Event-ID": "1-0"}
                try:
                    statuses.append((await client.get("/activity", headers=headers)).status_code)
                except httpx2.HTTPError:
                    statuses.append(0)  # the stream broke mid-response

            for n in range(ATTEMPTS):
                attacks = [asyncio.create_task(attack()) for _ in range(3)]
                await store.publish(victim, [conversation_updated(f"c{n}", "t", 1)])
                frame = await socket.read_json(within=10)
                assert (frame["event"], frame["conversation_id"]) == (
                    "conversation.updated",
                    f"c{n}",
                )
                await asyncio.gather(*attacks)
        await socket.aclose()
    await redis.aclose()
    assert set(statuses) == {401}, f"mallory's streams ended with {sorted(set(statuses))}"
    failed = [r.getMessage() for r in caplog.records if "reading activity failed" in r.getMessage()]
    assert not failed, f"the activity reader failed for everyone: {failed}"


# Subs that look like the channel's message (`<id> <sub>`), a key's hash tag, or another user.
ODD_SUBS = [
    "victim ",
    " victim",
    "victim\n",
    "1-0 victim",
    "0-0  victim",
    "{victim}",
    "victim}:activity",
    "vic tim",
    "v" * 255,  # the longest a token may carry
]


async def test_subs_built_like_the_channels_message_get_only_their_own_activity(
    start_gateway: GatewayFactory, settings: Settings, token: Mint
) -> None:
    """The channel says `<id> <sub>` for each publish; a sub with spaces, newlines, braces or
    an id of its own in it is read back whole, so nobody hears another user's news."""
    redis, store = activity_store(settings)
    tag = uuid.uuid4().hex[:6]
    victim = f"victim-{tag}"
    subs = [victim, *(sub.replace("victim", victim) for sub in ODD_SUBS)]
    with start_gateway() as url:
        sockets = {sub: await RawSocket.connect(url, token(sub), activity=True) for sub in subs}
        for sub, socket in sockets.items():
            assert (await socket.ready())["user"] == sub
        for n, sub in enumerate(subs):
            await store.publish(sub, [conversation_updated(f"c{n}", "t", 1)])
        for n, (sub, socket) in enumerate(sockets.items()):
            frame = await socket.read_json(within=10)
            assert frame["conversation_id"] == f"c{n}", f"{sub!r} heard {frame}"
            await socket.send_json(type="ping")
            assert (await socket.read_json(within=10))["type"] == "pong", f"{sub!r} heard more"
            await socket.aclose()
    await redis.aclose()


CHURN = 120  # listeners opened and dropped


async def test_listeners_opened_and_dropped_in_a_loop_leave_nothing_in_the_reader(
    start_gateway: GatewayFactory,
    settings: Settings,
    token: Mint,
    running_gateways: list[RunningGateway],
    survives: Survives,
) -> None:
    """Sockets dropped before, at and after `ready`, and `/activity` streams dropped before
    and after their first byte, each joining the reader as it goes: once they are gone the
    reader follows nobody and has nobody left to read, and a socket opened afterwards still
    hears its user."""
    redis, store = activity_store(settings)
    churner = f"churner-{uuid.uuid4().hex[:8]}"
    with start_gateway() as url:
        running = next(g for g in running_gateways if g.url == url)
        async with survives(url), httpx2.AsyncClient(base_url=url, timeout=10) as client:
            for n in range(CHURN):
                await store.publish(churner, [conversation_updated(f"c{n}", "t", 1)])
                await drop_a_listener(url, client, token(churner), n % 4)
            assert await settle(lambda: reader_holds(running, churner) == (False, False)), (
                f"the reader still holds the user (followed, due): {reader_holds(running, churner)}"
            )
        socket = await RawSocket.connect(url, token(churner), activity=True)
        await socket.ready()
        await store.publish(churner, [conversation_updated("after", "t", 1)])
        assert (await socket.read_json(within=10))["conversation_id"] == "after"
        await socket.aclose()
    await redis.aclose()


async def drop_a_listener(url: str, client: httpx2.AsyncClient, token: str, way: int) -> None:
    if way == 0:  # a socket dropped as soon as it is upgraded, its `ready` unread
        await (await RawSocket.connect(url, token, activity=True)).aclose()
    elif way == 1:  # a socket dropped after its `ready`
        socket = await RawSocket.connect(url, token, activity=True)
        await socket.ready()
        await socket.aclose()
    elif way == 2:  # a stream dropped after its first byte
        headers = {"Authorization": f"Bearer {token}", "Last-Event-ID": "0-0"}
        async with client.stream("GET", "/activity", headers=headers) as response:
            assert response.status_code == 200
            await anext(response.aiter_raw())
    else:  # a stream whose client leaves right after asking
        host, port = url.removeprefix("http://").split(":")
        _, writer = await asyncio.open_connection(host, int(port))
        writer.write(
            f"GET /activity HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n"
            "Last-Event-ID: 0-0\r\n\r\n".encode()
        )
        await writer.drain()
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


def reader_holds(running: RunningGateway, sub: str) -> tuple[bool, bool]:
    """Whether the gateway's activity reader follows the user, and has them yet to read."""
    assert running.loop is not None and running.app is not None
    hub = running.app.state.services.activity.hub

    async def look() -> tuple[bool, bool]:
        return sub in hub._followed, sub in hub._due

    return asyncio.run_coroutine_threadsafe(look(), running.loop).result(timeout=10)


FLOOD = 400
KILLS = 8


async def test_a_channel_killed_again_and_again_under_a_flood_loses_and_repeats_nothing(
    start_gateway: GatewayFactory, settings: Settings, token: Mint
) -> None:
    """The reader's pub/sub connection killed (CLIENT KILL TYPE pubsub) over and over while
    one user's events pour in: each of the user's sockets gets every event once, in order."""
    redis, store = activity_store(settings)
    user = f"flooder-{uuid.uuid4().hex[:8]}"
    with start_gateway() as url:
        sockets = [await RawSocket.connect(url, token(user), activity=True) for _ in range(2)]
        for socket in sockets:
            await socket.ready()

        async def flood() -> None:
            for n in range(FLOOD):
                await store.publish(user, [conversation_updated(f"c{n}", "t", 1)])

        async def joined() -> bool:
            counts = await redis.pubsub_numsub(Keys(settings.redis_prefix).activity_channel())
            return bool(counts and counts[0][1] >= 1)

        async def kill() -> int:
            killed = 0
            for _ in range(KILLS):
                assert await settle(joined), "the reader did not join the channel again"
                killed += await redis.client_kill_filter(_type="pubsub")
            return killed

        killed = (await asyncio.gather(flood(), kill()))[1]
        assert killed >= KILLS  # each kill found the reader's connection, or more of them
        for socket in sockets:
            heard = [(await socket.read_json(within=15))["conversation_id"] for _ in range(FLOOD)]
            assert heard == [f"c{n}" for n in range(FLOOD)]
            await socket.send_json(type="ping")
            assert (await socket.read_json(within=10))["type"] == "pong", "an event came twice"
            await socket.aclose()
    await redis.aclose()


async def test_an_activity_stream_resumed_from_a_future_id_silences_no_other_listener(
    start_gateway: GatewayFactory, settings: Settings, token: Mint
) -> None:
    """The reader keeps one cursor per user, set by the user's first listener on the instance.
    A client's `Last-Event-ID` ahead of every id the store gave (a forged one, or one from a
    store whose clock was ahead) must not become that cursor: the user's sockets on the
    instance would hear nothing until the store's ids caught up with it."""
    redis, store = activity_store(settings)
    user = f"resumer-{uuid.uuid4().hex[:8]}"
    headers = {"Authorization": f"Bearer {token(user)}", "Last-Event-ID": "999999999999999-0"}
    with start_gateway() as url:
        async with (
            httpx2.AsyncClient(base_url=url, timeout=10) as client,
            client.stream("GET", "/activity", headers=headers) as response,
        ):
            assert response.status_code == 200
            chunks = response.aiter_raw()
            assert await anext(chunks) == b": activity\n\n"  # listening now
            socket = await RawSocket.connect(url, token(user), activity=True)
            await socket.ready()
            await store.publish(user, [conversation_updated("heard", "t", 1)])
            assert (await socket.read_json(within=10))["conversation_id"] == "heard"
            await socket.aclose()
            await chunks.aclose()
    await redis.aclose()


OPENED_DURING = 10


async def test_sockets_opened_during_a_flood_get_every_event_from_their_first_once_in_order(
    start_gateway: GatewayFactory, settings: Settings, token: Mint
) -> None:
    """Sockets of one user opened while the user's events pour in (the reader already follows
    the user for another socket): each gets, from the first event it gets on, every event the
    store holds, once and in order (docs/activity.md, "Ordering and gaps")."""
    redis, store = activity_store(settings)
    user = f"busy-{uuid.uuid4().hex[:8]}"
    with start_gateway() as url:
        first = await RawSocket.connect(url, token(user), activity=True)
        await first.ready()
        sockets = [first]

        async def flood() -> None:
            for n in range(FLOOD):
                await store.publish(user, [conversation_updated(f"c{n}", "t", 1)])

        flooding = asyncio.create_task(flood())
        for _ in range(OPENED_DURING):
            socket = await RawSocket.connect(url, token(user), activity=True)
            await socket.ready()
            sockets.append(socket)
        await flooding
        await store.publish(user, [conversation_updated("end", "t", 1)])
        stored = [entry.id for entry in await store.after(user, "0-0")]
        for n, socket in enumerate(sockets):
            heard: list[str] = []
            while not heard or stored[-1] != heard[-1]:
                heard.append((await socket.read_json(within=10))["activity_id"])
            at = 0 if n == 0 else stored.index(heard[0])  # the first socket hears them all
            assert heard == stored[at:], f"socket {n} heard a gap, a repeat or a reordering"
            await socket.aclose()
    await redis.aclose()

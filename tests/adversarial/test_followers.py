"""Shared resources one user could take by following generations, or by flooding the log
buffer while Redis is down.

- Followers of generations running on another instance used to hold a pooled Redis
  connection each while they waited: a few hundred from one user took the whole pool, and
  every other user of that instance got 503. Now one reader per process serves them all.
- A following stream holds one of its user's LIMIT_CONNECTIONS slots, as a socket does, and a
  socket's resumes count against MAX_CONCURRENT_PER_CONNECTION.
- The log writer's buffer is shared by every generation of a process while Redis is down; a
  generation that floods it loses its own log, not another's.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
from redis.asyncio import Redis
from websockets.asyncio.client import ClientConnection

from gateway.agents.base import AgentInput
from gateway.config import AgentConfig, Settings
from gateway.events import AgentEvent, Finish, TextDelta, Usage
from tests.adversarial.test_redis_faults import (
    GATE_TIMEOUT,
    GATES,
    assert_whole,
    gated,
    split,
)
from tests.conftest import GatewayFactory
from tests.support.bystander import healthy
from tests.support.polling import settle
from tests.support.processes import GatewayProcess, config_file, gateway_environment, start_pair
from tests.support.redis import RedisServer, running_redis
from tests.support.sse import stream_json
from tests.support.upstream import FakeUpstream
from tests.support.ws import connected, receive, send, text_of, through_seq, until_done

Mint = Callable[..., str]
TOKENS = 40  # of each held answer: three, then the hold, then the rest
ANSWER = "".join(f" t{i}" for i in range(TOKENS))
HEAD = " t0 t1 t2"  # before the hold, in one chunk or several
GENERATIONS = 3
SSE_PER_GENERATION = 90
SOCKETS = 12  # each resumes every generation: 36 more followers


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of this test alone: its count of blocked clients is the gateways'."""
    with running_redis(tmp_path) as server:
        yield server


def held_model() -> str:
    """A model of this test's own on the fake upstream: three tokens, then it waits for
    `release`, then the rest."""
    return f"fake-hold3-n{TOKENS}-{uuid.uuid4().hex[:6]}"


@pytest.fixture
async def pair_on(
    own_redis: RedisServer, upstream: tuple[FakeUpstream, str], tmp_path: Path
) -> AsyncIterator[Callable[..., Any]]:
    """`await pair_on(model, **env)`: two gateways on this test's Redis knowing `model`."""
    started: list[GatewayProcess] = []

    async def start(model: str, **changes: str) -> tuple[GatewayProcess, GatewayProcess]:
        config = config_file(tmp_path, upstream[1], extra=[model])
        env = gateway_environment(own_redis.url, config, **changes)
        a, b = await asyncio.to_thread(start_pair, tmp_path, env)
        started.extend((a, b))
        return a, b

    yield start
    for gateway in started:
        gateway.stop()


async def start_held(url: str, token: str, model: str, count: int) -> list[dict[str, Any]]:
    """Start `count` held generations over one socket; their `start` frames, once each has
    streamed the tokens before its hold (and so has them in its log)."""
    ws = await connected(url, token)
    for n in range(count):
        await send(ws, type="completion", id=f"g{n}", message="x", model=model)
    seen: dict[str, list[dict[str, Any]]] = {f"g{n}": [] for n in range(count)}
    async with asyncio.timeout(20):
        while any(text_of(frames) != HEAD for frames in seen.values()):
            frame = await receive(ws)
            seen[frame["id"]].append(frame)
    return [frames[0] for frames in seen.values()]


class Arrivals:
    """Counts followers that have received what the held generations streamed so far."""

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.count = 0
        self.all = asyncio.Event()

    def one(self) -> None:
        self.count += 1
        if self.count == self.expected:
            self.all.set()


async def sse_follower(
    client: httpx2.AsyncClient, url: str, token: str, generation_id: str, arrivals: Arrivals
) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    headers = {"Authorization": f"Bearer {token}", "Last-Event-ID": "0"}
    async with client.stream(
        "GET", f"{url}/generations/{generation_id}/events", headers=headers
    ) as response:
        assert response.status_code == 200
        async for event in stream_json(response.aiter_lines()):
            events.append(event)
            if event["type"] == "chunk" and text_of(events) == HEAD:
                arrivals.one()
    return events


async def ws_follower(
    url: str, token: str, generation_ids: list[str], arrivals: Arrivals
) -> list[list[dict[str, Any]]]:
    ws = await connected(url, token)
    for n, generation_id in enumerate(generation_ids):
        await send(ws, type="resume", generation_id=generation_id, after=0, id=f"f{n}")
    followed: dict[str, list[dict[str, Any]]] = {f"f{n}": [] for n in range(len(generation_ids))}
    while not all(frames and frames[-1]["done"] for frames in followed.values()):
        frame = await receive(ws)
        if frame["type"] == "resumed":
            continue
        frames = followed[frame["id"]]
        frames.append(frame)
        if frame["type"] == "chunk" and text_of(frames) == HEAD:
            arrivals.one()
    await ws.close()
    return list(followed.values())


def assert_followed(events: list[dict[str, Any]]) -> None:
    """Every event once, in order, through `done`: start, the answer, done."""
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert text_of(events) == ANSWER
    assert events[-1]["type"] == "done" and events[-1]["finish_reason"] == "stop"


async def blocked_clients(redis: Redis) -> int:
    return int((await redis.info("clients"))["blocked_clients"])


async def served_promptly(url: str, token: str) -> None:
    """Another user's completion and the readiness probe answer, each within the pool's wait
    (REDIS_POOL_TIMEOUT): with no connection free in time they would be 503."""
    async with httpx2.AsyncClient(timeout=20) as client:
        ready = await client.get(f"{url}/readyz")
        answer = await client.post(
            f"{url}/completion",
            json={"message": "hello there", "model": "fake"},
            headers={"Authorization": f"Bearer {token}"},
        )
    assert ready.status_code == 200, ready.text
    assert answer.status_code == 200, answer.text
    assert answer.json()["content"] == "You said: hello there"


async def test_hundreds_of_followers_leave_the_redis_pool_to_everyone_else(
    pair_on: Callable[..., Any],
    own_redis: RedisServer,
    fake_upstream: FakeUpstream,
    token: Mint,
) -> None:
    """One user follows three generations running on instance A from instance B, 306 times
    (more than fifteen times B's pool of 20), with no cap on their connections. While they
    wait, another user's completion and /readyz on B are served, and one blocked read serves
    them all; then every follower gets every event exactly once, in order."""
    model = held_model()
    a, b = await pair_on(
        model,
        REDIS_MAX_CONNECTIONS="20",
        REDIS_POOL_TIMEOUT="2",
        LIMIT_CONNECTIONS="0",
        LIMIT_CONCURRENT_GENERATIONS="0",
    )
    attacker = token(f"mallory-{uuid.uuid4().hex[:6]}")
    starts = await start_held(a.url, attacker, model, GENERATIONS)
    generation_ids = [start["generation_id"] for start in starts]
    arrivals = Arrivals(GENERATIONS * (SSE_PER_GENERATION + SOCKETS))
    redis = Redis.from_url(own_redis.url, decode_responses=True)
    limits = httpx2.Limits(max_connections=None, max_keepalive_connections=0)
    try:
        async with httpx2.AsyncClient(timeout=60, limits=limits) as client:
            sse = [
                asyncio.create_task(sse_follower(client, b.url, attacker, g, arrivals))
                for g in generation_ids
                for _ in range(SSE_PER_GENERATION)
            ]
            sockets = [
                asyncio.create_task(ws_follower(b.url, attacker, generation_ids, arrivals))
                for _ in range(SOCKETS)
            ]
            async with asyncio.timeout(30):
                await arrivals.all.wait()
            # Every follower has read the backlog and waits for the held generations.
            assert await settle(lambda: _blocked(redis, 1), 10), (
                "timed out waiting for one blocked read for all followers"
            )
            for _ in range(3):
                await served_promptly(b.url, token(f"bob-{uuid.uuid4().hex[:6]}"))
            assert await healthy(b.url)
            fake_upstream.release(model)
            async with asyncio.timeout(30):
                streams = await asyncio.gather(*sse)
                sockets_followed = await asyncio.gather(*sockets)
        for events in streams:
            assert_followed(events)
        for followed in sockets_followed:
            for frames in followed:
                assert_followed(frames)
        # Nobody follows any more: the reader stops reading.
        assert await settle(lambda: _blocked(redis, 0), 10), (
            "timed out waiting for the reader to stop"
        )
    finally:
        await redis.aclose()


async def _blocked(redis: Redis, count: int) -> bool:
    return await blocked_clients(redis) == count


async def sse_open(
    client: httpx2.AsyncClient, url: str, token: str, path: str
) -> tuple[httpx2.Response, AsyncIterator[str]]:
    """A following stream whose response head has arrived."""
    request = client.build_request(
        "GET", f"{url}{path}", headers={"Authorization": f"Bearer {token}"}
    )
    response = await client.send(request, stream=True)
    return response, response.aiter_lines()


async def test_following_streams_take_connection_slots_like_sockets(
    pair_on: Callable[..., Any], fake_upstream: FakeUpstream, token: Mint
) -> None:
    """LIMIT_CONNECTIONS 3: a socket and two following streams fill it, across instances; the
    next stream, on either endpoint, is refused 429 with Retry-After; a stream that ends gives
    its slot back."""
    model = held_model()
    a, b = await pair_on(model, LIMIT_CONNECTIONS="3")
    user = token(f"carol-{uuid.uuid4().hex[:6]}")
    (start,) = await start_held(a.url, user, model, 1)  # the socket takes the first slot
    generation_id, conversation_id = start["generation_id"], start["conversation_id"]
    events_path = f"/generations/{generation_id}/events"
    async with httpx2.AsyncClient(timeout=20) as client:
        first, _ = await sse_open(client, b.url, user, events_path)
        second, _ = await sse_open(client, a.url, user, f"/api/chat/{conversation_id}/stream")
        assert (first.status_code, second.status_code) == (200, 200)
        for url, path in ((b.url, events_path), (a.url, f"/api/chat/{conversation_id}/stream")):
            refused = await client.get(f"{url}{path}", headers={"Authorization": f"Bearer {user}"})
            assert refused.status_code == 429, refused.text
            body = refused.json()
            assert body["error"] == "rate_limited" and body["retry_after"] > 0
            assert "3 connections" in body["detail"]
            assert int(refused.headers["retry-after"]) >= 1
        other = await connected(b.url, token(f"dave-{uuid.uuid4().hex[:6]}"))  # not counted
        await other.close()
        await first.aclose()  # its slot is given back once the instance sees it go
        streams: list[tuple[httpx2.Response, AsyncIterator[str]]] = []

        async def admitted() -> bool:
            response, lines = await sse_open(client, b.url, user, events_path)
            if response.status_code != 200:
                await response.aclose()
                return False
            streams.append((response, lines))
            return True

        assert await settle(admitted, 10), "timed out waiting for a slot to be given back"
        fake_upstream.release(model)
        response, lines = streams[0]
        events = [event async for event in stream_json(lines)]
        assert_followed(events)
        await response.aclose()
        await second.aclose()


async def test_a_socket_follows_at_most_its_share_of_generations(
    start_gateway: GatewayFactory, token: Mint
) -> None:
    """Resumes count against MAX_CONCURRENT_PER_CONNECTION with the socket's completions."""
    with start_gateway(max_concurrent_per_connection=2) as url:
        user = token(f"erin-{uuid.uuid4().hex[:6]}")
        owners: list[ClientConnection] = []
        generation_ids = []
        for n in range(3):
            ws = await connected(url, user)
            await send(ws, type="completion", id=f"g{n}", message="x", model="fake-hang")
            generation_ids.append((await receive(ws))["generation_id"])
            owners.append(ws)
        follower = await connected(url, user)
        for n, generation_id in enumerate(generation_ids):
            await send(follower, type="resume", generation_id=generation_id, after=0, id=f"f{n}")
        frames = [await receive(follower) for _ in range(5)]  # two resumed + starts, one error
        errors = [f for f in frames if f["type"] == "error"]
        assert len(errors) == 1 and errors[0]["id"] == "f2"
        assert errors[0]["code"] == "rate_limited" and errors[0]["done"] is True
        assert "At most 2" in errors[0]["message"]
        for n, ws in enumerate(owners):
            await send(ws, type="cancel", id=f"g{n}")
            assert (await until_done(ws, f"g{n}"))[-1]["finish_reason"] == "cancelled"


FLOODED: dict[str, threading.Event] = {}


class FloodAgent:
    """Answers `<gate> <count>`: waits for the gate, streams `count` one-word chunks as fast
    as it can, says so, then waits for the gate again before it finishes."""

    def __init__(self, name: str, config: AgentConfig) -> None:
        self.name = name

    async def run(self, given: AgentInput) -> AsyncIterator[AgentEvent]:
        key, count = given.message.split()
        await asyncio.to_thread(GATES[key].acquire, timeout=GATE_TIMEOUT)
        for n in range(int(count)):
            yield TextDelta(" w")
            if n % 1000 == 0:
                await asyncio.sleep(0)  # let the rest of the process run
        FLOODED[key].set()
        await asyncio.to_thread(GATES[key].acquire, timeout=GATE_TIMEOUT)
        yield Finish("stop", Usage(completion_tokens=int(count)))


@pytest.fixture
def flood_gateway(
    own_redis: RedisServer, start_gateway: GatewayFactory, settings: Settings
) -> Iterator[str]:
    plugins = "tests.adversarial"
    agents = {
        **settings.agents,
        "gated": AgentConfig("gated", plugin=f"{plugins}.test_redis_faults:GatedAgent"),
        "flood": AgentConfig("flood", plugin=f"{plugins}.test_followers:FloodAgent"),
    }
    with start_gateway(
        redis_url=own_redis.url, agents=agents, redis_socket_timeout=2.0, lease_ttl=1.0
    ) as url:
        yield url


async def test_one_generation_cannot_fill_the_log_buffer_for_another(
    flood_gateway: str,
    own_redis: RedisServer,
    token: Mint,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Redis stops. One generation streams 99,990 events, nearly the process's whole buffer
    (100,000), then waits; another generation streams on. The flood loses its own log at its
    share (10,000); the other keeps its log and stores its answer once Redis is back."""
    url = flood_gateway
    victim_message, victim_gate = gated("5 | 20")
    victim = await connected(url, token("alice"))
    await send(victim, type="completion", id="v", message=victim_message, agent="gated")
    frames = await until_done(victim, "v", through_seq(6), within=20)
    key = uuid.uuid4().hex
    GATES[key], FLOODED[key] = threading.Semaphore(0), threading.Event()
    flood = await connected(url, token("mallory"))
    await send(flood, type="completion", id="f", message=f"{key} 99990", agent="flood")
    flood_id = (await receive(flood))["generation_id"]
    await flood.close()  # the generation runs on without its client
    own_redis.process.send_signal(signal.SIGSTOP)
    try:
        with caplog.at_level(logging.WARNING, logger="gateway.store"):
            GATES[key].release()
            assert await asyncio.to_thread(FLOODED[key].wait, 30)
            victim_gate.release()
            frames += await until_done(victim, "v", within=20)
    finally:
        own_redis.process.send_signal(signal.SIGCONT)
    events, notices = split(frames)
    assert_whole(events, 25)
    assert notices == ["persistence_degraded"]  # not persistence_lost
    given_up = [r.getMessage() for r in caplog.records if "given up" in r.getMessage()]
    assert len(given_up) == 1 and given_up[0].startswith(f"generation {flood_id}: ")
    assert given_up[0].endswith("events wait for the store; its log is given up")
    GATES[key].release()  # the flood ends; its answer is lost

    async def victim_stored() -> bool:
        ws = await connected(url, token("alice"))
        await send(ws, type="resume", generation_id=events[0]["generation_id"], after=0, id="p")
        resumed = await receive(ws)
        await ws.close()
        return bool(resumed.get("status") == "complete")

    assert await settle(victim_stored, 20), (
        "timed out waiting for the victim's buffered log to be written"
    )
    replay = await connected(url, token("alice"))
    await send(replay, type="resume", generation_id=events[0]["generation_id"], after=0, id="r")
    stored = [f for f in await until_done(replay, "r") if f["type"] != "resumed"]
    assert [{**f, "id": "v"} for f in stored] == events

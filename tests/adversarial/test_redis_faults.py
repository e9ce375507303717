"""Redis fails under a live stream: killed, restarted empty, stopped and continued.

Each test runs its own redis-server (so it may kill it) and an in-thread gateway on it. The
answer comes from `GatedAgent`, which streams in segments and waits at each `|` until the
test opens the gate, so every fault lands exactly mid-stream.
"""

from __future__ import annotations

import asyncio
import signal
import threading
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
from redis.asyncio import Redis

from gateway.agents.base import AgentInput
from gateway.config import AgentConfig, Settings
from gateway.core.generations import LOG_READ_BATCH
from gateway.events import AgentEvent, Finish, TextDelta, Usage
from gateway.store.keys import Keys
from tests.conftest import GatewayFactory
from tests.support.bystander import healthy
from tests.support.polling import settle
from tests.support.raw_ws import RawSocket
from tests.support.redis import RedisServer, start_redis
from tests.support.serving import free_port
from tests.support.sse import SseEvent, sse_events, stream_events
from tests.support.ws import connected, receive, send, through_seq, until_done

Mint = Callable[..., str]
GATES: dict[str, threading.Semaphore] = {}
GATE_TIMEOUT = 30.0  # a gate never opened (a failed test) must not hold a thread forever


class GatedAgent:
    """Answers `<gate> 5 | 20`: five chunks, then waits for the gate, then twenty more."""

    def __init__(self, name: str, config: AgentConfig) -> None:
        self.name = name

    async def run(self, given: AgentInput) -> AsyncIterator[AgentEvent]:
        key, *plan = given.message.split()
        sent = 0
        for step in plan:
            if step == "|":
                await asyncio.to_thread(GATES[key].acquire, timeout=GATE_TIMEOUT)
                continue
            for _ in range(int(step)):
                yield TextDelta(f" c{sent}")
                sent += 1
                await asyncio.sleep(0.002)  # spread over several flush windows
        yield Finish("stop", Usage(completion_tokens=sent))


def gated(plan: str) -> tuple[str, threading.Semaphore]:
    """A message for GatedAgent and the gate it waits on."""
    key = uuid.uuid4().hex
    GATES[key] = threading.Semaphore(0)
    return f"{key} {plan}", GATES[key]


def expected_text(chunks: int) -> str:
    return "".join(f" c{i}" for i in range(chunks))


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[list[RedisServer]]:
    """This test's own redis-server; a restart appends the new one (same port)."""
    servers = [start_redis(free_port(), tmp_path)]
    yield servers
    for server in servers:
        server.kill()


@pytest.fixture
def faulty_gateway(
    private_redis: list[RedisServer], start_gateway: GatewayFactory, settings: Settings
) -> Iterator[str]:
    agents = {
        **settings.agents,
        "gated": AgentConfig("gated", plugin="tests.adversarial.test_redis_faults:GatedAgent"),
    }
    # Short leases: renewals run (and fail) several times during each outage.
    with start_gateway(
        redis_url=private_redis[0].url, agents=agents, redis_socket_timeout=2.0, lease_ttl=1.0
    ) as url:
        yield url


def restart_empty(servers: list[RedisServer], tmp_path: Path) -> None:
    servers.append(start_redis(servers[-1].port, tmp_path))


async def ready_status(url: str) -> int:
    async with httpx2.AsyncClient(timeout=5) as client:
        return (await client.get(f"{url}/readyz")).status_code


def noticed(code: str) -> Callable[[dict[str, Any]], bool]:
    return lambda frame: frame["type"] == "notice" and frame["code"] == code


def split(frames: Iterable[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[str]]:
    """The events, and the codes of the notices among them."""
    frames = list(frames)
    events = [f for f in frames if f["type"] != "notice"]
    return events, [f["code"] for f in frames if f["type"] == "notice"]


def assert_whole(events: list[dict[str, Any]], chunks: int) -> None:
    """Every event once, in order, ending in `done`: start, the chunks, done."""
    assert [e["seq"] for e in events] == list(range(1, chunks + 3))
    assert "".join(e["content"] for e in events if e["type"] == "chunk") == expected_text(chunks)
    assert events[-1]["type"] == "done" and events[-1]["finish_reason"] == "stop"


async def new_completion_works(url: str, token: str) -> None:
    ws = await connected(url, token)
    await send(ws, type="completion", id="after", message="back again", model="echo")
    frames = await until_done(ws, "after", within=20)
    assert [f["type"] for f in frames] == ["start", "chunk", "chunk", "done"]  # and no notice


async def test_redis_killed_mid_stream_the_stream_completes_with_a_notice(
    faulty_gateway: str, private_redis: list[RedisServer], token: Mint, tmp_path: Path
) -> None:
    url = faulty_gateway
    message, gate = gated("5 | 40")
    ws = await connected(url, token())
    await send(ws, type="completion", id="r", message=message, agent="gated")
    frames = await until_done(ws, "r", through_seq(6), within=20)
    private_redis[0].kill()
    gate.release()
    frames += await until_done(ws, "r", within=20)
    events, notices = split(frames)
    assert_whole(events, 45)
    assert notices == ["persistence_degraded"]
    notice = next(f for f in frames if f["type"] == "notice")
    assert notice["generation_id"] == events[0]["generation_id"] and notice["message"]

    # While Redis is down: new work is refused as unavailable (retryable), not hung or a 500.
    await send(ws, type="completion", id="refused", message="x", model="echo")
    refused = await asyncio.wait_for(receive(ws), 10)
    assert (refused["type"], refused["code"], refused["retryable"]) == (
        "error",
        "unavailable",
        True,
    )
    async with httpx2.AsyncClient(timeout=10) as client:
        response = await client.post(
            f"{url}/completion",
            json={"message": "x", "model": "echo"},
            headers={"Authorization": f"Bearer {token()}"},
        )
    assert response.status_code == 503 and response.json()["error"] == "unavailable"
    assert await ready_status(url) == 503
    assert await healthy(url)

    restart_empty(private_redis, tmp_path)
    assert await settle(lambda: _ready(url), 15), "timed out waiting for /readyz to recover"
    await new_completion_works(url, token())
    await send(ws, type="completion", id="same-socket", message="still here", model="echo")
    assert (await until_done(ws, "same-socket", within=20))[-1]["type"] == "done"


async def _ready(url: str) -> bool:
    return await ready_status(url) == 200


async def test_redis_restarted_empty_mid_stream_the_client_still_gets_everything(
    faulty_gateway: str, private_redis: list[RedisServer], token: Mint, tmp_path: Path
) -> None:
    """The generation's record vanishes with the data: it keeps streaming to its client,
    which learns the answer will not be kept, and nothing more is written for it."""
    url = faulty_gateway
    message, gate = gated("5 | 20 | 20")
    ws = await connected(url, token())
    await send(ws, type="completion", id="r", message=message, agent="gated")
    frames = await until_done(ws, "r", through_seq(6), within=20)
    private_redis[0].kill()
    gate.release()
    frames += await until_done(ws, "r", noticed("persistence_degraded"), within=20)
    restart_empty(private_redis, tmp_path)
    frames += await until_done(ws, "r", noticed("persistence_lost"), within=20)
    gate.release()
    frames += await until_done(ws, "r", within=20)
    events, notices = split(frames)
    assert_whole(events, 45)
    assert notices == ["persistence_degraded", "persistence_lost"]

    generation_id = events[0]["generation_id"]
    await send(ws, type="resume", generation_id=generation_id, after=0, id="again")
    assert (await asyncio.wait_for(receive(ws), 10))["code"] == "not_found"
    await new_completion_works(url, token())


async def test_redis_stopped_mid_stream_nothing_is_lost_or_repeated(
    faulty_gateway: str, private_redis: list[RedisServer], token: Mint
) -> None:
    """SIGSTOP: writes time out but may still run once Redis continues. The live stream
    goes on; afterwards the stored log and the stored answer hold every event exactly once."""
    url = faulty_gateway
    server = private_redis[0]
    message, gate = gated("5 | 20 | 20")
    ws = await connected(url, token())
    await send(ws, type="completion", id="r", message=message, agent="gated")
    frames = await until_done(ws, "r", through_seq(6), within=20)
    server.process.send_signal(signal.SIGSTOP)
    try:
        gate.release()
        # Delivery does not wait on the stalled store; its writes time out (REDIS_SOCKET_TIMEOUT).
        frames += await until_done(ws, "r", through_seq(26), within=20)
        frames += await until_done(ws, "r", noticed("persistence_degraded"), within=20)
        assert await ready_status(url) == 503
    finally:
        server.process.send_signal(signal.SIGCONT)
    gate.release()
    frames += await until_done(ws, "r", within=20)
    events, notices = split(frames)
    assert_whole(events, 45)
    assert notices == ["persistence_degraded"]

    generation_id, conversation_id = events[0]["generation_id"], events[0]["conversation_id"]
    assert await settle(lambda: _stored(url, token(), generation_id), 15), (
        "timed out waiting for the buffered end to land"
    )
    stored = await _replay(url, token(), generation_id)
    assert [{**e, "id": "r"} for e in stored] == events
    async with httpx2.AsyncClient(timeout=10) as client:
        view = (
            await client.get(
                f"{url}/conversations/{conversation_id}",
                headers={"Authorization": f"Bearer {token()}"},
            )
        ).json()
    answers = [m for m in view["messages"] if m["role"] == "assistant"]
    assert [(a["content"], a["status"]) for a in answers] == [(expected_text(45), "complete")]
    assert await healthy(url)


async def _replay(url: str, token: str, generation_id: str) -> list[dict[str, Any]]:
    async with httpx2.AsyncClient(timeout=10) as client:
        response = await client.get(
            f"{url}/generations/{generation_id}/events",
            headers={"Authorization": f"Bearer {token}", "Last-Event-ID": "0"},
        )
    assert response.status_code == 200
    return [e for _, e in sse_events(response.text)]


async def _stored(url: str, token: str, generation_id: str) -> bool:
    ws = await connected(url, token)
    await send(ws, type="resume", generation_id=generation_id, after=0, id="probe")
    resumed = await asyncio.wait_for(receive(ws), 10)
    await ws.close()
    return bool(resumed.get("status") == "complete")


async def test_an_sse_stream_gets_the_notice_as_an_event_then_the_end(
    faulty_gateway: str, private_redis: list[RedisServer], token: Mint
) -> None:
    url = faulty_gateway
    message, gate = gated("5 | 20")
    blocks: list[SseEvent] = []
    async with (
        httpx2.AsyncClient(timeout=20) as client,
        client.stream(
            "POST",
            f"{url}/completion",
            json={"message": message, "agent": "gated", "stream": True},
            headers={"Authorization": f"Bearer {token()}"},
        ) as response,
    ):
        assert response.status_code == 200
        async for block in stream_events(response.aiter_lines()):
            blocks.append(block)
            if len(blocks) == 6:  # start and five chunks
                private_redis[0].kill()
                gate.release()
    notices = [b for b in blocks if b.event == "notice"]
    assert len(notices) == 1
    notice = notices[0].json()
    assert notice["type"] == "notice" and notice["code"] == "persistence_degraded"
    events = [b.json() for b in blocks if b.id is not None]
    assert_whole(events, 25)
    assert blocks.index(notices[0]) < len(blocks) - 1  # before the final event


async def test_a_follower_on_another_instance_waits_out_a_stopped_store(
    private_redis: list[RedisServer], start_gateway: GatewayFactory, settings: Settings, token: Mint
) -> None:
    """A client resuming on an instance that does not run the generation reads its log from
    Redis. While Redis is stopped it is told once, then gets every event exactly once."""
    agents = {
        **settings.agents,
        "gated": AgentConfig("gated", plugin="tests.adversarial.test_redis_faults:GatedAgent"),
    }
    options = {"redis_url": private_redis[0].url, "agents": agents, "redis_socket_timeout": 2.0}
    with start_gateway(**options) as owner, start_gateway(**options) as other:
        message, gate = gated("5 | 20 | 20")
        ws = await connected(owner, token())
        await send(ws, type="completion", id="r", message=message, agent="gated")
        own = await until_done(ws, "r", through_seq(6), within=20)
        follower = await connected(other, token())
        await send(follower, type="resume", generation_id=own[0]["generation_id"], after=0, id="f")
        followed = await until_done(follower, "f", through_seq(6), within=20)
        server = private_redis[0]
        server.process.send_signal(signal.SIGSTOP)
        try:
            followed += await until_done(follower, "f", noticed("store_unreachable"), within=20)
        finally:
            server.process.send_signal(signal.SIGCONT)
        gate.release()
        gate.release()
        followed += await until_done(follower, "f", within=20)
    events, notices = split(f for f in followed if f["type"] != "resumed")
    assert_whole(events, 45)
    assert notices == ["store_unreachable"]


PAD = "." * 4096
# Past the kernel's send buffer, what a WebSocket connection holds between the gateway and a
# client that does not read: the transport's and the outbox's frames, the client's receive
# buffer and its stream reader's.
CONNECTION_BUFFERS = 1024 * 1024


def send_buffer_limit() -> int:
    """The most a TCP socket's send buffer grows to (tcp_wmem's maximum; 4 MiB by default)."""
    try:
        return int(Path("/proc/sys/net/ipv4/tcp_wmem").read_text().split()[2])
    except (OSError, IndexError, ValueError):
        return 4 * 1024 * 1024


class WideGatedAgent:
    """GatedAgent's answer with every chunk 4 KiB longer: a few fill a slow reader's buffers."""

    def __init__(self, name: str, config: AgentConfig) -> None:
        self.name = name
        self._gated = GatedAgent(name, config)

    async def run(self, given: AgentInput) -> AsyncIterator[AgentEvent]:
        async for event in self._gated.run(given):
            yield TextDelta(event.text + PAD) if isinstance(event, TextDelta) else event


async def test_a_resume_on_the_running_instance_waits_out_a_stopped_store_for_older_events(
    private_redis: list[RedisServer], start_gateway: GatewayFactory, settings: Settings, token: Mint
) -> None:
    """A generation keeps only its last events in memory; a resume from 0 on its own instance
    reads the older ones from its log. While Redis is stopped that read waits, the client is
    told once, and then every event arrives exactly once: never a gap."""
    plugin = "tests.adversarial.test_redis_faults:WideGatedAgent"
    agents = {**settings.agents, "wide": AgentConfig("wide", plugin=plugin)}
    server = private_redis[0]
    # The replay runs ahead of its reader by what the connection holds, and on loopback the
    # kernel's send buffer alone grows to megabytes whatever the reader's window (601 frames
    # of 4 KiB have fitted while the client read ten: no log read was left for the stop).
    # So the log is longer than that by more than a read's batch: a read is still to come
    # when Redis stops, however far ahead the replay got meanwhile.
    held = (send_buffer_limit() + CONNECTION_BUFFERS) // len(PAD)
    wide = held + 2 * LOG_READ_BATCH
    with start_gateway(
        redis_url=server.url,
        agents=agents,
        redis_socket_timeout=2.0,
        generation_memory_events=8,
        max_queued_frames=16,  # the replay keeps only a few frames ahead in the outbox
        max_answer_chars=(wide + 20) * (len(PAD) + 8),
    ) as url:
        message, gate = gated(f"{wide} | 20")
        ws = await connected(url, token())
        await send(ws, type="completion", id="r", message=message, agent="wide")
        generation_id = (await until_done(ws, "r", through_seq(1), within=20))[0]["generation_id"]
        await ws.close()  # the owner leaves; the answer runs on
        redis = Redis.from_url(server.url, decode_responses=True)
        events_key = Keys(settings.redis_prefix).events(generation_id)
        assert await settle(lambda: has_entries(redis, events_key, wide + 1), 30), (
            f"timed out waiting for the log to hold seq {wide + 1}"
        )
        await redis.aclose()

        # A reader with a tiny receive window, which reads a few frames before Redis stops.
        follower = await RawSocket.connect(url, token(), receive_buffer=4096)
        await follower.ready()
        await follower.send_json(type="resume", id="f", generation_id=generation_id, after=0)
        followed = [await follower.read_json() for _ in range(10)]
        server.process.send_signal(signal.SIGSTOP)
        try:
            while followed[-1]["type"] != "notice":
                followed.append(await follower.read_json(within=20))
        finally:
            server.process.send_signal(signal.SIGCONT)
        gate.release()
        while not followed[-1].get("done"):
            followed.append(await follower.read_json(within=20))
        await follower.aclose()
    events, notices = split(f for f in followed if f["type"] != "resumed")
    assert [e["seq"] for e in events] == list(range(1, wide + 23))
    chunks = [e["content"] for e in events if e["type"] == "chunk"]
    assert chunks == [f" c{n}{PAD}" for n in range(wide + 20)]
    assert events[-1]["type"] == "done" and events[-1]["finish_reason"] == "stop"
    assert notices == ["store_unreachable"]
    assert followed[0]["type"] == "resumed"


async def has_entries(redis: Redis, key: str, count: int) -> bool:
    return int(await redis.xlen(key)) >= count

"""An answer its client saw end is stored, even when the store stalls and the process is asked
to stop before the store is back; and when the store stays away too long, the process says
which answers it could not store.

Real processes: a redis-server of the test's own (stopped with SIGSTOP), two gateway
processes on it (A runs the answer, B follows it for a second client and checks A's lease the
whole time), and the fake upstream.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import httpx2
import pytest

from tests.support.processes import GatewayProcess, config_file, gateway_environment, start_pair
from tests.support.redis import RedisServer, running_redis
from tests.support.upstream import FakeUpstream
from tests.support.ws import connected, receive, send, text_of, until_done

Mint = Callable[..., str]
ANSWER = "fake-i20-n100"  # 102 events over about two seconds
FAULT_SECONDS = 8.0


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    with running_redis(tmp_path) as server:
        yield server


async def pair_on(
    redis: RedisServer, upstream: str, folder: Path, store_seconds: float
) -> tuple[GatewayProcess, GatewayProcess]:
    env = gateway_environment(
        redis.url,
        config_file(folder, upstream),
        REDIS_SOCKET_TIMEOUT="2",
        SHUTDOWN_DRAIN_SECONDS="1",
        SHUTDOWN_STORE_SECONDS=str(store_seconds),
    )
    return await asyncio.to_thread(start_pair, folder, env)


@pytest.fixture
async def stopped_later() -> AsyncIterator[list[GatewayProcess]]:
    gateways: list[GatewayProcess] = []
    yield gateways
    for gateway in gateways:
        gateway.stop()


async def ended_while_the_store_stalls(
    a: GatewayProcess, b: GatewayProcess, redis: RedisServer, token: str
) -> tuple[list[dict[str, object]], asyncio.Task[list[dict[str, object]]]]:
    """A's answer, streamed to its client while Redis is stopped, and B's follower of it."""
    ws = await connected(a.url, token)
    await send(ws, type="completion", id="r", message="x", model=ANSWER)
    start = await receive(ws)
    follower = await connected(b.url, token)
    await send(follower, type="resume", generation_id=start["generation_id"], id="f")
    assert (await receive(follower))["type"] == "resumed"
    followed = asyncio.create_task(until_done(follower, "f"))
    redis.process.send_signal(signal.SIGSTOP)
    frames = [start, *await asyncio.wait_for(until_done(ws, "r"), 30)]
    await ws.close()
    return frames, followed


async def test_an_answer_seen_to_end_is_stored_though_the_process_stops_before_the_store_is_back(
    own_redis: RedisServer,
    upstream: tuple[FakeUpstream, str],
    tmp_path: Path,
    token: Mint,
    stopped_later: list[GatewayProcess],
) -> None:
    a, b = await pair_on(own_redis, upstream[1], tmp_path, store_seconds=3 * FAULT_SECONDS)
    stopped_later += [a, b]
    frames, followed = await ended_while_the_store_stalls(a, b, own_redis, token())
    done = frames[-1]
    assert done["type"] == "done" and done["finish_reason"] == "stop"
    assert any(f.get("code") == "persistence_degraded" for f in frames)
    a.signal(signal.SIGTERM)  # the process is asked to stop while its store is away
    # The outage outlasts the drain and the few seconds closing takes, and several leases:
    # the behaviour under test, not a synchronisation.
    await asyncio.sleep(FAULT_SECONDS)
    own_redis.process.send_signal(signal.SIGCONT)
    await asyncio.to_thread(a.wait, 20)
    # Stored as the client saw it, and the follower on B saw the same end, never interrupted.
    conversation_id = str(done["conversation_id"])
    async with httpx2.AsyncClient(timeout=20) as client:
        stored = await client.get(
            f"{b.url}/conversations/{conversation_id}",
            headers={"Authorization": f"Bearer {token()}"},
        )
    assert stored.status_code == 200
    answer = stored.json()["messages"][-1]
    assert answer["status"] == "complete" and answer["content"] == text_of(frames)
    assert stored.json()["generation"]["status"] == "complete"
    seen = await asyncio.wait_for(followed, 30)
    assert seen[-1]["type"] == "done" and text_of(seen) == text_of(frames)
    assert not any("could not be stored before exit" in line for line in a.output)


async def test_an_answer_the_store_never_takes_back_is_named_loudly_at_exit(
    own_redis: RedisServer,
    upstream: tuple[FakeUpstream, str],
    tmp_path: Path,
    token: Mint,
    stopped_later: list[GatewayProcess],
) -> None:
    a, b = await pair_on(own_redis, upstream[1], tmp_path, store_seconds=1)
    stopped_later += [a, b]
    frames, followed = await ended_while_the_store_stalls(a, b, own_redis, token())
    followed.cancel()
    generation_id = str(frames[0]["generation_id"])
    a.signal(signal.SIGTERM)
    await asyncio.to_thread(a.wait, 20)  # bounded: it does not wait for ever
    said = [line for line in a.output if "could not be stored before exit" in line]
    assert said and generation_id in said[0], a.output[-20:]

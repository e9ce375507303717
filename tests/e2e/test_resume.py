"""Resumable generations across two real gateway processes on one Redis."""

from __future__ import annotations

import asyncio
import json
import random
import signal
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
from websockets.asyncio.client import ClientConnection

from tests.support.processes import GatewayProcess, config_file, gateway_environment, start_pair
from tests.support.redis import RedisServer
from tests.support.sse import sse_events
from tests.support.upstream import FakeUpstream
from tests.support.ws import connected, receive, send, text_of, through_seq, until_done

Mint = Callable[..., str]
SLOW = "fake-i5-n20"  # 22 events: start, 20 chunks, done
SLOW_TEXT = "".join(f" t{i}" for i in range(20))


@pytest.fixture(scope="module")
def environment(
    redis_server: RedisServer,
    upstream: tuple[FakeUpstream, str],
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("gateways")
    return gateway_environment(redis_server.url, config_file(folder, upstream[1]))


@pytest.fixture(scope="module")
def pair(
    environment: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[GatewayProcess, GatewayProcess]]:
    a, b = start_pair(tmp_path_factory.mktemp("pair"), environment)
    yield a, b
    a.stop()
    b.stop()


async def read_through(ws: ClientConnection, request_id: str, seq: int) -> list[dict[str, Any]]:
    """Frames for `request_id` up to the one with `seq` (or the final one)."""
    return await until_done(ws, request_id, through_seq(seq))


async def resume_ws(
    url: str, token: str, generation_id: str, after: int, request_id: str = "again"
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    ws = await connected(url, token)
    await send(ws, type="resume", generation_id=generation_id, after=after, id=request_id)
    resumed = await receive(ws)
    assert resumed["type"] == "resumed", resumed
    if resumed["last_seq"] is not None and after >= resumed["last_seq"]:
        return resumed, []
    return resumed, await until_done(ws, request_id)


async def resume_sse(
    url: str, token: str, generation_id: str, after: int
) -> tuple[int, list[dict[str, Any]]]:
    async with httpx2.AsyncClient(timeout=30) as client:
        response = await client.get(
            f"{url}/generations/{generation_id}/events",
            headers={"Authorization": f"Bearer {token}", "Last-Event-ID": str(after)},
        )
    events = [e for _, e in sse_events(response.text)] if response.status_code == 200 else []
    return response.status_code, events


async def test_resume_on_the_other_instance_at_many_points(
    pair: tuple[GatewayProcess, GatewayProcess], token: Mint
) -> None:
    """The delivery contract: after a resume from seq k, every event with seq > k arrives
    exactly once, in order, with no gap, whether produced before, during or after it."""
    a, b = pair
    rng = random.Random(20261123)
    for round_ in range(12):
        cut = rng.randint(1, 22)
        over_sse = round_ % 2 == 1
        ws = await connected(a.url, token())
        await send(ws, type="completion", id="r", message="x", model=SLOW)
        before = await read_through(ws, "r", cut)
        generation_id = before[0]["generation_id"]
        await ws.close()
        last_seen = before[-1]["seq"]
        if over_sse:
            status, after = await resume_sse(b.url, token(), generation_id, last_seen)
            assert status == (204 if before[-1]["done"] else 200)
        else:
            resumed, after = await resume_ws(b.url, token(), generation_id, last_seen)
            assert resumed["from_seq"] == last_seen and resumed["generation_id"] == generation_id
            assert resumed["status"] in ("running", "complete")
        frames = before + after
        assert [f["seq"] for f in frames] == list(range(1, len(frames) + 1)), (round_, cut)
        assert text_of(frames) == SLOW_TEXT
        assert frames[-1]["type"] == "done" and frames[-1]["finish_reason"] == "stop"


async def test_sse_completion_resumes_with_last_event_id_on_the_other_instance(
    pair: tuple[GatewayProcess, GatewayProcess], token: Mint
) -> None:
    a, b = pair
    seen: list[dict[str, Any]] = []
    async with (
        httpx2.AsyncClient(timeout=30) as client,
        client.stream(
            "POST",
            f"{a.url}/completion",
            json={"message": "x", "model": SLOW, "stream": True},
            headers={"Authorization": f"Bearer {token()}"},
        ) as response,
    ):
        async for line in response.aiter_lines():
            if line.startswith("data: "):
                seen.append(json.loads(line[6:]))
            if len(seen) == 5:
                break  # the client drops the stream
    status, rest = await resume_sse(b.url, token(), seen[0]["generation_id"], seen[-1]["seq"])
    assert status == 200
    assert [e["seq"] for e in seen + rest] == list(range(1, len(seen + rest) + 1))
    assert text_of(seen + rest) == SLOW_TEXT


async def test_a_second_device_attaches_from_zero_and_sees_the_same_stream(
    pair: tuple[GatewayProcess, GatewayProcess], token: Mint, fake_upstream: FakeUpstream
) -> None:
    a, b = pair
    held = "fake-i5-n20-hold10"  # runs until released
    phone = await connected(a.url, token())
    await send(
        phone,
        type="completion",
        id="p",
        message="x",
        model=held,
        conversation_id=f"two-{uuid.uuid4().hex[:6]}",
    )
    first = await receive(phone)
    async with httpx2.AsyncClient() as client:
        view = (
            await client.get(
                f"{b.url}/conversations/{first['conversation_id']}",
                headers={"Authorization": f"Bearer {token()}"},
            )
        ).json()
    assert view["generation"] == {"id": first["generation_id"], "status": "running"}
    assert view["messages"][0]["content"] == "x"
    laptop_resume = asyncio.create_task(resume_ws(b.url, token(), view["generation"]["id"], 0, "l"))
    fake_upstream.release(held)
    _, laptop = await laptop_resume
    phone_frames = [first, *await until_done(phone, "p")]
    strip = [{k: v for k, v in f.items() if k != "id"} for f in phone_frames]
    assert strip == [{k: v for k, v in f.items() if k != "id"} for f in laptop]


async def test_cancel_on_one_instance_stops_the_generation_on_the_other(
    pair: tuple[GatewayProcess, GatewayProcess], token: Mint, fake_upstream: FakeUpstream
) -> None:
    a, b = pair
    ws = await connected(a.url, token())
    await send(ws, type="completion", id="r", message="x", model="fake-i20-n200")
    frames = await read_through(ws, "r", 3)
    upstream_request = fake_upstream.requests[-1]
    generation_id, conversation_id = frames[0]["generation_id"], frames[0]["conversation_id"]
    async with httpx2.AsyncClient() as client:
        cancelled = await client.post(
            f"{b.url}/generations/{generation_id}/cancel",
            headers={"Authorization": f"Bearer {token()}"},
        )
        assert cancelled.status_code == 202
        frames += await until_done(ws, "r")
        assert frames[-1]["type"] == "done" and frames[-1]["finish_reason"] == "cancelled"
        assert await asyncio.to_thread(upstream_request.client_left.wait, 5)
        view = (
            await client.get(
                f"{b.url}/conversations/{conversation_id}",
                headers={"Authorization": f"Bearer {token()}"},
            )
        ).json()
        again = await client.post(
            f"{b.url}/generations/{generation_id}/cancel",
            headers={"Authorization": f"Bearer {token()}"},
        )
    answer = view["messages"][-1]
    assert answer["status"] == "cancelled" and answer["content"] == text_of(frames)
    assert answer["usage"]["completion_tokens"] > 0
    assert view["generation"]["status"] == "cancelled"
    assert again.status_code == 200 and again.json()["status"] == "cancelled"


async def test_cancel_by_generation_id_over_a_socket_on_the_other_instance(
    pair: tuple[GatewayProcess, GatewayProcess], token: Mint
) -> None:
    a, b = pair
    ws = await connected(a.url, token())
    await send(ws, type="completion", id="r", message="x", model="fake-i20-n200")
    generation_id = (await receive(ws))["generation_id"]
    other = await connected(b.url, token())
    await send(other, type="cancel", generation_id=generation_id)
    assert (await until_done(ws, "r"))[-1]["finish_reason"] == "cancelled"


async def test_another_user_can_neither_resume_nor_cancel_and_learns_nothing(
    pair: tuple[GatewayProcess, GatewayProcess], token: Mint
) -> None:
    a, b = pair
    ws = await connected(a.url, token("alice"))
    await send(ws, type="completion", id="r", message="x", model=SLOW)
    real = (await receive(ws))["generation_id"]
    unknown = "gen_" + "x" * 16
    answers: dict[str, list[Any]] = {}
    for generation_id in (real, unknown):
        bob = await connected(b.url, token("bob"))
        await send(bob, type="resume", generation_id=generation_id, after=0, id="q")
        resume_error = await receive(bob)
        await send(bob, type="cancel", generation_id=generation_id)
        cancel_error = await receive(bob)
        async with httpx2.AsyncClient() as client:
            headers = {"Authorization": f"Bearer {token('bob')}"}
            events = await client.get(
                f"{b.url}/generations/{generation_id}/events", headers=headers
            )
            cancel = await client.post(
                f"{b.url}/generations/{generation_id}/cancel", headers=headers
            )
        answers[generation_id] = [
            resume_error,
            cancel_error,
            (events.status_code, {**events.json(), "timestamp": None}),
            (cancel.status_code, {**cancel.json(), "timestamp": None}),
        ]
    assert answers[real][0]["code"] == "not_found"
    assert answers[real][2][0] == 404 and answers[real][3][0] == 404
    same = json.dumps(answers[real]).replace(real, "ID")
    assert same == json.dumps(answers[unknown]).replace(unknown, "ID")
    assert (await until_done(ws, "r"))[-1]["finish_reason"] == "stop"  # untouched


async def test_an_idempotency_key_reattaches_instead_of_starting_again(
    pair: tuple[GatewayProcess, GatewayProcess], token: Mint, fake_upstream: FakeUpstream
) -> None:
    a, b = pair
    key = uuid.uuid4().hex
    before = len(fake_upstream.requests)
    ws = await connected(a.url, token())
    await send(ws, type="completion", id="r", message="once", idempotency_key=key)
    first = await until_done(ws, "r")
    retry = await connected(b.url, token())
    await send(retry, type="completion", id="r2", message="once", idempotency_key=key)
    second = await until_done(retry, "r2")
    async with httpx2.AsyncClient() as client:
        third = await client.post(
            f"{a.url}/completion",
            json={"message": "once"},
            headers={"Authorization": f"Bearer {token()}", "Idempotency-Key": key},
        )
    assert len(fake_upstream.requests) == before + 1
    assert {f["generation_id"] for f in first + second} == {first[0]["generation_id"]}
    assert text_of(second) == text_of(first) == third.json()["content"]
    assert third.json()["generation_id"] == first[0]["generation_id"]


async def test_resume_errors(pair: tuple[GatewayProcess, GatewayProcess], token: Mint) -> None:
    a, _ = pair
    ws = await connected(a.url, token())
    await send(ws, type="completion", id="r", message="short")
    frames = await until_done(ws, "r")
    generation_id, last = frames[0]["generation_id"], frames[-1]["seq"]
    resumed, after = await resume_ws(a.url, token(), generation_id, last)
    assert (resumed["status"], resumed["last_seq"], after) == ("complete", last, [])
    status, _ = await resume_sse(a.url, token(), generation_id, last)
    assert status == 204
    status, replay = await resume_sse(a.url, token(), generation_id, 0)
    assert status == 200 and [e["seq"] for e in replay] == list(range(1, last + 1))
    for bad in ({"generation_id": "nope"}, {"generation_id": generation_id, "after": -1}):
        await send(ws, type="resume", **bad)
        assert (await receive(ws))["code"] == "bad_request"


async def test_a_resume_past_any_possible_seq_is_a_bad_request_on_every_instance(
    pair: tuple[GatewayProcess, GatewayProcess], token: Mint
) -> None:
    """Past MAX_LOG_EVENTS no generation has a seq, wherever it runs: the same clear
    `bad_request` on the instance running it and on the other, over a socket and SSE."""
    a, b = pair
    ws = await connected(a.url, token())
    await send(ws, type="completion", id="r", message="x", model=SLOW)
    generation_id = (await read_through(ws, "r", 1))[0]["generation_id"]
    for url in (a.url, b.url):
        other = await connected(url, token())
        await send(other, type="resume", generation_id=generation_id, after=2**40, id="q")
        refused = await receive(other)
        assert (
            refused["code"] == "bad_request" and "no generation goes past seq" in refused["message"]
        )
        await other.close()
        status, _ = await resume_sse(url, token(), generation_id, 2**40)
        assert status == 400
    await until_done(ws, "r")
    await ws.close()
    for url in (a.url, b.url):  # ended: still refused, not "nothing more will come" (204)
        status, _ = await resume_sse(url, token(), generation_id, 2**40)
        assert status == 400


@pytest.fixture
async def lone_pair(
    environment: dict[str, str], tmp_path: Path
) -> AsyncIterator[tuple[GatewayProcess, GatewayProcess]]:
    a, b = await asyncio.to_thread(start_pair, tmp_path, environment)
    yield a, b
    a.stop()
    b.stop()


async def test_a_killed_producer_ends_as_interrupted_after_what_was_stored(
    lone_pair: tuple[GatewayProcess, GatewayProcess], token: Mint
) -> None:
    a, b = lone_pair
    ws = await connected(a.url, token())
    await send(ws, type="completion", id="r", message="x", model="fake-i20-n200")
    seen = await read_through(ws, "r", 10)
    a.signal(signal.SIGKILL)
    a.wait(10)
    resumed, rest = await resume_ws(b.url, token(), seen[0]["generation_id"], 10)
    assert resumed["status"] in ("running", "interrupted")
    final = rest[-1]
    assert final["type"] == "error" and final["code"] == "interrupted"
    assert final["retryable"] is True and final["done"] is True
    # Whatever was stored beyond what the client saw follows, then the end: no gap, no repeat.
    assert [f["seq"] for f in seen + rest] == list(range(1, final["seq"] + 1))
    _, stored = await resume_ws(b.url, token(), seen[0]["generation_id"], 0, "all")
    assert stored[-1]["code"] == "interrupted"
    persisted = stored[:-1]  # events a batch had not yet written when the process died are lost
    assert len(persisted) >= 2
    assert persisted == [{**f, "id": "all"} for f in (seen + rest)[: len(persisted)]]
    async with httpx2.AsyncClient() as client:
        view = (
            await client.get(
                f"{b.url}/conversations/{seen[0]['conversation_id']}",
                headers={"Authorization": f"Bearer {token()}"},
            )
        ).json()
    assert view["generation"]["status"] == "interrupted"
    assert view["messages"][-1]["status"] == "incomplete"
    assert view["messages"][-1]["content"] == text_of(persisted)


async def test_sigterm_closes_1012_and_streams_continue_on_the_other_instance(
    lone_pair: tuple[GatewayProcess, GatewayProcess], token: Mint
) -> None:
    a, b = lone_pair
    sockets = []
    for n in range(3):
        ws = await connected(a.url, token())
        await send(ws, type="completion", id=f"r{n}", message="x", model="fake-i20-n100")
        sockets.append((ws, await read_through(ws, f"r{n}", 3)))
    a.signal(signal.SIGTERM)
    results = []
    for n, (ws, frames) in enumerate(sockets):
        while True:
            try:
                frame = await receive(ws)
            except Exception:
                break
            if frame.get("id") == f"r{n}":
                frames.append(frame)
        assert ws.close_code == 1012
        _, rest = await resume_ws(b.url, token(), frames[0]["generation_id"], frames[-1]["seq"])
        results.append(frames + rest)
    # Within the drain timeout; uvicorn re-raises SIGTERM once it has shut down cleanly.
    assert await asyncio.to_thread(a.wait, 10) in (0, -signal.SIGTERM)
    for frames in results:
        assert [f["seq"] for f in frames] == list(range(1, len(frames) + 1))
        assert text_of(frames) == "".join(f" t{i}" for i in range(100))
        assert frames[-1]["type"] == "done" and frames[-1]["finish_reason"] == "stop"


async def test_generations_past_the_drain_timeout_end_as_interrupted(
    environment: dict[str, str], tmp_path: Path, token: Mint
) -> None:
    env = {**environment, "SHUTDOWN_DRAIN_SECONDS": "1"}
    a, b = await asyncio.to_thread(start_pair, tmp_path, env)
    try:
        ws = await connected(a.url, token())
        await send(ws, type="completion", id="r", message="x", model="fake-i20-n200")
        seen = await read_through(ws, "r", 3)
        a.signal(signal.SIGTERM)
        assert await asyncio.to_thread(a.wait, 10) in (0, -signal.SIGTERM)
        _, rest = await resume_ws(b.url, token(), seen[0]["generation_id"], 0)
        assert rest[-1]["code"] == "interrupted" and rest[-1]["retryable"] is True
        assert [f["seq"] for f in rest] == list(range(1, rest[-1]["seq"] + 1))
        assert len(rest) < 202  # it did not run to the end
    finally:
        a.stop()
        b.stop()

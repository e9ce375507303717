"""An instance stops under its streams: SIGTERM (drain) and SIGKILL, with followers elsewhere.

tests/e2e/test_resume.py covers a socket client resuming after SIGTERM and SIGKILL; these add an
SSE stream cut by a drain, followers on the other instance that are already attached when
the owner stops, and two followers racing to end a dead owner's generation.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx2
import pytest

from tests.adversarial.conftest import secrets_in
from tests.e2e.test_resume import read_through, resume_sse, resume_ws
from tests.support.processes import GatewayProcess, config_file, gateway_environment, start_pair
from tests.support.redis import RedisServer
from tests.support.sse import sse_events, stream_json
from tests.support.upstream import FakeUpstream
from tests.support.ws import close_code, connected, receive, send, text_of, until_done

Mint = Callable[..., str]
LONG = "fake-i20-n200"  # 202 events over about four seconds


@pytest.fixture
def environment(
    redis_server: RedisServer, upstream: tuple[FakeUpstream, str], tmp_path: Path
) -> dict[str, str]:
    return gateway_environment(redis_server.url, config_file(tmp_path, upstream[1]))


async def pair_with(
    environment: dict[str, str], folder: Path, **changes: str
) -> tuple[GatewayProcess, GatewayProcess]:
    return await asyncio.to_thread(start_pair, folder, {**environment, **changes})


@pytest.fixture
async def pair(
    environment: dict[str, str], tmp_path: Path
) -> AsyncIterator[tuple[GatewayProcess, GatewayProcess]]:
    a, b = await pair_with(environment, tmp_path)
    yield a, b
    a.stop()
    b.stop()
    assert secrets_in(a.output + b.output) == []


async def sse_frames_until_closed(
    url: str, token: str, body: dict[str, Any], seen: int, stop: Callable[[], None]
) -> list[dict[str, Any]]:
    """Events of an SSE completion; `stop()` runs once `seen` have arrived. Ends when the
    server ends the stream."""
    events: list[dict[str, Any]] = []
    async with (
        httpx2.AsyncClient(timeout=30) as client,
        client.stream(
            "POST",
            f"{url}/completion",
            json={**body, "stream": True},
            headers={"Authorization": f"Bearer {token}"},
        ) as response,
    ):
        async for event in stream_json(response.aiter_lines()):
            events.append(event)
            if len(events) == seen:
                stop()
    return events


async def conversation(url: str, token: str, conversation_id: str) -> dict[str, Any]:
    async with httpx2.AsyncClient(timeout=10) as client:
        response = await client.get(
            f"{url}/conversations/{conversation_id}",
            headers={"Authorization": f"Bearer {token}"},
        )
    assert response.status_code == 200
    view: dict[str, Any] = response.json()
    return view


def without_id(frames: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Frames as any follower sees them: the request id differs per subscription."""
    return [{k: v for k, v in f.items() if k != "id"} for f in frames]


def seqs(frames: list[dict[str, Any]]) -> list[int]:
    return [f["seq"] for f in frames]


async def test_sigterm_ends_an_sse_stream_which_resumes_exactly_once_elsewhere(
    pair: tuple[GatewayProcess, GatewayProcess], token: Mint
) -> None:
    a, b = pair
    seen = await sse_frames_until_closed(
        a.url,
        token(),
        {"message": "x", "model": "fake-i20-n100"},
        5,
        lambda: a.signal(signal.SIGTERM),
    )
    assert not seen[-1]["done"]  # the drain ended the stream before the generation's end
    status, rest = await resume_sse(b.url, token(), seen[0]["generation_id"], seen[-1]["seq"])
    assert status == 200
    assert seqs(seen + rest) == list(range(1, len(seen + rest) + 1))
    assert rest[-1]["type"] == "done" and rest[-1]["finish_reason"] == "stop"
    assert text_of(seen + rest) == "".join(f" t{i}" for i in range(100))
    # Bounded by design by SHUTDOWN_DRAIN_SECONDS (10) plus uvicorn's graceful timeout (10).
    assert await asyncio.to_thread(a.wait, 25) in (0, -signal.SIGTERM)


async def test_a_drain_that_runs_out_reaches_followers_elsewhere_as_interrupted(
    environment: dict[str, str], tmp_path: Path, token: Mint
) -> None:
    """The owner's client is closed 1012 and resumes on the other instance from what it saw;
    a follower already attached there sees the same end. Both get every event exactly once."""
    a, b = await pair_with(environment, tmp_path, SHUTDOWN_DRAIN_SECONDS="1")
    try:
        owner = await connected(a.url, token())
        await send(owner, type="completion", id="r", message="x", model=LONG)
        seen = await read_through(owner, "r", 3)
        generation_id, conversation_id = seen[0]["generation_id"], seen[0]["conversation_id"]
        follower = await connected(b.url, token())
        await send(follower, type="resume", generation_id=generation_id, after=0, id="f")
        a.signal(signal.SIGTERM)
        followed = [f for f in await until_done(follower, "f") if f["type"] != "resumed"]
        assert await close_code(owner) == 1012
        assert await asyncio.to_thread(a.wait, 10) in (0, -signal.SIGTERM)
        _, rest = await resume_ws(b.url, token(), generation_id, 3)
        ended = followed[-1]
        assert ended["type"] == "error" and ended["code"] == "interrupted"
        assert ended["retryable"] is True
        assert seqs(followed) == list(range(1, ended["seq"] + 1))
        assert without_id(seen + rest) == without_id(followed)
        assert ended["seq"] < 202  # it did not run to the end
        view = await conversation(b.url, token(), conversation_id)
        assert view["generation"]["status"] == "interrupted"
        assert view["messages"][-1]["status"] == "incomplete"
        assert view["messages"][-1]["content"] == text_of(followed)
    finally:
        a.stop()
        b.stop()
    assert secrets_in(a.output + b.output) == []


async def test_two_followers_of_a_killed_owner_see_one_interruption(
    pair: tuple[GatewayProcess, GatewayProcess], token: Mint
) -> None:
    """Followers on the other instance, attached before the owner dies, race to end its
    generation once the lease lapses: one wins, both see the same terminal event, and the
    conversation keeps the partial answer once."""
    a, b = pair
    owner = await connected(a.url, token())
    await send(owner, type="completion", id="r", message="x", model=LONG)
    seen = await read_through(owner, "r", 10)
    generation_id, conversation_id = seen[0]["generation_id"], seen[0]["conversation_id"]
    on_socket = await connected(b.url, token())
    await send(on_socket, type="resume", generation_id=generation_id, after=0, id="f")
    assert (await receive(on_socket))["type"] == "resumed"
    before = await read_through(on_socket, "f", 5)  # attached and following
    a.signal(signal.SIGKILL)
    a.wait(10)
    by_socket, (status, by_sse) = await asyncio.gather(
        until_done(on_socket, "f"), resume_sse(b.url, token(), generation_id, 0)
    )
    by_socket = before + by_socket
    assert status == 200
    ended = by_sse[-1]
    assert ended["type"] == "error" and ended["code"] == "interrupted" and ended["retryable"]
    assert without_id(by_socket) == without_id(by_sse)
    assert seqs(by_sse) == list(range(1, ended["seq"] + 1))
    view = await conversation(b.url, token(), conversation_id)
    answers = [m for m in view["messages"] if m["role"] == "assistant"]
    assert [(m["status"], m["content"]) for m in answers] == [("incomplete", text_of(by_sse))]
    stored = [e for _, e in sse_events(await _events_text(b.url, token(), generation_id))]
    assert without_id(stored) == without_id(by_sse)  # one terminal event, stored once


async def _events_text(url: str, token: str, generation_id: str) -> str:
    async with httpx2.AsyncClient(timeout=10) as client:
        response = await client.get(
            f"{url}/generations/{generation_id}/events",
            headers={"Authorization": f"Bearer {token}", "Last-Event-ID": "0"},
        )
    return response.text

"""A misbehaving model upstream: rate limits, 5xx, refused connections, dropped and stalled
streams, and more requests than a model may take at once.

Each test points a model of its own (a unique upstream name, so the fake upstream's request
counts are its own) at the fake upstream over HTTP, drives the gateway through a real client,
and checks the gateway still answers a normal request afterwards. The gateways here run the
gateway's own retry policy (the shared fixture turns it off) with short timeouts.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from typing import Any

import httpx2
import pytest
from websockets.asyncio.client import ClientConnection

from tests.adversarial.conftest import StartProbe
from tests.support.gateways import FAST
from tests.support.serving import free_port
from tests.support.upstream import FakeUpstream, Recorded
from tests.support.ws import connected, kinds, receive, send, until_done

Mint = Callable[..., str]
Frames = list[dict[str, Any]]


def unique(behaviour: str) -> str:
    """An upstream model name with these fake-upstream options and a tag of its own."""
    return f"fake-{behaviour}-k{uuid.uuid4().hex[:8]}"


async def complete(url: str, token: str, message: str = "x", model: str = "probe") -> Frames:
    ws = await connected(url, token)
    await send(ws, type="completion", id="r", message=message, model=model)
    return await asyncio.wait_for(until_done(ws, "r"), 20)


def last_request(fake: FakeUpstream, upstream: str) -> Recorded:
    return [r for r in fake.requests if r.model == upstream][-1]


def text_of(frames: Frames) -> str:
    return "".join(f["content"] for f in frames if f["type"] == "chunk")


async def still_serves(url: str, token: str) -> None:
    """The upstream path still works after the fault: a normal answer, start to done."""
    frames = await complete(url, token, "still there", model="fake")
    assert frames[-1]["type"] == "done" and text_of(frames) == "You said: still there"


async def post_completion(url: str, token: str, message: str = "x") -> httpx2.Response:
    async with httpx2.AsyncClient(timeout=20) as client:
        return await client.post(
            f"{url}/completion",
            json={"message": message, "model": "probe"},
            headers={"Authorization": f"Bearer {token}"},
        )


# ---------------------------------------------------------------------------------------------
# Rate limits and server errors: retried before the first token, within bounds


@pytest.mark.parametrize("wait", ["rams50", "ra0", "radate0"])
async def test_a_429_with_a_short_retry_after_is_waited_out(
    start_probe: StartProbe, fake_upstream: FakeUpstream, token: Mint, wait: str
) -> None:
    upstream = unique(f"err429-fail1-{wait}")
    with start_probe(upstream) as url:
        frames = await complete(url, token(), "hello")
        assert frames[-1]["type"] == "done" and text_of(frames) == "You said: hello"
        assert fake_upstream.count(upstream) == 2
        await still_serves(url, token())


@pytest.mark.parametrize(
    ("wait", "expected"), [("ra60", 60.0), ("rams60000", 60.0), ("radate60", 60.0)]
)
async def test_a_429_asking_longer_than_the_gateway_waits_fails_at_once(
    start_probe: StartProbe, fake_upstream: FakeUpstream, token: Mint, wait: str, expected: float
) -> None:
    upstream = unique(f"err429-{wait}")
    with start_probe(upstream) as url:
        began = time.monotonic()
        response = await post_completion(url, token())
        assert time.monotonic() - began < FAST["upstream_retry_max_wait"]
        assert response.status_code == 429
        body = response.json()
        assert body["error"] == "rate_limited"
        assert expected - 2 <= body["retry_after"] <= expected  # an HTTP date has whole seconds
        assert expected - 2 <= int(response.headers["retry-after"]) <= expected
        assert fake_upstream.count(upstream) == 1  # given up without asking again
        await still_serves(url, token())


async def test_a_429_that_persists_ends_rate_limited_with_the_upstreams_wait(
    start_probe: StartProbe, fake_upstream: FakeUpstream, token: Mint
) -> None:
    upstream = unique("err429-rams20")
    with start_probe(upstream) as url:
        frames = await complete(url, token())
        error = frames[-1]
        assert error["type"] == "error" and error["code"] == "rate_limited"
        assert error["retryable"] is True and error["retry_after"] == 0.02
        assert fake_upstream.count(upstream) == 1 + FAST["upstream_max_retries"]
        await still_serves(url, token())


@pytest.mark.parametrize("streaming", [True, False])
async def test_a_5xx_then_success_is_retried_with_backoff(
    start_probe: StartProbe, fake_upstream: FakeUpstream, token: Mint, streaming: bool
) -> None:
    upstream = unique("err503-fail1")
    with start_probe(upstream, model={"streaming": streaming}) as url:
        frames = await complete(url, token(), "again")
        assert frames[-1]["type"] == "done" and text_of(frames) == "You said: again"
        assert fake_upstream.count(upstream) == 2
        await still_serves(url, token())


async def test_a_5xx_that_persists_is_unavailable_after_the_last_retry(
    start_probe: StartProbe, fake_upstream: FakeUpstream, token: Mint
) -> None:
    upstream = unique("err500-rams20")
    with start_probe(upstream) as url:
        response = await post_completion(url, token())
        assert response.status_code == 503
        assert response.json()["error"] == "upstream_unavailable"
        assert fake_upstream.count(upstream) == 1 + FAST["upstream_max_retries"]
        await still_serves(url, token())


@pytest.mark.parametrize(
    ("status", "code"), [(401, "upstream_credentials"), (4000, "context_too_long")]
)
async def test_what_retrying_cannot_fix_is_not_retried(
    start_probe: StartProbe, fake_upstream: FakeUpstream, token: Mint, status: int, code: str
) -> None:
    upstream = unique("ctx" if status == 4000 else f"err{status}")
    with start_probe(upstream) as url:
        frames = await complete(url, token())
        assert frames[-1]["type"] == "error" and frames[-1]["code"] == code
        assert fake_upstream.count(upstream) == 1
        await still_serves(url, token())


async def test_a_refused_connection_is_unavailable(start_probe: StartProbe, token: Mint) -> None:
    nowhere = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there
    with start_probe(unique("n3"), model={"base_url": nowhere}, upstream_max_retries=1) as url:
        frames = await complete(url, token())
        error = frames[-1]
        assert error["type"] == "error" and error["code"] == "upstream_unavailable"
        assert error["retryable"] is True and "could not be reached" in error["message"]
        await still_serves(url, token())


# ---------------------------------------------------------------------------------------------
# Broken and stalled streams


async def test_a_stream_dropped_mid_answer_keeps_the_partial_answer_and_is_not_retried(
    start_probe: StartProbe, fake_upstream: FakeUpstream, token: Mint
) -> None:
    upstream = unique("drop2")
    with start_probe(upstream) as url:
        frames = await complete(url, token(), "a b c")
        assert kinds(frames) == ["start", "chunk", "error"]
        assert text_of(frames) == "You said:"
        assert frames[-1]["code"] == "upstream_error" and frames[-1]["retryable"] is True
        assert fake_upstream.count(upstream) == 1
        await still_serves(url, token())


@pytest.mark.parametrize("stall", ["hang", "silent"])
async def test_a_model_that_never_starts_answering_times_out_and_is_retried(
    start_probe: StartProbe, fake_upstream: FakeUpstream, token: Mint, stall: str
) -> None:
    """`hang` sends headers and a role chunk, `silent` nothing at all: either way the first-token
    deadline ends the attempt, well before the (longer) read timeout would."""
    upstream = unique(stall)
    changes = {"upstream_first_token_timeout": 0.3, "upstream_read_timeout": 30.0}
    with start_probe(upstream, upstream_max_retries=1, **changes) as url:
        began = time.monotonic()
        frames = await complete(url, token())
        assert time.monotonic() - began < 10
        error = frames[-1]
        assert error["type"] == "error" and error["code"] == "upstream_unavailable"
        assert "did not start answering in time" in error["message"]
        assert fake_upstream.count(upstream) == 2
        for record in [r for r in fake_upstream.requests if r.model == upstream]:
            assert await asyncio.to_thread(record.client_left.wait, 10)
        await still_serves(url, token())


async def test_a_stream_that_goes_silent_mid_answer_is_an_upstream_error(
    start_probe: StartProbe, fake_upstream: FakeUpstream, token: Mint
) -> None:
    upstream = unique("stall2")
    changes = {"upstream_first_token_timeout": 30.0, "upstream_read_timeout": 0.3}
    with start_probe(upstream, **changes) as url:
        frames = await complete(url, token(), "a b c")
        assert kinds(frames) == ["start", "chunk", "error"]
        assert text_of(frames) == "You said:"
        assert frames[-1]["code"] == "upstream_error"
        assert "went silent" in frames[-1]["message"]
        assert fake_upstream.count(upstream) == 1
        assert await asyncio.to_thread(last_request(fake_upstream, upstream).client_left.wait, 10)
        await still_serves(url, token())


# ---------------------------------------------------------------------------------------------
# The per-model cap on requests in flight


CAPPED = {"max_concurrent": 1}


async def until_first_chunk(ws: ClientConnection, request_id: str) -> Frames:
    """This request's frames up to its first chunk: its slot is taken, its answer under way."""
    frames = await until_done(ws, request_id, lambda frame: frame["type"] == "chunk", within=10)
    assert all(frame["type"] in ("start", "chunk") for frame in frames), frames
    return frames


async def held_answer(ws: ClientConnection, request_id: str) -> Frames:
    """Start `request_id` on a capped model whose upstream holds after one chunk."""
    await send(ws, type="completion", id=request_id, message="one two", model="probe")
    return await until_first_chunk(ws, request_id)


async def test_past_the_cap_a_request_waits_its_bound_then_is_refused(
    start_probe: StartProbe, fake_upstream: FakeUpstream, token: Mint
) -> None:
    upstream = unique("hold1")
    # The cap's wait is the first-token timeout; the held answer must not time out meanwhile.
    changes = {"upstream_first_token_timeout": 0.3, "upstream_read_timeout": 30.0}
    with start_probe(upstream, model=CAPPED, **changes) as url:
        holder = await connected(url, token())
        frames = await held_answer(holder, "a")
        refused = await post_completion(url, token("bob"))
        assert refused.status_code == 429 and refused.headers["retry-after"] == "1"
        assert refused.json()["error"] == "rate_limited" and refused.json()["retry_after"] == 1
        assert fake_upstream.count(upstream) == 1  # the refused request never went upstream
        fake_upstream.release(upstream)
        frames += await until_done(holder, "a")
        assert text_of(frames) == "You said: one two"
        # The slot came back when the answer ended.
        follower = asyncio.create_task(complete(url, token("bob"), "three"))
        assert await asyncio.to_thread(fake_upstream.arrived, upstream, 2)
        fake_upstream.release(upstream)
        assert text_of(await follower) == "You said: three"
        await still_serves(url, token())


async def test_a_waiting_request_takes_the_slot_when_it_frees(
    start_probe: StartProbe, fake_upstream: FakeUpstream, token: Mint
) -> None:
    upstream = unique("hold1")
    changes = {"upstream_first_token_timeout": 10.0, "upstream_read_timeout": 30.0}
    with start_probe(upstream, model=CAPPED, **changes) as url:
        holder = await connected(url, token())
        frames = await held_answer(holder, "a")
        waiter = await connected(url, token("bob"))
        await send(waiter, type="completion", id="b", message="three", model="probe")
        assert (await asyncio.wait_for(receive(waiter), 10))["type"] == "start"
        fake_upstream.release(upstream)
        frames += await until_done(holder, "a")
        assert text_of(frames) == "You said: one two"
        assert await asyncio.to_thread(fake_upstream.arrived, upstream, 2)
        assert last_request(fake_upstream, upstream).in_flight == 0  # never two at once
        fake_upstream.release(upstream)
        assert text_of(await until_done(waiter, "b")) == "You said: three"
        await still_serves(url, token())


async def test_a_cancelled_request_gives_its_slot_back(
    start_probe: StartProbe, fake_upstream: FakeUpstream, token: Mint
) -> None:
    upstream = unique("hold1")
    changes = {"upstream_first_token_timeout": 0.5, "upstream_read_timeout": 30.0}
    with start_probe(upstream, model=CAPPED, **changes) as url:
        holder = await connected(url, token())
        assert text_of(await held_answer(holder, "a")) == "You"
        await send(holder, type="cancel", id="a")
        done = (await until_done(holder, "a"))[-1]
        assert done["type"] == "done" and done["finish_reason"] == "cancelled"
        assert await asyncio.to_thread(last_request(fake_upstream, upstream).client_left.wait, 10)
        # Refused after 0.5 s if the slot were still taken.
        follower = asyncio.create_task(complete(url, token("bob"), "three"))
        assert await asyncio.to_thread(fake_upstream.arrived, upstream, 2)
        fake_upstream.release(upstream)
        frames = await follower
        assert frames[-1]["type"] == "done" and text_of(frames) == "You said: three"
        await still_serves(url, token())

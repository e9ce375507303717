"""A hostile or broken model API: compression bombs, endless heads, bodies and lines, a byte a
second, countless tool calls, 1xx interim responses.

Each test points a model (`probe`) at the hostile upstream (tests/support/hostile_upstream.py)
and asks it for an answer while another user streams (`survives`): that user is served whole,
the gateway stays healthy, a fresh request is served, and its memory comes back; the
attacker's generation ends with a clear `upstream_error` within a bounded wait, never a hang.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx2
import pytest
from openai import AsyncOpenAI

from gateway.config import ModelConfig
from gateway.llm.bounds import UpstreamBounds
from gateway.llm.openai.dialect import make_client
from tests.adversarial.conftest import StartProbe, Survives
from tests.adversarial.test_upstream_faults import text_of
from tests.support.hostile_upstream import HostileUpstream, serve_hostile
from tests.support.log_capture import Recorder
from tests.support.polling import settle
from tests.support.ws import connected, send, until_done

Mint = Callable[..., str]


@pytest.fixture(scope="module")
def hostile() -> Iterator[HostileUpstream]:
    with serve_hostile() as upstream:
        yield upstream


def probe(hostile: HostileUpstream, behaviour: str) -> tuple[str, dict[str, Any]]:
    """An upstream model name with this behaviour and a tag of its own, and the probe
    model's fields that point it at the hostile server."""
    return f"{behaviour}-{uuid.uuid4().hex[:8]}", {"base_url": hostile.url}


async def complete(url: str, token: str) -> list[dict[str, Any]]:
    """The probe model's answer on a socket of its own, closed afterwards."""
    ws = await connected(url, token)
    try:
        await send(ws, type="completion", id="r", message="x", model="probe")
        return await asyncio.wait_for(until_done(ws, "r"), 30)
    finally:
        await ws.close()


def upstream_error(final: dict[str, Any], says: str) -> None:
    assert final["type"] == "error" and final["code"] == "upstream_error", final
    assert says in final["message"], final["message"]


@pytest.mark.parametrize(
    ("behaviour", "says"),
    [
        ("bomb", "a body larger than 32 MiB once inflated"),
        ("endless", "a body larger than 4 MiB"),
        ("longline", "a line longer than 1 MiB"),
        ("calls", "more than 64 tool calls in one turn"),
        ("arguments", "more than 1 MiB of tool call arguments"),
    ],
)
async def test_a_response_past_a_bound_ends_that_generation_alone(
    start_probe: StartProbe,
    survives: Survives,
    token: Mint,
    hostile: HostileUpstream,
    behaviour: str,
    says: str,
) -> None:
    upstream_model, model = probe(hostile, behaviour)
    changes = {"upstream_max_body_bytes": 4 * 1024 * 1024} if behaviour == "endless" else {}
    with start_probe(upstream_model, model=model, upstream_read_timeout=10.0, **changes) as url:
        async with survives(url):
            frames = await complete(url, token("mallory"))
        upstream_error(frames[-1], says)
        assert frames[-1]["retryable"] is False


async def test_a_whole_answer_without_end_is_bounded(
    start_probe: StartProbe, survives: Survives, token: Mint, hostile: HostileUpstream
) -> None:
    """A model configured for whole answers reads its body through the same bound."""
    upstream_model, model = probe(hostile, "endless")
    limit = {"upstream_max_body_bytes": 4 * 1024 * 1024, "upstream_first_token_timeout": 10.0}
    with start_probe(upstream_model, model={**model, "streaming": False}, **limit) as url:
        async with survives(url):
            frames = await complete(url, token("mallory"))
    upstream_error(frames[-1], "a body larger than 4 MiB")


async def test_an_error_body_that_inflates_without_end_is_bounded(
    start_probe: StartProbe, survives: Survives, token: Mint, hostile: HostileUpstream
) -> None:
    upstream_model, model = probe(hostile, "errorbomb")
    with start_probe(upstream_model, model=model) as url:
        async with survives(url):
            frames = await complete(url, token("mallory"))
    upstream_error(frames[-1], "a body larger than 32 MiB once inflated")


@pytest.mark.parametrize("behaviour", ["headers", "longheader", "interims"])
async def test_a_response_head_without_end_is_refused(
    start_probe: StartProbe,
    survives: Survives,
    token: Mint,
    hostile: HostileUpstream,
    behaviour: str,
) -> None:
    upstream_model, model = probe(hostile, behaviour)
    with start_probe(upstream_model, model=model) as url:
        async with survives(url):
            frames = await complete(url, token("mallory"))
    upstream_error(frames[-1], "a response the gateway cannot read")


async def test_a_line_dripped_a_byte_at_a_time_meets_the_read_timeout(
    start_probe: StartProbe, survives: Survives, token: Mint, hostile: HostileUpstream
) -> None:
    """Bytes keep arriving every 50 ms, but no line ends: the read timeout counts lines."""
    upstream_model, model = probe(hostile, "drip")
    with start_probe(upstream_model, model=model, upstream_read_timeout=1.0) as url:
        async with survives(url):
            frames = await complete(url, token("mallory"))
    upstream_error(frames[-1], "went silent mid-answer")
    assert text_of(frames) == "ok"  # what came before the drip is kept


async def test_interim_responses_are_passed_by(
    start_probe: StartProbe, token: Mint, hostile: HostileUpstream
) -> None:
    upstream_model, model = probe(hostile, "interim")
    with start_probe(upstream_model, model=model) as url:
        frames = await complete(url, token("alice"))
    assert frames[-1]["type"] == "done" and text_of(frames) == "ok"


async def raw_answer(client: AsyncOpenAI, upstream_model: str) -> bytes:
    """The upstream's whole response to a request for this model, through the SDK client."""
    response = await client.post(
        "/chat/completions", body={"model": upstream_model}, cast_to=httpx2.Response, stream=True
    )
    return await response.aread()


@pytest.mark.parametrize(("count", "answered"), [(16, True), (17, False)])
async def test_at_most_16_interim_responses_are_passed_by(
    start_probe: StartProbe, token: Mint, hostile: HostileUpstream, count: int, answered: bool
) -> None:
    upstream_model, model = probe(hostile, f"interim{count}")
    with start_probe(upstream_model, model=model) as url:
        frames = await complete(url, token("alice"))
    if answered:
        assert frames[-1]["type"] == "done" and text_of(frames) == "ok"
    else:
        upstream_error(frames[-1], "a response the gateway cannot read")


async def test_idle_pooled_connections_are_closed(hostile: HostileUpstream) -> None:
    """A kept-alive connection is closed once idle past the keep-alive, so one that died
    silently while idle is never reused."""
    config = ModelConfig("m", "openai", hostile.url)
    client = make_client(config, 2.0, 5.0, UpstreamBounds(), keepalive=0.5)
    before = hostile.open_connections
    try:
        assert b"data: [DONE]" in await raw_answer(client, f"ok-{uuid.uuid4().hex[:6]}")
        assert hostile.open_connections == before + 1  # kept alive after the answer
        closed = await settle(lambda: hostile.open_connections == before, within=10)
        assert closed, "the idle connection was still open after 10 s"
    finally:
        await client.close()


async def test_cookies_an_upstream_sets_are_not_kept(hostile: HostileUpstream) -> None:
    """Each answer sets 40 KiB of new cookies. httpx's jar would keep them all for the
    process's life and send every one back (40 KiB more on each request); none is kept, there
    or in aiohttp's session (which, for an address like this one, would refuse them anyway)."""
    config = ModelConfig("m", "openai", hostile.url)
    client = make_client(config, 2.0, 5.0, UpstreamBounds())
    tag = uuid.uuid4().hex[:6]
    try:
        for _ in range(4):
            assert b"data: [DONE]" in await raw_answer(client, f"cookies-{tag}")
    finally:
        await client.close()
    sent = [n for model, n in hostile.cookie_bytes if tag in model]
    assert sent == [0, 0, 0, 0]


async def test_a_redirect_is_not_followed(
    start_probe: StartProbe, token: Mint, hostile: HostileUpstream
) -> None:
    """A 307 back to itself: followed, each user's request would be sent 21 times (httpx's
    limit), and wherever an upstream pointed."""
    upstream_model, model = probe(hostile, "redirect")
    with start_probe(upstream_model, model=model) as url:
        frames = await complete(url, token("alice"))
    upstream_error(frames[-1], "answered with a redirect (HTTP 307)")
    assert hostile.requests.count(upstream_model) == 1


@pytest.mark.parametrize("behaviour", ["badcall", "namelesscall"])
async def test_a_tool_call_of_the_wrong_shape_is_an_upstream_error(
    start_probe: StartProbe, token: Mint, hostile: HostileUpstream, behaviour: str
) -> None:
    upstream_model, model = probe(hostile, behaviour)
    with start_probe(upstream_model, model=model) as url:
        frames = await complete(url, token("alice"))
    upstream_error(frames[-1], "sent a malformed stream")
    assert not [f for f in frames if f["type"] == "tool_call"]


async def test_upstream_text_reaches_the_log_as_a_short_escaped_excerpt(
    start_probe: StartProbe,
    token: Mint,
    hostile: HostileUpstream,
    tokens_stay_out_of_logs: Recorder,
) -> None:
    """The upstream's own error message (200 KiB, with newlines and an API key) is logged,
    as one short line with the key redacted."""
    upstream_model, model = probe(hostile, "errorevent")
    with start_probe(upstream_model, model=model) as url:
        frames = await complete(url, token("alice"))
    upstream_error(frames[-1], "reported an error")
    logged = [line for line in tokens_stay_out_of_logs.lines if "sent an error event" in line]
    assert logged, tokens_stay_out_of_logs.lines
    for line in logged:
        assert "\n" not in line and "sk-kkkk" not in line and len(line) < 1000, line[:2000]
        assert "overloaded\\nCRITICAL forged line [redacted]" in line

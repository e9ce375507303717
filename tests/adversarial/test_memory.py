"""Memory one request could multiply, and work one generation could stretch without end: every
response, stored byte and kept event is bounded, and a bound ends that request alone with a
clear answer while other users are served."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

import httpx2

from gateway.config import Limits, ModelConfig, Secret, Settings
from gateway.services import Services
from gateway.store.conversations import ConversationStore
from gateway.store.messages import StoredMessage
from tests.adversarial.conftest import Survives
from tests.conftest import GatewayFactory
from tests.support.gateways import RunningGateway, rss_bytes
from tests.support.upstream import FakeUpstream, Recorded
from tests.support.ws import connected, receive, send, text_of, until_done

Mint = Callable[..., str]
T = TypeVar("T")


def gateway_at(running_gateways: list[RunningGateway], url: str) -> RunningGateway:
    return next(g for g in running_gateways if g.url == url)


def on_gateway(running: RunningGateway, look: Callable[[Services], T]) -> T:
    """`look` at the gateway's services on its own event loop, where they live."""
    assert running.loop is not None and running.app is not None
    services: Services = running.app.state.services

    async def call() -> T:
        return look(services)

    return asyncio.run_coroutine_threadsafe(call(), running.loop).result(timeout=10)


def words(count: int, prefix: str = "w") -> str:
    return " ".join(f"{prefix}{i}" for i in range(count))


MiB = 1024 * 1024


@contextlib.asynccontextmanager
async def peak_rss() -> AsyncIterator[Callable[[], int]]:
    """Samples this process's resident memory (the in-thread gateway's too) while the block
    runs; gives how far it rose above where it started."""
    start = rss_bytes()
    peak = start
    done = asyncio.Event()

    async def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, rss_bytes())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), 0.005)

    sampler = asyncio.create_task(sample())
    try:
        yield lambda: peak - start
    finally:
        done.set()
        await sampler


async def get(url: str, token: str, path: str, **params: Any) -> httpx2.Response:
    async with httpx2.AsyncClient(timeout=60) as client:
        return await client.get(
            f"{url}{path}", params=params, headers={"Authorization": f"Bearer {token}"}
        )


# ---------------------------------------------------------------------------------------------
# Reading a conversation

HUGE_TURNS = 40  # each with a user message of about 1 MiB: 40 MiB stored
READERS = 8
PAGE_BYTES = 2 * MiB


async def store_huge_conversation(
    store: ConversationStore, owner: str, conversation_id: str
) -> None:
    now = int(time.time() * 1000)
    for n in range(HUGE_TURNS):
        question = StoredMessage("user", f"q{n:03d} " + "x" * (MiB - 16), now)
        await store.open_turn(owner, conversation_id, question, 0)
        await store.append_answer(owner, conversation_id, StoredMessage("assistant", f"a{n}", now))


async def test_parallel_reads_of_a_huge_conversation_are_bounded_pages(
    start_gateway: GatewayFactory,
    token: Mint,
    survives: Survives,
    conversations: ConversationStore,
) -> None:
    """Eight clients read a 40 MiB conversation at once: each gets a page of at most
    CONVERSATION_PAGE_BYTES, the process's memory rises by a few pages, not by eight whole
    conversations, and the owner can still page through every message."""
    await store_huge_conversation(conversations, "hoarder", "huge")
    with start_gateway(conversation_page_bytes=PAGE_BYTES) as url:
        async with survives(url):
            async with peak_rss() as grown:
                pages = await asyncio.gather(
                    *(get(url, token("hoarder"), "/conversations/huge") for _ in range(READERS))
                )
            for page in pages:
                assert page.status_code == 200
                body = page.json()
                assert len(body["messages"]) >= 1 and body["next_cursor"] is not None
                assert len(page.content) < PAGE_BYTES + 64 * 1024  # the page, with its fields
            # Unbounded, each read would have held the whole conversation several times over
            # (its replies, the decoded messages, the JSON): gigabytes for eight readers.
            assert grown() < READERS * 6 * PAGE_BYTES, f"grew {grown() / MiB:.0f} MiB"
            del pages, page, body

            heads = await read_every_message(url, token("hoarder"), "huge")
            assert heads == [h for n in range(HUGE_TURNS) for h in (f"q{n:03d}", f"a{n}")]


async def read_every_message(url: str, token: str, conversation_id: str) -> list[str]:
    """The first word of every message, oldest first, following next_cursor page by page."""
    pages: list[list[str]] = []
    params: dict[str, Any] = {}
    while True:
        response = await get(url, token, f"/conversations/{conversation_id}", **params)
        assert response.status_code == 200, response.text
        body = response.json()
        pages.append([m["content"][:8].split(" ")[0] for m in body["messages"]])
        if body["next_cursor"] is None:
            return [head for page in reversed(pages) for head in page]
        params["cursor"] = body["next_cursor"]


# ---------------------------------------------------------------------------------------------
# The per-user storage quota

QUOTA = 100 * 1024
CHUNK = "x" * 20 * 1024  # one word: echoed whole, so a turn stores about 40 KiB


async def post_turn(url: str, token: str, conversation_id: str) -> httpx2.Response:
    async with httpx2.AsyncClient(timeout=30) as client:
        return await client.post(
            f"{url}/completion",
            json={"message": CHUNK, "model": "echo", "conversation_id": conversation_id},
            headers={"Authorization": f"Bearer {token}"},
        )


async def test_the_storage_quota_refuses_a_turn_plainly_until_a_delete_frees_space(
    start_gateway: GatewayFactory, token: Mint, survives: Survives
) -> None:
    limits = Limits(requests_per_minute=0, storage_bytes=QUOTA)
    with start_gateway(limits=limits) as url:
        async with survives(url):
            hoarder = token("hoarder")
            for conversation_id in ("first", "second"):
                assert (await post_turn(url, hoarder, conversation_id)).status_code == 200
            refused = await post_turn(url, hoarder, "third")
            assert refused.status_code == 429 and "Retry-After" not in refused.headers
            body = refused.json()
            assert body["error"] == "rate_limited" and "retry_after" not in body
            assert "of the 100 KiB you may keep" in body["detail"]
            assert "Delete conversations" in body["detail"]
            # On a socket too; and nothing of the refused turn was stored.
            ws = await connected(url, hoarder)
            await send(ws, type="completion", id="t", message=CHUNK, conversation_id="third")
            (error,) = await until_done(ws, "t")
            assert error["code"] == "rate_limited" and "Delete conversations" in error["message"]
            assert "retry_after" not in error
            await ws.close()
            assert (await get(url, hoarder, "/conversations/third")).status_code == 404
            # Another user has a quota of their own.
            assert (await post_turn(url, token("frugal"), "frugal")).status_code == 200

            async with httpx2.AsyncClient(timeout=30) as client:
                deleted = await client.delete(
                    f"{url}/conversations/first", headers={"Authorization": f"Bearer {hoarder}"}
                )
            assert deleted.status_code == 204
            assert (await post_turn(url, hoarder, "third")).status_code == 200


# ---------------------------------------------------------------------------------------------
# Bounds on one generation


ANSWER_CHARS = 5000


def upstream_model(settings: Settings, base_url: str, name: str) -> dict[str, ModelConfig]:
    """The settings' models and one more of the fake upstream's, named for this test."""
    model = ModelConfig(
        name=name,
        provider="openai",
        base_url=base_url,
        api_key=Secret("sk-test"),
        upstream_model=name,
    )
    return {**settings.models, name: model}


def recorded(fake: FakeUpstream, model: str) -> Recorded:
    (request,) = [r for r in fake.requests if r.model == model]
    return request


async def test_an_echo_of_a_huge_message_stops_at_echo_max_words(
    start_gateway: GatewayFactory, token: Mint, survives: Survives, conversations: ConversationStore
) -> None:
    message = words(100_000)  # about 0.7 MiB: at 1 ms a word it would run for minutes
    with start_gateway(echo_max_words=1000) as url:
        async with survives(url):
            ws = await connected(url, token())
            await send(ws, type="completion", id="e", message=message, model="echo")
            frames = await asyncio.wait_for(until_done(ws, "e"), 30)
            await ws.close()
    done = frames[-1]
    assert done["type"] == "done" and done["finish_reason"] == "length", done
    assert text_of(frames) == words(1000)
    stored = await conversations.messages("alice", done["conversation_id"])
    assert stored[-1].status == "complete" and stored[-1].content == words(1000)


async def test_an_upstream_answer_is_cut_at_max_answer_chars_and_its_request_closed(
    start_gateway: GatewayFactory,
    token: Mint,
    survives: Survives,
    settings: Settings,
    upstream: tuple[FakeUpstream, str],
    conversations: ConversationStore,
) -> None:
    fake, base_url = upstream
    model = f"fake-i1-n100000-{uuid.uuid4().hex[:6]}"  # 100,000 tokens, one a millisecond
    full = "".join(f" t{i}" for i in range(100_000))
    models = upstream_model(settings, base_url, model)
    # Above the bystander's answer (2,290 characters): only the attacker's is cut.
    with start_gateway(models=models, max_answer_chars=ANSWER_CHARS) as url:
        async with survives(url):
            ws = await connected(url, token())
            await send(ws, type="completion", id="u", message="talk", model=model)
            frames = await asyncio.wait_for(until_done(ws, "u"), 30)
            await ws.close()
            # The model's stream was closed, long before its end.
            request = recorded(fake, model)
            assert await asyncio.to_thread(request.client_left.wait, 10)
            assert not request.finished.is_set()
    done = frames[-1]
    assert done["type"] == "done" and done["finish_reason"] == "length", done
    assert text_of(frames) == full[:ANSWER_CHARS]
    stored = await conversations.messages("alice", done["conversation_id"])
    assert stored[-1].status == "complete" and stored[-1].content == full[:ANSWER_CHARS]


async def test_a_generation_past_generation_timeout_ends_with_upstream_error(
    start_gateway: GatewayFactory,
    token: Mint,
    settings: Settings,
    upstream: tuple[FakeUpstream, str],
    conversations: ConversationStore,
) -> None:
    fake, base_url = upstream
    model = f"fake-i100-n1000-{uuid.uuid4().hex[:6]}"  # a token every 100 ms: 100 s in all
    models = upstream_model(settings, base_url, model)
    with start_gateway(models=models, generation_timeout=1.0) as url:
        ws = await connected(url, token())
        await send(ws, type="completion", id="s", message="slowly", model=model)
        frames = await asyncio.wait_for(until_done(ws, "s"), 30)
        await ws.close()
        assert await asyncio.to_thread(recorded(fake, model).client_left.wait, 10)
    error = frames[-1]
    assert error["type"] == "error" and error["code"] == "upstream_error", error
    assert error["message"] == (
        "The answer was stopped after 1 s, the longest one answer may take."
    )
    streamed = text_of(frames)
    assert streamed.startswith(" t0")
    stored = await conversations.messages("alice", error["conversation_id"])
    assert stored[-1].status == "incomplete" and stored[-1].content == streamed


async def test_a_generation_that_reaches_max_log_events_ends_with_length_and_its_log_whole(
    start_gateway: GatewayFactory, token: Mint
) -> None:
    """Past MAX_LOG_EVENTS the log would lose its oldest events; the generation ends first,
    so a resume from 0 elsewhere gets every event."""
    with start_gateway(max_log_events=50) as one, start_gateway(max_log_events=50) as two:
        ws = await connected(one, token())
        await send(ws, type="completion", id="l", message=words(200), model="echo")
        frames = await asyncio.wait_for(until_done(ws, "l"), 30)
        assert [f["seq"] for f in frames] == list(range(1, 51))
        assert frames[-1]["type"] == "done" and frames[-1]["finish_reason"] == "length"
        assert text_of(frames) == " ".join(words(200).split(" ")[:48])
        other = await connected(two, token())
        generation_id = frames[0]["generation_id"]
        await send(other, type="resume", id="r", generation_id=generation_id, after=0)
        resumed, *replayed = await asyncio.wait_for(until_done(other, "r"), 30)
        assert resumed["status"] == "complete"
        assert [without_id(e) for e in replayed] == [without_id(f) for f in frames]


# ---------------------------------------------------------------------------------------------
# Events a running generation keeps in memory

MEMORY_EVENTS = 16
RESUME_WORDS = 5000


async def test_a_resume_from_0_on_the_same_instance_reads_what_memory_dropped_from_the_log(
    start_gateway: GatewayFactory,
    token: Mint,
    survives: Survives,
    running_gateways: list[RunningGateway],
) -> None:
    """A long answer keeps only its last events (and those not yet in its log) in memory; a
    follower from seq 0 still gets every event exactly once, in order: the older ones from
    the log, then memory, then live, with no gap or repeat at either seam."""
    message = words(RESUME_WORDS)
    with start_gateway(
        generation_memory_events=MEMORY_EVENTS, echo_max_words=RESUME_WORDS, echo_delay_ms=2
    ) as url:
        async with survives(url):
            running = gateway_at(running_gateways, url)
            owner = await connected(url, token())
            await send(owner, type="completion", id="a", message=message, model="echo")
            start = await receive(owner)
            generation_id = start["generation_id"]

            def kept(services: Services) -> int:
                generation = services.generations.get(generation_id)
                return 0 if generation is None else len(generation.recent)

            owned = [start]
            peak = 0
            while len(owned) < 500:
                owned.append(await receive(owner))
                if len(owned) % 25 == 0:
                    peak = max(peak, on_gateway(running, kept))

            follower = await connected(url, token())
            await send(follower, type="resume", id="r", generation_id=generation_id, after=0)
            followed = asyncio.create_task(until_done(follower, "r"))
            while not owned[-1]["done"]:
                owned.append(await asyncio.wait_for(receive(owner), 30))
                if len(owned) % 25 == 0:
                    peak = max(peak, on_gateway(running, kept))
            frames = await asyncio.wait_for(followed, 30)
            await owner.close()
            await follower.close()

            resumed, *events = frames
            assert resumed["type"] == "resumed" and resumed["status"] == "running", resumed
            assert [e["seq"] for e in events] == list(range(1, RESUME_WORDS + 3))
            assert [without_id(e) for e in events] == [without_id(e) for e in owned]
            assert events[-1]["finish_reason"] == "stop" and text_of(events) == message
            # Kept: the last few events and those the log writer had not flushed yet, a small
            # share of the answer's events.
            assert MEMORY_EVENTS <= peak < RESUME_WORDS // 5, peak


def without_id(frame: dict[str, Any]) -> dict[str, Any]:
    """An event as any subscriber gets it: only `id`, the subscription's, differs."""
    return {k: v for k, v in frame.items() if k != "id"}

"""Memory one request could multiply, and work one generation could stretch without end: every
response, stored byte and kept event is bounded, and a bound ends that request alone with a
clear answer while other users are served."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypeVar

from gateway.services import Services
from tests.adversarial.conftest import RunningGateway, Survives
from tests.client import connected, receive, send, text_of, until_done
from tests.conftest import GatewayFactory

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

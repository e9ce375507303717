"""Clients that do not keep up: one that stops reading mid-answer, and a thousand that hold
their sockets open and say nothing."""

from __future__ import annotations

import asyncio
import resource
import time
import uuid
from collections.abc import Callable

from tests.adversarial.conftest import Survives
from tests.conftest import GatewayFactory
from tests.support.bystander import fresh_request_seconds
from tests.support.gateways import rss_bytes
from tests.support.raw_ws import OP_CLOSE, RawSocket
from tests.support.ws import connected, send, text_of, until_done

Mint = Callable[..., str]
# Words of 4 KiB: 2000 of them (8 MiB) are more than the loopback socket buffers of both
# ends hold (about 3 MiB here), so the server's writes block and its outbox fills.
WORD = 4096
WORDS = 2000
QUEUED = 16


def long_message() -> str:
    return " ".join(f"{i:05d}" + "x" * (WORD - 5) for i in range(WORDS))


async def test_a_client_that_stops_reading_is_cut_off_and_its_answer_survives(
    start_gateway: GatewayFactory, token: Mint, survives: Survives
) -> None:
    message = long_message()
    with start_gateway(
        max_queued_frames=QUEUED,
        max_frame_bytes=2 * len(message),
        echo_max_words=WORDS,
        max_answer_chars=len(message),
    ) as url:
        async with survives(url):
            # A tiny receive buffer, and then no reads at all until the answer has ended.
            stalled = await RawSocket.connect(url, token(), receive_buffer=4096)
            await stalled.ready()
            await stalled.send_json(type="completion", id="a", message=message, model="echo")
            start = await stalled.read_json()
            assert start["type"] == "start"

            follower = await connected(url, token())
            await send(follower, type="resume", generation_id=start["generation_id"], id="r")
            frames = await asyncio.wait_for(until_done(follower, "r"), 30)
            await follower.close()
            # The generation never waited for the stalled client: all of it, in order.
            assert frames[0]["type"] == "resumed"
            events = frames[1:]
            assert [e["seq"] for e in events] == list(range(1, WORDS + 3))
            assert events[-1]["type"] == "done" and text_of(events) == message

            # Reading again, the stalled client gets what its buffers held, in order, then
            # 4008: its outbox overflowed while its writes were blocked.
            seqs = []
            while (frame := await stalled.read_frame()).opcode != OP_CLOSE:
                seqs.append(frame.json()["seq"])
            assert frame.close_code == 4008
            assert seqs == list(range(2, len(seqs) + 2))
            assert len(seqs) < WORDS  # cut off, not served to the end
            await stalled.aclose()


async def test_a_thousand_idle_sockets_cost_little_and_slow_no_one(
    start_gateway: GatewayFactory, token: Mint, survives: Survives
) -> None:
    count = 1000
    ensure_descriptors(4 * count)
    tokens = [token(f"idle-{uuid.uuid4().hex[:8]}-{i}") for i in range(count)]
    with start_gateway() as url:
        async with survives(url):
            before = rss_bytes()
            sockets = await open_many(url, tokens)
            held = rss_bytes() - before
            per_socket = held / count
            seconds = await fresh_request_seconds(url, token("busy-neighbour"))
            for sock in sockets:
                await sock.aclose()
            assert seconds < 1.0, f"a request next to {count} idle sockets took {seconds:.2f} s"
            # Both ends live in this process, so this bounds the server's share from above.
            assert per_socket < 200 * 1024, f"{per_socket / 1024:.0f} KiB per idle socket"


async def open_many(url: str, tokens: list[str], batch: int = 50) -> list[RawSocket]:
    """Authenticated sockets, each past its `ready` frame, opened `batch` at a time."""
    sockets: list[RawSocket] = []
    began = time.monotonic()
    for i in range(0, len(tokens), batch):
        opened = await asyncio.gather(*(RawSocket.connect(url, t) for t in tokens[i : i + batch]))
        await asyncio.gather(*(sock.ready() for sock in opened))
        sockets.extend(opened)
    assert time.monotonic() - began < 20
    return sockets


def ensure_descriptors(needed: int) -> None:
    """Raise the soft limit on open files if it is below `needed` (both ends are here)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] >= needed

"""A user whose activity outruns one of their sockets: that socket is closed 4008, as for any
frame it does not read, and nobody else waits."""

from __future__ import annotations

import uuid
from collections.abc import Callable

from redis.asyncio import Redis

from gateway.config import Settings
from gateway.protocol.activity import CONTENT_CHARS, generation_started
from gateway.store.activity import ActivityLog
from gateway.store.keys import Keys
from tests.adversarial.conftest import Survives
from tests.conftest import GatewayFactory
from tests.support.bystander import fresh_request_seconds
from tests.support.raw_ws import OP_CLOSE, RawSocket

Mint = Callable[..., str]
QUEUED = 16
# Frames of over 2 KiB: 3,000 of them (6 MiB) are more than the loopback buffers hold.
EVENTS = 3000
BATCH = 100


async def test_activity_a_socket_does_not_read_closes_it_4008_and_slows_no_one(
    start_gateway: GatewayFactory, settings: Settings, token: Mint, survives: Survives
) -> None:
    flooded = f"flooded-{uuid.uuid4().hex[:8]}"
    assert settings.redis_url is not None
    redis = Redis.from_url(settings.redis_url, decode_responses=True)
    store = ActivityLog(redis, Keys(settings.redis_prefix), settings.activity_ttl)
    long = "x" * (CONTENT_CHARS + 500)  # cut to CONTENT_CHARS in the event
    with start_gateway(max_queued_frames=QUEUED) as url:
        async with survives(url):
            stalled = await RawSocket.connect(
                url, token(flooded), receive_buffer=4096, activity=True
            )
            await stalled.ready()
            for batch in range(0, EVENTS, BATCH):
                await store.publish(
                    flooded,
                    [
                        generation_started("c", f"gen_{n}", "echo", "chat", long)
                        for n in range(batch, batch + BATCH)
                    ],
                )
            seconds = await fresh_request_seconds(url, token("neighbour"))
            assert seconds < 1.0, f"a request next to the flood took {seconds:.2f} s"
            received = 0
            while (frame := await stalled.read_frame()).opcode != OP_CLOSE:
                event = frame.json()
                assert event["type"] == "activity" and len(event["message"]["content"]) == (
                    CONTENT_CHARS
                )
                assert event["message"]["truncated"] is True
                received += 1
            assert frame.close_code == 4008
            assert received < EVENTS  # cut off, not served to the end
            await stalled.aclose()
    await redis.aclose()

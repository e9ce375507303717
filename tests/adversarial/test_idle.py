"""Idle and unresponsive WebSocket clients against a real uvicorn: a socket that sends nothing
for WS_IDLE_TIMEOUT while nothing runs on it closes with 1000; one that does not answer the
server's protocol-level pings closes with 1011 after WS_PING_INTERVAL + WS_PING_TIMEOUT.

The pacing of the client's pings is the behaviour under test; every wait for the server is a
read bounded by a timeout.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from gateway.errors import CLOSE_NORMAL
from gateway.handlers.idle import idle_wait
from tests.conftest import GatewayFactory
from tests.support.raw_ws import OP_CLOSE, OP_PING, OP_TEXT, Frame, raw_socket
from tests.support.ws import connected, receive, send, until_done

Mint = Callable[..., str]
IDLE = 0.5
CLOSE_WITHIN = 5.0
LATE = 1.0  # how late a close may come under a loaded test machine


@pytest.mark.parametrize(
    ("now", "last", "busy", "expected"),
    [
        (10.0, 9.0, False, 4.0),  # one second idle of five: look again in four
        (14.0, 9.0, False, None),  # five seconds idle: close
        (20.0, 9.0, True, 5.0),  # a generation runs: look again a whole timeout later
        (9.0, 9.0, False, 5.0),
    ],
)
def test_idle_schedule(now: float, last: float, busy: bool, expected: float | None) -> None:
    assert idle_wait(now, last, 5.0, busy) == expected


async def closed(ws: ClientConnection) -> tuple[int, str, float]:
    """Read until the server closes: its code, its reason, and how long that took."""
    began = time.monotonic()
    received = None
    try:
        async with asyncio.timeout(CLOSE_WITHIN):
            while True:
                await ws.recv()
    except ConnectionClosed as exc:
        received = exc.rcvd
    assert received is not None, "the connection ended without a close frame"
    return received.code, received.reason, time.monotonic() - began


async def stays_open(ws: ClientConnection, seconds: float) -> None:
    """Nothing, not even a close, arrives for `seconds`."""
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(ws.recv(), seconds)


async def test_an_idle_socket_closes_1000_after_the_idle_timeout(
    start_gateway: GatewayFactory, token: Mint
) -> None:
    with start_gateway(ws_idle_timeout=IDLE) as url:
        ws = await connected(url, token())
        code, reason, after = await closed(ws)
    assert code == CLOSE_NORMAL
    assert reason == "Idle: no frames for 0.5 s."
    assert IDLE * 0.8 <= after < IDLE + LATE, f"closed after {after:.2f} s"


async def test_app_pings_keep_a_socket_open(start_gateway: GatewayFactory, token: Mint) -> None:
    with start_gateway(ws_idle_timeout=IDLE) as url:
        ws = await connected(url, token())
        began = time.monotonic()
        while time.monotonic() - began < 3 * IDLE:
            await send(ws, type="ping")
            assert await asyncio.wait_for(receive(ws), CLOSE_WITHIN) == {"type": "pong"}
            await asyncio.sleep(IDLE / 3)  # the client's heartbeat pace
        code, _, after = await closed(ws)  # and once the pings stop, it is idle
    assert code == CLOSE_NORMAL
    assert IDLE * 0.5 <= after < IDLE + LATE, f"closed after {after:.2f} s"


async def test_a_running_generation_keeps_a_silent_socket_open(
    start_gateway: GatewayFactory, token: Mint
) -> None:
    with start_gateway(ws_idle_timeout=IDLE) as url:
        ws = await connected(url, token())
        await send(ws, type="completion", id="r", message="hello", model="fake-hang")
        assert (await receive(ws))["type"] == "start"
        await stays_open(ws, 3 * IDLE)  # the upstream sends nothing, neither does the client
        await send(ws, type="cancel", id="r")
        frames = await until_done(ws, "r")
        code, _, after = await closed(ws)  # the clock starts again when the generation ends
    assert frames[-1]["finish_reason"] == "cancelled"
    assert code == CLOSE_NORMAL
    assert IDLE * 0.8 <= after < IDLE + LATE, f"closed after {after:.2f} s"


async def test_a_client_that_answers_pings_is_kept(
    start_gateway: GatewayFactory, token: Mint
) -> None:
    interval, timeout = 0.2, 0.2
    with start_gateway(ws_ping_interval=interval, ws_ping_timeout=timeout) as url:
        ws = await connected(url, token())  # the websockets library answers pings
        await stays_open(ws, 4 * (interval + timeout))
        await send(ws, type="ping")
        assert await receive(ws) == {"type": "pong"}


async def test_a_client_that_ignores_pings_is_dropped_1011(
    start_gateway: GatewayFactory, token: Mint
) -> None:
    interval, timeout = 0.3, 0.3
    with start_gateway(ws_ping_interval=interval, ws_ping_timeout=timeout) as url:
        async with raw_socket(url, token()) as raw:  # reads, and never sends a pong
            began = time.monotonic()
            frames: list[Frame] = []
            while not frames or frames[-1].opcode != OP_CLOSE:
                frames.append(await raw.read_frame(CLOSE_WITHIN))
            after = time.monotonic() - began
            assert await raw.eof(CLOSE_WITHIN)
    opcodes = [frame.opcode for frame in frames]
    assert opcodes[0] == OP_TEXT and frames[0].json()["type"] == "ready"
    assert OP_PING in opcodes
    assert frames[-1].close_code == 1011
    expected = interval + timeout
    assert expected * 0.8 <= after < expected + LATE, f"dropped after {after:.2f} s"


async def test_protocol_level_pongs_do_not_count_as_activity(
    start_gateway: GatewayFactory, token: Mint
) -> None:
    # A browser answers pings by itself, so an abandoned tab would otherwise never be idle.
    # Unanswered pings would close it with 1011 after 0.3 s, before the idle timeout.
    changes = {"ws_idle_timeout": IDLE, "ws_ping_interval": 0.1, "ws_ping_timeout": 0.2}
    with start_gateway(**changes) as url:
        ws = await connected(url, token())
        code, _, after = await closed(ws)
    assert code == CLOSE_NORMAL
    assert IDLE * 0.8 <= after < IDLE + LATE, f"closed after {after:.2f} s"

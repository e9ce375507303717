"""Slow and idle HTTP clients against a real uvicorn: a request line and headers must arrive
within HTTP_HEADER_TIMEOUT (WebSocket handshakes included) and fit in MAX_HEAD_BYTES, and an
idle keep-alive connection closes after HTTP_KEEPALIVE_TIMEOUT.

The trickle's pacing is the attack itself; every wait for the server's answer is a read until
end of stream, bounded by a timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import httpx2

from gateway.server.transport import MAX_HEAD_BYTES
from tests.adversarial.conftest import Survives
from tests.conftest import GatewayFactory
from tests.support.ws import connected, receive, send

Mint = Callable[..., str]

HEAD_TIMEOUT = 1.0
CLOSE_WITHIN = 5.0  # the longest wait for the server to hang up; far above every deadline
LATE = 1.0  # how late a cut may come under a loaded test machine
TRICKLE_PACE = 0.2
HEALTHZ = b"GET /healthz HTTP/1.1\r\nHost: gateway\r\n\r\n"
SLOW_HEAD = b"GET /healthz HTTP/1.1\r\nHost: gateway\r\nX-Slow: "
SLOW_HANDSHAKE = (
    b"GET /ws HTTP/1.1\r\nHost: gateway\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    b"Sec-WebSocket-Protocol: chat-gateway.v1\r\nX-Slow: "
)


@dataclass
class Raw:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter

    async def until_eof(self) -> bytes:
        """Everything the server sends until it closes the connection."""
        data = bytearray()
        async with asyncio.timeout(CLOSE_WITHIN):
            with contextlib.suppress(ConnectionResetError):
                while chunk := await self.reader.read(65536):
                    data += chunk
        return bytes(data)

    async def response(self) -> tuple[int, bytes]:
        """One whole response (status, body), leaving the connection open."""
        async with asyncio.timeout(CLOSE_WITHIN):
            head = await self.reader.readuntil(b"\r\n\r\n")
            length = next(
                int(line.split(b":", 1)[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            )
            return status_of(head), await self.reader.readexactly(length)


def status_of(response: bytes) -> int:
    return int(response.split(b" ", 2)[1]) if response else 0


def body_of(response: bytes) -> dict[str, object]:
    obj: dict[str, object] = json.loads(response.split(b"\r\n\r\n", 1)[1])
    return obj


@contextlib.asynccontextmanager
async def raw_http(url: str) -> AsyncIterator[Raw]:
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        yield Raw(reader, writer)
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def _trickle(writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError):
        while not writer.is_closing():
            writer.write(b"a")
            await writer.drain()
            await asyncio.sleep(TRICKLE_PACE)


@contextlib.asynccontextmanager
async def trickling(writer: asyncio.StreamWriter) -> AsyncIterator[None]:
    """The attack: one more header byte every TRICKLE_PACE seconds, for as long as it lasts."""
    task = asyncio.create_task(_trickle(writer))
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def warm(url: str, token: Mint) -> None:
    """One authenticated round trip first, so that parts the gateway starts on first use are
    in the task count `survives` starts from."""
    ws = await connected(url, token())
    await send(ws, type="ping")
    assert await receive(ws) == {"type": "pong"}
    await ws.close()


async def healthz_seconds(url: str) -> float:
    began = time.monotonic()
    async with httpx2.AsyncClient(timeout=CLOSE_WITHIN) as client:
        assert (await client.get(f"{url}/healthz")).status_code == 200
    return time.monotonic() - began


async def test_a_trickled_head_is_cut_at_the_deadline_while_others_are_served(
    start_gateway: GatewayFactory, survives: Survives, token: Mint
) -> None:
    with start_gateway(http_header_timeout=HEAD_TIMEOUT) as url:
        await warm(url, token)
        async with survives(url), raw_http(url) as raw:
            began = time.monotonic()
            raw.writer.write(SLOW_HEAD)
            async with trickling(raw.writer):
                served = await healthz_seconds(url)
                response = await raw.until_eof()
            cut = time.monotonic() - began
    assert served < 0.5, f"a normal client waited {served:.2f} s"
    assert status_of(response) == 408
    assert body_of(response)["error"] == "bad_request"
    assert body_of(response)["detail"] == "The request headers did not arrive in time (1 s)."
    assert b"connection: close" in response.lower()
    assert HEAD_TIMEOUT * 0.9 <= cut < HEAD_TIMEOUT + LATE, f"cut after {cut:.2f} s"


async def test_a_trickled_websocket_handshake_is_cut_and_others_still_connect(
    start_gateway: GatewayFactory, token: Mint
) -> None:
    with start_gateway(http_header_timeout=HEAD_TIMEOUT) as url:
        await healthz_seconds(url)  # the server is up: its clock and ours start together
        async with raw_http(url) as raw:
            began = time.monotonic()
            raw.writer.write(SLOW_HANDSHAKE)
            async with trickling(raw.writer):
                ws = await connected(url, token())  # an honest handshake meanwhile
                await send(ws, type="ping")
                assert await receive(ws) == {"type": "pong"}
                response = await raw.until_eof()
            cut = time.monotonic() - began
    assert status_of(response) == 408
    assert HEAD_TIMEOUT * 0.9 <= cut < HEAD_TIMEOUT + LATE, f"cut after {cut:.2f} s"


async def test_many_slow_connections_are_all_cut_and_the_server_keeps_serving(
    start_gateway: GatewayFactory, survives: Survives, token: Mint
) -> None:
    count = 200

    async def attack(url: str) -> tuple[bytes, float]:
        async with raw_http(url) as raw:
            began = time.monotonic()
            raw.writer.write(SLOW_HEAD)
            async with trickling(raw.writer):
                response = await raw.until_eof()
            return response, time.monotonic() - began

    with start_gateway(http_header_timeout=HEAD_TIMEOUT) as url:
        await warm(url, token)
        async with survives(url):
            attackers = [asyncio.create_task(attack(url)) for _ in range(count)]
            served = await healthz_seconds(url)
            results = await asyncio.gather(*attackers)
    assert served < 1.0, f"a normal client waited {served:.2f} s"
    assert [status_of(response) for response, _ in results] == [408] * count
    slowest = max(cut for _, cut in results)
    assert slowest < HEAD_TIMEOUT + 2 * LATE, f"the last one was cut after {slowest:.2f} s"


async def test_a_silent_connection_is_closed_without_a_response(
    start_gateway: GatewayFactory,
) -> None:
    with start_gateway(http_header_timeout=HEAD_TIMEOUT) as url:
        await healthz_seconds(url)
        async with raw_http(url) as raw:
            began = time.monotonic()
            response = await raw.until_eof()
            closed = time.monotonic() - began
    assert response == b""
    assert HEAD_TIMEOUT * 0.9 <= closed < HEAD_TIMEOUT + LATE, f"closed after {closed:.2f} s"


async def test_an_idle_keep_alive_connection_closes_after_the_keepalive_timeout(
    start_gateway: GatewayFactory,
) -> None:
    keepalive = 0.5
    with start_gateway(http_header_timeout=3.0, http_keepalive_timeout=keepalive) as url:
        async with raw_http(url) as raw:
            raw.writer.write(HEALTHZ)
            assert (await raw.response())[0] == 200
            began = time.monotonic()
            rest = await raw.until_eof()
            closed = time.monotonic() - began
    assert rest == b""
    assert keepalive * 0.9 <= closed < keepalive + LATE, f"closed after {closed:.2f} s"


async def test_a_slow_second_request_on_a_keep_alive_connection_is_cut(
    start_gateway: GatewayFactory,
) -> None:
    with start_gateway(http_header_timeout=HEAD_TIMEOUT, http_keepalive_timeout=5.0) as url:
        async with raw_http(url) as raw:
            raw.writer.write(HEALTHZ)
            assert (await raw.response())[0] == 200
            began = time.monotonic()
            raw.writer.write(SLOW_HEAD)  # the first byte stops the keep-alive timer
            async with trickling(raw.writer):
                response = await raw.until_eof()
            cut = time.monotonic() - began
    assert status_of(response) == 408
    assert HEAD_TIMEOUT * 0.9 <= cut < HEAD_TIMEOUT + LATE, f"cut after {cut:.2f} s"


async def test_a_head_larger_than_the_cap_is_refused_at_once(
    start_gateway: GatewayFactory,
) -> None:
    with start_gateway() as url:  # the default HTTP_HEADER_TIMEOUT, 10 s
        async with raw_http(url) as raw:
            began = time.monotonic()
            raw.writer.write(SLOW_HEAD + b"a" * MAX_HEAD_BYTES)
            response = await raw.until_eof()
            refused = time.monotonic() - began
    assert status_of(response) == 431
    assert body_of(response)["error"] == "bad_request"
    assert refused < 1.0, f"refused after {refused:.2f} s"


async def test_a_large_body_in_the_same_chunk_as_the_head_is_not_counted_as_head(
    start_gateway: GatewayFactory,
) -> None:
    body = b"x" * (4 * MAX_HEAD_BYTES)
    head = b"POST /completion HTTP/1.1\r\nHost: gateway\r\nContent-Type: application/json\r\n"
    with start_gateway() as url:
        async with raw_http(url) as raw:
            raw.writer.write(head + b"Content-Length: %d\r\n\r\n" % len(body) + body)
            status, _ = await raw.response()
    assert status == 401  # the app answered (no token), not the head cap


async def test_pipelined_requests_are_all_answered(start_gateway: GatewayFactory) -> None:
    with start_gateway(http_header_timeout=HEAD_TIMEOUT) as url:
        async with raw_http(url) as raw:
            raw.writer.write(HEALTHZ * 3)
            statuses = [(await raw.response())[0] for _ in range(3)]
            began = time.monotonic()
            rest = await raw.until_eof()
            closed = time.monotonic() - began
    assert statuses == [200, 200, 200]
    # The deadline for a fourth head starts after the third response, not before.
    assert rest == b"" and closed < HEAD_TIMEOUT + LATE

"""Hostile frames on `/ws`: each attack must end in a clean error frame or close code, and
leave the gateway serving, another user's stream whole, and memory where it was."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable

import pytest

from tests.adversarial.conftest import Survives
from tests.conftest import GatewayFactory
from tests.support.gateways import rss_bytes
from tests.support.raw_ws import (
    OP_BINARY,
    OP_CLOSE,
    OP_CONT,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    RawSocket,
    deflated,
    encode_frame,
    raw_socket,
)

Mint = Callable[..., str]
PING = b'{"type":"ping"}'
PONG = {"type": "pong"}
DEEP = 100_000


async def refused(sock: RawSocket, text: str | bytes) -> dict[str, object]:
    """Send one text frame; return the error frame that answers it, checking the socket
    still answers a ping afterwards."""
    await sock.send_text(text)
    error = await sock.read_json()
    assert error["type"] == "error" and error["done"] is False, error
    await sock.send_text(PING)
    assert await sock.read_json() == PONG
    return error


@pytest.mark.parametrize(
    "text",
    ["{not json", '{"type": "ping"', "\x00", "", " ", '{"a": NaN]', '"\\ud800"', "[1, 2]"],
)
async def test_malformed_json_gets_an_error_frame(
    gateway: str, token: Mint, survives: Survives, text: str
) -> None:
    async with survives(gateway), raw_socket(gateway, token()) as sock:
        await sock.ready()
        error = await refused(sock, text)
        assert error["code"] == "bad_request" and error["id"] is None


@pytest.mark.parametrize(
    "text",
    [
        "[" * DEEP,
        "[" * DEEP + "]" * DEEP,
        '{"a":' * DEEP,
        '{"type":"completion","id":"deep","message":"hi","tools":' + "[" * DEEP,
    ],
    ids=["open-arrays", "closed-arrays", "objects", "inside-a-completion"],
)
async def test_deeply_nested_json_is_refused_without_a_crash(
    gateway: str, token: Mint, survives: Survives, text: str
) -> None:
    async with survives(gateway), raw_socket(gateway, token()) as sock:
        await sock.ready()
        error = await refused(sock, text)
        assert error["code"] == "bad_request"
        assert error["message"] == "The JSON is nested too deeply."


async def test_an_oversized_text_frame_closes_1009(
    gateway: str, token: Mint, survives: Survives
) -> None:
    async with survives(gateway), raw_socket(gateway, token()) as sock:
        await sock.ready()
        await sock.send_over_limit(encode_frame(OP_TEXT, b'"' + b"x" * (1024 * 1024) + b'"'))
        assert await sock.closed_with() == 1009


async def test_a_binary_frame_closes_1003(gateway: str, token: Mint, survives: Survives) -> None:
    async with survives(gateway), raw_socket(gateway, token()) as sock:
        await sock.ready()
        await sock.send_frame(OP_BINARY, PING)
        closing = await sock.close_frame()
        assert closing is not None and closing.close_code == 1003
        assert closing.payload[2:] == b"Binary frames are not supported."


async def test_invalid_utf8_closes_1007(
    gateway: str, token: Mint, survives: Survives, caplog: pytest.LogCaptureFixture
) -> None:
    async with survives(gateway), raw_socket(gateway, token()) as sock:
        await sock.ready()
        await sock.send_text(b'{"type":"completion","id":"x","message":"\xff\xfe"}')
        assert await sock.closed_with() == 1007
    # One quiet line, not an error with a traceback a client could flood the logs with.
    noted = [r for r in caplog.records if "Invalid UTF-8" in r.getMessage()]
    assert noted and all(r.levelno == logging.INFO and not r.exc_info for r in noted)


async def test_fragments_summing_over_the_limit_close_1009(
    gateway: str, token: Mint, survives: Survives
) -> None:
    piece = b"x" * (256 * 1024)
    async with survives(gateway), raw_socket(gateway, token()) as sock:
        await sock.ready()
        fragments = [encode_frame(OP_TEXT, b'"', fin=False)]
        fragments += [encode_frame(OP_CONT, piece, fin=False)] * 4  # 1 MiB + 1 byte in all
        fragments.append(encode_frame(OP_CONT, b'"'))
        await sock.send_over_limit(b"".join(fragments))
        assert await sock.closed_with() == 1009


async def test_a_compression_bomb_closes_1009_in_bounded_memory(
    start_gateway: GatewayFactory, token: Mint, survives: Survives
) -> None:
    inflated = 256 * 1024 * 1024
    bomb = deflated(b'{"type":"ping","pad":"' + b" " * inflated + b'"}')
    assert len(bomb) < 300 * 1024  # what crosses the wire: a thousandth of it
    with start_gateway(ws_per_message_deflate=True) as url:
        async with (
            survives(url, memory_slack=32 * 1024 * 1024),
            raw_socket(url, token(), extensions="permessage-deflate") as sock,
        ):
            assert "permessage-deflate" in sock.headers["sec-websocket-extensions"]
            await sock.ready()
            await sock.send_frame(OP_TEXT, deflated(PING), rsv=4)
            assert await sock.read_json() == PONG  # compression works
            before = rss_bytes()
            await sock.send_over_limit(encode_frame(OP_TEXT, bomb, rsv=4))
            assert await sock.closed_with() == 1009
            assert rss_bytes() - before < 32 * 1024 * 1024


async def test_a_flood_of_protocol_pings_is_answered(
    gateway: str, token: Mint, survives: Survives
) -> None:
    count = 5000
    async with survives(gateway), raw_socket(gateway, token()) as sock:
        await sock.ready()
        sock.writer.write(b"".join(encode_frame(OP_PING, b"%d" % i) for i in range(count)))
        await sock.writer.drain()
        for i in range(count):
            pong = await sock.read_frame()
            assert pong.opcode == OP_PONG and pong.payload == b"%d" % i


async def test_application_pings_at_a_readers_pace_are_all_answered(
    gateway: str, token: Mint, survives: Survives
) -> None:
    async with survives(gateway), raw_socket(gateway, token()) as sock:
        await sock.ready()
        for _ in range(50):
            sock.writer.write(encode_frame(OP_TEXT, PING) * 100)
            await sock.writer.drain()
            for _ in range(100):
                assert await sock.read_json() == PONG


async def test_a_burst_of_pings_beyond_the_outbox_closes_4008(
    start_gateway: GatewayFactory, token: Mint, survives: Survives
) -> None:
    queued = 64
    with start_gateway(max_queued_frames=queued) as url:
        async with survives(url), raw_socket(url, token()) as sock:
            await sock.ready()
            sock.writer.write(encode_frame(OP_TEXT, PING) * 5000)
            await sock.writer.drain()
            answered = 0
            while (frame := await sock.read_frame()).opcode != OP_CLOSE:
                assert frame.json() == PONG
                answered += 1
            assert frame.close_code == 4008
            assert answered <= queued


async def test_a_flood_of_bad_frames_closes_1008(
    gateway: str, token: Mint, survives: Survives
) -> None:
    async with survives(gateway), raw_socket(gateway, token()) as sock:
        await sock.ready()
        sock.writer.write(encode_frame(OP_TEXT, b"nope") * 500)
        await sock.writer.drain()
        errors = 0
        while (frame := await sock.read_frame()).opcode != OP_CLOSE:
            assert frame.json()["code"] == "bad_request"
            errors += 1
        assert frame.close_code == 1008
        assert frame.payload[2:] == b"Too many refused frames."
        assert errors <= 50  # MAX_ERROR_FRAMES: never more answers than that


async def test_refused_frames_at_a_slow_pace_close_1008_after_the_limit(
    start_gateway: GatewayFactory, token: Mint, survives: Survives
) -> None:
    with start_gateway(max_error_frames=5) as url:
        async with survives(url), raw_socket(url, token()) as sock:
            await sock.ready()
            for _ in range(5):  # answered one by one, the limit is exact
                error = await refused(sock, json.dumps({"type": "nonsense"}))
                assert error["code"] == "bad_request"
            await sock.send_text(json.dumps({"type": "nonsense"}))
            assert await sock.closed_with() == 1008


async def test_a_fragmented_message_that_never_ends_is_bounded(
    gateway: str, token: Mint, survives: Survives
) -> None:
    """Thousands of tiny continuation frames, never final: the reassembly buffer is capped
    by MAX_FRAME_BYTES like a single frame."""
    async with survives(gateway), raw_socket(gateway, token()) as sock:
        await sock.ready()
        await sock.send_frame(OP_TEXT, b"[", fin=False)
        burst = encode_frame(OP_CONT, b"1," * 512, fin=False) * 64  # 64 KiB a burst
        await sock.send_over_limit(burst * 20)
        assert await sock.closed_with() == 1009

"""RFC 6455 conformance at `/ws`, Autobahn-style, with frames written by hand.

The gateway's WebSocket framing is uvicorn's `websockets-sansio` implementation (over the
`websockets` protocol parser); these tests pin down what it does with each kind of broken or
unusual frame, so an upgrade that changes it is noticed. Every protocol violation must end
in a close frame with the RFC's code and a closed TCP connection, never a hang; every valid
sequence must be answered. The observed behaviour is listed in docs/reliability.md.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from tests.conftest import GatewayFactory
from tests.support.raw_ws import (
    OP_BINARY,
    OP_CLOSE,
    OP_CONT,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    close_payload,
    encode_frame,
    raw_socket,
)

Mint = Callable[..., str]
PING = b'{"type":"ping"}'
PONG = {"type": "pong"}

# name → (frames the client sends, the close code the server must answer with)
VIOLATIONS: dict[str, tuple[list[bytes], int]] = {
    # Framing
    "reserved bit 1 without an extension": ([encode_frame(OP_TEXT, PING, rsv=4)], 1002),
    "reserved bit 2": ([encode_frame(OP_TEXT, PING, rsv=2)], 1002),
    "reserved bit 3": ([encode_frame(OP_TEXT, PING, rsv=1)], 1002),
    "reserved data opcode 3": ([encode_frame(0x3, b"")], 1002),
    "reserved data opcode 7": ([encode_frame(0x7, b"x")], 1002),
    "reserved control opcode 0xB": ([encode_frame(0xB, b"")], 1002),
    "reserved control opcode 0xF": ([encode_frame(0xF, b"x")], 1002),
    "unmasked client frame": ([encode_frame(OP_TEXT, PING, mask=False)], 1002),
    "ping of 126 bytes": ([encode_frame(OP_PING, b"x" * 126)], 1002),
    "close of 126 bytes": ([encode_frame(OP_CLOSE, close_payload(1000, "x" * 124))], 1002),
    "fragmented ping": ([encode_frame(OP_PING, b"x", fin=False)], 1002),
    "fragmented close": ([encode_frame(OP_CLOSE, close_payload(1000), fin=False)], 1002),
    # Fragmentation
    "continuation without a start": ([encode_frame(OP_CONT, PING)], 1002),
    "final continuation without a start": ([encode_frame(OP_CONT, b"x", fin=True)], 1002),
    "new message inside a fragmented one": (
        [encode_frame(OP_TEXT, b'{"type"', fin=False), encode_frame(OP_TEXT, b':"ping"}')],
        1002,
    ),
    # UTF-8
    "invalid UTF-8 in a text frame": ([encode_frame(OP_TEXT, b'{"x":"\xff"}')], 1007),
    "overlong UTF-8 encoding": ([encode_frame(OP_TEXT, b'{"x":"\xc0\xaf"}')], 1007),
    "UTF-16 surrogate in UTF-8": ([encode_frame(OP_TEXT, b'{"x":"\xed\xa0\x80"}')], 1007),
    "invalid UTF-8 across fragments": (
        [encode_frame(OP_TEXT, b'{"x":"\xce', fin=False), encode_frame(OP_CONT, b'\xff"}')],
        1007,
    ),
    "invalid UTF-8 in a close reason": (
        [encode_frame(OP_CLOSE, close_payload(1000) + b"\xff")],
        1007,
    ),
    # Close handling
    "close code 1005 (reserved: no code)": ([encode_frame(OP_CLOSE, close_payload(1005))], 1002),
    "close code 1006 (reserved: abnormal)": ([encode_frame(OP_CLOSE, close_payload(1006))], 1002),
    "close code 999": ([encode_frame(OP_CLOSE, close_payload(999))], 1002),
    "close code 1004 (reserved)": ([encode_frame(OP_CLOSE, close_payload(1004))], 1002),
    "close code 2999 (unassigned)": ([encode_frame(OP_CLOSE, close_payload(2999))], 1002),
    "close code 5000": ([encode_frame(OP_CLOSE, close_payload(5000))], 1002),
    "close payload of 1 byte": ([encode_frame(OP_CLOSE, b"\x03")], 1002),
}


@pytest.mark.parametrize("name", list(VIOLATIONS))
async def test_a_protocol_violation_closes_with_its_code(
    gateway: str, token: Mint, name: str
) -> None:
    frames, expected = VIOLATIONS[name]
    async with raw_socket(gateway, token()) as sock:
        await sock.ready()
        for frame in frames:
            sock.writer.write(frame)
        await sock.writer.drain()
        assert await sock.closed_with() == expected
        assert await sock.eof()  # the server also ends the TCP connection


@pytest.mark.parametrize("code", [1000, 1001, 1003, 1011, 3000, 4000, 4999])
async def test_a_valid_close_code_is_echoed(gateway: str, token: Mint, code: int) -> None:
    async with raw_socket(gateway, token()) as sock:
        await sock.ready()
        await sock.send_frame(OP_CLOSE, close_payload(code, "bye"))
        closing = await sock.close_frame()
        assert closing is not None and closing.close_code == code
        assert await sock.eof()


async def test_an_empty_close_is_answered_with_an_empty_close(gateway: str, token: Mint) -> None:
    async with raw_socket(gateway, token()) as sock:
        await sock.ready()
        await sock.send_frame(OP_CLOSE, b"")
        closing = await sock.close_frame()
        assert closing is not None and closing.payload == b""
        assert await sock.eof()


async def test_a_message_in_fragments_is_reassembled(gateway: str, token: Mint) -> None:
    pieces = [b'{"ty', b'pe":', b'"pi', b"ng", b'"}']
    async with raw_socket(gateway, token()) as sock:
        await sock.ready()
        await sock.send_frame(OP_TEXT, pieces[0], fin=False)
        for piece in pieces[1:-1]:
            await sock.send_frame(OP_CONT, piece, fin=False)
        await sock.send_frame(OP_CONT, pieces[-1])
        assert await sock.read_json() == PONG


async def test_empty_fragments_are_allowed(gateway: str, token: Mint) -> None:
    async with raw_socket(gateway, token()) as sock:
        await sock.ready()
        await sock.send_frame(OP_TEXT, b"", fin=False)
        await sock.send_frame(OP_CONT, PING, fin=False)
        await sock.send_frame(OP_CONT, b"")
        assert await sock.read_json() == PONG


async def test_a_ping_between_fragments_is_answered_first(gateway: str, token: Mint) -> None:
    async with raw_socket(gateway, token()) as sock:
        await sock.ready()
        await sock.send_frame(OP_TEXT, b'{"type"', fin=False)
        await sock.send_frame(OP_PING, b"between")
        pong = await sock.read_frame()
        assert pong.opcode == OP_PONG and pong.payload == b"between"
        await sock.send_frame(OP_CONT, b':"ping"}')
        assert await sock.read_json() == PONG


async def test_a_multibyte_character_split_across_fragments(gateway: str, token: Mint) -> None:
    message = "κόσμε 😀 ok"
    encoded = json.dumps(
        {"type": "completion", "id": "u", "message": message, "model": "echo"},
        ensure_ascii=False,
    ).encode()
    cut = encoded.index("😀".encode()) + 2  # inside the 4-byte sequence
    async with raw_socket(gateway, token()) as sock:
        await sock.ready()
        await sock.send_frame(OP_TEXT, encoded[:cut], fin=False)
        await sock.send_frame(OP_CONT, encoded[cut:])
        chunks = []
        while (frame := await sock.read_json())["type"] != "done":
            chunks.append(frame["content"])
        assert "".join(chunks) == message


async def test_a_ping_payload_comes_back_in_the_pong(gateway: str, token: Mint) -> None:
    async with raw_socket(gateway, token()) as sock:
        await sock.ready()
        payload = bytes(range(125))  # the largest control payload
        await sock.send_frame(OP_PING, payload)
        pong = await sock.read_frame()
        assert pong.opcode == OP_PONG and pong.payload == payload


async def test_an_unsolicited_pong_is_ignored(gateway: str, token: Mint) -> None:
    async with raw_socket(gateway, token()) as sock:
        await sock.ready()
        await sock.send_frame(OP_PONG, b"nobody asked")
        await sock.send_text(PING)
        assert await sock.read_json() == PONG


async def test_a_binary_message_closes_1003(gateway: str, token: Mint) -> None:
    async with raw_socket(gateway, token()) as sock:
        await sock.ready()
        await sock.send_frame(OP_BINARY, b"\x00\x01")
        assert await sock.closed_with() == 1003


@pytest.mark.parametrize("fragmented", [False, True])
async def test_a_message_over_the_limit_closes_1009(
    start_gateway: GatewayFactory, token: Mint, fragmented: bool
) -> None:
    limit = 64 * 1024
    with start_gateway(max_frame_bytes=limit) as url:
        async with raw_socket(url, token()) as sock:
            await sock.ready()
            if fragmented:
                frames = encode_frame(OP_TEXT, b"x" * (limit // 2), fin=False)
                frames += encode_frame(OP_CONT, b"x" * (limit // 2 + 1))
            else:
                frames = encode_frame(OP_TEXT, b"x" * (limit + 1))
            await sock.send_over_limit(frames)
            assert await sock.closed_with() == 1009
            assert await sock.eof()

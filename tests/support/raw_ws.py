"""A WebSocket client written by hand, frame by frame, for tests that send what a
well-behaved library never would: masking, opcodes, reserved bits, fragmentation,
permessage-deflate."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import socket
import struct
import zlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
DEFLATE_TAIL = b"\x00\x00\xff\xff"


@dataclass(frozen=True)
class Frame:
    fin: bool
    opcode: int
    payload: bytes
    rsv1: bool = False

    @property
    def close_code(self) -> int | None:
        """The code of a close frame; None for an empty close payload (no code given)."""
        if self.opcode != OP_CLOSE or len(self.payload) < 2:
            return None
        return int(struct.unpack("!H", self.payload[:2])[0])

    def json(self) -> dict[str, Any]:
        obj: dict[str, Any] = json.loads(self.payload)
        return obj


def encode_frame(
    opcode: int,
    payload: bytes,
    *,
    fin: bool = True,
    rsv: int = 0,
    mask: bool = True,
) -> bytes:
    """One frame as a client would send it; `rsv` is the three reserved bits (0-7)."""
    head = bytes([(0x80 if fin else 0) | (rsv & 7) << 4 | opcode & 0xF])
    size = len(payload)
    mask_bit = 0x80 if mask else 0
    if size < 126:
        head += bytes([mask_bit | size])
    elif size < 1 << 16:
        head += bytes([mask_bit | 126]) + struct.pack("!H", size)
    else:
        head += bytes([mask_bit | 127]) + struct.pack("!Q", size)
    if not mask:
        return head + payload
    key = os.urandom(4)
    return head + key + masked(payload, key)


def masked(payload: bytes, key: bytes) -> bytes:
    # XOR with the key repeated, done on one big integer rather than byte by byte.
    if not payload:
        return b""
    repeated = (key * (len(payload) // 4 + 1))[: len(payload)]
    value = int.from_bytes(payload, "big") ^ int.from_bytes(repeated, "big")
    return value.to_bytes(len(payload), "big")


def close_payload(code: int, reason: str = "") -> bytes:
    return struct.pack("!H", code) + reason.encode()


def deflated(data: bytes) -> bytes:
    """`data` compressed as one permessage-deflate message (raw deflate, tail removed)."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, -12)
    body = compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH)
    return body.removesuffix(DEFLATE_TAIL)


class HandshakeRefused(Exception):
    """The server answered the upgrade request with something other than 101."""

    def __init__(self, status_line: str) -> None:
        super().__init__(status_line)
        self.status_line = status_line


class RawSocket:
    """A WebSocket client written by hand over asyncio streams, so a test can send what a
    well-behaved library never would: unmasked frames, reserved bits, invalid UTF-8, bad
    close codes, fragments of anything."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, headers: dict[str, str]
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.headers = headers
        # The server compresses its frames too once permessage-deflate is agreed, and keeps
        # its compression context from one message to the next.
        deflate = "permessage-deflate" in headers.get("sec-websocket-extensions", "")
        self.inflater = zlib.decompressobj(-15) if deflate else None

    @classmethod
    async def connect(
        cls,
        base: str,
        token: str | None,
        *,
        extensions: str | None = None,
        receive_buffer: int | None = None,
    ) -> RawSocket:
        """Open `/ws` with the token in the subprotocol list; `receive_buffer` shrinks
        SO_RCVBUF (before connecting, so the window is small from the start)."""
        host, port = base.removeprefix("http://").split(":")
        if receive_buffer is not None:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
            sock.setblocking(False)
            await asyncio.get_running_loop().sock_connect(sock, (host, int(port)))
            reader, writer = await asyncio.open_connection(sock=sock)
        else:
            reader, writer = await asyncio.open_connection(host, int(port))
        protocols = "chat-gateway.v1" + (f", bearer.{token}" if token else "")
        key = base64.b64encode(os.urandom(16)).decode()
        lines = [
            "GET /ws HTTP/1.1",
            f"Host: {host}:{port}",
            "Upgrade: websocket",
            "Connection: Upgrade",
            f"Sec-WebSocket-Key: {key}",
            "Sec-WebSocket-Version: 13",
            f"Sec-WebSocket-Protocol: {protocols}",
        ]
        if extensions is not None:
            lines.append(f"Sec-WebSocket-Extensions: {extensions}")
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        await writer.drain()
        head = (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)).decode("latin-1")
        status, *header_lines = head.strip().split("\r\n")
        if " 101 " not in status:
            writer.close()
            raise HandshakeRefused(status)
        headers = {
            name.strip().lower(): value.strip()
            for name, value in (line.split(":", 1) for line in header_lines)
        }
        return cls(reader, writer, headers)

    async def ready(self) -> dict[str, Any]:
        """Read the `ready` frame that greets an authenticated socket."""
        frame = await self.read_frame()
        obj = frame.json()
        assert obj["type"] == "ready", obj
        return obj

    async def send_frame(self, opcode: int, payload: bytes = b"", **options: Any) -> None:
        self.writer.write(encode_frame(opcode, payload, **options))
        await self.writer.drain()

    async def send_over_limit(self, data: bytes) -> None:
        """Write frames the server is expected to refuse part-way: it may close (and reset)
        the connection before all of them are written, which is not an error here."""
        with contextlib.suppress(ConnectionError):
            self.writer.write(data)
            await self.writer.drain()

    async def send_text(self, text: str | bytes) -> None:
        await self.send_frame(OP_TEXT, text.encode() if isinstance(text, str) else text)

    async def send_json(self, **obj: Any) -> None:
        await self.send_text(json.dumps(obj))

    async def read_frame(self, within: float = 10.0) -> Frame:
        async with asyncio.timeout(within):
            first, second = await self.reader.readexactly(2)
            size = second & 0x7F
            if size == 126:
                (size,) = struct.unpack("!H", await self.reader.readexactly(2))
            elif size == 127:
                (size,) = struct.unpack("!Q", await self.reader.readexactly(8))
            payload = await self.reader.readexactly(size)  # servers never mask
        compressed = bool(first & 0x40)
        if compressed and self.inflater is not None:
            payload = self.inflater.decompress(payload + DEFLATE_TAIL)
        return Frame(bool(first & 0x80), first & 0x0F, payload, compressed)

    async def read_json(self, within: float = 10.0) -> dict[str, Any]:
        """The next text frame's JSON, skipping control frames."""
        while True:
            frame = await self.read_frame(within)
            if frame.opcode == OP_TEXT:
                return frame.json()
            assert frame.opcode in (OP_PING, OP_PONG), frame

    async def close_frame(self, within: float = 10.0) -> Frame | None:
        """Read until the server's close frame; None if the TCP stream ended without one."""
        try:
            while True:
                frame = await self.read_frame(within)
                if frame.opcode == OP_CLOSE:
                    return frame
        except (asyncio.IncompleteReadError, ConnectionResetError):
            return None

    async def closed_with(self, within: float = 10.0) -> int | None:
        """The code of the server's close frame (None: no frame, or a frame without a code)."""
        frame = await self.close_frame(within)
        return None if frame is None else frame.close_code

    async def eof(self, within: float = 10.0) -> bool:
        """True once the server has closed the TCP connection (after any frames)."""
        try:
            async with asyncio.timeout(within):
                while await self.reader.read(65536):
                    pass
        except ConnectionResetError:
            pass
        return True

    async def aclose(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await self.writer.wait_closed()


@asynccontextmanager
async def raw_socket(base: str, token: str | None, **options: Any) -> AsyncIterator[RawSocket]:
    sock = await RawSocket.connect(base, token, **options)
    try:
        yield sock
    finally:
        await sock.aclose()

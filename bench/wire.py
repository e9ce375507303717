"""The little of RFC 6455 and HTTP/1.1 the bench's clients speak, as pure functions."""

from __future__ import annotations

import base64
import hashlib
import os

HOST = "127.0.0.1"
WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
OP_TEXT, OP_CLOSE, OP_PING, OP_PONG = 0x1, 0x8, 0x9, 0xA
NORMAL_CLOSURE = (1000).to_bytes(2, "big")
SUBPROTOCOL = "chat-gateway.v1"


class WsError(Exception):
    """The server's side of the WebSocket did something this client does not expect."""


def client_frame(opcode: int, payload: bytes) -> bytes:
    """One final frame, masked as RFC 6455 requires of clients."""
    n = len(payload)
    if n < 126:
        header = bytes((0x80 | opcode, 0x80 | n))
    elif n < 1 << 16:
        header = bytes((0x80 | opcode, 0x80 | 126)) + n.to_bytes(2, "big")
    else:
        header = bytes((0x80 | opcode, 0x80 | 127)) + n.to_bytes(8, "big")
    mask = os.urandom(4)
    key = (mask * (n // 4 + 1))[:n]
    masked = (int.from_bytes(payload, "big") ^ int.from_bytes(key, "big")).to_bytes(n, "big")
    return header + mask + masked


def take_frame(buffer: bytearray) -> tuple[int, bytes] | None:
    """Remove one whole server frame from the front of `buffer`: (opcode, payload), or None
    until one has fully arrived."""
    if len(buffer) < 2:
        return None
    first, second = buffer[0], buffer[1]
    if second & 0x80 or not first & 0x80:
        raise WsError("the server sent a masked or fragmented frame")
    length, start = second & 0x7F, 2
    if length >= 126:
        start = 4 if length == 126 else 10
        if len(buffer) < start:
            return None
        length = int.from_bytes(buffer[2:start], "big")
    end = start + length
    if len(buffer) < end:
        return None
    payload = bytes(buffer[start:end])
    del buffer[:end]
    return first & 0x0F, payload


def ws_key() -> bytes:
    return base64.b64encode(os.urandom(16))


def ws_handshake(port: int, path: str, key: bytes, token: str | None) -> bytes:
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    return (
        f"GET {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
        f"Sec-WebSocket-Key: {key.decode()}\r\n"
        f"Sec-WebSocket-Protocol: {SUBPROTOCOL}\r\n{auth}\r\n"
    ).encode()


def check_upgrade(head: str, key: bytes) -> None:
    status, *lines = head.split("\r\n")
    if not status.startswith("HTTP/1.1 101"):
        raise WsError(f"the handshake was refused: {status}")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    expected = base64.b64encode(hashlib.sha1(key + WS_GUID).digest()).decode()
    if headers.get("sec-websocket-accept") != expected:
        raise WsError("the handshake answered a wrong Sec-WebSocket-Accept")


def http_post(port: int, path: str, body: bytes, token: str | None) -> bytes:
    """A streamed POST on a connection that closes after the answer."""
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\n{auth}"
        "Content-Type: application/json\r\nAccept: text/event-stream\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + body

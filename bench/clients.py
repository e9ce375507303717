"""Lean asyncio protocol clients: they timestamp bytes as they arrive and parse JSON only
after a round, so the client costs every path the same.

- `SseClient` reads an SSE stream: OpenAI's chunk format (the upstream directly, the
  gateway's `/v1/chat/completions`, LiteLLM) or the gateway's native events (`/completion`).
- `WsClient` reads the gateway's WebSocket protocol (or the bare ceiling endpoint, which
  speaks the same frames), and can hold an idle socket, answering pings.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import json
import time
from collections.abc import Callable
from typing import cast

from bench.stats import Stream
from bench.wire import (
    NORMAL_CLOSURE,
    OP_CLOSE,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    WsError,
    check_upgrade,
    client_frame,
    take_frame,
    ws_handshake,
    ws_key,
)

CLOSE_WAIT_S = 2.0


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def stamps_of(content: object) -> list[int | None]:
    """The send times in a chunk's content, one per upstream token: the gateway sends tokens
    that it read together as one chunk (" 17 18"). [None] when the content is no stamp."""
    try:
        return [int(part) for part in str(content).split()] or [None]
    except ValueError:
        return [None]


class StreamClient(asyncio.Protocol, abc.ABC):
    """One stream on its own connection: connect, wait for `ready`, `start`, read to the end."""

    def __init__(self) -> None:
        loop = asyncio.get_running_loop()
        self.ready: asyncio.Future[None] = loop.create_future()
        self.finished: asyncio.Future[None] = loop.create_future()
        self.lost: asyncio.Future[None] = loop.create_future()
        self.transport: asyncio.Transport | None = None
        self.received: list[tuple[int, bytes]] = []
        self.sent_ns = 0
        self.error: str | None = None
        self.leaving = False  # set once this side starts closing: a loss after is no drop

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but have its methods.
        self.transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.finished.done():
            self.fail("the connection closed before the stream ended")
        _resolve(self.lost)

    @property
    def dropped(self) -> bool:
        """The server side closed the connection while this side still held it."""
        return self.lost.done() and not self.leaving

    def fail(self, reason: str) -> None:
        self.error = self.error or reason
        _resolve(self.ready)
        _resolve(self.finished)
        if self.transport is not None:
            self.transport.close()

    def send(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def start(self) -> None:
        self.sent_ns = time.time_ns()
        self.send(self.request())

    async def close(self) -> None:
        self.leaving = True
        if self.transport is None:
            return
        self.say_goodbye()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self.lost), CLOSE_WAIT_S)
        if not self.lost.done():
            self.transport.abort()

    @abc.abstractmethod
    def request(self) -> bytes: ...

    @abc.abstractmethod
    def say_goodbye(self) -> None: ...

    @abc.abstractmethod
    def stream(self) -> Stream: ...


def openai_stream(
    sent_ns: int, lines: list[tuple[int, bytes]], done: bool, error: str | None
) -> Stream:
    """OpenAI's `chat.completion.chunk` lines; content is the upstream's send stamp."""
    chunks: list[tuple[int, int | None]] = []
    for received, line in lines:
        obj = json.loads(line[6:])
        if "error" in obj:
            error = error or f"error: {(obj['error'] or {}).get('code')}"
            continue
        choices = obj.get("choices") or [{}]
        content = (choices[0].get("delta") or {}).get("content")
        if content:
            chunks.extend((received, stamp) for stamp in stamps_of(content))
    error = None if done else error or "no [DONE] in time"
    return Stream(sent_ns, tuple(chunks), done, error)


def native_stream(
    sent_ns: int, payloads: list[tuple[int, bytes]], error: str | None, prefix: int = 0
) -> Stream:
    """The gateway's own event objects (WebSocket frames, or `data:` after `prefix` bytes)."""
    chunks: list[tuple[int, int | None]] = []
    seqs: list[int] = []
    complete = False
    for received, payload in payloads:
        frame = json.loads(payload[prefix:])
        kind = frame.get("type")
        if kind == "chunk":
            chunks.extend((received, stamp) for stamp in stamps_of(frame.get("content")))
            seqs.append(int(frame.get("seq", 0)))
        elif kind == "done":
            complete = True
        elif kind == "error":
            error = error or f"error: {frame.get('code')}"
    if not complete:
        error = error or "no done event in time"
    return Stream(sent_ns, tuple(chunks), complete, None if complete else error, tuple(seqs))


def responses_stream(
    sent_ns: int, lines: list[tuple[int, bytes]], done: bool, error: str | None
) -> Stream:
    """The Responses API's events: text deltas carry the upstream's send stamps; the stream
    is done at `response.completed` (a failed or incomplete one is an error)."""
    chunks: list[tuple[int, int | None]] = []
    for received, line in lines:
        event = json.loads(line[6:])
        kind = event.get("type")
        if kind == "response.output_text.delta":
            chunks.extend((received, stamp) for stamp in stamps_of(event.get("delta")))
        elif kind in ("response.failed", "response.incomplete", "error"):
            error = error or f"error: {kind}"
    error = None if done else error or "no response.completed in time"
    return Stream(sent_ns, tuple(chunks), done, error)


# How a Responses API stream ends (the start of its final event's data line).
RESPONSE_ENDS = (b"response.completed", b"response.failed", b"response.incomplete")

SseFormat = Callable[[int, list[tuple[int, bytes]], bool, str | None], Stream]


def openai_format(
    sent_ns: int, lines: list[tuple[int, bytes]], done: bool, e: str | None
) -> Stream:
    return openai_stream(sent_ns, lines, done, e)


def native_format(
    sent_ns: int, lines: list[tuple[int, bytes]], done: bool, e: str | None
) -> Stream:
    return native_stream(sent_ns, lines, e, prefix=6)


class SseClient(StreamClient):
    """A streamed POST read as SSE `data:` lines. Chunked-encoding size lines fall between
    SSE lines and never start with "data: "."""

    def __init__(self, request: bytes, native: bool, responses: bool = False) -> None:
        super().__init__()
        self._request = request
        self._native = native
        self._responses = responses  # the Responses API's events
        self._tail = b""
        self._done = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        _resolve(self.ready)

    def data_received(self, data: bytes) -> None:
        now = time.time_ns()
        lines = (self._tail + data).split(b"\n")
        self._tail = lines.pop()
        for line in lines:
            if not line.startswith(b"data: "):
                if line.startswith(b"HTTP/1.1 ") and not line.startswith(b"HTTP/1.1 200"):
                    self.fail(f"HTTP {line[9:12].decode(errors='replace')}")
                continue
            if line.startswith(b"data: [DONE]"):
                self._finish()
            else:
                self.received.append((now, line))
                # Safe on raw bytes: inside a JSON string a quote is always escaped.
                if self._ends(line):
                    self._finish()

    def _ends(self, line: bytes) -> bool:
        """The final event's data line (the stream ends at `data: [DONE]` otherwise)."""
        if self._native:
            return b'"done":true' in line
        return self._responses and any(end in line[:40] for end in RESPONSE_ENDS)

    def _finish(self) -> None:
        self._done = True
        _resolve(self.finished)

    def request(self) -> bytes:
        return self._request

    def say_goodbye(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def stream(self) -> Stream:
        parse: SseFormat = native_format if self._native else openai_format
        if self._responses:
            parse = responses_stream
        return parse(self.sent_ns, self.received, self._done, self.error)


class WsClient(StreamClient):
    """One completion over a WebSocket, token in the Authorization header. With no
    `completion` it only holds the socket open (idle sockets), answering pings."""

    def __init__(self, port: int, token: str | None, completion: bytes, path: str = "/ws"):
        super().__init__()
        self._key = ws_key()
        self._handshake = ws_handshake(port, path, self._key, token)
        self._completion = completion
        self._buffer = bytearray()
        self._upgraded = False
        self._closing = False
        self.pings = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.send(self._handshake)

    def data_received(self, data: bytes) -> None:
        now = time.time_ns()
        self._buffer += data
        try:
            if not self._upgraded and not self._upgrade():
                return
            while (frame := take_frame(self._buffer)) is not None:
                self._frame(now, *frame)
        except WsError as exc:
            self.fail(str(exc))

    def _upgrade(self) -> bool:
        end = self._buffer.find(b"\r\n\r\n")
        if end < 0:
            return False
        head = bytes(self._buffer[:end]).decode("latin-1")
        del self._buffer[: end + 4]
        check_upgrade(head, self._key)
        self._upgraded = True
        return True

    def _frame(self, now: int, opcode: int, payload: bytes) -> None:
        if opcode == OP_TEXT:
            self._text(now, payload)
        elif opcode == OP_PING:
            self.pings += 1
            self.send(client_frame(OP_PONG, payload))
        elif opcode == OP_CLOSE:
            self._closed_by_server(payload)

    def _text(self, now: int, payload: bytes) -> None:
        if not self.ready.done():
            if not payload.startswith(b'{"type":"ready"'):
                raise WsError(f"expected a ready frame, got {payload[:80]!r}")
            _resolve(self.ready)
            return
        self.received.append((now, payload))
        if b'"done":true' in payload:
            _resolve(self.finished)

    def _closed_by_server(self, payload: bytes) -> None:
        if not self._closing:
            self._closing = True
            self.send(client_frame(OP_CLOSE, payload[:2]))
        code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
        if not self.finished.done():
            self.fail(f"closed by the server with {code}")
        elif self.transport is not None:
            self.transport.close()

    def request(self) -> bytes:
        return client_frame(OP_TEXT, self._completion)

    def say_goodbye(self) -> None:
        if not self._upgraded:
            if self.transport is not None:
                self.transport.close()
        elif not self._closing:
            self._closing = True
            self.send(client_frame(OP_CLOSE, NORMAL_CLOSURE))

    def stream(self) -> Stream:
        return native_stream(self.sent_ns, self.received, self.error)


ClientFactory = Callable[[], StreamClient]

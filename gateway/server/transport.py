"""uvicorn's protocols, with deadlines on clients that are too slow on purpose or by accident.

HeadDeadlineProtocol: uvicorn's HTTP/1.1 protocol (httptools) with a deadline and a size cap on
each request head.

uvicorn bounds the wait *between* requests (`timeout_keep_alive`) but not the time a client
takes to send one, nor its size: a client that trickles a header byte every few seconds
(slowloris) would hold a connection, and the memory of its growing head, for as long as it
likes. Here the request line and headers must arrive within `HTTP_HEADER_TIMEOUT` of the
connection's start, or of the end of the previous response on a keep-alive connection, and may
not exceed `MAX_HEAD_BYTES`. A WebSocket handshake is an HTTP request, so it is covered too.

Cost: one timer per connection and per keep-alive cycle, cancelled when the headers are
complete; one addition per received chunk while a head is being read; nothing per byte.

SendDeadlineProtocol: uvicorn's WebSocket protocol (websockets-sansio) with a deadline on a
client that does not read. uvicorn waits for its transport to drain before each send, and a
closing transport waits for its unsent bytes, for as long as the peer keeps the TCP connection
open; a peer that never reads again would hold the socket, its handler and the handler's tasks
forever. Here, once writing has been paused (the transport's buffer is over its high-water
mark) for `WS_SEND_TIMEOUT`, or a close has waited that long for its unsent bytes, the
connection is reset: the handler sees a disconnect and the generations it followed run on.

Cost: nothing per frame; one timer each time writing pauses or a close has bytes left to send.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import struct
from collections.abc import Callable
from functools import partial
from typing import Any, cast

from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from uvicorn.server import ServerState

from gateway.protocol.http_errors import error_body

log = logging.getLogger("gateway.http")
ws_log = logging.getLogger("gateway.ws")

# Generous for bearer tokens and cookies (h11 allows 16 KiB, nginx 32 KiB by default), small
# enough that thousands of connections filling theirs cost little.
MAX_HEAD_BYTES = 64 * 1024


def deadline_protocol(header_timeout: float) -> partial[HeadDeadlineProtocol]:
    """The factory uvicorn calls per connection. A partial, not a class made on the fly, so
    that `--workers` can pickle it into the worker processes."""
    return partial(HeadDeadlineProtocol, header_timeout=header_timeout)


class HeadDeadlineProtocol(HttpToolsProtocol):
    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
        *,
        header_timeout: float,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.header_timeout = header_timeout
        self._deadline: asyncio.TimerHandle | None = None
        self._reading_head = True  # the bytes arriving now belong to a request line or headers
        self._head_bytes = 0
        self._head_begun = False  # some of the current request has been parsed

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._reading_head:
            self._head_bytes += len(data)
        super().data_received(data)
        # Checked after parsing, so that a chunk which completes the head and carries some of
        # the body is not counted against the head.
        if self._reading_head and self._head_bytes > MAX_HEAD_BYTES:
            self._refuse(431, f"The request headers are larger than {MAX_HEAD_BYTES} bytes.")

    # httptools callbacks

    def on_message_begin(self) -> None:
        self._head_begun = True
        super().on_message_begin()

    def on_headers_complete(self) -> None:
        self._disarm()
        self._reading_head = False
        self._head_bytes = 0
        self._head_begun = False
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._reading_head = True

    def handle_websocket_upgrade(self) -> None:
        # The transport now belongs to the WebSocket protocol: nothing here may touch it again.
        self._disarm()
        self._reading_head = False
        super().handle_websocket_upgrade()

    def on_response_complete(self) -> None:
        # A pipelined request whose head already arrived starts now; only an empty pipeline
        # waits for a new head, and the clock for it starts here.
        queued = bool(self.pipeline)
        super().on_response_complete()
        if not queued and not self.transport.is_closing():
            self._arm()

    # The deadline

    def _arm(self) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(self.header_timeout, self._expired)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expired(self) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        if self._head_begun:
            detail = f"The request headers did not arrive in time ({self.header_timeout:g} s)."
            self._refuse(408, detail)
        else:
            # Nothing of a request was sent: an idle connection is closed without a word, as
            # after a keep-alive timeout (a 408 there could be read as the answer to a request
            # the client sends at the same moment).
            log.debug("closed an idle connection from %s", peer(self.client))
            self._drop()

    def _refuse(self, status: int, detail: str) -> None:
        log.info("refused a request head from %s: %s", peer(self.client), detail)
        self._disarm()
        self._reading_head = False
        if self.cycle is not None and not self.cycle.response_complete:
            # A pipelined head behind a response still being sent: an answer now would land
            # inside that response.
            self._drop()
            return
        body = json.dumps(error_body("bad_request", detail), separators=(",", ":")).encode()
        head = [STATUS_LINE[status]]
        for name, value in self.server_state.default_headers:
            head += [name, b": ", value, b"\r\n"]
        head += [
            b"content-type: application/json\r\n",
            b"content-length: %d\r\n" % len(body),
            b"connection: close\r\n\r\n",
        ]
        self.transport.write(b"".join(head) + body)
        self._drop()

    def _drop(self) -> None:
        # A client that does not read would hold a graceful close open while its unsent
        # bytes wait; such a connection is aborted instead.
        if self.transport.get_write_buffer_size():
            self.transport.abort()
        else:
            self.transport.close()


def send_deadline_protocol(send_timeout: float) -> partial[SendDeadlineProtocol]:
    """The WebSocket protocol uvicorn makes per upgraded connection; a partial, for `--workers`
    as above."""
    return partial(SendDeadlineProtocol, send_timeout=send_timeout)


# SO_LINGER on, with a zero timeout: close() resets the connection instead of leaving the
# kernel to keep offering its send buffer (megabytes on loopback) to a peer that takes none.
RESET_ON_CLOSE = struct.pack("ii", 1, 0)


class SendDeadlineProtocol(WebSocketsSansIOProtocol):
    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
        *,
        send_timeout: float,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.send_timeout = send_timeout
        self._deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        # uvicorn closes the transport from many places (the app's end, a close handshake
        # timing out, a keepalive failure, shutdown); each close is seen here.
        self.transport = cast(asyncio.Transport, _CloseWatch(self.transport, self._closing))

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def pause_writing(self) -> None:
        super().pause_writing()
        self._arm()

    def resume_writing(self) -> None:
        self._disarm()
        super().resume_writing()
        if self.transport.is_closing():
            self._closing()  # the client read some; what is left gets a deadline of its own

    def _closing(self) -> None:
        if not self.disconnected and self.transport.get_write_buffer_size():
            self._arm()

    def _arm(self) -> None:
        # Already armed when writing paused before the close: the deadline runs from the pause.
        if self._deadline is None:
            self._deadline = self.loop.call_later(self.send_timeout, self._expired)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expired(self) -> None:
        self._deadline = None
        if self.disconnected:
            return
        ws_log.info(
            "reset the WebSocket connection from %s: it did not read for %g s",
            peer(self.client),
            self.send_timeout,
        )
        sock = self.transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):  # the socket is already gone
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, RESET_ON_CLOSE)
        # Drops the unsent bytes and closes at once; uvicorn then tells the app of the
        # disconnect, and any send waiting for the buffer to drain raises.
        self.transport.abort()


class _CloseWatch:
    """A transport that calls `on_close` after each close(); everything else, writes
    included, goes straight to the wrapped transport."""

    def __init__(self, transport: asyncio.Transport, on_close: Callable[[], None]) -> None:
        self._transport = transport
        self._on_close = on_close
        # Bound once: the per-frame calls cost nothing extra.
        self.write = transport.write
        self.is_closing = transport.is_closing
        self.pause_reading = transport.pause_reading
        self.resume_reading = transport.resume_reading

    def close(self) -> None:
        self._transport.close()
        self._on_close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


def peer(client: tuple[str, int] | None) -> str:
    """A connection's remote address for the logs."""
    return f"{client[0]}:{client[1]}" if client else "unknown"

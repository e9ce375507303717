"""A lean HTTP/1.1 transport for the openai SDK's httpx client.

The SDK still builds, authenticates and sends every request; this only moves the bytes. The
default transport (httpcore over anyio and h11) spends about 100 µs of CPU per streamed
chunk: a cancel scope, a lock and an h11 event for every piece of a chunked body. Here an
asyncio protocol feeds httptools' C parser, and the body is handed over as whatever arrived
since the last read, so tokens that arrive together are read together.

Connections are kept alive per origin (at most `max_idle` idle ones each); concurrency is
bounded by the per-model gate, not here. Proxies configured in the environment still apply:
httpx mounts its own transport for proxied URLs.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from collections.abc import AsyncIterator
from typing import Any

import httptools
import httpx2

Origin = tuple[str, str, int]

# Above this much unread body, stop reading the socket until the consumer catches up.
PAUSE_BYTES = 256 * 1024


class _Unanswered(httpx2.RemoteProtocolError):
    """The connection closed before a byte of the response: the request was not served."""


class _Connection(asyncio.Protocol):
    """One HTTP/1.1 connection: one request at a time, the response parsed as it arrives."""

    def __init__(self, origin: Origin) -> None:
        self.origin = origin
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self._parser = httptools.HttpResponseParser(self)
        # The silence timer outlives a request: a kept-alive connection reuses it.
        self._silence = 0.0  # the longest wait allowed for data
        self._quiet_since = 0.0  # when the current wait began (loop time)
        self._timer: asyncio.TimerHandle | None = None
        self._reset()

    def _reset(self) -> None:
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.head_done = False
        self.complete = False
        self.keep_alive = False
        self.received = False  # any byte of this response
        self.error: Exception | None = None
        self._body: list[bytes] = []
        self._buffered = 0
        self._paused = False
        self._waiter: asyncio.Future[None] | None = None

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.received = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self.error = httpx2.RemoteProtocolError(f"malformed response: {exc}")
            self.close()
        if self._buffered > PAUSE_BYTES and not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()
        self._wake()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if not self.complete and self.error is None:
            if self.head_done and not self._framed():
                self.complete = True  # a body delimited by the end of the connection
            elif self.received or exc is not None:
                self.error = httpx2.ReadError("the upstream closed the connection mid-response")
            else:
                self.error = _Unanswered("the upstream closed without answering")
        self._wake()

    # httptools callbacks

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        self.status = self._parser.get_status_code()
        self.head_done = True

    def on_body(self, body: bytes) -> None:
        self._body.append(body)
        self._buffered += len(body)

    def on_message_complete(self) -> None:
        self.complete = True
        # Asked here: the parser's state is reset for the next message afterwards.
        self.keep_alive = self._parser.should_keep_alive()

    # used by the transport

    def send(self, data: bytes) -> None:
        assert self.transport is not None
        self._reset()
        self.transport.write(data)

    async def head(self, silence: float | None) -> None:
        """Wait for the response head; `silence` bounds each wait for data."""
        while not self.head_done:
            await self._wait(silence)

    async def body(self, silence: float | None) -> AsyncIterator[bytes]:
        while True:
            if self._body:
                piece = b"".join(self._body) if len(self._body) > 1 else self._body[0]
                self._body.clear()
                self._buffered = 0
                if self._paused and self.transport is not None:
                    self._paused = False
                    self.transport.resume_reading()
                yield piece
            elif self.complete:
                return
            else:
                await self._wait(silence)

    @property
    def open(self) -> bool:
        transport = self.transport
        return not self.closed and transport is not None and not transport.is_closing()

    @property
    def reusable(self) -> bool:
        """Its response was read to the end, and the connection may carry another."""
        return self.complete and self.error is None and self.keep_alive and self.open

    def _framed(self) -> bool:
        """Whether the body's end is marked (a length or chunked), not the connection's end."""
        names = {name.lower() for name, _ in self.headers}
        return b"content-length" in names or b"transfer-encoding" in names

    async def _wait(self, silence: float | None) -> None:
        if self.error is not None:
            raise self.error
        if self.closed and not self.complete:
            raise httpx2.ReadError("the upstream connection is closed")
        loop = asyncio.get_running_loop()
        self._waiter = loop.create_future()
        if silence is not None:
            # One timer per connection, moved on lazily, rather than one per wait: a stream
            # waits once per network read.
            self._silence, self._quiet_since = silence, loop.time()
            due = self._quiet_since + silence
            if self._timer is None or self._timer.when() > due:
                if self._timer is not None:
                    self._timer.cancel()
                self._timer = loop.call_at(due, self._check_silence)
        try:
            await self._waiter
        finally:
            self._waiter = None
        if self.error is not None:
            raise self.error

    def _check_silence(self) -> None:
        self._timer = None
        if self._waiter is None:
            return  # not waiting now; the next wait arms the timer again
        due = self._quiet_since + self._silence
        loop = asyncio.get_running_loop()
        if loop.time() < due:
            self._timer = loop.call_at(due, self._check_silence)
            return
        self.error = httpx2.ReadTimeout("the upstream sent nothing in time")
        self.close()
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def close(self) -> None:
        self.closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.transport is not None:
            self.transport.close()


class _Body(httpx2.AsyncByteStream):
    def __init__(
        self, transport: Http1Transport, connection: _Connection, silence: float | None
    ) -> None:
        self._transport = transport
        self._connection = connection
        self._silence = silence
        self._done = False

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._connection.body(self._silence)  # no generator of its own around it

    async def aclose(self) -> None:
        if not self._done:
            self._done = True
            self._transport.release(self._connection)


class Http1Transport(httpx2.AsyncBaseTransport):
    def __init__(self, max_idle: int = 100, ssl_context: ssl.SSLContext | None = None) -> None:
        self._idle: dict[Origin, deque[_Connection]] = {}
        self._max_idle = max_idle
        self._ssl = ssl_context
        self._closed = False

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        timeouts: dict[str, Any] = request.extensions.get("timeout") or {}
        origin = _origin(request.url)
        data = _request_bytes(request, await request.aread())
        connection = self._idle_connection(origin)
        if connection is not None:
            try:
                return await self._exchange(connection, data, timeouts)
            except _Unanswered:
                pass  # a kept-alive connection the upstream had closed: once more, anew
        connection = await self._connect(origin, timeouts.get("connect"))
        return await self._exchange(connection, data, timeouts)

    async def _exchange(
        self, connection: _Connection, data: bytes, timeouts: dict[str, Any]
    ) -> httpx2.Response:
        connection.send(data)
        try:
            await connection.head(timeouts.get("read"))
        except BaseException:
            connection.close()
            raise
        stream = _Body(self, connection, timeouts.get("read"))
        return httpx2.Response(
            connection.status,
            headers=connection.headers,
            stream=stream,
            extensions={"http_version": b"HTTP/1.1"},
        )

    def _idle_connection(self, origin: Origin) -> _Connection | None:
        idle = self._idle.get(origin)
        while idle:
            connection = idle.pop()
            if connection.open:
                return connection
        return None

    async def _connect(self, origin: Origin, within: float | None) -> _Connection:
        scheme, host, port = origin
        loop = asyncio.get_running_loop()
        context = self._ssl_context() if scheme == "https" else None
        try:
            async with asyncio.timeout(within):
                _, connection = await loop.create_connection(
                    lambda: _Connection(origin),
                    host,
                    port,
                    ssl=context,
                    server_hostname=host if context is not None else None,
                )
        except TimeoutError:
            raise httpx2.ConnectTimeout(f"connecting to {host}:{port} timed out") from None
        except OSError as exc:
            raise httpx2.ConnectError(f"could not connect to {host}:{port}: {exc}") from None
        return connection

    def _ssl_context(self) -> ssl.SSLContext:
        if self._ssl is None:
            self._ssl = httpx2.create_ssl_context()
        return self._ssl

    def release(self, connection: _Connection) -> None:
        """Keep a connection whose response was read to the end; close any other."""
        if self._closed or not connection.reusable:
            connection.close()
            return
        idle = self._idle.setdefault(connection.origin, deque())
        if len(idle) >= self._max_idle:
            connection.close()
            return
        idle.append(connection)

    async def aclose(self) -> None:
        self._closed = True
        for idle in self._idle.values():
            for connection in idle:
                connection.close()
        self._idle.clear()


def _origin(url: httpx2.URL) -> Origin:
    scheme = url.scheme
    if scheme not in ("http", "https"):
        raise httpx2.UnsupportedProtocol(f"unsupported URL scheme {scheme!r}")
    port = url.port or (443 if scheme == "https" else 80)
    return scheme, url.host, port


def _request_bytes(request: httpx2.Request, body: bytes) -> bytes:
    target = request.url.raw_path or b"/"
    lines = [request.method.encode() + b" " + target + b" HTTP/1.1"]
    lines += [name + b": " + value for name, value in request.headers.raw]
    head = b"\r\n".join(lines) + b"\r\n\r\n"
    if request.headers.get("transfer-encoding", "").lower() == "chunked":
        # A streamed body, read whole by now: one chunk and the last, empty one.
        body = (b"%x\r\n%b\r\n" % (len(body), body) if body else b"") + b"0\r\n\r\n"
    return head + body

"""A reverse proxy that refuses WebSocket upgrades, as some corporate proxies do: a request
with `Upgrade: websocket` is answered `403 Forbidden` (a real refused handshake, as a browser
or the `websockets` library meets it), and every other request is relayed to the gateway byte
for byte, its response streamed back as it comes (Server-Sent Events included).

It reads each request head on a connection, so a keep-alive connection that later carries an
upgrade is refused too; request bodies are relayed by their `Content-Length` (neither client
sends chunked bodies). Responses are not parsed: they flow back untouched.

Tests steer it: `hold()` keeps the next refusals waiting until `release()` (a slow proxy: the
client is still trying its socket); `refusing = False` lets later upgrades through (the socket
then works, relayed untouched) and `cut()` drops the sockets relayed so far; `bad_gateway =
True` answers every later request `502`, as a proxy that cannot reach the gateway does
(nothing gets through at all). `requests` lists the request lines relayed ("POST
/completion"), `refused` counts the refused upgrades.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

REFUSAL = b"Proxy policy: WebSockets are not allowed.\n"
FORBIDDEN = (
    b"HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n"
    b"Connection: close\r\n\r\n%s" % (len(REFUSAL), REFUSAL)
)
BAD_GATEWAY = (
    b"HTTP/1.1 502 Bad Gateway\r\nContent-Type: text/plain\r\nContent-Length: 12\r\n"
    b"Connection: close\r\n\r\nBad gateway\n"
)


class RefusingProxy:
    def __init__(self, target: str) -> None:
        host, port = target.removeprefix("http://").rsplit(":", 1)
        self._target = (host, int(port))
        self.refusing = True
        self.bad_gateway = False
        self.requests: list[str] = []
        self.refused = 0
        self.upgrades = 0  # upgrade requests that arrived, refused or not yet
        self._upgraded = asyncio.Condition()
        self._open_gate = asyncio.Event()
        self._open_gate.set()
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self._sockets: set[asyncio.StreamWriter] = set()  # both ends of relayed sockets

    @property
    def url(self) -> str:
        assert self._server is not None
        port = self._server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    def hold(self) -> None:
        """Refusals wait from now on, until `release()`."""
        self._open_gate.clear()

    def release(self) -> None:
        self._open_gate.set()

    def cut(self) -> None:
        """Drop every socket relayed so far, as a network change does."""
        for writer in self._sockets:
            writer.transport.abort()

    async def until_upgrades(self, count: int, within: float = 10.0) -> None:
        """Wait until `count` upgrade requests have arrived."""
        async with asyncio.timeout(within), self._upgraded:
            await self._upgraded.wait_for(lambda: self.upgrades >= count)

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._connection, "127.0.0.1", 0)

    async def close(self) -> None:
        assert self._server is not None
        self._server.close()
        self.release()
        for writer in self._writers:
            writer.transport.abort()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.add(writer)
        upstream: asyncio.StreamWriter | None = None
        back: asyncio.Task[None] | None = None
        try:
            while head := await _read_head(reader):
                request_line, headers = _parse(head)
                if self.bad_gateway:
                    writer.write(BAD_GATEWAY)
                    await writer.drain()
                    return
                upgrade = headers.get("upgrade", "").lower() == "websocket"
                if upgrade:
                    async with self._upgraded:
                        self.upgrades += 1
                        self._upgraded.notify_all()
                    await self._open_gate.wait()
                    if self.refusing:
                        self.refused += 1
                        writer.write(FORBIDDEN)
                        await writer.drain()
                        return
                assert "chunked" not in headers.get("transfer-encoding", ""), request_line
                if upstream is None:
                    up_reader, upstream = await asyncio.open_connection(*self._target)
                    self._writers.add(upstream)
                    back = asyncio.create_task(_pipe(up_reader, writer))
                self.requests.append(" ".join(request_line.split(" ")[:2]))
                upstream.write(head)
                length = int(headers.get("content-length", "0"))
                if length:
                    upstream.write(await reader.readexactly(length))
                await upstream.drain()
                if upgrade:
                    # An accepted socket: from here on its frames, not requests.
                    self._sockets.update((writer, upstream))
                    await _pipe(reader, upstream)
                    return
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            if upstream is not None:
                upstream.transport.abort()
            if back is not None:
                with contextlib.suppress(asyncio.CancelledError):
                    await back
            writer.transport.abort()
            self._tasks.discard(task)


async def _read_head(reader: asyncio.StreamReader) -> bytes:
    """The next request's head (through its blank line), or b"" when the client is done."""
    try:
        return await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return b""


def _parse(head: bytes) -> tuple[str, dict[str, str]]:
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if value:
            headers[name.strip().lower()] = value.strip()
    return lines[0], headers


async def _pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
    """Bytes as they arrive, untouched; the sink is closed when the source ends."""
    try:
        while data := await source.read(65536):
            sink.write(data)
            await sink.drain()
    except ConnectionError:
        pass
    finally:
        sink.transport.abort()


@asynccontextmanager
async def refusing_proxy(target: str) -> AsyncIterator[RefusingProxy]:
    """`async with refusing_proxy(gateway_url) as proxy:` then use `proxy.url`."""
    proxy = RefusingProxy(target)
    await proxy.start()
    try:
        yield proxy
    finally:
        await proxy.close()

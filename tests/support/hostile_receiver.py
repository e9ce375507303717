"""A server the gateway posts to (a webhook receiver, a trace collector) that answers as no
honest one would, over raw sockets, on the test's own loop:
  endless   a 200 that sets 40 cookies of 1 KiB, and whose chunked body never ends (64 KiB
            pieces as fast as they are read)
  drip      a response head that never ends, a byte every 100 ms
It counts the requests it read whole (`requests`), the bytes of each one's `Cookie` headers
(`cookie_bytes`) and the connections that were closed (`closed`), whoever closed them.
"""

from __future__ import annotations

import asyncio
import contextlib

from tests.support.hostile_upstream import chunked, read_request, set_cookies

PIECE = chunked(b"x" * 65536)


class HostileReceiver:
    def __init__(self, behaviour: str) -> None:
        self._behaviour = behaviour
        self.requests = 0
        self.cookie_bytes: list[int] = []
        self.closed = 0
        self._writers: list[asyncio.StreamWriter] = []

    async def start(self) -> str:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}/hook"

    async def stop(self) -> None:
        self._server.close()
        for writer in self._writers:
            writer.close()
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.append(writer)
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            try:
                request = await read_request(reader)
                if request is None:
                    return
                self.requests += 1
                self.cookie_bytes.append(request[1])
                if self._behaviour == "endless":
                    head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n"
                    head += set_cookies(self.requests)
                    writer.write(head + b"\r\n")
                    while True:
                        writer.write(PIECE)
                        await writer.drain()
                writer.write(b"HTTP/1.1 200 OK\r\nX-Drip: ")
                while True:
                    writer.write(b"d")
                    await writer.drain()
                    if reader.at_eof():
                        return
                    await asyncio.sleep(0.1)
            finally:
                self.closed += 1
                writer.close()

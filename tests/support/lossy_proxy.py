"""A TCP proxy that loses some of what a client sends (tests of a hostile network)."""

from __future__ import annotations

import asyncio


class LossyProxy:
    """A TCP proxy to Redis that can lose what clients send, then reset every connection: a
    network that drops a command, or the end of a pipeline, and then the connection.
    `losing`: a piece of what is sent holding these bytes is lost whole. `cut_at`: what is
    sent from these bytes on is lost, and all that follows it until `reset`."""

    def __init__(self, port: int) -> None:
        self._port = port
        self.losing: bytes | None = None
        self.cut_at: bytes | None = None
        self._cut = False
        self.lost = 0
        self._writers: list[asyncio.StreamWriter] = []

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return int(self._server.sockets[0].getsockname()[1])

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", self._port)
        self._writers += [writer, upstream_writer]
        await asyncio.gather(
            self._pipe(reader, upstream_writer, sent=True),
            self._pipe(upstream_reader, writer, sent=False),
        )

    async def _pipe(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, sent: bool
    ) -> None:
        try:
            while data := await reader.read(65536):
                if sent:
                    data = self._kept(data)
                if not data:
                    continue
                writer.write(data)
                await writer.drain()
        except OSError:
            pass
        finally:
            writer.close()

    def _kept(self, data: bytes) -> bytes:
        if self._cut or (self.losing is not None and self.losing in data):
            self.lost += 1
            return b""
        at = data.find(self.cut_at) if self.cut_at is not None else -1
        if at >= 0:
            self._cut = True
            self.lost += 1
            return data[:at]
        return data

    def reset(self) -> None:
        self.losing = self.cut_at = None
        self._cut = False
        for writer in self._writers:
            writer.transport.abort()
        self._writers.clear()

    async def close(self) -> None:
        self.reset()
        self._server.close()

"""A hostile OpenAI-compatible upstream, written over raw sockets so it can send what no HTTP
server library would: compression bombs, endless heads, lines that never end, a byte at a
time, interim 1xx responses.

The requested model name picks the behaviour (an unknown name answers a normal stream of
"ok"):
  bomb         a 200 stream whose gzip body inflates to 512 MiB of blank lines
  errorbomb    a 500 whose gzip body inflates to 512 MiB
  endless      a 200 stream of valid, empty chunks that never ends
  headers      a 200 status line followed by header lines for ever
  longheader   one header line of 1 MiB
  longline     a first token, then a `data:` line that never ends
  drip         a first token, then the next line a byte every 50 ms, for ever
  calls        a stream of tool-call fragments, each a new call, for ever
  arguments    one tool call whose arguments never end
  interim      `100 Continue` and `103 Early Hints` before a normal stream
  interims     `102 Processing` for ever, as fast as it is read
  interim<n>   n `102 Processing` before a normal stream
  errorevent   an `error` event whose message is 200 KiB, with newlines and an API key
  badcall      a tool call whose function name is a list
  namelesscall a tool call with arguments and no function name
  cookies      a normal stream whose head sets 40 cookies of 1 KiB, named anew each time
  redirect     a 307 back to the same address (followed, it would never end)
Every connection the server accepted is counted in `open_connections` while it is open, and
each request's model and the bytes of its `Cookie` headers are in `cookie_bytes`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

MIB = 1024 * 1024
BOMB_BYTES = 512 * MIB


def _bomb(unit: bytes) -> bytes:
    """BOMB_BYTES of `unit` repeated, as a gzip body of about 500 KiB. A full flush makes
    each mebibyte's deflate segment stand alone, so one is compressed and repeated."""
    block = unit * (MIB // len(unit))
    deflater = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    segment = deflater.compress(block) + deflater.flush(zlib.Z_FULL_FLUSH)
    crc = 0
    for _ in range(BOMB_BYTES // MIB):
        crc = zlib.crc32(block, crc)
    header = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff"
    trailer = crc.to_bytes(4, "little") + (BOMB_BYTES % 2**32).to_bytes(4, "little")
    return header + segment * (BOMB_BYTES // MIB) + deflater.flush() + trailer


def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
    body = {
        "id": "chatcmpl-hostile",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": "hostile",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    return b"data: " + json.dumps(body).encode() + b"\n\n"


def chunked(data: bytes) -> bytes:
    return b"%x\r\n%b\r\n" % (len(data), data)


PROCESSING = b"HTTP/1.1 102 Processing\r\n\r\n"


def set_cookies(tag: int) -> bytes:
    """Header lines setting 40 cookies of 1 KiB, their names new for each `tag`."""
    return b"".join(b"Set-Cookie: c%d_%d=%s\r\n" % (tag, n, b"v" * 1024) for n in range(40))


STREAM_HEAD = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n"
)


@dataclass
class HostileUpstream:
    url: str = ""
    open_connections: int = 0
    requests: list[str] = field(default_factory=list)
    cookie_bytes: list[tuple[str, int]] = field(default_factory=list)
    _bombs: dict[bytes, bytes] = field(default_factory=dict)

    def bomb(self, unit: bytes) -> bytes:
        if unit not in self._bombs:
            self._bombs[unit] = _bomb(unit)
        return self._bombs[unit]

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.open_connections += 1
        try:
            while True:
                request = await read_request(reader)
                if request is None:
                    return
                model, cookie_bytes = request
                self.requests.append(model)
                self.cookie_bytes.append((model, cookie_bytes))
                if not await self._answer(model, writer):
                    return
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self.open_connections -= 1
            writer.close()

    async def _answer(self, model: str, writer: asyncio.StreamWriter) -> bool:
        """Answer one request; True when the connection may carry another."""
        behaviour = model.split("-")[0]
        if behaviour in ("bomb", "errorbomb"):
            status = b"200 OK" if behaviour == "bomb" else b"500 Internal Server Error"
            body = self.bomb(b"\n" if behaviour == "bomb" else b"x")
            writer.write(
                b"HTTP/1.1 " + status + b"\r\nContent-Type: text/event-stream\r\n"
                b"Content-Encoding: gzip\r\nContent-Length: %d\r\n\r\n" % len(body)
            )
            writer.write(body)
            await writer.drain()
            return True
        if behaviour == "headers":
            writer.write(b"HTTP/1.1 200 OK\r\n")
            while True:
                writer.write(b"X-Filler: %s\r\n" % (b"y" * 100))
                await writer.drain()
        if behaviour == "longheader":
            writer.write(b"HTTP/1.1 200 OK\r\nX-Long: " + b"z" * (1024 * 1024) + b"\r\n\r\n")
            await writer.drain()
            return False
        if behaviour == "redirect":
            location = b"Location: /v1/chat/completions\r\n"
            writer.write(
                b"HTTP/1.1 307 Temporary Redirect\r\n" + location + b"Content-Length: 0\r\n\r\n"
            )
            await writer.drain()
            return True
        if behaviour == "interims":
            while True:
                writer.write(PROCESSING * 64)
                await writer.drain()
        if behaviour.removeprefix("interim").isdigit():
            writer.write(PROCESSING * int(behaviour[len("interim") :]))
        if behaviour == "interim":
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            writer.write(b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n")
        head = STREAM_HEAD
        if behaviour == "cookies":
            head += set_cookies(len(self.requests))
        writer.write(head + b"\r\n")
        writer.write(chunked(chunk({"role": "assistant", "content": ""})))
        if behaviour == "endless":
            empty = chunked(chunk({}) * 64)
            while True:
                writer.write(empty)
                await writer.drain()
        if behaviour == "errorevent":
            message = "overloaded\nCRITICAL forged line sk-" + "k" * 40 + " " + "x" * 200_000
            writer.write(chunked(b"data: " + json.dumps({"error": {"message": message}}).encode()))
            writer.write(chunked(b"\n\n") + b"0\r\n\r\n")
            await writer.drain()
            return True
        if behaviour in ("badcall", "namelesscall"):
            function = {"name": ["x"]} if behaviour == "badcall" else {"arguments": "{}"}
            fragment = {"index": 0, "id": "call_0", "function": function}
            writer.write(chunked(chunk({"tool_calls": [fragment]})))
        if behaviour in ("calls", "arguments"):
            await _tool_calls(writer, endless_calls=behaviour == "calls")
        writer.write(chunked(chunk({"content": "ok"})))
        if behaviour == "longline":
            writer.write(chunked(b"data: {"))
            while True:
                writer.write(chunked(b"a" * 65536))
                await writer.drain()
        if behaviour == "drip":
            await writer.drain()
            while True:
                writer.write(chunked(b"x"))
                await writer.drain()
                await asyncio.sleep(0.05)
        writer.write(chunked(chunk({}, "stop") + b"data: [DONE]\n\n") + b"0\r\n\r\n")
        await writer.drain()
        return True


async def _tool_calls(writer: asyncio.StreamWriter, *, endless_calls: bool) -> None:
    index = 0
    while True:
        fragment: dict[str, Any] = {"index": index, "function": {"arguments": "1" * 1000}}
        if endless_calls or index == 0:
            fragment.update(id=f"call_{index}", type="function")
            fragment["function"]["name"] = "calculate"
        writer.write(chunked(chunk({"tool_calls": [fragment]})))
        await writer.drain()
        if endless_calls:
            index += 1


async def read_request(reader: asyncio.StreamReader) -> tuple[str, int] | None:
    """The model a request asks for and the bytes of its `Cookie` headers; None when the
    client closed the connection."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return None
    length = cookie_bytes = 0
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
        if name.strip().lower() == b"cookie":
            cookie_bytes += len(value.strip())
    body = await reader.readexactly(length)
    return str(_json_or_none(body).get("model", "")), cookie_bytes


def _json_or_none(body: bytes) -> dict[str, Any]:
    """A JSON object's fields; none for any other body (a trace collector's protobuf)."""
    with contextlib.suppress(ValueError):
        found = json.loads(body)
        if isinstance(found, dict):
            return found
    return {}


@contextlib.contextmanager
def serve_hostile() -> Iterator[HostileUpstream]:
    """Run the hostile upstream on a loopback port in a thread of its own."""
    upstream = HostileUpstream()
    loop = asyncio.new_event_loop()
    started = threading.Event()
    server: asyncio.Server | None = None

    async def start() -> None:
        nonlocal server
        server = await asyncio.start_server(upstream.handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        upstream.url = f"http://127.0.0.1:{port}/v1"
        started.set()

    def run() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(start())
        loop.run_forever()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    started.wait(10)
    try:
        yield upstream
    finally:

        async def stop() -> None:
            assert server is not None
            server.close()
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()

        asyncio.run_coroutine_threadsafe(stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()

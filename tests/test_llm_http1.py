"""The lean HTTP/1.1 transport under the upstream client, against scripted raw servers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import httpx2
import pytest

from gateway.llm.http1 import Http1Transport
from tests.conftest import free_port

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter, int], Awaitable[None]]
OK_HEAD = b"HTTP/1.1 200 OK\r\n"


async def read_request(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    """The head and the body (by Content-Length, or chunked to its last chunk)."""
    head = await reader.readuntil(b"\r\n\r\n")
    lower = head.lower()
    if b"content-length:" in lower:
        length = int(lower.split(b"content-length:")[1].split(b"\r\n")[0])
        return head, await reader.readexactly(length)
    if b"transfer-encoding: chunked" in lower:
        return head, await reader.readuntil(b"0\r\n\r\n")
    return head, b""


@asynccontextmanager
async def server(handler: Handler) -> AsyncIterator[tuple[str, list[int]]]:
    """A server on 127.0.0.1 calling `handler` with each connection's number; yields its URL
    and the list of connection numbers seen."""
    seen: list[int] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(len(seen) + 1)
        try:
            await handler(reader, writer, seen[-1])
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    listener = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}", seen
    finally:
        listener.close()


def client(read: float = 5.0) -> httpx2.AsyncClient:
    return httpx2.AsyncClient(transport=Http1Transport(), timeout=httpx2.Timeout(read, connect=2.0))


async def keep_alive_answers(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, number: int
) -> None:
    while True:
        _, body = await read_request(reader)
        writer.write(OK_HEAD + b"Content-Length: %d\r\n\r\n%b" % (len(body), body))
        await writer.drain()


async def test_a_kept_alive_connection_serves_the_next_request() -> None:
    async with server(keep_alive_answers) as (url, seen), client() as http:
        first = await http.post(url + "/echo", content=b"one")
        second = await http.post(url + "/echo?x=1", content=b"two")
    assert (first.status_code, first.content) == (200, b"one")
    assert second.content == b"two"
    assert seen == [1]


async def test_a_streamed_request_body_is_sent_chunked() -> None:
    async def parts() -> AsyncIterator[bytes]:
        yield b"hello "
        yield b"world"

    got: list[bytes] = []

    async def record(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
        got.append((await read_request(reader))[1])
        writer.write(OK_HEAD + b"Content-Length: 0\r\n\r\n")

    async with server(record) as (url, _), client() as http:
        response = await http.post(url, content=parts())
    assert response.status_code == 200
    assert got == [b"b\r\nhello world\r\n0\r\n\r\n"]


async def test_chunks_that_arrive_together_are_read_together() -> None:
    async def three_chunks(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int
    ) -> None:
        await read_request(reader)
        chunks = b"".join(b"1\r\n%b\r\n" % c for c in (b"a", b"b", b"c"))
        writer.write(OK_HEAD + b"Transfer-Encoding: chunked\r\n\r\n" + chunks + b"0\r\n\r\n")
        await writer.drain()
        await reader.read()  # keep the connection until the client leaves

    async with (
        server(three_chunks) as (url, _),
        client() as http,
        http.stream("POST", url, content=b"{}") as response,
    ):
        pieces = [piece async for piece in response.aiter_raw()]
    assert pieces == [b"abc"]


async def test_a_body_ended_by_the_connection_is_complete_and_not_reused() -> None:
    async def until_close(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int
    ) -> None:
        await read_request(reader)
        writer.write(OK_HEAD + b"\r\nthe whole body")

    async with server(until_close) as (url, seen), client() as http:
        first = await http.get(url)
        second = await http.get(url)
    assert first.content == second.content == b"the whole body"
    assert seen == [1, 2]


async def test_a_large_body_read_slowly_arrives_whole() -> None:
    payload = bytes(range(256)) * 4096  # 1 MiB, four times the pause threshold

    async def large(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
        await read_request(reader)
        writer.write(OK_HEAD + b"Content-Length: %d\r\n\r\n" % len(payload) + payload)
        await writer.drain()

    received = bytearray()
    async with server(large) as (url, _), client() as http, http.stream("GET", url) as response:
        async for piece in response.aiter_raw():
            received += piece
            await asyncio.sleep(0)  # a consumer slower than the socket
    assert bytes(received) == payload


async def test_a_stale_kept_alive_connection_is_replaced_once() -> None:
    async def first_closes(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, number: int
    ) -> None:
        await read_request(reader)
        writer.write(OK_HEAD + b"Content-Length: 2\r\n\r\nok")
        await writer.drain()
        if number == 1:
            await read_request(reader)  # the next request comes, and is not answered
            return
        await keep_alive_answers(reader, writer, number)

    async with server(first_closes) as (url, seen), client() as http:
        assert (await http.get(url)).content == b"ok"
        assert (await http.get(url)).content == b"ok"
    assert seen == [1, 2]


async def test_a_new_connection_closed_without_an_answer_is_an_error() -> None:
    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
        await read_request(reader)

    async with server(hang_up) as (url, seen), client() as http:
        with pytest.raises(httpx2.RemoteProtocolError):
            await http.get(url)
    assert seen == [1]


async def test_a_connection_lost_mid_body_is_a_read_error() -> None:
    async def cut(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
        await read_request(reader)
        writer.write(OK_HEAD + b"Content-Length: 100\r\n\r\npartial")
        await writer.drain()

    async with server(cut) as (url, _), client() as http:
        with pytest.raises(httpx2.ReadError):
            await http.get(url)


async def test_silence_past_the_read_timeout_is_a_read_timeout() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
        await read_request(reader)
        writer.write(OK_HEAD + b"Transfer-Encoding: chunked\r\n\r\n1\r\na\r\n")
        await writer.drain()
        await reader.read()

    async with (
        server(silent) as (url, _),
        client(read=0.2) as http,
        http.stream("GET", url) as response,
    ):
        pieces = response.aiter_raw()
        assert await anext(pieces) == b"a"
        with pytest.raises(httpx2.ReadTimeout):
            await anext(pieces)


async def test_a_malformed_response_is_a_protocol_error() -> None:
    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
        await read_request(reader)
        writer.write(b"NOT HTTP AT ALL\r\n\r\n")
        await writer.drain()
        await reader.read()

    async with server(garbage) as (url, _), client() as http:
        with pytest.raises(httpx2.RemoteProtocolError):
            await http.get(url)


async def test_nothing_listening_is_a_connect_error() -> None:
    async with client() as http:
        with pytest.raises(httpx2.ConnectError):
            await http.get(f"http://127.0.0.1:{free_port()}/")


async def test_a_body_that_keeps_coming_within_the_read_timeout_never_times_out() -> None:
    """The silence timer is one per connection, moved on lazily: it must still measure each
    wait, not the time since the first."""

    async def trickle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
        await read_request(reader)
        writer.write(OK_HEAD + b"Transfer-Encoding: chunked\r\n\r\n")
        for _ in range(8):
            writer.write(b"1\r\nx\r\n")
            await writer.drain()
            await asyncio.sleep(0.1)  # the upstream's pace, well inside the 0.3 s timeout
        writer.write(b"0\r\n\r\n")
        await writer.drain()
        await reader.read()

    async with (
        server(trickle) as (url, _),
        client(read=0.3) as http,
        http.stream("GET", url) as response,
    ):
        body = b"".join([piece async for piece in response.aiter_raw()])
    assert body == b"x" * 8

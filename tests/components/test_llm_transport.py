"""Every upstream body behind its bound: counted, inflated a piece at a time, cut past it."""

from __future__ import annotations

import gzip
import zlib
from collections.abc import AsyncIterator

import httpx2
import pytest

from gateway.config import ModelConfig
from gateway.events import Message
from gateway.llm.base import ModelParams
from gateway.llm.bounds import Overrun, StreamFormatError, UpstreamBounds
from gateway.llm.openai.dialect import OpenAIDialect, make_client
from gateway.llm.transport import INFLATE_PIECE, BoundedBody, _aiohttp_response
from tests.support.upstream import FakeUpstream


class Raw(httpx2.AsyncByteStream):
    """A body as it comes off the wire, in the pieces given."""

    def __init__(self, *pieces: bytes) -> None:
        self.pieces = pieces
        self.closed = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for piece in self.pieces:
            yield piece

    async def aclose(self) -> None:
        self.closed = True


async def read(body: BoundedBody) -> list[bytes]:
    return [piece async for piece in body]


async def gather(body: BoundedBody, into: list[bytes]) -> None:
    async for piece in body:
        into.append(piece)


def split(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


async def test_an_identity_body_passes_as_it_came_up_to_the_limit() -> None:
    assert await read(BoundedBody(Raw(b"ab", b"cd"), "identity", 4)) == [b"ab", b"cd"]
    with pytest.raises(Overrun, match="a body larger than 3 bytes"):
        await read(BoundedBody(Raw(b"ab", b"cd"), "identity", 3))


@pytest.mark.parametrize(
    ("coding", "compress"),
    [("gzip", gzip.compress), ("x-gzip", gzip.compress), ("deflate", zlib.compress)],
)
async def test_compressed_bodies_are_inflated(coding: str, compress: object) -> None:
    data = b"data: hello\n\n" * 10_000
    packed = compress(data)  # type: ignore[operator]
    pieces = await read(BoundedBody(Raw(*split(packed, 100)), coding, len(data)))
    assert b"".join(pieces) == data
    assert max(len(p) for p in pieces) <= INFLATE_PIECE


async def test_a_compression_bomb_stops_at_the_limit_a_piece_at_a_time() -> None:
    bomb = gzip.compress(b"\n" * (64 * 1024 * 1024))  # about 64 KiB on the wire
    pieces: list[bytes] = []
    with pytest.raises(Overrun, match="a body larger than 1 MiB once inflated"):
        await gather(BoundedBody(Raw(bomb), "gzip", 1024 * 1024), pieces)
    assert max(len(p) for p in pieces) <= INFLATE_PIECE
    assert sum(len(p) for p in pieces) <= 1024 * 1024


async def test_a_corrupt_or_unasked_for_coding_is_a_format_error() -> None:
    with pytest.raises(StreamFormatError, match="corrupt"):
        await read(BoundedBody(Raw(b"\x1f\x8b\x08\x00 not gzip at all"), "gzip", 1000))
    with pytest.raises(StreamFormatError, match="'br', which was not asked for"):
        await read(BoundedBody(Raw(b"x"), "br", 1000))


async def test_closing_closes_the_raw_body() -> None:
    raw = Raw(b"x")
    await BoundedBody(raw, "identity", 10).aclose()
    assert raw.closed


async def test_the_sdk_s_bodies_are_read_from_aiohttp_s_reader_and_timed_by_lines_once_asked(
    upstream: tuple[FakeUpstream, str],
) -> None:
    """The direct read relies on private layers of httpx2 and the SDK's aiohttp backend: if an
    upgrade changes them, the body still reads (through the layers), and this fails."""
    config = ModelConfig("m", "openai", upstream[1], upstream_model="fake-n3-i50")
    client = make_client(config, connect_timeout=5.0, read_timeout=7.0, bounds=UpstreamBounds())
    dialect = OpenAIDialect(config, client, UpstreamBounds())
    request = dialect.request([Message("user", "hi")], ModelParams(), stream=True)
    used: list[object] = []
    try:
        for _ in range(2):  # the second request reuses the connection the first let go
            async with dialect.send(request, {}) as body:
                assert isinstance(body, BoundedBody)
                response = _aiohttp_response(body._raw)
                assert response is not None and response.connection is not None
                protocol = response.connection.protocol
                assert protocol is not None and protocol.read_timeout == 7.0
                used.append(protocol)
                body.timed_by_lines()
                assert protocol.read_timeout is None
                stream = dialect.reader()
                for piece in [piece async for piece in body]:
                    stream.feed(piece)
                assert stream.complete() and stream.tokens == 3
        assert used[0] is used[1]
    finally:
        await client.close()

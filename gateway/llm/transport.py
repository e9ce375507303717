"""The upstream HTTP client: the openai SDK's aiohttp backend, with every body bounded.

A dialect's SDK builds, authenticates and sends each request through it (`http_client`);
aiohttp, the openai SDK's supported async backend (`openai[aiohttp]`), moves the bytes. It
parses the response head with its own bounds (at most 128 header lines of 8 KiB each) and
passes 1xx interim responses by (at most MAX_INTERIM_RESPONSES, counted by `BoundedResponse`);
idle kept-alive connections are closed after KEEPALIVE_SECONDS, so a connection that died
silently while idle is not reused. No cookie is kept, by httpx's jar or aiohttp's, and no
redirect followed.

A response hook wraps every body the gateway or the SDK reads (a streamed answer, a whole one,
an error body the SDK reads for its message) in `BoundedBody`: it inflates gzip and deflate,
the only codings the gateway asks for, a bounded piece at a time, and raises `Overrun` past
UPSTREAM_MAX_BODY_BYTES, so a compression bomb or an endless body costs that much at most.

`BoundedBody` reads aiohttp's stream reader itself, whatever has arrived at each read
(`readany`), with aiohttp's exceptions mapped as the SDK's backend maps them: the layers above
it (httpx's stream, the backend's, aiohttp's iterator and `read(n)`) cost four more generator or
coroutine steps per network read. Once the caller times the body by its complete lines
(`timed_by_lines`, when the answer has started), aiohttp's own read timer is switched off for
the rest of the response: it is moved on every network read, a timer cancelled and another
made each time, and a drip of bytes would reset it anyway. Those layers are private to their
packages, so a body whose layers are not the expected ones is read through them instead
(`_aiohttp_response`); a test checks that the direct read is the one used.
"""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from functools import partial
from typing import Any, cast

import aiohttp
import httpx2
import openai
from aiohttp.http_exceptions import BadHttpMessage
from openai._vendor.httpx_aiohttp.transport import AiohttpTransport, map_aiohttp_exceptions

from gateway.cookies import no_cookies
from gateway.llm.bounds import Overrun, StreamFormatError, UpstreamBounds, size

# Below the 5 s many servers keep an idle connection (uvicorn, Node): reusing one the server is
# closing at that moment fails the request.
KEEPALIVE_SECONDS = 4.0
ACCEPT_ENCODING = "gzip, deflate"
# The most inflated bytes handed on at once; between two of them other tasks get to run.
INFLATE_PIECE = 64 * 1024
# Interim (1xx) responses passed by before an answer's own head. aiohttp passes any number
# without yielding, so a flood of them kept the loop busy until the attempt's timeout.
MAX_INTERIM_RESPONSES = 16


class BoundedBody(httpx2.AsyncByteStream):
    """A response body as it arrives, inflated if it is compressed, and never more than
    `limit` bytes: past it, `Overrun`."""

    def __init__(self, raw: httpx2.AsyncByteStream, coding: str, limit: int) -> None:
        self._raw = raw
        self._coding = coding
        self._limit = limit

    def __aiter__(self) -> AsyncIterator[bytes]:
        if self._coding == "identity":
            return self._counted()
        if self._coding in ("gzip", "x-gzip", "deflate"):
            return self._inflated()
        return self._refused()

    async def _refused(self) -> AsyncIterator[bytes]:
        raise StreamFormatError(f"a body encoded as '{self._coding[:20]}', which was not asked for")
        yield b""  # pragma: no cover - makes this a generator

    async def _counted(self) -> AsyncIterator[bytes]:
        read = _reader(self._raw)
        received = 0
        with map_aiohttp_exceptions():
            while piece := await read():
                received += len(piece)
                if received > self._limit:
                    raise Overrun(f"a body larger than {size(self._limit)}")
                yield piece

    async def _inflated(self) -> AsyncIterator[bytes]:
        # wbits 32 + 15: a zlib or a gzip header, whichever the body starts with.
        inflater = zlib.decompressobj(32 + zlib.MAX_WBITS)
        read = _reader(self._raw)
        received = 0
        with map_aiohttp_exceptions():
            while data := await read():
                while data:
                    try:
                        piece = inflater.decompress(data, INFLATE_PIECE)
                    except zlib.error:
                        raise StreamFormatError("a compressed body is corrupt") from None
                    data = inflater.unconsumed_tail
                    received += len(piece)
                    if received > self._limit:
                        raise Overrun(f"a body larger than {size(self._limit)} once inflated")
                    if piece:
                        yield piece
                    if data:
                        await asyncio.sleep(0)  # inflating is CPU work: others run in between

    def timed_by_lines(self) -> None:
        """The caller bounds the wait for each complete line from now on (the policy's
        `LineDeadline`): aiohttp's timer on every network read is switched off."""
        response = _aiohttp_response(self._raw)
        protocol = response.connection.protocol if response and response.connection else None
        if protocol is not None:
            # Its next read cancels the timer running now; requests on the connection
            # later set their own (aiohttp sets it per request).
            protocol.read_timeout = None

    async def aclose(self) -> None:
        await self._raw.aclose()


def _aiohttp_response(raw: httpx2.AsyncByteStream) -> aiohttp.ClientResponse | None:
    """aiohttp's response under `raw` when `raw` is httpx's stream over the SDK's aiohttp
    backend (httpx2's `BoundAsyncStream` around the backend's `AiohttpResponseStream`)."""
    backend = getattr(raw, "_stream", None)
    response = getattr(backend, "_aiohttp_response", None)
    return response if isinstance(response, aiohttp.ClientResponse) else None


def _reader(raw: httpx2.AsyncByteStream) -> Callable[[], Awaitable[bytes]]:
    """What reads the next piece of `raw` (b"" at its end): aiohttp's `readany`, or `raw`'s
    own iterator over any other transport."""
    response = _aiohttp_response(raw)
    if response is not None:
        return response.content.readany
    pieces = aiter(raw)

    async def next_piece() -> bytes:
        async for piece in pieces:
            if piece:
                return piece
        return b""

    return next_piece


def bound_bodies(limit: int) -> Callable[[httpx2.Response], Awaitable[None]]:
    """A response hook that puts each body behind `BoundedBody` before anyone reads it."""

    async def hook(response: httpx2.Response) -> None:
        coding = response.headers.get("content-encoding", "identity").strip().lower()
        if coding != "identity":
            # Inflated (or refused) here: httpx must not decode it again, and the length
            # was the compressed one.
            del response.headers["content-encoding"]
            response.headers.pop("content-length", None)
        response.stream = BoundedBody(cast(httpx2.AsyncByteStream, response.stream), coding, limit)

    return hook


class _InterimCounted:
    """A connection's protocol as a response reads its head from it, the interim responses
    counted: past MAX_INTERIM_RESPONSES, a head aiohttp cannot read (as one past its bounds).
    Anything else is the protocol's own."""

    def __init__(self, protocol: Any) -> None:
        self._protocol = protocol
        self._interim = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._protocol, name)

    async def read(self) -> Any:
        message, payload = await self._protocol.read()
        if 100 <= message.code < 200 and message.code != 101:
            self._interim += 1
            if self._interim > MAX_INTERIM_RESPONSES:
                raise BadHttpMessage(f"more than {MAX_INTERIM_RESPONSES} interim responses")
        return message, payload


class BoundedResponse(aiohttp.ClientResponse):
    """aiohttp's response, which reads its head from the protocol it keeps as `_protocol`:
    that protocol is kept counted (a test checks the bound holds, should aiohttp change)."""

    _counted: _InterimCounted | None = None

    @property  # type: ignore[override]
    def _protocol(self) -> _InterimCounted | None:
        return self._counted

    @_protocol.setter
    def _protocol(self, protocol: Any) -> None:
        self._counted = None if protocol is None else _InterimCounted(protocol)


def _session(transport: AiohttpTransport) -> aiohttp.ClientSession:
    """The session the SDK's backend would make for `transport` (its connector's settings),
    keeping no cookie and counting interim responses."""
    connector = aiohttp.TCPConnector(
        keepalive_timeout=transport.limits.keepalive_expiry,
        ssl=transport.ssl_context,
        limit=transport.limits.max_connections or 0,
    )
    return aiohttp.ClientSession(
        connector=connector, cookie_jar=aiohttp.DummyCookieJar(), response_class=BoundedResponse
    )


def _on_bounded_sessions(transport: httpx2.AsyncBaseTransport) -> httpx2.AsyncBaseTransport:
    if isinstance(transport, AiohttpTransport) and transport.client is None:
        transport.client = partial(_session, transport)  # made at its first request
    return transport


class _AioHttpClient(openai.DefaultAioHttpClient):
    """The SDK's client over aiohttp, each of its transports (a proxy's from the environment
    too) on a session of `_session`'s. The backend takes a session of the caller's
    (`AiohttpTransport(client=...)`); these two methods are where the client makes them."""

    def _init_transport(self, *args: Any, **kwargs: Any) -> httpx2.AsyncBaseTransport:
        return _on_bounded_sessions(super()._init_transport(*args, **kwargs))

    def _init_proxy_transport(self, *args: Any, **kwargs: Any) -> httpx2.AsyncBaseTransport:
        return _on_bounded_sessions(super()._init_proxy_transport(*args, **kwargs))


def http_client(
    connect_timeout: float,
    read_timeout: float,
    bounds: UpstreamBounds,
    *,
    keepalive: float = KEEPALIVE_SECONDS,
) -> httpx2.AsyncClient:
    """An HTTP client for a dialect's SDK to send through: aiohttp underneath (the openai
    package ships the backend as `DefaultAioHttpClient`), every body bounded."""
    timeout = httpx2.Timeout(read_timeout, connect=connect_timeout)
    return _AioHttpClient(
        timeout=timeout,
        # No connection cap here (0): the per-model gates bound requests in flight.
        limits=httpx2.Limits(max_connections=0, keepalive_expiry=keepalive),
        cookies=no_cookies(),  # httpx's jar has no bound
        # A model API has no reason to redirect; following would send each user's messages
        # wherever an upstream points (up to 20 times a request, and to hosts inside the network).
        follow_redirects=False,
        event_hooks={"response": [bound_bodies(bounds.max_body_bytes)]},
    )

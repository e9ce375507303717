"""What every adversarial test shares: a raw WebSocket client and the checks that prove a
gateway came through an attack unharmed.

Fixtures (all opt-in except `tokens_stay_out_of_logs`):

- `start_gateway` (overrides tests/conftest.py, same contract): also records each in-thread
  gateway's app and event loop in `running_gateways`, so checks can count its asyncio tasks.
- `token` (overrides tests/conftest.py, same contract): also remembers every minted token.
- `tokens_stay_out_of_logs` (autouse): captures every log record emitted during the test and
  fails the test if a minted token, the JWT secret or an upstream key appears in one.
- `survives`: `async with survives(url): <attack>` starts a bystander (another user streaming
  a long answer) before the attack; afterwards it checks the gateway answers `/healthz`, the
  bystander's stream arrived whole and in order, a fresh request is fast, and (for gateways
  started with `start_gateway`) the gateway's asyncio tasks and the process's memory return
  to about where they were.

Helpers: `RawSocket` (frames by hand: masking, opcodes, reserved bits, fragmentation,
permessage-deflate), `gateway_tasks`, `rss_bytes`, `settle`.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import os
import socket
import struct
import time
import uuid
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import (
    AbstractAsyncContextManager,
    AbstractContextManager,
    asynccontextmanager,
    contextmanager,
)
from dataclasses import dataclass, field, replace
from typing import Any

import httpx2
import pytest
from starlette.applications import Starlette
from starlette.types import ASGIApp, Receive, Scope, Send
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from gateway.app import create_app
from gateway.auth.tokens import mint_token
from gateway.config import ModelConfig, Secret, Settings
from gateway.server.options import uvicorn_options
from tests.client import connected, receive, send
from tests.conftest import TEST_SECRET, GatewayFactory
from tests.upstream import serve_in_thread

# ---------------------------------------------------------------------------------------------
# Raw WebSocket frames


OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
DEFLATE_TAIL = b"\x00\x00\xff\xff"


@dataclass(frozen=True)
class Frame:
    fin: bool
    opcode: int
    payload: bytes
    rsv1: bool = False

    @property
    def close_code(self) -> int | None:
        """The code of a close frame; None for an empty close payload (no code given)."""
        if self.opcode != OP_CLOSE or len(self.payload) < 2:
            return None
        return int(struct.unpack("!H", self.payload[:2])[0])

    def json(self) -> dict[str, Any]:
        obj: dict[str, Any] = json.loads(self.payload)
        return obj


def encode_frame(
    opcode: int,
    payload: bytes,
    *,
    fin: bool = True,
    rsv: int = 0,
    mask: bool = True,
) -> bytes:
    """One frame as a client would send it; `rsv` is the three reserved bits (0-7)."""
    head = bytes([(0x80 if fin else 0) | (rsv & 7) << 4 | opcode & 0xF])
    size = len(payload)
    mask_bit = 0x80 if mask else 0
    if size < 126:
        head += bytes([mask_bit | size])
    elif size < 1 << 16:
        head += bytes([mask_bit | 126]) + struct.pack("!H", size)
    else:
        head += bytes([mask_bit | 127]) + struct.pack("!Q", size)
    if not mask:
        return head + payload
    key = os.urandom(4)
    return head + key + masked(payload, key)


def masked(payload: bytes, key: bytes) -> bytes:
    # XOR with the key repeated, done on one big integer rather than byte by byte.
    if not payload:
        return b""
    repeated = (key * (len(payload) // 4 + 1))[: len(payload)]
    value = int.from_bytes(payload, "big") ^ int.from_bytes(repeated, "big")
    return value.to_bytes(len(payload), "big")


def close_payload(code: int, reason: str = "") -> bytes:
    return struct.pack("!H", code) + reason.encode()


def deflated(data: bytes) -> bytes:
    """`data` compressed as one permessage-deflate message (raw deflate, tail removed)."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, -12)
    body = compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH)
    return body.removesuffix(DEFLATE_TAIL)


class HandshakeRefused(Exception):
    """The server answered the upgrade request with something other than 101."""

    def __init__(self, status_line: str) -> None:
        super().__init__(status_line)
        self.status_line = status_line


class RawSocket:
    """A WebSocket client written by hand over asyncio streams, so a test can send what a
    well-behaved library never would: unmasked frames, reserved bits, invalid UTF-8, bad
    close codes, fragments of anything."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, headers: dict[str, str]
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.headers = headers
        # The server compresses its frames too once permessage-deflate is agreed, and keeps
        # its compression context from one message to the next.
        deflate = "permessage-deflate" in headers.get("sec-websocket-extensions", "")
        self.inflater = zlib.decompressobj(-15) if deflate else None

    @classmethod
    async def connect(
        cls,
        base: str,
        token: str | None,
        *,
        extensions: str | None = None,
        receive_buffer: int | None = None,
    ) -> RawSocket:
        """Open `/ws` with the token in the subprotocol list; `receive_buffer` shrinks
        SO_RCVBUF (before connecting, so the window is small from the start)."""
        host, port = base.removeprefix("http://").split(":")
        if receive_buffer is not None:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
            sock.setblocking(False)
            await asyncio.get_running_loop().sock_connect(sock, (host, int(port)))
            reader, writer = await asyncio.open_connection(sock=sock)
        else:
            reader, writer = await asyncio.open_connection(host, int(port))
        protocols = "chat-gateway.v1" + (f", bearer.{token}" if token else "")
        key = base64.b64encode(os.urandom(16)).decode()
        lines = [
            "GET /ws HTTP/1.1",
            f"Host: {host}:{port}",
            "Upgrade: websocket",
            "Connection: Upgrade",
            f"Sec-WebSocket-Key: {key}",
            "Sec-WebSocket-Version: 13",
            f"Sec-WebSocket-Protocol: {protocols}",
        ]
        if extensions is not None:
            lines.append(f"Sec-WebSocket-Extensions: {extensions}")
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        await writer.drain()
        head = (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)).decode("latin-1")
        status, *header_lines = head.strip().split("\r\n")
        if " 101 " not in status:
            writer.close()
            raise HandshakeRefused(status)
        headers = {
            name.strip().lower(): value.strip()
            for name, value in (line.split(":", 1) for line in header_lines)
        }
        return cls(reader, writer, headers)

    async def ready(self) -> dict[str, Any]:
        """Read the `ready` frame that greets an authenticated socket."""
        frame = await self.read_frame()
        obj = frame.json()
        assert obj["type"] == "ready", obj
        return obj

    async def send_frame(self, opcode: int, payload: bytes = b"", **options: Any) -> None:
        self.writer.write(encode_frame(opcode, payload, **options))
        await self.writer.drain()

    async def send_over_limit(self, data: bytes) -> None:
        """Write frames the server is expected to refuse part-way: it may close (and reset)
        the connection before all of them are written, which is not an error here."""
        with contextlib.suppress(ConnectionError):
            self.writer.write(data)
            await self.writer.drain()

    async def send_text(self, text: str | bytes) -> None:
        await self.send_frame(OP_TEXT, text.encode() if isinstance(text, str) else text)

    async def send_json(self, **obj: Any) -> None:
        await self.send_text(json.dumps(obj))

    async def read_frame(self, within: float = 10.0) -> Frame:
        async with asyncio.timeout(within):
            first, second = await self.reader.readexactly(2)
            size = second & 0x7F
            if size == 126:
                (size,) = struct.unpack("!H", await self.reader.readexactly(2))
            elif size == 127:
                (size,) = struct.unpack("!Q", await self.reader.readexactly(8))
            payload = await self.reader.readexactly(size)  # servers never mask
        compressed = bool(first & 0x40)
        if compressed and self.inflater is not None:
            payload = self.inflater.decompress(payload + DEFLATE_TAIL)
        return Frame(bool(first & 0x80), first & 0x0F, payload, compressed)

    async def read_json(self, within: float = 10.0) -> dict[str, Any]:
        """The next text frame's JSON, skipping control frames."""
        while True:
            frame = await self.read_frame(within)
            if frame.opcode == OP_TEXT:
                return frame.json()
            assert frame.opcode in (OP_PING, OP_PONG), frame

    async def close_frame(self, within: float = 10.0) -> Frame | None:
        """Read until the server's close frame; None if the TCP stream ended without one."""
        try:
            while True:
                frame = await self.read_frame(within)
                if frame.opcode == OP_CLOSE:
                    return frame
        except (asyncio.IncompleteReadError, ConnectionResetError):
            return None

    async def closed_with(self, within: float = 10.0) -> int | None:
        """The code of the server's close frame (None: no frame, or a frame without a code)."""
        frame = await self.close_frame(within)
        return None if frame is None else frame.close_code

    async def eof(self, within: float = 10.0) -> bool:
        """True once the server has closed the TCP connection (after any frames)."""
        try:
            async with asyncio.timeout(within):
                while await self.reader.read(65536):
                    pass
        except ConnectionResetError:
            pass
        return True

    async def aclose(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await self.writer.wait_closed()


@asynccontextmanager
async def raw_socket(base: str, token: str | None, **options: Any) -> AsyncIterator[RawSocket]:
    sock = await RawSocket.connect(base, token, **options)
    try:
        yield sock
    finally:
        await sock.aclose()


# ---------------------------------------------------------------------------------------------
# Gateways whose loop and app a test can inspect


@dataclass
class RunningGateway:
    url: str
    settings: Settings
    loop: asyncio.AbstractEventLoop | None = None
    app: Starlette | None = None  # its `state.services` once it has started


class LoopProbe:
    """An ASGI wrapper that notes the event loop the server runs the app on."""

    def __init__(self, app: ASGIApp, running: RunningGateway) -> None:
        self.app = app
        self.running = running

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.running.loop is None:
            self.running.loop = asyncio.get_running_loop()
        await self.app(scope, receive, send)


@pytest.fixture
def running_gateways() -> list[RunningGateway]:
    """Every gateway `start_gateway` started in this test, newest last."""
    return []


@pytest.fixture
def start_gateway(
    settings: Settings, running_gateways: list[RunningGateway], tokens_stay_out_of_logs: Recorder
) -> GatewayFactory:
    """As in tests/conftest.py, and each gateway is recorded in `running_gateways`. uvicorn
    sets up its loggers as the server starts, so they are watched for secrets from then on,
    request lines included."""

    @contextmanager
    def start(**changes: Any) -> Iterator[str]:
        configured = replace(settings, **changes)
        running = RunningGateway("", configured)
        running.app = create_app(configured, upstream_retries=0)
        app = LoopProbe(running.app, running)
        with serve_in_thread(app, **uvicorn_options(configured)) as url:
            running.url = url
            running_gateways.append(running)
            restore = watch_uvicorn(tokens_stay_out_of_logs)
            try:
                yield url
            finally:
                restore()
                running_gateways.remove(running)

    return start


def watch_uvicorn(recorder: Recorder) -> Callable[[], None]:
    """Record uvicorn's lines, its access lines at info, until the returned call."""
    loggers = [logging.getLogger(name) for name in ("uvicorn.error", "uvicorn.access")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.addHandler(recorder)
        logger.setLevel(min(logger.level or logging.INFO, logging.INFO))

    def restore() -> None:
        for logger, level in zip(loggers, levels, strict=True):
            logger.removeHandler(recorder)
            logger.setLevel(level)

    return restore


# Process-wide tasks that start on first use and stop on their own a while after their
# last user: not a leak of the attack.
LONG_LIVED_TASKS = frozenset({"limits-refresh"})


def gateway_tasks(running: RunningGateway) -> int:
    """How many asyncio tasks the gateway's loop holds right now."""
    return len(gateway_task_names(running))


def new_tasks(running: RunningGateway, baseline: list[str]) -> list[str]:
    """Tasks running now that were not at `baseline` (names are unique per task), apart
    from LONG_LIVED_TASKS."""
    return [
        name
        for name in gateway_task_names(running)
        if name not in baseline and name.split(":")[0] not in LONG_LIVED_TASKS
    ]


def gateway_task_names(running: RunningGateway) -> list[str]:
    """What the gateway's loop is running: each task's name and coroutine."""
    loop = running.loop
    assert loop is not None, "the gateway has not served a request yet"

    async def names() -> list[str]:
        current = asyncio.current_task()
        return [_describe(t) for t in asyncio.all_tasks() if t is not current]

    return asyncio.run_coroutine_threadsafe(names(), loop).result(timeout=10)


def _describe(task: asyncio.Task[Any]) -> str:
    coro = task.get_coro()
    return f"{task.get_name()}:{getattr(coro, '__qualname__', coro)}"


def rss_bytes() -> int:
    """Resident memory of this process (in-thread gateways live here)."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


async def settle(condition: Callable[[], bool | Awaitable[bool]], within: float = 10.0) -> bool:
    """Wait until `condition` holds, polling it; False if it still does not after `within`
    seconds (the caller asserts, with its own message)."""
    deadline = time.monotonic() + within
    while True:
        result = condition()
        if not isinstance(result, bool):
            result = await result
        if result or time.monotonic() > deadline:
            return result
        await asyncio.sleep(0.02)


# ---------------------------------------------------------------------------------------------
# Tokens, and logs that must never show them

MINTED: list[str] = []


@pytest.fixture
def token() -> Callable[..., str]:
    """As in tests/conftest.py; every token is also checked against the logs."""

    def mint(sub: str = "alice", ttl: int = 600) -> str:
        value = mint_token(Settings(jwt_secret=Secret(TEST_SECRET)), sub, ttl)
        MINTED.append(value)
        return value

    return mint


class Recorder(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if record.exc_info:
            text += "\n" + logging.Formatter().formatException(record.exc_info)
        self.lines.append(text)


# uvicorn's loggers do not propagate to the root logger, so each is watched on its own.
WATCHED_LOGGERS = ("", "uvicorn", "uvicorn.access")


@pytest.fixture(autouse=True)
def tokens_stay_out_of_logs() -> Iterator[Recorder]:
    """Fail the test if a minted token, the JWT secret or the upstream key reached a log."""
    recorder = Recorder()
    for name in WATCHED_LOGGERS:
        logging.getLogger(name).addHandler(recorder)
    MINTED.clear()
    yield recorder
    for name in WATCHED_LOGGERS:
        logging.getLogger(name).removeHandler(recorder)
    secrets = [*MINTED, TEST_SECRET, "sk-test"]
    for line in recorder.lines:
        leaked = [s for s in secrets if s in line]
        assert not leaked, f"a secret reached the logs: {line[:200]!r}"


def secrets_in(lines: list[str]) -> list[str]:
    """Lines of a gateway process's output that show a minted token or a secret."""
    secrets = [*MINTED, TEST_SECRET, "sk-test"]
    return [line for line in lines if any(s in line for s in secrets)]


# ---------------------------------------------------------------------------------------------
# A bystander, and the checks after an attack


BYSTANDER_WORDS = 400


@dataclass
class Bystander:
    """Another user streaming a long answer on their own socket while the attack runs."""

    ws: ClientConnection
    message: str
    frames: list[dict[str, Any]] = field(default_factory=list)
    reader: asyncio.Task[None] | None = None

    @classmethod
    async def start(cls, url: str, token: str) -> Bystander:
        ws = await connected(url, token)
        message = " ".join(f"w{i}" for i in range(BYSTANDER_WORDS))
        bystander = cls(ws, message)
        await send(ws, type="completion", id="bystander", message=message, model="echo")
        bystander.reader = asyncio.create_task(bystander._read())
        return bystander

    async def _read(self) -> None:
        while True:
            frame = await receive(self.ws)
            if frame.get("id") == "bystander":
                self.frames.append(frame)
                if frame.get("done"):
                    return

    async def check(self, within: float = 30.0) -> None:
        """The whole answer arrived, in order, without gaps, and the socket still works."""
        assert self.reader is not None
        try:
            await asyncio.wait_for(self.reader, within)
        except ConnectionClosed as closed:
            pytest.fail(f"the bystander's socket was closed: {closed}")
        seqs = [f["seq"] for f in self.frames]
        assert seqs == list(range(1, len(seqs) + 1)), "the bystander's events have a gap"
        assert self.frames[-1]["type"] == "done", self.frames[-1]
        text = "".join(f["content"] for f in self.frames if f["type"] == "chunk")
        assert text == self.message
        await send(self.ws, type="ping")
        assert await asyncio.wait_for(receive(self.ws), 5) == {"type": "pong"}
        await self.ws.close()


async def fresh_request_seconds(url: str, token: str) -> float:
    """Time for a new user's short completion, from connect to `done`."""
    began = time.perf_counter()
    ws = await connected(url, token)
    await send(ws, type="completion", id="probe", message="are you there", model="echo")
    while (frame := await asyncio.wait_for(receive(ws), 10))["type"] != "done":
        assert frame["type"] in ("start", "chunk"), frame
    await ws.close()
    return time.perf_counter() - began


async def healthy(url: str) -> bool:
    async with httpx2.AsyncClient(timeout=5) as client:
        return (await client.get(f"{url}/healthz")).status_code == 200


Survives = Callable[..., AbstractAsyncContextManager[Bystander]]
# How much the process may grow across one attack: generous, since the test runner and the
# gateway share the process, but far below what an unbounded buffer of the attack would take.
MEMORY_SLACK_BYTES = 64 * 1024 * 1024
FRESH_REQUEST_SECONDS = 2.0


@pytest.fixture
def survives(token: Callable[..., str], running_gateways: list[RunningGateway]) -> Survives:
    """`async with survives(url) as bystander: <attack>`; see the module docstring.

    Options: `memory_slack` (bytes the process may grow), `tasks` (check the gateway's task
    count returns to its baseline; only for gateways from `start_gateway`)."""

    @asynccontextmanager
    async def watch(
        url: str, *, memory_slack: int = MEMORY_SLACK_BYTES, tasks: bool = True
    ) -> AsyncIterator[Bystander]:
        running = next((g for g in running_gateways if g.url == url), None)
        assert await healthy(url), "the gateway was not healthy before the attack"
        baseline_tasks = gateway_task_names(running) if running is not None and tasks else None
        baseline_rss = rss_bytes()
        bystander = await Bystander.start(url, token(f"bystander-{uuid.uuid4().hex[:8]}"))
        yield bystander
        assert await healthy(url), "the gateway stopped answering /healthz"
        await bystander.check()
        seconds = await fresh_request_seconds(url, token(f"probe-{uuid.uuid4().hex[:8]}"))
        assert seconds < FRESH_REQUEST_SECONDS, f"a fresh request took {seconds:.2f} s"
        if running is not None and baseline_tasks is not None:
            settled = await settle(lambda: not new_tasks(running, baseline_tasks))
            assert settled, f"tasks left over: {new_tasks(running, baseline_tasks)}"
        grown = rss_bytes() - baseline_rss
        assert grown < memory_slack, f"memory grew by {grown / 2**20:.0f} MiB"

    return watch


# ---------------------------------------------------------------------------------------------
# A gateway with a model of the test's own ("probe"), and the gateway's own retry policy

# Short enough that a file runs in seconds, long enough for a loaded 2-core machine.
FAST: dict[str, Any] = {
    "upstream_connect_timeout": 2.0,
    "upstream_first_token_timeout": 2.0,
    "upstream_read_timeout": 2.0,
    "upstream_max_retries": 2,
    "upstream_retry_max_wait": 5.0,
}


@contextmanager
def gateway_with(
    settings: Settings,
    running: list[RunningGateway],
    model: ModelConfig,
    **changes: Any,
) -> Iterator[str]:
    """A gateway that also serves `model` (as "probe"), with the gateway's own retries on."""
    configured = replace(
        settings, models={**settings.models, "probe": model}, **{**FAST, **changes}
    )
    gateway = RunningGateway("", configured)
    app = LoopProbe(create_app(configured), gateway)
    with serve_in_thread(app, **uvicorn_options(configured)) as url:
        gateway.url = url
        running.append(gateway)
        try:
            yield url
        finally:
            running.remove(gateway)


StartProbe = Callable[..., AbstractContextManager[str]]


@pytest.fixture
def start_probe(settings: Settings, running_gateways: list[RunningGateway]) -> StartProbe:
    """`with start_probe(upstream_model, **settings_changes) as url`; `model=` sets fields
    of the probe model (max_concurrent, streaming, base_url)."""
    fake = settings.models["fake"]

    def start(upstream_model: str, model: dict[str, Any] | None = None, **changes: Any) -> Any:
        probe = replace(fake, name="probe", upstream_model=upstream_model, **(model or {}))
        return gateway_with(settings, running_gateways, probe, **changes)

    return start

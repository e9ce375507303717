"""Concurrent streams through the gateway's WebSocket, against the same streams read directly
from the fake upstream; see docs/performance.md.

    .venv/bin/python -m bench.ws_load --streams 1,50,100 --tokens 50 --interval-ms 20

Starts a private redis-server, the fake upstream and the gateway, each as its own process on
127.0.0.1, and stops every one of them by pid on the way out, errors included.
"""

from __future__ import annotations

import abc
import argparse
import asyncio
import base64
import contextlib
import ctypes
import hashlib
import http.client
import json
import os
import re
import secrets
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

import redis as sync_redis
from starlette.applications import Starlette

from bench.report import (
    MACHINE,
    Level,
    Round,
    Run,
    Stream,
    machine_info,
    render_run,
    summarize,
    write_outputs,
)
from gateway.auth import mint_token
from gateway.config import Secret, Settings
from gateway.store.embedded import find_redis_server
from tests.upstream import FakeUpstream

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
MODEL = "bench"
MESSAGE = "Count for me, please."
UPSTREAM_KEY_ENV = "BENCH_UPSTREAM_KEY"
UPSTREAM_KEY = "sk-bench-upstream"
KEPT_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR")
WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
OP_TEXT, OP_CLOSE, OP_PING, OP_PONG = 0x1, 0x8, 0x9, 0xA
NORMAL_CLOSURE = (1000).to_bytes(2, "big")
CLOSE_WAIT_S = 2.0
ROUND_PAUSE_S = 0.2
MAX_STREAMS = 1000
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
IDLE, IOWAIT = 3, 4  # columns of the "cpu" line in /proc/stat
PR_SET_PDEATHSIG = 1


class BenchError(RuntimeError):
    """The bench cannot go on; the message says why."""


def upstream_app() -> Starlette:
    """uvicorn factory for the fake upstream's own process."""
    return FakeUpstream().app


@dataclass(frozen=True, slots=True)
class Options:
    streams: tuple[int, ...]
    tokens: int
    interval_ms: int
    rounds: int
    round_timeout: float
    max_seconds: float
    results: Path
    docs: Path | None

    @property
    def upstream_model(self) -> str:
        return f"fake-n{self.tokens}-i{self.interval_ms}-stamp"

    @property
    def stream_seconds(self) -> float:
        return self.tokens * self.interval_ms / 1000

    def as_dict(self) -> dict[str, Any]:
        return {
            "streams": list(self.streams),
            "tokens": self.tokens,
            "interval_ms": self.interval_ms,
            "rounds": self.rounds,
            "round_timeout": self.round_timeout,
            "max_seconds": self.max_seconds,
            "upstream_model": self.upstream_model,
        }


def parse_options(argv: Sequence[str]) -> Options:
    parser = argparse.ArgumentParser(
        prog="python -m bench.ws_load",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--streams", type=_levels, default=(1, 50, 100), help="e.g. 1,50,100")
    parser.add_argument("--tokens", type=_bounded(1, 10_000), default=50)
    parser.add_argument("--interval-ms", type=_bounded(0, 1000), default=20)
    parser.add_argument("--rounds", type=_bounded(1, 100), default=10, help="per level")
    parser.add_argument("--round-timeout", type=_seconds, default=30.0, help="seconds")
    parser.add_argument("--max-seconds", type=_seconds, default=150.0, help="no round starts after")
    parser.add_argument("--results", type=Path, default=ROOT / "bench/results/latest.json")
    parser.add_argument("--docs", type=Path, default=ROOT / "docs/performance.md")
    parser.add_argument("--no-docs", action="store_true", help="leave docs/performance.md alone")
    args = parser.parse_args(argv)
    return Options(
        streams=args.streams,
        tokens=args.tokens,
        interval_ms=args.interval_ms,
        rounds=args.rounds,
        round_timeout=args.round_timeout,
        max_seconds=args.max_seconds,
        results=args.results,
        docs=None if args.no_docs else args.docs,
    )


def _levels(text: str) -> tuple[int, ...]:
    parse = _bounded(1, MAX_STREAMS)
    return tuple(parse(part) for part in text.split(",") if part.strip())


def _seconds(text: str) -> float:
    value = float(text)
    if not 1 <= value <= 3600:
        raise argparse.ArgumentTypeError(f"{value} is not within 1..3600 seconds")
    return value


def _bounded(low: int, high: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        value = int(text)
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{value} is not within {low}..{high}")
        return value

    return parse


@dataclass(frozen=True, slots=True)
class Child:
    name: str
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


@dataclass(frozen=True, slots=True)
class Services:
    redis: Child
    redis_port: int
    upstream: Child
    upstream_port: int
    gateway: Child
    gateway_port: int
    token: str

    def pids(self) -> dict[str, int]:
        return {
            "gateway": self.gateway.pid,
            "upstream": self.upstream.pid,
            "redis": self.redis.pid,
            "client": os.getpid(),
        }


@dataclass(frozen=True, slots=True)
class Workspace:
    """Where children keep their files (`tmp`) and logs (`logs`, kept after the run), and the
    stack that stops them."""

    tmp: Path
    logs: Path
    stack: contextlib.ExitStack

    def spawn(self, name: str, argv: list[str], env: dict[str, str]) -> Child:
        log = self.logs / f"{name.replace(' ', '-')}.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
                env=env,
                preexec_fn=_die_with_parent,
            )
        child = Child(name, process, log)
        self.stack.callback(stop, child)
        return child


def stop(child: Child) -> None:
    if child.process.poll() is not None:
        return
    child.process.terminate()
    try:
        child.process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        child.process.kill()
        child.process.wait(timeout=5)


def _die_with_parent() -> None:
    """Runs in the child before exec, so a bench killed by SIGKILL leaves nothing behind."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def wait_until(child: Child, check: Callable[[], bool], attempts: int = 300) -> None:
    for _ in range(attempts):
        if check():
            return
        if child.process.poll() is not None:
            raise BenchError(
                f"{child.name} exited with {child.process.returncode}:\n{child.tail()}"
            )
        time.sleep(0.05)
    raise BenchError(f"{child.name} was not ready after {attempts} attempts:\n{child.tail()}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def base_env(**extra: str) -> dict[str, str]:
    """Only what a Python process needs, so no gateway setting leaks in from the caller."""
    return {**{k: os.environ[k] for k in KEPT_ENV if k in os.environ}, **extra}


def redis_answers(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def http_status(port: int, path: str) -> int | None:
    connection = http.client.HTTPConnection(HOST, port, timeout=1)
    try:
        connection.request("GET", path)
        return connection.getresponse().status
    except (OSError, http.client.HTTPException):
        return None
    finally:
        connection.close()


def start_redis(work: Workspace) -> tuple[Child, int]:
    port = free_port()
    argv = [find_redis_server(), "--port", str(port), "--bind", HOST, "--save", ""]
    argv += ["--appendonly", "no", "--dir", str(work.tmp)]
    child = work.spawn("redis-server", argv, base_env())
    wait_until(child, lambda: redis_answers(port))
    return child, port


def start_upstream(work: Workspace) -> tuple[Child, int]:
    port = free_port()
    argv = [sys.executable, "-m", "uvicorn", "bench.ws_load:upstream_app", "--factory"]
    argv += ["--host", HOST, "--port", str(port), "--log-level", "warning", "--no-access-log"]
    child = work.spawn("fake upstream", argv, base_env())
    wait_until(child, lambda: http_status(port, "/v1/chat/completions") is not None)
    return child, port


def gateway_config(opts: Options, upstream_port: int) -> str:
    base_url = f"http://{HOST}:{upstream_port}/v1"
    return (
        f"default_model = {json.dumps(MODEL)}\n\n"
        f"[models.{MODEL}]\n"
        'provider = "openai"\n'
        f"base_url = {json.dumps(base_url)}\n"
        f"api_key_env = {json.dumps(UPSTREAM_KEY_ENV)}\n"
        f"upstream_model = {json.dumps(opts.upstream_model)}\n"
    )


def start_gateway(
    opts: Options, work: Workspace, redis_port: int, upstream_port: int
) -> tuple[Child, int, str]:
    config = work.tmp / "gateway.toml"
    config.write_text(gateway_config(opts, upstream_port))
    secret = secrets.token_urlsafe(48)
    env = base_env(
        JWT_SECRET=secret,
        REDIS_URL=f"redis://{HOST}:{redis_port}/0",
        REDIS_PREFIX="bench:",
        GATEWAY_CONFIG=str(config),
        GATEWAY_DATA_DIR=str(work.tmp / "data"),
        LOG_LEVEL="warning",
        WS_PING_INTERVAL="0",
        SHUTDOWN_DRAIN_SECONDS="1",
        **{UPSTREAM_KEY_ENV: UPSTREAM_KEY},
    )
    port = free_port()
    argv = [sys.executable, "-m", "gateway", "serve", "--host", HOST, "--port", str(port)]
    child = work.spawn("gateway", argv, env)
    wait_until(child, lambda: http_status(port, "/readyz") == 200)
    token = mint_token(Settings(jwt_secret=Secret(secret)), "bench", ttl=3600)
    return child, port, token


def start_services(opts: Options, work: Workspace) -> Services:
    redis, redis_port = start_redis(work)
    upstream, upstream_port = start_upstream(work)
    gateway, gateway_port, token = start_gateway(opts, work, redis_port, upstream_port)
    return Services(redis, redis_port, upstream, upstream_port, gateway, gateway_port, token)


def cpu_seconds(pid: int) -> float:
    """User plus system time of every thread of `pid` (fields 14 and 15 of /proc/pid/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def memory_kib(pid: int, field: str = "VmRSS") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    return 0


def machine_busy_seconds() -> float:
    """CPU time spent by everything on the machine, all CPUs together (/proc/stat)."""
    with open("/proc/stat") as stat:
        ticks = [int(v) for v in stat.readline().split()[1:]]
    idle = ticks[IDLE] + ticks[IOWAIT]
    return (sum(ticks[:8]) - idle) / CLOCK_TICKS  # guest time is already inside user time


def cpu_snapshot(pids: Mapping[str, int]) -> dict[str, float]:
    return {MACHINE: machine_busy_seconds()} | {n: cpu_seconds(p) for n, p in pids.items()}


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def stamp_of(content: object) -> int | None:
    try:
        return int(str(content))
    except ValueError:
        return None


class StreamClient(asyncio.Protocol, abc.ABC):
    """One stream on its own connection: connect, wait for `ready`, `start`, read to the end."""

    def __init__(self) -> None:
        loop = asyncio.get_running_loop()
        self.ready: asyncio.Future[None] = loop.create_future()
        self.finished: asyncio.Future[None] = loop.create_future()
        self.lost: asyncio.Future[None] = loop.create_future()
        self.transport: asyncio.Transport | None = None
        self.received: list[tuple[int, bytes]] = []
        self.sent_ns = 0
        self.error: str | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.finished.done():
            self.fail("the connection closed before the stream ended")
        _resolve(self.lost)

    def fail(self, reason: str) -> None:
        self.error = self.error or reason
        _resolve(self.ready)
        _resolve(self.finished)
        if self.transport is not None:
            self.transport.close()

    def send(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def start(self) -> None:
        self.sent_ns = time.time_ns()
        self.send(self.request())

    async def close(self) -> None:
        if self.transport is None:
            return
        self.say_goodbye()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self.lost), CLOSE_WAIT_S)
        if not self.lost.done():
            self.transport.abort()

    @abc.abstractmethod
    def request(self) -> bytes: ...

    @abc.abstractmethod
    def say_goodbye(self) -> None: ...

    @abc.abstractmethod
    def stream(self) -> Stream: ...


class DirectClient(StreamClient):
    """A streamed chat completion straight from the upstream: HTTP/1.1, SSE lines."""

    def __init__(self, port: int, body: bytes) -> None:
        super().__init__()
        head = (
            f"POST /v1/chat/completions HTTP/1.1\r\nHost: {HOST}:{port}\r\n"
            f"Authorization: Bearer {UPSTREAM_KEY}\r\nContent-Type: application/json\r\n"
            f"Accept: text/event-stream\r\nContent-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n"
        )
        self._request = head.encode() + body
        self._tail = b""
        self._done = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        _resolve(self.ready)

    def data_received(self, data: bytes) -> None:
        now = time.time_ns()
        # Chunked-encoding size lines fall between SSE lines and never start with "data: ".
        lines = (self._tail + data).split(b"\n")
        self._tail = lines.pop()
        for line in lines:
            if not line.startswith(b"data: "):
                continue
            if line.startswith(b"data: [DONE]"):
                self._done = True
                _resolve(self.finished)
            else:
                self.received.append((now, line))

    def request(self) -> bytes:
        return self._request

    def say_goodbye(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def stream(self) -> Stream:
        chunks: list[tuple[int, int | None]] = []
        for received, line in self.received:
            choices = json.loads(line[6:]).get("choices") or [{}]
            content = (choices[0].get("delta") or {}).get("content")
            if content:
                chunks.append((received, stamp_of(content)))
        error = None if self._done else self.error or "no [DONE] in time"
        return Stream(self.sent_ns, tuple(chunks), self._done, error)


class WsError(Exception):
    """The gateway's side of the WebSocket did something this client does not expect."""


def client_frame(opcode: int, payload: bytes) -> bytes:
    """One final frame, masked as RFC 6455 requires of clients."""
    n = len(payload)
    if n < 126:
        header = bytes((0x80 | opcode, 0x80 | n))
    elif n < 1 << 16:
        header = bytes((0x80 | opcode, 0x80 | 126)) + n.to_bytes(2, "big")
    else:
        header = bytes((0x80 | opcode, 0x80 | 127)) + n.to_bytes(8, "big")
    mask = os.urandom(4)
    key = (mask * (n // 4 + 1))[:n]
    masked = (int.from_bytes(payload, "big") ^ int.from_bytes(key, "big")).to_bytes(n, "big")
    return header + mask + masked


def take_frame(buffer: bytearray) -> tuple[int, bytes] | None:
    """Remove one whole server frame from the front of `buffer`: (opcode, payload), or None
    until one has fully arrived."""
    if len(buffer) < 2:
        return None
    first, second = buffer[0], buffer[1]
    if second & 0x80 or not first & 0x80:
        raise WsError("the server sent a masked or fragmented frame")
    length, start = second & 0x7F, 2
    if length >= 126:
        start = 4 if length == 126 else 10
        if len(buffer) < start:
            return None
        length = int.from_bytes(buffer[2:start], "big")
    end = start + length
    if len(buffer) < end:
        return None
    payload = bytes(buffer[start:end])
    del buffer[:end]
    return first & 0x0F, payload


def check_upgrade(head: str, key: bytes) -> None:
    status, *lines = head.split("\r\n")
    if not status.startswith("HTTP/1.1 101"):
        raise WsError(f"the handshake was refused: {status}")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    expected = base64.b64encode(hashlib.sha1(key + WS_GUID).digest()).decode()
    if headers.get("sec-websocket-accept") != expected:
        raise WsError("the handshake answered a wrong Sec-WebSocket-Accept")


class GatewayClient(StreamClient):
    """One completion over the gateway's WebSocket, token in the Authorization header."""

    def __init__(self, port: int, token: str, completion: bytes) -> None:
        super().__init__()
        self._key = base64.b64encode(os.urandom(16))
        self._handshake = (
            f"GET /ws HTTP/1.1\r\nHost: {HOST}:{port}\r\nUpgrade: websocket\r\n"
            "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
            f"Sec-WebSocket-Key: {self._key.decode()}\r\n"
            f"Sec-WebSocket-Protocol: chat-gateway.v1\r\nAuthorization: Bearer {token}\r\n\r\n"
        ).encode()
        self._completion = completion
        self._buffer = bytearray()
        self._upgraded = False
        self._closing = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.send(self._handshake)

    def data_received(self, data: bytes) -> None:
        now = time.time_ns()
        self._buffer += data
        try:
            if not self._upgraded and not self._upgrade():
                return
            while (frame := take_frame(self._buffer)) is not None:
                self._frame(now, *frame)
        except WsError as exc:
            self.fail(str(exc))

    def _upgrade(self) -> bool:
        end = self._buffer.find(b"\r\n\r\n")
        if end < 0:
            return False
        head = bytes(self._buffer[:end]).decode("latin-1")
        del self._buffer[: end + 4]
        check_upgrade(head, self._key)
        self._upgraded = True
        return True

    def _frame(self, now: int, opcode: int, payload: bytes) -> None:
        if opcode == OP_TEXT:
            self._text(now, payload)
        elif opcode == OP_PING:
            self.send(client_frame(OP_PONG, payload))
        elif opcode == OP_CLOSE:
            self._closed_by_server(payload)

    def _text(self, now: int, payload: bytes) -> None:
        if not self.ready.done():
            if not payload.startswith(b'{"type":"ready"'):
                raise WsError(f"expected a ready frame, got {payload[:80]!r}")
            _resolve(self.ready)
            return
        self.received.append((now, payload))
        # Safe on raw bytes: inside a JSON string a quote is always escaped.
        if b'"done":true' in payload:
            _resolve(self.finished)

    def _closed_by_server(self, payload: bytes) -> None:
        if not self._closing:
            self._closing = True
            self.send(client_frame(OP_CLOSE, payload[:2]))
        code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
        if not self.finished.done():
            self.fail(f"closed by the gateway with {code}")
        elif self.transport is not None:
            self.transport.close()

    def request(self) -> bytes:
        return client_frame(OP_TEXT, self._completion)

    def say_goodbye(self) -> None:
        if not self._upgraded:
            if self.transport is not None:
                self.transport.close()
        elif not self._closing:
            self._closing = True
            self.send(client_frame(OP_CLOSE, NORMAL_CLOSURE))

    def stream(self) -> Stream:
        chunks: list[tuple[int, int | None]] = []
        complete, error = False, self.error
        for received, payload in self.received:
            frame = json.loads(payload)
            kind = frame.get("type")
            if kind == "chunk":
                chunks.append((received, stamp_of(frame.get("content"))))
            elif kind == "done":
                complete = True
            elif kind == "error":
                error = error or f"error frame: {frame.get('code')}"
        if not complete:
            error = error or "no done frame in time"
        return Stream(self.sent_ns, tuple(chunks), complete, None if complete else error)


ClientFactory = Callable[[], StreamClient]


async def run_round(
    factory: ClientFactory, port: int, count: int, time_limit: float, pids: Mapping[str, int]
) -> Round:
    """Open `count` connections, start every stream at once, read them to the end."""
    clients: list[StreamClient] = []
    before, started = cpu_snapshot(pids), time.monotonic()
    try:
        await _open(clients, factory, port, count, time_limit)
        for client in clients:
            client.start()
        await asyncio.wait([c.finished for c in clients], timeout=time_limit)
    finally:
        await asyncio.gather(*(c.close() for c in clients))
    after, wall = cpu_snapshot(pids), time.monotonic() - started
    cpu = {name: after[name] - before[name] for name in before}
    return Round(tuple(c.stream() for c in clients), cpu, wall)


async def _open(
    clients: list[StreamClient], factory: ClientFactory, port: int, count: int, time_limit: float
) -> None:
    def made() -> StreamClient:
        client = factory()
        clients.append(client)
        return client

    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(time_limit):
            await asyncio.gather(*(loop.create_connection(made, HOST, port) for _ in range(count)))
            await asyncio.gather(*(c.ready for c in clients))
    except TimeoutError:
        raise BenchError(f"{count} connections were not ready within {time_limit:.0f} s") from None
    except OSError as exc:
        raise BenchError(f"a connection to 127.0.0.1:{port} failed: {exc}") from None
    if failed := [c.error for c in clients if c.error]:
        raise BenchError(f"{len(failed)} of {count} streams could not start: {failed[0]}")


def direct_factory(opts: Options, services: Services) -> ClientFactory:
    body = json.dumps(
        {
            "model": opts.upstream_model,
            "messages": [{"role": "user", "content": MESSAGE}],
            "stream": True,
            "stream_options": {"include_usage": True},
        }
    ).encode()
    return lambda: DirectClient(services.upstream_port, body)


def gateway_factory(services: Services) -> ClientFactory:
    frame = json.dumps({"type": "completion", "id": "b1", "message": MESSAGE, "model": MODEL})
    return lambda: GatewayClient(services.gateway_port, services.token, frame.encode())


class Budget:
    """The whole run's time limit: a round starts only if it can finish within it."""

    def __init__(self, seconds: float, round_timeout: float, expected: float) -> None:
        self._deadline = time.monotonic() + seconds
        self._round_timeout = round_timeout
        self._expected = expected

    def next_timeout(self) -> float | None:
        left = self._deadline - time.monotonic()
        if left < self._expected:
            return None
        return min(self._round_timeout, left)


async def measure_level(
    opts: Options, services: Services, count: int, budget: Budget
) -> tuple[list[Round], list[Round], dict[str, int]]:
    pids = services.pids()
    direct, gateway = direct_factory(opts, services), gateway_factory(services)
    direct_rounds: list[Round] = []
    gateway_rounds: list[Round] = []
    redis_before = redis_command_calls(services.redis_port)
    for _ in range(opts.rounds):
        timeout = budget.next_timeout()
        if timeout is None:
            break
        direct_rounds.append(await run_round(direct, services.upstream_port, count, timeout, pids))
        await asyncio.sleep(ROUND_PAUSE_S)
        gateway_rounds.append(await run_round(gateway, services.gateway_port, count, timeout, pids))
        await asyncio.sleep(ROUND_PAUSE_S)
    redis_after = redis_command_calls(services.redis_port)
    used = {name: redis_after[name] - redis_before.get(name, 0) for name in redis_after}
    return direct_rounds, gateway_rounds, {k: v for k, v in used.items() if v > 0}


def redis_command_calls(port: int) -> dict[str, int]:
    """Commands Redis has run so far, by name (scripts' own commands included)."""
    client = sync_redis.Redis(host=HOST, port=port)
    try:
        stats = client.info("commandstats")
    finally:
        client.close()
    # The INFO commands this function sends are left out of the count.
    return {
        name.removeprefix("cmdstat_"): int(v["calls"])
        for name, v in stats.items()
        if name != "cmdstat_info"
    }


async def warm_up(opts: Options, services: Services) -> None:
    """One unrecorded round each way, so first-use costs (imports, pools) stay out."""
    count, pids = min(4, max(opts.streams)), services.pids()
    timeout = opts.round_timeout
    await run_round(direct_factory(opts, services), services.upstream_port, count, timeout, pids)
    await run_round(gateway_factory(services), services.gateway_port, count, timeout, pids)


async def measure(opts: Options, services: Services, run: Run) -> None:
    budget = Budget(opts.max_seconds, opts.round_timeout, 2 * opts.stream_seconds + 2)
    await warm_up(opts, services)
    run.gateway_idle_rss_kib = memory_kib(services.gateway.pid)
    for count in opts.streams:
        print(f"{count} concurrent streams ...", file=sys.stderr, flush=True)
        direct, gateway, redis_commands = await measure_level(opts, services, count, budget)
        if len(gateway) < opts.rounds:
            run.notes.append(f"Time ran out: {count} streams ran {len(gateway)} rounds.")
        if not gateway:
            break
        rss = memory_kib(services.gateway.pid)
        run.levels.append(Level(count, summarize(direct), summarize(gateway), rss, redis_commands))
    run.gateway_peak_rss_kib = memory_kib(services.gateway.pid, "VmHWM")


def command_line(argv: Sequence[str]) -> str:
    python = Path(sys.executable)
    shown = os.path.relpath(python, ROOT) if python.is_relative_to(ROOT) else str(python)
    return shlex.join([shown, "-m", "bench.ws_load", *argv])


EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception)\b.*")


def gateway_log_note(gateway: Child) -> str | None:
    """The gateway logs at WARNING: any line at all is worth a look."""
    lines = [line for line in gateway.tail(100_000).splitlines() if line.strip()]
    if not lines:
        return None
    raised = Counter(line for line in lines if EXCEPTION_LINE.match(line))
    summary = "; ".join(f"`{line}` ({count})" for line, count in raised.most_common(3))
    return f"The gateway logged {len(lines)} lines at WARNING or above" + (
        f"; exceptions: {summary}." if summary else f"; the first: `{lines[0]}`."
    )


def bench(opts: Options, argv: Sequence[str]) -> Run:
    run = Run(
        command=command_line(argv),
        date=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        options=opts.as_dict(),
        machine=machine_info(find_redis_server(), ROOT),
    )
    logs = opts.results.parent / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="ws-load-") as tmp, contextlib.ExitStack() as stack:
        services = start_services(opts, Workspace(Path(tmp), logs, stack))
        asyncio.run(measure(opts, services, run))
        if note := gateway_log_note(services.gateway):
            run.notes.append(note)
        return run


def _exit_on_sigterm(signum: int, frame: FrameType | None) -> None:
    # SystemExit unwinds through every `finally`, which stops the child processes.
    sys.exit(128 + signum)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    opts = parse_options(args)
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        run = bench(opts, args)
    except BenchError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 1
    print(render_run(run))
    write_outputs(run, opts.results, opts.docs)
    written = [opts.results, *([opts.docs] if opts.docs else [])]
    print("wrote " + ", ".join(map(str, written)), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Starting the processes under test: a private redis-server, the fake upstream, the gateway
and the bare ceiling server, each on 127.0.0.1 and a free port."""

from __future__ import annotations

import json
import os
import secrets
import socket
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from bench.options import ROOT, Options
from bench.procs import (
    HOST,
    Child,
    Workspace,
    base_env,
    free_port,
    http_status,
    memory_kib,
    tree_rss_kib,
    wait_until,
)
from gateway.auth.tokens import mint_token
from gateway.config import Secret, Settings
from gateway.store.embedded import find_redis_server

MODEL = "bench"  # the fake upstream, through the gateway's openai provider
ECHO = "echo"  # the built-in echo model, for bursts with no upstream in the way
UPSTREAM_KEY_ENV = "BENCH_UPSTREAM_KEY"
UPSTREAM_KEY = "sk-bench-upstream"
READY_WAIT_S = 30.0


@dataclass(frozen=True, slots=True)
class Server:
    child: Child
    port: int
    ready_s: float  # from spawn to the first good answer of its readiness check
    ready_rss_kib: int  # RSS then, before any traffic


@dataclass(frozen=True, slots=True)
class Gateway(Server):
    token: str


def redis_answers(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def start_redis(work: Workspace) -> Server:
    port = free_port()
    argv = [find_redis_server(), "--port", str(port), "--bind", HOST, "--save", ""]
    argv += ["--appendonly", "no", "--dir", str(work.tmp), "--maxclients", "20000"]
    child = work.spawn("redis-server", argv, base_env())
    ready = wait_until(child, lambda: redis_answers(port))
    return Server(child, port, ready, memory_kib(child.pid))


def _uvicorn(app: str, port: int, *extra: str) -> list[str]:
    argv = [sys.executable, "-m", "uvicorn", app, "--factory", "--host", HOST, "--port", str(port)]
    return [*argv, "--log-level", "warning", "--no-access-log", *extra]


def start_upstream(work: Workspace) -> Server:
    port = free_port()
    child = work.spawn("fake upstream", _uvicorn("bench.apps:upstream_app", port), base_env())
    ready = wait_until(child, lambda: http_status(port, "/v1/chat/completions") is not None)
    return Server(child, port, ready, memory_kib(child.pid))


def start_bare(work: Workspace, name: str, ping_interval: float) -> Server:
    """The same uvicorn stack the gateway runs (httptools, websockets-sansio)."""
    port = free_port()
    extra = ["--http", "httptools", "--ws", "websockets-sansio"]
    extra += ["--ws-ping-interval", str(ping_interval or 0)] if ping_interval else []
    child = work.spawn(name, _uvicorn("bench.apps:bare_app", port, *extra), base_env())
    ready = wait_until(child, lambda: http_status(port, "/healthz") == 200, READY_WAIT_S)
    return Server(child, port, ready, memory_kib(child.pid))


def gateway_config(upstream_model: str, upstream_port: int) -> str:
    base_url = f"http://{HOST}:{upstream_port}/v1"
    return (
        f"default_model = {json.dumps(MODEL)}\n\n"
        f"[models.{MODEL}]\n"
        'provider = "openai"\n'
        f"base_url = {json.dumps(base_url)}\n"
        f"api_key_env = {json.dumps(UPSTREAM_KEY_ENV)}\n"
        f"upstream_model = {json.dumps(upstream_model)}\n\n"
        f"[models.{ECHO}]\n"
        'provider = "echo"\n'
    )


def gateway_env(opts: Options, work: Workspace, redis_port: int, ping: float) -> dict[str, str]:
    """One user runs every stream, so the per-user limits are off (0); the model's cap on
    requests in flight is raised above the largest level for the same reason. The echo
    model with no delay publishes a whole answer at once, so the outbox must hold a burst."""
    return base_env(
        JWT_SECRET=_SECRET,
        REDIS_URL=f"redis://{HOST}:{redis_port}/0",
        REDIS_PREFIX="bench:",
        GATEWAY_CONFIG=str(work.tmp / "gateway.toml"),
        GATEWAY_DATA_DIR=str(work.tmp / "data"),
        LOG_LEVEL="warning",
        WS_PING_INTERVAL=str(ping),
        SHUTDOWN_DRAIN_SECONDS="1",
        ECHO_DELAY_MS="0",
        LIMIT_REQUESTS_PER_MINUTE="0",
        LIMIT_CONCURRENT_GENERATIONS="0",
        LIMIT_CONNECTIONS="0",
        MAX_QUEUED_FRAMES=str(max(1024, opts.burst_words + 64)),
        UPSTREAM_MAX_CONCURRENT=str(2 * max(max(opts.streams), max(opts.open_rate) * 10)),
        **{UPSTREAM_KEY_ENV: UPSTREAM_KEY},
        # Tracing's cost is measured by running the bench with OTEL_EXPORTER_OTLP_ENDPOINT set.
        **{k: v for k, v in os.environ.items() if k.startswith("OTEL_")},
    )


_SECRET = secrets.token_urlsafe(48)


def start_gateway(
    opts: Options,
    work: Workspace,
    redis_port: int,
    upstream_port: int,
    name: str,
    ping: float,
    workers: int = 1,
    prefix: Sequence[str] = (),
    ready_wait: float = READY_WAIT_S,
    settings: Mapping[str, str] | None = None,
) -> Gateway:
    """`workers` above 1 starts `serve --workers N`: a serving process whose children, the
    workers, share the port; its RSS at ready is theirs added up. With `opts.source` the
    gateway package is that checkout's (`python -m` puts its working directory first).
    `prefix` runs it under another program and `settings` override the bench's (callgrind's,
    and its slowed clock, in `bench.instructions`)."""
    (work.tmp / "gateway.toml").write_text(gateway_config(opts.upstream_model, upstream_port))
    port = free_port()
    argv = [*prefix, sys.executable, "-m", "gateway", "serve", "--host", HOST, "--port", str(port)]
    argv += ["--workers", str(workers)] if workers > 1 else []
    env = {**gateway_env(opts, work, redis_port, ping), **(settings or {})}
    child = work.spawn(name, argv, env, cwd=opts.source or ROOT)
    ready = wait_until(child, lambda: http_status(port, "/readyz") == 200, ready_wait)
    token = mint_token(Settings(jwt_secret=Secret(_SECRET)), "bench", ttl=3600)
    rss = memory_kib(child.pid) if workers == 1 else tree_rss_kib(child.pid)
    return Gateway(child, port, ready, rss, token)

"""The bench's phases that load servers from outside: closed loop, open loop, ceilings, idle
sockets (the others: bench/workers.py, bench/ingest.py, bench/redis_load.py). Each records
into the run and leaves the processes as it found them."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import redis as sync_redis

from bench.clients import ClientFactory, SseClient, StreamClient, WsClient
from bench.options import PHASES, Options
from bench.paths import GATEWAY_PATHS, Targets, completion_frame, factory, native_body
from bench.procs import (
    HOST,
    BenchError,
    Meter,
    Workspace,
    cpu_seconds,
    memory_kib,
    nofile_of,
    reset_peak_rss,
    stop,
)
from bench.results import Burst, Ceiling, Idle, Level, Run, Start
from bench.rounds import open_loop, run_round
from bench.services import ECHO, Gateway, Server, start_bare, start_gateway
from bench.stats import Round, error_counts, summarize
from bench.wire import http_post

ROUND_PAUSE_S = 0.2
INGEST_TURNS = 5  # recorded turns of the ingest phase, each side once per turn
BARE_HOLD_S = 5.0  # the bare server's sockets need no long hold: nothing of ours runs there
FD_MARGIN = 200
CLOSE_ALL_S = 30.0
# LiteLLM keeps up with about 20 new streams/s; past 100/s its streams would only time out,
# the budget's seconds spent on no figure worth having.
LITELLM_MAX_OPEN_RATE = 100
# New streams/s a path kept up with on the 2-CPU machine of docs/performance.md. Past it,
# arrivals queue and drain at about that rate, each stream for at most its timeout: the
# estimate of an open-loop run, not a limit.
KEEPS_UP = {"direct": 250, "litellm": 20}
GATEWAY_KEEPS_UP = 100
OPEN_SLACK_S = 2.0  # connects, closes and the pause after a path


class Deadline:
    """The run's time budget: work that cannot finish within it is skipped, with a note."""

    def __init__(self, seconds: float) -> None:
        self.end = time.monotonic() + seconds

    def left(self) -> float:
        return self.end - time.monotonic()

    def allows(self, seconds: float) -> bool:
        return self.left() >= seconds


@dataclass(slots=True)
class Context:
    opts: Options
    work: Workspace
    redis: Server
    upstream: Server
    targets: Targets
    deadline: Deadline
    run: Run
    warm: bool = False

    @property
    def gateway(self) -> Gateway:
        return self.targets.gateway

    def meter(self) -> Meter:
        pids = {
            "gateway": self.gateway.child.pid,
            "upstream": self.upstream.child.pid,
            "redis": self.redis.child.pid,
        }
        if self.targets.litellm is not None:
            pids["litellm"] = self.targets.litellm.server.child.pid
        return Meter({**pids, "client": os.getpid()}, frozenset({"litellm"}))


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def redis_calls(port: int) -> Counter[str]:
    """Commands Redis has run so far, by name (scripts' own commands included)."""
    client = sync_redis.Redis(host=HOST, port=port, socket_timeout=5)
    try:
        stats = client.info("commandstats")
    finally:
        client.close()
    return Counter(
        {
            k.removeprefix("cmdstat_"): int(v["calls"])
            for k, v in stats.items()
            if k != "cmdstat_info"
        }
    )


def phase_s(opts: Options, phase: str) -> float:
    """A rough estimate of a phase's seconds, so that earlier phases leave it time."""
    top = max(opts.streams)
    costs = {
        # A start, a warm-up, then rounds at the top level: connects grow with it (a round
        # of 500 took 2.5 s in docs/performance.md's run; this allows 7).
        "workers": 10 + (opts.rounds_at(top) + 1) * (opts.stream_seconds + 4 + top / 250),
        "open": sum(open_path_s(opts, path, rate) for rate, path in open_runs(opts)),
        "ceilings": 2 * opts.burst_rounds + 15,
        # Two sides, a first turn unrecorded, at most about 100 µs a token on both ends.
        "ingest": 5 + 2 * (INGEST_TURNS + 1) * opts.ingest_answers * opts.ingest_tokens * 1e-4,
        "redis": opts.redis_seconds + 5,
        "idle": sum(2 * (k / 300 + 8) + opts.idle_hold + BARE_HOLD_S for k in opts.idle_sockets),
    }
    return costs.get(phase, 0.0)


def open_runs(opts: Options) -> list[tuple[int, str]]:
    """The open loop's (rate, path) pairs in the order it takes them: rate by rate, as given."""
    return [
        (rate, path)
        for rate in opts.open_rate
        for path in opts.paths
        if path != "litellm" or rate <= LITELLM_MAX_OPEN_RATE
    ]


def open_path_s(opts: Options, path: str, rate: int) -> float:
    """Arrivals, the last stream, and the backlog of a path past what it keeps up with."""
    arrivals = opts.open_seconds_at(rate)
    backlog = arrivals * max(0.0, rate / KEEPS_UP.get(path, GATEWAY_KEEPS_UP) - 1)
    return arrivals + opts.stream_seconds + OPEN_SLACK_S + min(opts.round_timeout, backlog)


def later_phases_s(opts: Options, after: str) -> float:
    """The estimates of the chosen phases after `after`."""
    order = PHASES[PHASES.index(after) + 1 :]
    return sum(phase_s(opts, p) for p in order if p in opts.phases)


def fits(ctx: Context, phase: str) -> bool:
    """Whether `phase` and the ones after it fit in the time left; a note when not."""
    if ctx.deadline.allows(phase_s(ctx.opts, phase) + later_phases_s(ctx.opts, phase)):
        return True
    ctx.run.notes.append(f"Time ran out: the {phase} phase was skipped.")
    return False


def live_paths(ctx: Context) -> list[str]:
    return [p for p in ctx.opts.paths if p != "litellm" or ctx.targets.litellm is not None]


async def warm_up(ctx: Context) -> None:
    """One unrecorded round per path, once: first-use costs (imports, pools) stay out."""
    if ctx.warm:
        return
    for path in live_paths(ctx):
        make, port = factory(path, ctx.targets)
        await run_round(
            make, port, min(4, max(ctx.opts.streams)), ctx.opts.round_timeout, ctx.meter()
        )
    ctx.warm = True
    ctx.run.gateway_warm_rss_kib = memory_kib(ctx.gateway.child.pid)


async def closed_loop(ctx: Context) -> None:
    opts, meter = ctx.opts, ctx.meter()
    await warm_up(ctx)
    paths = live_paths(ctx)
    reserve = later_phases_s(opts, "closed")
    for count in opts.streams:
        say(f"closed loop: {count} concurrent streams ...")
        level = await _level(ctx, paths, count, reserve, meter)
        if level is None:
            break
        ctx.run.levels.append(level)
    peaks = [level.gateway_peak_rss_kib for level in ctx.run.levels]
    ctx.run.gateway_peak_rss_kib = max([ctx.run.gateway_warm_rss_kib, *peaks])


async def _level(
    ctx: Context, paths: list[str], count: int, reserve: float, meter: Meter
) -> Level | None:
    opts = ctx.opts
    rounds: dict[str, list[Round]] = {p: [] for p in paths}
    redis: dict[str, Counter[str]] = {p: Counter() for p in paths if p in GATEWAY_PATHS}
    broken: set[str] = set()
    reset_peak_rss(ctx.gateway.child.pid)
    for _ in range(opts.rounds_at(count)):
        if not ctx.deadline.allows(reserve + 2 * opts.stream_seconds + 3):
            ctx.run.notes.append(f"Time ran out at {count} streams: later rounds were skipped.")
            break
        limit = min(opts.round_timeout, max(1.0, ctx.deadline.left() - reserve))
        for path in [p for p in paths if p not in broken]:
            make, port = factory(path, ctx.targets)
            before = redis_calls(ctx.redis.port) if path in redis else None
            try:
                rounds[path].append(await run_round(make, port, count, limit, meter))
            except BenchError as exc:
                broken.add(path)
                ctx.run.notes.append(f"{count} streams, {path}: stopped after {exc}")
            if before is not None:
                redis[path].update(redis_calls(ctx.redis.port) - before)
            await asyncio.sleep(ROUND_PAUSE_S)
    measured = {p: summarize(r, opts.tokens) for p, r in rounds.items() if r}
    if not measured:
        return None
    pid = ctx.gateway.child.pid
    commands = {p: dict(c) for p, c in redis.items()}
    return Level(count, measured, commands, memory_kib(pid), memory_kib(pid, "VmHWM"))


async def open_loop_phase(ctx: Context) -> None:
    opts, meter = ctx.opts, ctx.meter()
    await warm_up(ctx)
    limit = opts.stream_seconds + opts.round_timeout
    live = live_paths(ctx)
    reserve = later_phases_s(opts, "open")
    for rate, path in [(r, p) for r, p in open_runs(opts) if p in live]:
        if not ctx.deadline.allows(open_path_s(opts, path, rate) + reserve):
            ctx.run.notes.append(f"Time ran out: the open loop skipped {path} at {rate}/s.")
            continue
        seconds = opts.open_seconds_at(rate)
        say(f"open loop: {path}, {rate} new streams/s for {seconds:g} s ...")
        make, port = factory(path, ctx.targets)
        done = await open_loop(make, port, rate, seconds, limit, meter)
        ctx.run.open_loop.setdefault(rate, {})[path] = summarize([done], opts.tokens)
        await asyncio.sleep(ROUND_PAUSE_S)


async def ceilings(ctx: Context) -> None:
    opts = ctx.opts
    say("ceilings: bare uvicorn + Starlette against the gateway's send path ...")
    bare = start_bare(ctx.work, "bare server", 0)
    ctx.run.starts.append(Start("bare", bare.ready_s, bare.ready_rss_kib))
    gateway = ctx.gateway
    message = " ".join(["w"] * opts.burst_words)
    frame = completion_frame(ECHO, message)
    ws = await _bursts(
        ctx,
        (lambda: WsClient(bare.port, None, frame), bare),
        (lambda: WsClient(gateway.port, gateway.token, frame), gateway),
    )
    bare_request = http_post(bare.port, "/sse", native_body(ECHO, message), None)
    gateway_request = http_post(
        gateway.port, "/completion", native_body(ECHO, message), gateway.token
    )
    sse = await _bursts(
        ctx,
        (lambda: SseClient(bare_request, native=True), bare),
        (lambda: SseClient(gateway_request, native=True), gateway),
    )
    stop(bare.child)
    ctx.run.ceilings += [Ceiling("WebSocket", *ws), Ceiling("SSE", *sse)]


Side = tuple[ClientFactory, Server]


async def _bursts(ctx: Context, bare: Side, gateway: Side) -> tuple[Burst, Burst]:
    """Alternate bare and gateway bursts, so a noisy moment falls on both."""
    taken: dict[int, list[Round]] = {0: [], 1: []}
    meters = [Meter({"server": side[1].child.pid}) for side in (bare, gateway)]
    for _ in range(ctx.opts.burst_rounds + 1):
        for i, (make, server) in enumerate((bare, gateway)):
            taken[i].append(
                await run_round(make, server.port, 1, ctx.opts.round_timeout, meters[i])
            )
    # The first burst of each side pays first-use costs (imports, the echo model's set-up).
    return _burst(taken[0][1:]), _burst(taken[1][1:])


def _burst(rounds: list[Round]) -> Burst:
    frames, span, cpu = 0, 0.0, 0.0
    for r in rounds:
        for s in r.streams:
            if len(s.chunks) > 1:
                frames += len(s.chunks) - 1  # frames after the first, over first-to-last
                span += (s.chunks[-1][0] - s.chunks[0][0]) / 1e9
        cpu += r.cpu_s.get("server", 0.0)
    errors = error_counts(s.error for r in rounds for s in r.streams)
    return Burst(frames, span, cpu, errors)


async def idle_phase(ctx: Context) -> None:
    opts = ctx.opts
    for k in opts.idle_sockets:
        need = 2 * (k / 300 + 8) + opts.idle_hold + BARE_HOLD_S
        if not ctx.deadline.allows(need):
            ctx.run.notes.append(f"Time ran out: {k:,} idle sockets were not measured.")
            continue
        say(f"idle sockets: {k:,} on the gateway, held {opts.idle_hold:g} s ...")
        gateway = start_gateway(
            opts, ctx.work, ctx.redis.port, ctx.upstream.port, f"idle gateway {k}", opts.idle_ping
        )
        ctx.run.starts.append(Start("gateway", gateway.ready_s, gateway.ready_rss_kib))
        make = _idle_factory(gateway.port, gateway.token)
        ctx.run.idle.append(await hold_sockets("gateway", k, make, gateway, opts))
        stop(gateway.child)
        say(f"idle sockets: {k:,} on the bare server ...")
        bare = start_bare(ctx.work, f"idle bare {k}", opts.idle_ping)
        ctx.run.starts.append(Start("bare", bare.ready_s, bare.ready_rss_kib))
        hold = min(opts.idle_hold, BARE_HOLD_S)
        ctx.run.idle.append(
            await hold_sockets("bare", k, _idle_factory(bare.port, None), bare, opts, hold)
        )
        stop(bare.child)


def _idle_factory(port: int, token: str | None) -> Callable[[], StreamClient]:
    return lambda: WsClient(port, token, b"")


async def hold_sockets(
    name: str,
    count: int,
    make: ClientFactory,
    server: Server,
    opts: Options,
    hold: float | None = None,
) -> Idle:
    pid, hold = server.child.pid, opts.idle_hold if hold is None else hold
    nofile = nofile_of(pid)
    if nofile is not None and count + FD_MARGIN > nofile:
        return Idle(
            name, count, 0, 0.0, 0, 0, 0.0, 0.0, 0, 0, nofile, (f"open-files limit {nofile}",)
        )
    clients: list[StreamClient] = []
    rss_before = memory_kib(pid)
    connect_s = await _connect_all(clients, make, server.port, count, opts.connect_concurrency)
    live = [c for c in clients if c.ready.done() and c.error is None]
    cpu_before = cpu_seconds(pid)
    await asyncio.sleep(hold)  # the hold is what is measured: sockets sit idle, pings flow
    cpu_s, rss_after = cpu_seconds(pid) - cpu_before, memory_kib(pid)
    drops, pings = sum(c.dropped for c in live), sum(getattr(c, "pings", 0) for c in live)
    errors = error_counts(c.error or "not ready in time" for c in clients if c not in live)
    await _close_all(clients)
    return Idle(
        name,
        count,
        len(live),
        connect_s,
        rss_before,
        rss_after,
        hold,
        cpu_s,
        drops,
        pings,
        nofile,
        errors,
    )


async def _connect_all(
    clients: list[StreamClient], make: ClientFactory, port: int, count: int, concurrency: int
) -> float:
    """Handshakes with at most `concurrency` in flight; the seconds until the last `ready`."""
    loop = asyncio.get_running_loop()
    slots = asyncio.Semaphore(concurrency)
    started = time.monotonic()

    async def one() -> None:
        async with slots:
            _, client = await loop.create_connection(make, HOST, port)
            clients.append(client)
            await client.ready

    limit = 30 + count / 100
    try:
        results = await asyncio.wait_for(
            asyncio.gather(*(one() for _ in range(count)), return_exceptions=True), limit
        )
    except TimeoutError:
        say(f"not every connection was ready within {limit:.0f} s")
        return time.monotonic() - started
    for failure in [r for r in results if isinstance(r, BaseException)][:1]:
        say(f"a connection failed: {failure!r}")
    return time.monotonic() - started


async def _close_all(clients: list[StreamClient]) -> None:
    try:
        await asyncio.wait_for(asyncio.gather(*(c.close() for c in clients)), CLOSE_ALL_S)
    except TimeoutError:
        for client in clients:
            if client.transport is not None:
                client.transport.abort()

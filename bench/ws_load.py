"""The gateway against baselines taken in the same run; see docs/performance.md.

    .venv/bin/python -m bench.ws_load --preset full     # everything, at most 15 minutes
    .venv/bin/python -m bench.ws_load --preset quick    # a few minutes

Starts a private redis-server, the fake upstream, the gateway (and, as asked, LiteLLM's proxy
and a bare uvicorn app), each as its own process on 127.0.0.1, and stops every one of them
by pid on the way out: errors, Ctrl-C, SIGTERM and the run's own time limit included.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shlex
import signal
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

from bench.ingest import ingest_phase
from bench.litellm_proxy import start_litellm
from bench.options import ROOT, Options, parse_options
from bench.paths import Targets
from bench.phases import Context, Deadline, ceilings, closed_loop, idle_phase, open_loop_phase, say
from bench.procs import BenchError, Child, Workspace, nofile_of, raise_nofile
from bench.profile import profile_gateway
from bench.redis_load import redis_phase
from bench.report import machine_info, render_run, write_outputs
from bench.results import Run, Start
from bench.services import start_gateway, start_redis, start_upstream
from bench.workers import workers_phase
from gateway.store.embedded import find_redis_server

# Beyond the run's own budget: the time a last round, the stops and the report may take.
HARD_LIMIT_MARGIN_S = 120
EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception)\b.*")


def command_line(argv: Sequence[str]) -> str:
    python = Path(sys.executable)
    shown = os.path.relpath(python, ROOT) if python.is_relative_to(ROOT) else str(python)
    return shlex.join([shown, "-m", "bench.ws_load", *argv])


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


Phase = Callable[[Context], Awaitable[None]]
# In the order of bench.options.PHASES, which the time estimates follow.
PHASES: dict[str, Phase] = {
    "closed": closed_loop,
    "workers": workers_phase,
    "open": open_loop_phase,
    "ceilings": ceilings,
    "ingest": ingest_phase,
    "redis": redis_phase,
    "idle": idle_phase,
}


async def measure(ctx: Context) -> None:
    for name, phase in PHASES.items():
        if name not in ctx.opts.phases:
            continue
        try:
            await phase(ctx)
        except BenchError as exc:
            ctx.run.notes.append(f"The {name} phase stopped: {exc}")
        if name == "closed" and ctx.opts.profile:
            await profile_gateway(ctx)


def _runner() -> Callable[[Coroutine[Any, Any, None]], None]:
    try:
        import uvloop
    except ImportError:
        return asyncio.run
    return uvloop.run  # the client's own cost stays low, on every path alike


def bench(opts: Options, argv: Sequence[str]) -> Run:
    started = time.monotonic()
    soft, _ = raise_nofile()
    run = Run(
        command=command_line(argv),
        date=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        options=opts.as_dict(),
        machine=machine_info(find_redis_server(), ROOT),
    )
    logs = opts.results.parent / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="ws-load-") as tmp, contextlib.ExitStack() as stack:
        work = Workspace(Path(tmp), logs, stack)
        redis, upstream = start_redis(work), start_upstream(work)
        gateway = start_gateway(opts, work, redis.port, upstream.port, "gateway", 0)
        run.starts.append(Start("gateway", gateway.ready_s, gateway.ready_rss_kib))
        run.machine["nofile"] = f"bench {soft}, gateway {nofile_of(gateway.child.pid)}"
        litellm = None
        if "litellm" in opts.paths and {"closed", "open"} & set(opts.phases):
            say("starting LiteLLM's proxy ...")
            try:
                litellm = start_litellm(opts, work, upstream.port)
                run.litellm = litellm.version
            except BenchError as exc:
                run.notes.append(f"LiteLLM was not measured: {exc}")
        targets = Targets(opts.upstream_model, upstream.port, gateway, litellm)
        deadline = Deadline(opts.max_seconds - (time.monotonic() - started))
        ctx = Context(opts, work, redis, upstream, targets, deadline, run)
        _runner()(measure(ctx))
        if note := gateway_log_note(gateway.child):
            run.notes.append(note)
    run.elapsed_s = time.monotonic() - started
    return run


def _exit_on_signal(signum: int, frame: FrameType | None) -> None:
    # SystemExit unwinds through every `finally`, which stops the child processes.
    sys.exit(128 + signum)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    opts = parse_options(args)
    signal.signal(signal.SIGTERM, _exit_on_signal)
    signal.signal(signal.SIGALRM, _exit_on_signal)
    signal.alarm(int(opts.max_seconds) + HARD_LIMIT_MARGIN_S)
    try:
        run = bench(opts, args)
    except BenchError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("bench: interrupted; every process it started has been stopped", file=sys.stderr)
        return 130
    finally:
        signal.alarm(0)
    print(render_run(run))
    write_outputs(run, opts.results, opts.docs)
    written = [opts.results, *([opts.docs] if opts.docs else [])]
    print("wrote " + ", ".join(map(str, written)), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

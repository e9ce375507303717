"""The bench's report: the Markdown of docs/performance.md and the raw JSON."""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict
from importlib import metadata
from pathlib import Path
from typing import Any

from bench.goals import goals
from bench.options import arrival_seconds
from bench.paths import LABELS, SERVER_OF
from bench.results import Idle, Ingest, Level, RedisLoad, Run, Workers
from bench.stats import Summary, added, percentile

PACKAGES = ("starlette", "uvicorn", "websockets", "openai", "redis", "uvloop", "httptools")
OUR_PROCESSES = ("gateway", "upstream", "redis", "client", "litellm")
# Everything from this line to the end of the existing document is written by hand and kept
# when a run rewrites the rest.
ANALYSIS_MARKER = "<!-- analysis: kept across runs -->"


def machine_info(redis_server: str, repository: Path) -> dict[str, str]:
    versions = ", ".join(f"{name} {_version(name)}" for name in PACKAGES)
    return {
        "code": _code_version(repository),
        "load": f"{os.getloadavg()[0]:.2f}",
        "cpus": str(len(os.sched_getaffinity(0))),
        "cpu_model": _cpu_model(),
        "kernel": f"{platform.system()} {platform.release()}",
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "packages": versions,
        "redis_server": _redis_version(redis_server),
    }


def _code_version(repository: Path) -> str:
    """The commit the gateway was measured at, and whether gateway/ had uncommitted changes."""
    try:
        head = _git(repository, "rev-parse", "--short", "HEAD").strip()
        dirty = _git(repository, "status", "--porcelain", "--", "gateway").strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{head} with uncommitted changes in gateway/" if dirty else head


def _git(repository: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", *args], cwd=repository, capture_output=True, text=True, timeout=10, check=True
    )
    return done.stdout


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "absent"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _redis_version(binary: str) -> str:
    try:
        out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    words = [w for w in out.stdout.split() if w.startswith("v=")]
    return words[0][2:] if words else out.stdout.strip()


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def _plus(value: float | None) -> str:
    return "" if value is None else f"{value:+.2f}"


def _us(value: float | None) -> str:
    return "n/a" if value is None else f"{value:,.0f}"


def _table(head: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def goals_table(run: Run) -> str:
    rows = [(g.name, g.target, g.figure, f"**{g.verdict}**") for g in goals(run)]
    return _table(("goal", "target", "this run", "verdict"), rows)


def latency_table(levels: Sequence[Level]) -> str:
    rows = []
    for level in levels:
        direct = level.paths.get("direct")
        for path, s in level.paths.items():
            base = None if direct is None or path == "direct" else direct
            rows.append(
                (
                    level.concurrency,
                    LABELS[path],
                    _ms(s.ttft(50)),
                    _ms(s.ttft(99)),
                    _ms(s.lag(50)),
                    _ms(s.lag(99)),
                    _plus(added(s.ttft(50), base.ttft(50))) if base else "",
                    _plus(added(s.lag(50), base.lag(50))) if base else "",
                    _plus(added(s.lag(99), base.lag(99))) if base else "",
                )
            )
    head = (
        "streams",
        "path",
        "TTFT p50",
        "TTFT p99",
        "lag p50",
        "lag p99",
        "added TTFT p50",
        "added lag p50",
        "added lag p99",
    )
    return _table(head, rows)


def cost_table(levels: Sequence[Level]) -> str:
    rows = []
    for level in levels:
        for path, s in level.paths.items():
            server = SERVER_OF[path]
            redis = level.redis_commands.get(path, {})
            per_chunk = sum(redis.values()) / s.chunks if redis and s.chunks else None
            rows.append(
                (
                    level.concurrency,
                    LABELS[path],
                    f"{s.complete}/{s.streams}",
                    f"{s.lost}/{s.duplicated}",
                    f"{s.chunks_per_s:,.0f}",
                    server,
                    _us(s.cpu_per_chunk_us(server)),
                    f"{100 * s.cpu_share(server):.0f}%",
                    "" if per_chunk is None else f"{per_chunk:.2f}",
                )
            )
    head = (
        "streams",
        "path",
        "complete",
        "lost/dup",
        "chunks/s",
        "serving process",
        "its CPU µs per chunk",
        "its CPU, % of a core",
        "Redis commands per chunk",
    )
    return _table(head, rows)


def open_loop_table(run: Run) -> str:
    """Rate by rate, direct first: the baseline each other path's "added" is taken against."""
    rows = []
    for rate, paths in sorted(run.open_loop.items()):
        direct = paths.get("direct")
        for path in sorted(paths, key=lambda p: p != "direct"):
            s, base = paths[path], None if path == "direct" else direct
            rows.append(
                (
                    f"{rate}/s",
                    LABELS[path],
                    f"{s.complete}/{s.streams}",
                    f"{s.lost}/{s.duplicated}",
                    _ms(s.ttft(50)),
                    _ms(s.ttft(99)),
                    _ms(s.lag(50)),
                    _ms(s.lag(99)),
                    _plus(added(s.ttft(99), base.ttft(99))) if base else "",
                    _plus(added(s.lag(99), base.lag(99))) if base else "",
                    _us(s.cpu_per_chunk_us(SERVER_OF[path])),
                    "; ".join(s.errors),
                )
            )
    head = (
        "rate",
        "path",
        "complete",
        "lost/dup",
        "TTFT p50",
        "TTFT p99",
        "lag p50",
        "lag p99",
        "added TTFT p99",
        "added lag p99",
        "serving CPU µs/chunk",
        "errors",
    )
    return _table(head, rows)


def ceiling_table(run: Run) -> str:
    rows = [
        (
            c.transport,
            f"{c.bare.frames_per_s:,.0f}",
            f"{c.gateway.frames_per_s:,.0f}",
            "n/a" if c.share is None else f"{c.share:.0%}",
            _us(c.bare.cpu_per_frame_us),
            _us(c.gateway.cpu_per_frame_us),
            "; ".join(c.bare.errors + c.gateway.errors),
        )
        for c in run.ceilings
    ]
    head = (
        "transport",
        "bare frames/s",
        "gateway frames/s",
        "gateway / bare",
        "bare CPU µs/frame",
        "gateway CPU µs/frame",
        "errors",
    )
    return _table(head, rows)


def idle_table(idle: Sequence[Idle]) -> str:
    rows = [
        (
            i.server,
            f"{i.sockets:,}",
            f"{i.connected:,}",
            f"{i.connects_per_s:,.0f}",
            "n/a" if i.rss_per_socket_bytes is None else f"{i.rss_per_socket_bytes / 1000:.1f}",
            f"{i.rss_after_kib / 1024:.1f}",
            f"{i.hold_s:g}",
            f"{100 * i.cpu_share:.1f}%",
            f"{i.pings:,}",
            i.drops,
            i.nofile or "n/a",
            "; ".join(i.errors),
        )
        for i in idle
    ]
    head = (
        "server",
        "sockets",
        "connected",
        "connects/s",
        "RSS per socket, kB",
        "RSS MiB held",
        "hold s",
        "CPU while idle, % of a core",
        "pings answered",
        "drops",
        "open-files limit",
        "errors",
    )
    return _table(head, rows)


def workers_table(workers: Workers, one: Level | None) -> str:
    single = one.paths.get("ws") if one else None
    rows = [
        (
            f"{n} ({label})",
            f"{s.complete}/{s.streams}",
            f"{s.lost}/{s.duplicated}",
            f"{s.chunks_per_s:,.0f}",
            _ms(s.ttft(99)),
            _ms(s.lag(99)),
            _us(s.cpu_per_chunk_us("gateway")),
            f"{rss / 1024:.1f}" if rss else "n/a",
        )
        for n, label, s, rss in (
            (1, "closed loop", single, one.gateway_peak_rss_kib if one else 0),
            (workers.workers, "this phase", workers.summary, workers.peak_rss_kib),
        )
        if s is not None
    ]
    head = (
        "workers",
        "complete",
        "lost/dup",
        "chunks/s",
        "TTFT p99",
        "lag p99",
        "CPU µs per chunk, all workers",
        "peak RSS MiB, all workers",
    )
    intro = f"{workers.streams} WebSocket streams at once, {workers.summary.streams} in all."
    return intro + "\n\n" + _table(head, rows)


def ingest_table(ingest: Ingest) -> str:
    head = ("reader", "CPU µs per upstream chunk (median)", "per turn")
    rows = [
        (label, _us1(us), ", ".join(_us1(1e6 * c / (ingest.answers * ingest.tokens)) for c in cpu))
        for label, us, cpu in (
            ("gateway's upstream client", ingest.gateway_us, ingest.gateway_cpu_s),
            ("raw SSE line parse", ingest.raw_us, ingest.raw_cpu_s),
        )
    ]
    intro = (
        f"{ingest.answers} answers of {ingest.tokens} tokens per turn and reader, "
        f"{len(ingest.gateway_cpu_s)} turns; the bench's own CPU (process time)."
    )
    return intro + "\n\n" + _table(head, rows)


def redis_table(load: RedisLoad) -> str:
    head = (
        "generations",
        "event every",
        "flush window",
        "events",
        "round trips",
        "events per round trip",
        "round trips per finish",
        "CPU µs per event",
        "CPU, % of a core",
    )
    low, high = min(load.finish_round_trips, default=0), max(load.finish_round_trips, default=0)
    row = (
        load.generations,
        f"{load.interval_ms:g} ms",
        f"{load.window_ms:g} ms",
        f"{load.events:,}",
        f"{load.round_trips:,}",
        f"{load.events / load.round_trips:.1f}" if load.round_trips else "n/a",
        str(low) if low == high else f"{low} to {high}",
        _us1(load.cpu_per_event_us),
        f"{100 * load.cpu_s / load.wall_s:.0f}%" if load.wall_s else "n/a",
    )
    return _table(head, [row])


def _us1(value: float | None) -> str:
    return "n/a" if value is None else f"{value:,.1f}"


def footprint_table(run: Run) -> str:
    rows = []
    for server in ("gateway", "bare"):
        starts = [s for s in run.starts if s.server == server]
        if not starts:
            continue
        ready = statistics.median(s.ready_s for s in starts)
        rss = statistics.median(s.rss_kib for s in starts)
        rows.append((server, len(starts), f"{ready:.2f}", f"{rss / 1024:.1f}"))
    head = ("server", "starts", "start to ready, s (median)", "RSS at ready, MiB (median)")
    return _table(head, rows)


def render_run(run: Run) -> str:
    o, m = run.options, run.machine
    facts = [
        f"- Command: `{run.command}` (preset {o['preset']}, {run.elapsed_s:.0f} s)",
        f"- Date: {run.date}; code: {m['code']}",
        f"- Machine: {m['cpus']} CPUs ({m['cpu_model']}), {m['kernel']}, "
        f"load average {m['load']} at the start; open-files limit {m.get('nofile', 'n/a')}",
        f"- Software: {m['python']}, redis-server {m['redis_server']}; {m['packages']}; "
        f"LiteLLM {run.litellm or 'not run'}",
        f"- Streams: {o['tokens']} tokens {o['interval_ms']} ms apart; closed loop "
        f"{o['rounds']} rounds per level and path (at least {o['min_streams']} streams), levels "
        f"{', '.join(map(str, o['streams']))}; open loop {_arrivals(o)}",
    ]
    parts = ["\n".join(facts), "### Goals", goals_table(run)]
    if run.levels:
        parts += ["### Closed loop: latency (ms)", latency_table(run.levels)]
        parts += ["### Closed loop: throughput and cost", cost_table(run.levels)]
        parts.append(_rss_line(run))
    if run.workers:
        one = next((lv for lv in run.levels if lv.concurrency == run.workers.streams), None)
        parts += ["### Two workers", workers_table(run.workers, one)]
    if run.open_loop:
        parts += ["### Open loop", open_loop_table(run)]
    if run.ceilings:
        parts += ["### Send ceilings", ceiling_table(run)]
    if run.ingest:
        parts += ["### Upstream ingest (in the bench's process)", ingest_table(run.ingest)]
    if run.redis_load:
        parts += ["### Redis log writer (in the bench's process)", redis_table(run.redis_load)]
    if run.idle:
        parts += ["### Idle sockets", idle_table(run.idle)]
    if run.starts:
        parts += ["### Footprint (external Redis)", footprint_table(run)]
    if run.profile:
        parts += ["### Gateway profile", _profile(run)]
    if errors := _error_lines(run.levels):
        parts.append("Streams that did not complete:\n\n" + "\n".join(errors))
    if run.notes:
        parts.append("Notes:\n\n" + "\n".join(f"- {note}" for note in run.notes))
    return "\n\n".join(parts) + "\n"


def _arrivals(options: Mapping[str, Any]) -> str:
    seconds = [
        (rate, arrival_seconds(rate, options["open_seconds"], options["min_streams"]))
        for rate in options["open_rate"]
    ]
    return ", ".join(f"{rate} new streams/s for {s:g} s" for rate, s in seconds)


def _rss_line(run: Run) -> str:
    others = []
    cpus = int(run.machine.get("cpus", "1"))
    for level in run.levels:
        shares = [
            s.cpu_share("machine") - s.cpu_share(*OUR_PROCESSES) for s in level.paths.values()
        ]
        others.append(f"{100 * max(0.0, max(shares)) / cpus:.0f}%")
    peaks = ", ".join(
        f"{level.gateway_peak_rss_kib / 1024:.1f} at {level.concurrency}" for level in run.levels
    )
    return (
        f"Gateway RSS {run.gateway_warm_rss_kib / 1024:.1f} MiB after warm-up; peak during each "
        f"level (VmHWM, reset before it), MiB: {peaks}. Processes outside the bench used "
        f"up to {', '.join(others)} of the machine's CPU during the levels' rounds."
    )


def _profile(run: Run) -> str:
    lines = "\n".join(run.profile_top)
    return f"`{run.profile}`, the functions the gateway was seen in most (own time):\n\n{lines}"


def _error_lines(levels: Sequence[Level]) -> list[str]:
    return [
        f"- {level.concurrency} streams, {path}: {', '.join(s.errors)}"
        for level in levels
        for path, s in level.paths.items()
        if s.errors
    ]


INTRO = """\
# Performance

`bench/ws_load.py` measures what the gateway adds to a streamed answer and how far it is from
the stack it runs on. It starts a private redis-server, the fake OpenAI-compatible upstream of
`tests/support/upstream.py` and the gateway (`python -m gateway serve`), each as its own process on
127.0.0.1, and, for the comparisons, LiteLLM's proxy and a bare uvicorn + Starlette app. Every
figure is judged against a baseline measured in the same run. The clients are lean asyncio
protocols that only timestamp bytes as they arrive and parse JSON after a round, so they cost
every path the same. Every wait is bounded; every process is stopped by its pid (process
group) on the way out, on errors, Ctrl-C and SIGTERM too.

```sh
.venv/bin/python -m bench.ws_load --preset full    # everything, at most 15 minutes
.venv/bin/python -m bench.ws_load --preset quick   # about 4 minutes, no LiteLLM
.venv/bin/python -m bench.ws_load --preset smoke   # about a minute, a check of the harness
```

Any option overrides its preset (`--help` lists them): `--litellm` adds LiteLLM to a smaller
preset, `--phases closed,idle` picks phases, `--idle-hold 60` holds idle sockets longer,
`--source DIR` runs the gateway of another checkout on the same harness (a before and after).
The first `--litellm` run installs `litellm[proxy]` from PyPI into `bench/.venv-litellm` (its own
virtual environment); if that or its start fails, the report says so and the run goes on. It
prints the report, writes every sample to `bench/results/latest.json` and the processes' logs
to `bench/results/logs/`, and rewrites this file but for its end: everything from the line
`<!-- analysis: kept across runs -->` on, written by hand, is kept (`--no-docs` leaves the
whole file alone).

What each phase measures:

- **Closed loop**: at each level N streams start at one instant and are read to the end, round
  after round, on every path: the upstream read directly (the baseline), the gateway's
  WebSocket (`/ws?activity=0`: one user runs every stream, and with activity on each of N
  sockets would also get the other streams' activity, N² frames a round), its native SSE
  (`POST /completion`, `stream: true`), its OpenAI-compatible SSE
  (`/v1/chat/completions`) and LiteLLM's `/v1/chat/completions`. A level has `--rounds`
  rounds, or more where it would have fewer than `--min-streams` streams (one stream gives
  one time to first token). The upstream sends tokens at a fixed interval, each stamped with
  its send time. **TTFT** runs from the request (the `completion` frame on an open,
  authenticated socket, or the POST on an open connection) to the first content chunk;
  **lag** is receive time minus the stamp, for every chunk; **added** is a path's percentile
  minus the direct one at the same level. The gateway sends tokens it read from the
  upstream together as one chunk, so every path is counted in upstream tokens: a chunk of
  several gives each its own lag, and **chunks/s** and **CPU per chunk** are per token.
  **Lost/dup** counts tokens missing or repeated, by their stamps. **CPU µs per chunk** is
  the serving process's user and system time over its rounds (connect to close,
  `/proc/<pid>/stat`, LiteLLM with its children) divided by the tokens delivered. **Redis
  commands per chunk** counts `INFO commandstats` over the path's rounds. The gateway's
  **peak RSS** per level is its VmHWM, reset before the level (`/proc/<pid>/clear_refs`).
- **Workers**: `python -m gateway serve --workers 2` on the same Redis and upstream, the
  closed loop's top level over WebSocket (after one unrecorded warm-up round), set beside the
  one-worker gateway's figure at that level in the same run. Its CPU and peak RSS add up the
  serving process and its workers.
- **Open loop**: new streams start at a fixed rate whatever the earlier ones are doing, as
  users arrive, each on a new connection, at every rate of `--open-rate` in turn. A stream
  lasts about a second (50 tokens 20 ms apart), so R new streams/s hold about R streams at
  once: `full`'s 1, 50, 100 and 500/s stand beside the closed loop's levels. Streams start for
  `--open-seconds` at 100/s, the rate the capacity goals are judged at, and for at most 5 s
  at the other rates, but long enough for `--min-streams` streams (10 s at 1/s). Each stream
  has its length plus `--round-timeout` from its connect to its end. Per rate and path: TTFT
  and lag, **added** p99 over direct at the same rate, errors, lost/dup and CPU per chunk,
  the gateway's CPU all-in (everything its process did during the path's arrivals and their
  streams). LiteLLM runs only at the rates up to 100/s: it keeps up with about 20 new
  streams/s, and at 500/s its streams would only time out.
- **Send ceilings**: one socket, frames as fast as they go. The bare app sends a frame built
  once, in the gateway's chunk shape, per word of the request; the gateway streams the same
  number of words from its `echo` model with `ECHO_DELAY_MS=0`, through its whole send path
  (generation, outbox, writer, Redis log). Frames/s runs from the first frame to the last at
  the client. The burst stays below `MAX_QUEUED_FRAMES`: a source that never waits publishes
  a whole answer at once, and the outbox would rightly drop the client.
- **Ingest**, in the bench's own process: the fake upstream's answers (`--ingest-answers` of
  `--ingest-tokens` tokens, no pacing) read one at a time through the gateway's real upstream
  client (the model `ModelRegistry` builds from the same configuration, iterated with
  `.stream()`) and, by turns, by a raw asyncio protocol that sends the same POST and, per
  piece received, splits lines and `json.loads` each `data:` line. CPU is the process time of
  the bench over each side's answers, per upstream token (however the gateway merged them),
  the median of five turns after an unrecorded first one.
- **Redis**, in the bench's own process, on the bench's redis-server: the gateway's
  `LogWriter` over a `GenerationLog` (as `gateway/services.py` opens them, LOG_FLUSH_MS's
  default window), 50 generations each adding an event every 20 ms for `--redis-seconds`
  (one task adds what is due every 5 ms), then ending one by one with their last chunk and
  the answer's storing commands in the same write. **CPU per event** is all of the process's
  CPU over that, pacing included, per event written; **round trips** are the writer's own
  count, in all and per finish.
- **Idle sockets**: K WebSockets opened (at most `--connect-concurrency` handshakes in flight),
  authenticated (`ready` received) and held with the server's pings answered, on a fresh
  gateway and then on a fresh bare app. **Connects/s** is K over the time to the last `ready`;
  **RSS per socket** is the RSS at the end of the hold minus the RSS before, over K; **drops**
  are sockets closed by the server while held, plus those never ready. The bench raises its
  open-files limit to the hard limit and its children inherit it; the table shows the
  server's own limit.
- **Footprint**: from spawn to the first 200 of `/readyz` (gateway, Redis external) or
  `/healthz` (bare app), and the RSS then, before any traffic.

The goals (`bench/goals.py`) are judged in every run against figures of the same run, one
gateway worker unless a goal says otherwise; a goal the run has no figures for (a phase not
run, LiteLLM absent, a smaller preset) is "not measured", and says why. The presets: `full`
runs every phase; `quick` and `smoke` all but the workers, `quick`'s open loop at 50 and
100/s, `smoke`'s at 20/s.

Compare within one run only: the upstream, the gateway, Redis, LiteLLM and the client share
this machine's CPUs, so at high concurrency the figures include their contention.

## Latest run

"""


def render_document(run: Run, kept: str = "") -> str:
    """The generated document, then `kept`: the hand-written part of the one it replaces."""
    return INTRO + render_run(run) + (f"\n{kept}" if kept else "")


def kept_analysis(existing: str) -> str:
    """From the marker line to the end, or nothing when the document has no marker."""
    for at, line in _lines_at(existing):
        if line.strip() == ANALYSIS_MARKER:
            return existing[at:]
    return ""


def _lines_at(text: str) -> Iterable[tuple[int, str]]:
    at = 0
    for line in text.splitlines(keepends=True):
        yield at, line
        at += len(line)


def run_json(run: Run) -> dict[str, Any]:
    return {
        "command": run.command,
        "date": run.date,
        "elapsed_s": round(run.elapsed_s, 1),
        "options": dict(run.options),
        "machine": dict(run.machine),
        "litellm": run.litellm,
        "goals": [asdict(g) | {"verdict": g.verdict} for g in goals(run)],
        "gateway_warm_rss_kib": run.gateway_warm_rss_kib,
        "gateway_peak_rss_kib": run.gateway_peak_rss_kib,
        "levels": [_level_json(level) for level in run.levels],
        "open_loop": {
            str(rate): {path: _summary_json(s) for path, s in paths.items()}
            for rate, paths in run.open_loop.items()
        },
        "ceilings": [
            asdict(c)
            | {
                "share": c.share,
                "bare_fps": c.bare.frames_per_s,
                "gateway_fps": c.gateway.frames_per_s,
            }
            for c in run.ceilings
        ],
        "idle": [
            asdict(i)
            | {"connects_per_s": i.connects_per_s, "rss_per_socket_bytes": i.rss_per_socket_bytes}
            for i in run.idle
        ],
        "starts": [asdict(s) for s in run.starts],
        "workers": _workers_json(run.workers),
        "ingest": None
        if run.ingest is None
        else asdict(run.ingest)
        | {"gateway_us": run.ingest.gateway_us, "raw_us": run.ingest.raw_us},
        "redis_load": None
        if run.redis_load is None
        else asdict(run.redis_load) | {"cpu_per_event_us": run.redis_load.cpu_per_event_us},
        "profile": run.profile,
        "notes": run.notes,
    }


def _workers_json(workers: Workers | None) -> dict[str, Any] | None:
    if workers is None:
        return None
    return {
        "workers": workers.workers,
        "streams": workers.streams,
        "peak_rss_kib": workers.peak_rss_kib,
        "ready_s": workers.ready_s,
        "ws": _summary_json(workers.summary),
    }


def _level_json(level: Level) -> dict[str, Any]:
    return {
        "streams": level.concurrency,
        "gateway_rss_kib": level.gateway_rss_kib,
        "gateway_peak_rss_kib": level.gateway_peak_rss_kib,
        "redis_commands": {p: dict(c) for p, c in level.redis_commands.items()},
        "paths": {path: _summary_json(s) for path, s in level.paths.items()},
    }


def _summary_json(s: Summary) -> dict[str, Any]:
    return {
        "streams": s.streams,
        "complete": s.complete,
        "chunks": s.chunks,
        "lost": s.lost,
        "duplicated": s.duplicated,
        "span_s": round(s.span_s, 4),
        "wall_s": round(s.wall_s, 4),
        "chunks_per_s": round(s.chunks_per_s, 1),
        "cpu_s": {name: round(v, 3) for name, v in s.cpu_s.items()},
        "errors": list(s.errors),
        "ttft_ms": _distribution(s.ttft_ms),
        "lag_ms": _distribution(s.lag_ms),
    }


def _distribution(values: Sequence[float]) -> dict[str, Any]:
    return {
        "p50": percentile(values, 50),
        "p90": percentile(values, 90),
        "p99": percentile(values, 99),
        "max": max(values, default=None),
        "samples": [round(v, 3) for v in values],
    }


def write_outputs(run: Run, results: Path, docs: Path | None) -> None:
    results.parent.mkdir(parents=True, exist_ok=True)
    results.write_text(json.dumps(run_json(run), indent=1) + "\n")
    if docs is not None:
        kept = kept_analysis(docs.read_text()) if docs.exists() else ""
        docs.write_text(render_document(run, kept))

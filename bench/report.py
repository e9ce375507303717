"""What `bench.ws_load` measured, summarised: percentiles, the Markdown report, the raw JSON."""

from __future__ import annotations

import json
import os
import platform
import subprocess
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

PACKAGES = (
    "starlette",
    "uvicorn",
    "websockets",
    "openai",
    "redis",
    "httpx2",
    "uvloop",
    "httptools",
)
NS_PER_MS = 1_000_000
PROCESSES = ("gateway", "upstream", "redis", "client")
# Measured beside our own processes so that a busy neighbour shows up in the report.
MACHINE = "machine"


@dataclass(frozen=True, slots=True)
class Stream:
    """One stream as the client saw it. Each chunk is (received_ns, stamped_ns); the stamp is
    None when the content was not a send time."""

    sent_ns: int
    chunks: tuple[tuple[int, int | None], ...]
    complete: bool
    error: str | None = None

    @property
    def ttft_ms(self) -> float | None:
        if not self.chunks:
            return None
        return (self.chunks[0][0] - self.sent_ns) / NS_PER_MS

    def lags_ms(self) -> list[float]:
        return [(got - stamp) / NS_PER_MS for got, stamp in self.chunks if stamp is not None]


@dataclass(frozen=True, slots=True)
class Round:
    """N streams started together. `cpu_s` is the CPU time each process used during the
    round's `wall_s`, which runs from the first connect to the last close."""

    streams: tuple[Stream, ...]
    cpu_s: Mapping[str, float]
    wall_s: float

    @property
    def span_s(self) -> float:
        """From the first request sent to the last chunk received."""
        received = [s.chunks[-1][0] for s in self.streams if s.chunks]
        if not received:
            return 0.0
        return (max(received) - min(s.sent_ns for s in self.streams)) / 1e9


@dataclass(frozen=True, slots=True)
class Summary:
    streams: int
    complete: int
    chunks: int
    span_s: float
    wall_s: float
    ttft_ms: tuple[float, ...]
    lag_ms: tuple[float, ...]
    cpu_s: Mapping[str, float]
    errors: tuple[str, ...] = ()

    @property
    def chunks_per_s(self) -> float:
        return self.chunks / self.span_s if self.span_s else 0.0

    def ttft(self, q: float) -> float | None:
        return percentile(self.ttft_ms, q)

    def lag(self, q: float) -> float | None:
        return percentile(self.lag_ms, q)

    def cpu_per_chunk_us(self, name: str) -> float:
        return 1e6 * self.cpu_s.get(name, 0.0) / self.chunks if self.chunks else 0.0

    def cpu_share(self, *names: str) -> float:
        """CPU time of the named processes over wall time: 1.0 is one core kept busy."""
        used = sum(self.cpu_s.get(name, 0.0) for name in names)
        return used / self.wall_s if self.wall_s else 0.0


def summarize(rounds: Sequence[Round]) -> Summary:
    streams = [s for r in rounds for s in r.streams]
    cpu: dict[str, float] = {}
    for r in rounds:
        for name, seconds in r.cpu_s.items():
            cpu[name] = cpu.get(name, 0.0) + seconds
    return Summary(
        streams=len(streams),
        complete=sum(s.complete for s in streams),
        chunks=sum(len(s.chunks) for s in streams),
        span_s=sum(r.span_s for r in rounds),
        wall_s=sum(r.wall_s for r in rounds),
        ttft_ms=tuple(t for s in streams if (t := s.ttft_ms) is not None),
        lag_ms=tuple(lag for s in streams for lag in s.lags_ms()),
        cpu_s=cpu,
        errors=tuple(
            f"{reason} ({count})"
            for reason, count in sorted(Counter(s.error for s in streams if s.error).items())
        ),
    )


@dataclass(frozen=True, slots=True)
class Level:
    concurrency: int
    direct: Summary
    gateway: Summary
    gateway_rss_kib: int
    # Commands Redis ran during the gateway rounds (INFO commandstats), by name; the direct
    # rounds do not touch Redis, so the difference is all the gateway's.
    redis_commands: Mapping[str, int] = field(default_factory=dict)

    def redis_per_chunk(self) -> float:
        chunks = self.gateway.chunks
        return sum(self.redis_commands.values()) / chunks if chunks else 0.0

    def redis_per_stream(self, command: str) -> float:
        streams = self.gateway.streams
        return self.redis_commands.get(command, 0) / streams if streams else 0.0


@dataclass(slots=True)
class Run:
    command: str
    date: str
    options: Mapping[str, Any]
    machine: Mapping[str, str]
    levels: list[Level] = field(default_factory=list)
    gateway_idle_rss_kib: int = 0
    gateway_peak_rss_kib: int = 0
    notes: list[str] = field(default_factory=list)


def percentile(values: Sequence[float], q: float) -> float | None:
    """Linear interpolation between closest ranks (numpy's default), None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


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


def _added(gateway: float | None, direct: float | None) -> str:
    return "n/a" if gateway is None or direct is None else f"{gateway - direct:+.2f}"


def _ratio(gateway: float | None, direct: float | None) -> str:
    if gateway is None or direct is None or direct <= 0:
        return "n/a"
    return f"{gateway / direct:.2f}x"


def _latency_rows(level: Level) -> Iterable[str]:
    measures = (
        ("time to first token, p50", Summary.ttft, 50.0),
        ("time to first token, p99", Summary.ttft, 99.0),
        ("chunk lag, p50", Summary.lag, 50.0),
        ("chunk lag, p99", Summary.lag, 99.0),
    )
    for label, measure, q in measures:
        direct, gateway = measure(level.direct, q), measure(level.gateway, q)
        yield (
            f"| {level.concurrency} | {label} | {_ms(direct)} | {_ms(gateway)} "
            f"| {_added(gateway, direct)} | {_ratio(gateway, direct)} |"
        )


def _cost_row(level: Level, cpus: int) -> str:
    direct, gateway = level.direct, level.gateway
    cpu = gateway.cpu_s.get("gateway", 0.0)
    machine = gateway.cpu_share(*PROCESSES) / cpus
    cells = (
        level.concurrency,
        f"{direct.chunks_per_s:,.0f}",
        f"{gateway.chunks_per_s:,.0f}",
        _ratio(gateway.chunks_per_s, direct.chunks_per_s),
        f"{direct.complete}/{direct.streams}",
        f"{gateway.complete}/{gateway.streams}",
        f"{cpu:.2f}",
        f"{100 * gateway.cpu_share('gateway'):.0f}%",
        f"{gateway.cpu_per_chunk_us('gateway'):.0f}",
        f"{direct.cpu_per_chunk_us('upstream'):.0f}",
        f"{100 * machine:.0f}%",
        f"{level.gateway_rss_kib / 1024:.1f}",
        f"{level.redis_per_chunk():.2f}",
        f"{level.redis_per_stream('eval'):.1f}",
    )
    return "| " + " | ".join(map(str, cells)) + " |"


LATENCY_HEAD = """\
| streams | measure (ms) | direct | through the gateway | added by the gateway | ratio |
|--:|---|--:|--:|--:|--:|"""

COST_HEAD = """\
| streams | chunks/s direct | chunks/s gateway | ratio | complete direct | complete gateway \
| gateway CPU s | gateway CPU, % of one core | gateway CPU µs per chunk \
| upstream CPU µs per chunk, direct \
| all four processes, % of the machine | gateway RSS MiB \
| Redis commands per chunk | Lua scripts (EVAL) per stream |
|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|"""


def render_tables(run: Run) -> str:
    cpus = int(run.machine.get("cpus", "1"))
    latency = [LATENCY_HEAD, *(row for level in run.levels for row in _latency_rows(level))]
    cost = [COST_HEAD, *(_cost_row(level, cpus) for level in run.levels)]
    rss = (
        f"Gateway RSS: {run.gateway_idle_rss_kib / 1024:.1f} MiB after start-up and warm-up, "
        f"peak {run.gateway_peak_rss_kib / 1024:.1f} MiB (VmHWM)."
    )
    parts = ["\n".join(latency), "\n".join(cost), rss, _others(run, cpus)]
    if errors := _error_lines(run):
        parts.append("Streams that did not complete:\n\n" + "\n".join(errors))
    parts.extend(run.notes)
    return "\n\n".join(parts) + "\n"


def _others(run: Run, cpus: int) -> str:
    """How much of the machine processes outside the bench took: they may have slowed it."""
    shares = []
    for level in run.levels:
        g = level.gateway
        other = g.cpu_share(MACHINE) - g.cpu_share(*PROCESSES)
        shares.append(f"{100 * max(0.0, other) / cpus:.0f}%")
    return (
        "Processes outside the bench used "
        + ", ".join(shares)
        + " of the machine's CPU during the gateway rounds of each level."
    )


def _error_lines(run: Run) -> list[str]:
    return [
        f"- {level.concurrency} streams, {side}: {', '.join(summary.errors)}"
        for level in run.levels
        for side, summary in (("direct", level.direct), ("gateway", level.gateway))
        if summary.errors
    ]


def _samples(run: Run) -> str:
    ttft = ", ".join(f"{lvl.gateway.streams:,}" for lvl in run.levels)
    lag = ", ".join(f"{len(lvl.gateway.lag_ms):,}" for lvl in run.levels)
    return f"time to first token {ttft}; chunk lag {lag}"


def render_run(run: Run) -> str:
    o, m = run.options, run.machine
    rounds = f"{o['rounds']} round{'s' if o['rounds'] != 1 else ''}"
    facts = (
        f"- Command: `{run.command}`",
        f"- Date: {run.date}; code: {m['code']}",
        f"- Machine: {m['cpus']} CPUs ({m['cpu_model']}), {m['kernel']}, "
        f"load average {m['load']} at the start",
        f"- Software: {m['python']}, redis-server {m['redis_server']}; {m['packages']}",
        f"- Each level: {rounds} of N streams of {o['tokens']} tokens {o['interval_ms']} ms "
        "apart, direct then through the gateway, after one warm-up round",
        f"- Samples per side, by level: {_samples(run)}",
    )
    return "\n".join(facts) + "\n\n" + render_tables(run)


INTRO = """\
# Performance

`bench/ws_load.py` measures what the gateway adds to a streamed answer. It starts a private
redis-server, the fake OpenAI-compatible upstream of `tests/upstream.py` (in its own process),
and the gateway as a separate process (`python -m gateway serve`), all on 127.0.0.1. The
upstream sends N tokens at a fixed interval, each stamped with its send time. At each
concurrency level the same streams are read twice, round after round: directly from the
upstream by a raw HTTP client (the baseline), and through the gateway by that many WebSocket
connections, one stream each. Both clients are lean asyncio protocols that only timestamp bytes
as they arrive and parse the JSON after the round, so the client costs both paths the same.

Run it from the repository root; with the defaults it takes about a minute and a half, every
round is bounded in time, and every process it starts is stopped on exit:

```sh
.venv/bin/python -m bench.ws_load --streams 1,50,100 --tokens 50 --interval-ms 20
```

It prints the tables below, writes every sample to `bench/results/latest.json` and the
processes' logs to `bench/results/logs/`, and rewrites this file with the run's figures
(`--no-docs` leaves it alone; `--help` lists the other options).

How to read the tables:

- **Time to first token (TTFT)**: from sending the request (the `completion` frame on an
  open, authenticated socket, or the HTTP POST on an open connection) to the first content
  chunk. It includes one token interval of upstream pacing, so a perfect gateway shows the
  direct figure. All N streams of a round start at the same instant: at N streams it is the
  answer to a burst of N requests.
- **Chunk lag**: receive time minus the stamped send time, for every chunk.
- **Added by the gateway** is the gateway's percentile minus the direct one from the same run;
  **ratio** is gateway over direct (1.00x: no difference). Where the direct figure is a few
  tens of microseconds, the added milliseconds say more than the ratio. Compare within one
  run only: the upstream, the gateway, Redis and the client share this machine's CPUs, so at
  high concurrency the figures include their contention.
- **Chunks/s**: chunks delivered per second, from the first request of a round to its last
  chunk; the upstream's pacing caps it at streams x 1000 / interval-ms.
- **Gateway CPU** is the user and system time of the gateway process over its rounds, from
  connect to close (`/proc/<pid>/stat`); µs per chunk divides all of it, per-stream costs
  included, by the chunks delivered. At low rates each chunk also pays for waking an idle
  process, which the upstream's own figure from the direct rounds shows as well: read the two
  side by side. **All four processes** adds the upstream, Redis and the client, as a share of
  all CPUs: near 100% the machine, not the gateway, sets the pace. RSS is `VmRSS` from
  `/proc/<pid>/status` after the level.
- **Redis commands per chunk** counts every command the private Redis ran during the gateway
  rounds (`INFO commandstats`, the commands inside Lua scripts included), divided by the chunks
  delivered: what the batched generation log costs Redis. Events reach the client at once;
  they reach Redis in one pipeline per `LOG_FLUSH_MS` window (10 ms here), so at 20 ms token
  spacing most windows carry one event per stream, and more streams share each pipeline.
  **Lua scripts per stream** counts `EVAL`: opening the turn, every batched append and the
  finish (which also stores the answer).

## Latest run

"""


def render_document(run: Run) -> str:
    return INTRO + render_run(run)


def run_json(run: Run) -> dict[str, Any]:
    return {
        "command": run.command,
        "date": run.date,
        "options": dict(run.options),
        "machine": dict(run.machine),
        "gateway_idle_rss_kib": run.gateway_idle_rss_kib,
        "gateway_peak_rss_kib": run.gateway_peak_rss_kib,
        "levels": [_level_json(level) for level in run.levels],
    }


def _level_json(level: Level) -> dict[str, Any]:
    d, g = level.direct, level.gateway
    return {
        "streams": level.concurrency,
        "direct": _summary_json(d),
        "gateway": _summary_json(g),
        "gateway_rss_kib": level.gateway_rss_kib,
        "redis_commands": dict(level.redis_commands),
        "added_ms": {
            "ttft_p50": _difference(g.ttft(50), d.ttft(50)),
            "ttft_p99": _difference(g.ttft(99), d.ttft(99)),
            "lag_p50": _difference(g.lag(50), d.lag(50)),
            "lag_p99": _difference(g.lag(99), d.lag(99)),
        },
    }


def _difference(gateway: float | None, direct: float | None) -> float | None:
    return None if gateway is None or direct is None else round(gateway - direct, 4)


def _summary_json(s: Summary) -> dict[str, Any]:
    return {
        "streams": s.streams,
        "complete": s.complete,
        "chunks": s.chunks,
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
        docs.write_text(render_document(run))

"""The gateway's work per chunk as instructions, counted by callgrind: a measure the machine's
other load hardly moves, for telling checkouts apart where CPU time is too noisy to show a
few per cent (a shared machine whose runs of one checkout spread by 20 % and more). Runs of
one checkout agree within about 1.5 % when nothing else runs; other work running beside
them moves how events batch, and the counts by up to 2 %.

Each checkout (`--source NAME=DIR`, default this one) runs as `python -m gateway serve` under
`valgrind --tool=callgrind`, with counting off while it starts. Its counting is switched on
(`callgrind_control --instr=on`) for `--warm` closed-loop rounds of `--streams` WebSocket
streams, which are not counted, zeroed, and dumped after `--rounds` more: the instructions
the process executed over those rounds, every thread's, its cyclic collector's and its C
libraries' included, divided by the upstream tokens the clients received.

Under callgrind the gateway runs 30 to 50 times slower, so its clock is slowed with it: the
upstream paces tokens `--interval-ms` apart instead of `bench.ws_load`'s 20, and the log
writer's window (LOG_FLUSH_MS) and a generation's lease (LEASE_TTL, renewed every third of it)
are stretched by the same factor, so that a batch gathers the events it gathers under
`ws_load` and an answer sees the renewals it sees there (unstretched, an answer lasting 50
times longer was renewed 15 times and its batches held one event each). A gateway that falls
behind reads several tokens at once and sends them as one frame, which costs less per token:
the report gives frames per token for that reason, 1.00 when every token had its own.

Instructions are not time. `--cache-sim` also simulates the caches and reports callgrind's
estimate of cycles (an instruction each, 10 more for a first-level miss, 100 for a last-level
one), which shows a change that touches more memory or code; what moves branch prediction
shows in `bench.ws_load` only.

    .venv/bin/python -m bench.instructions --source before=/work/wt-before --source after=.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, fields
from pathlib import Path

from bench.options import Options, alternated, parse_options
from bench.paths import Targets, factory
from bench.procs import BenchError, Meter, Workspace
from bench.rounds import run_round
from bench.services import Gateway, start_gateway, start_redis, start_upstream
from bench.stats import Round
from gateway.config import Settings

# Start-up (the imports) takes tens of seconds under valgrind, and longer on a busy machine.
READY_WAIT_S = 300.0
# `bench.ws_load`'s pacing, against which the clock is slowed, and the gateway's timings there.
WS_LOAD_INTERVAL_MS = 20
STRETCHED = {"LOG_FLUSH_MS": "log_flush_ms", "LEASE_TTL": "lease_ttl"}
CONTROL_TIMEOUT_S = 60.0
EVENTS = re.compile(rb"^events:\s+(.+)$", re.MULTILINE)
TOTALS = re.compile(rb"^(?:summary|totals):\s+(.+)$", re.MULTILINE)
# Callgrind's own estimate of cycles from its cache simulation (`--cache-sim`): an instruction
# each, 10 more for a first-level miss, 100 for a last-level one.
L1_MISS_CYCLES = 10
LL_MISS_CYCLES = 100
DUMP = "callgrind"  # its files: callgrind.<pid>, and .<n> for each dump asked for


@dataclass(frozen=True, slots=True)
class Counted:
    events: dict[str, int]
    tokens: int
    frames: int
    complete: int
    streams: int

    @property
    def instructions(self) -> int:
        return self.events["Ir"]

    @property
    def cycles(self) -> int | None:
        """Callgrind's estimate, where its cache simulation ran."""
        if "DLmr" not in self.events:
            return None
        e = self.events
        l1 = e["I1mr"] + e["D1mr"] + e["D1mw"]
        ll = e["ILmr"] + e["DLmr"] + e["DLmw"]
        return e["Ir"] + L1_MISS_CYCLES * l1 + LL_MISS_CYCLES * ll

    def per_token(self, count: int | None) -> float | None:
        return None if count is None else count / max(1, self.tokens)


def callgrind_prefix(out: Path, cache_sim: bool) -> list[str]:
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        raise BenchError("valgrind is not installed (apt-get install valgrind)")
    return [
        valgrind,
        "--tool=callgrind",
        "--instr-atstart=no",
        f"--callgrind-out-file={out}",
        "--quiet",
        *(["--cache-sim=yes"] if cache_sim else []),
    ]


def control(pid: int, *args: str) -> None:
    done = subprocess.run(
        ["callgrind_control", *args, str(pid)],
        capture_output=True,
        text=True,
        timeout=CONTROL_TIMEOUT_S,
        check=False,
    )
    if done.returncode != 0:
        raise BenchError(f"callgrind_control {' '.join(args)} failed: {done.stderr[-500:]}")


def last_dump(folder: Path) -> Path:
    """The last dump callgrind wrote: the counts since they were zeroed."""
    dumps = sorted(folder.glob(f"{DUMP}.*"), key=lambda p: p.stat().st_mtime)
    if not dumps:
        raise BenchError(f"callgrind wrote no dump in {folder}")
    return dumps[-1]


def dumped_events(dump: Path) -> dict[str, int]:
    """A dump's totals: instructions (Ir), and cache misses where they were simulated."""
    text = dump.read_bytes()
    names, totals = EVENTS.search(text), TOTALS.search(text)
    if names is None or totals is None:
        raise BenchError(f"{dump} has no totals")
    return dict(
        zip(names.group(1).decode().split(), map(int, totals.group(1).split()), strict=False)
    )


def tally(rounds: list[Round], events: dict[str, int]) -> Counted:
    streams = [s for r in rounds for s in r.streams]
    return Counted(
        events=events,
        tokens=sum(len(s.chunks) for s in streams),
        frames=sum(len(s.seqs) for s in streams),
        complete=sum(s.complete for s in streams),
        streams=len(streams),
    )


def stretched_settings(factor: float) -> dict[str, str]:
    """The gateway's own timings that `ws_load` leaves at their defaults, `factor` times
    longer."""
    defaults = {f.name: f.default for f in fields(Settings) if isinstance(f.default, float)}
    return {env: str(defaults[name] * factor) for env, name in STRETCHED.items()}


async def closed_rounds(targets: Targets, opts: Options, count: int, limit: float) -> list[Round]:
    made, port = factory("ws", targets)
    meter = Meter({})
    return [await run_round(made, port, opts.streams[0], limit, meter) for _ in range(count)]


def measure(
    opts: Options,
    warm: int,
    rounds: int,
    limit: float,
    cache_sim: bool,
    keep: Path | None,
) -> Counted:
    """The gateway of `opts.source` counted; `keep`, where given, receives the dump (for
    `callgrind_annotate`)."""
    with tempfile.TemporaryDirectory(prefix="bench-instructions-") as tmp:
        folder = Path(tmp)
        with contextlib.ExitStack() as stack:
            work = Workspace(folder, folder, stack)
            redis = start_redis(work)
            upstream = start_upstream(work)
            gateway: Gateway = start_gateway(
                opts,
                work,
                redis.port,
                upstream.port,
                "gateway",
                0.0,
                prefix=callgrind_prefix(folder / f"{DUMP}.%p", cache_sim),
                ready_wait=READY_WAIT_S,
                settings=stretched_settings(opts.interval_ms / WS_LOAD_INTERVAL_MS),
            )
            targets = Targets(opts.upstream_model, upstream.port, gateway, None)
            pid = gateway.child.pid
            control(pid, "--instr=on")
            asyncio.run(closed_rounds(targets, opts, warm, limit))
            control(pid, "--zero")
            counted = asyncio.run(closed_rounds(targets, opts, rounds, limit))
            control(pid, "--dump")
            control(pid, "--instr=off")
            dump = last_dump(folder)
            if keep is not None:
                shutil.copyfile(dump, keep)
            return tally(counted, dumped_events(dump))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.instructions",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--source", action="append", default=[], help="NAME=DIR, repeatable")
    parser.add_argument("--streams", type=int, default=100)
    parser.add_argument("--tokens", type=int, default=50)
    parser.add_argument("--interval-ms", type=int, default=1000)
    parser.add_argument("--warm", type=int, default=1, help="rounds before counting")
    parser.add_argument("--rounds", type=int, default=1, help="rounds counted")
    parser.add_argument("--repeat", type=int, default=1, help="measurements per checkout")
    parser.add_argument(
        "--cache-sim", action="store_true", help="simulate the caches too (about 2x slower)"
    )
    parser.add_argument("--dumps", type=Path, help="keep each dump there, as NAME-N.callgrind")
    args = parser.parse_args(argv)
    limit = 120.0 + args.tokens * args.interval_ms / 1000 * 3
    for turn, name, source in alternated(args.source, args.repeat):
        opts = parse_options(
            [
                *("--streams", str(args.streams), "--tokens", str(args.tokens)),
                *("--interval-ms", str(args.interval_ms), "--paths", "ws", "--no-docs"),
                *("--source", str(source)),
            ]
        )
        keep = args.dumps / f"{name}-{turn + 1}.callgrind" if args.dumps else None
        c = measure(opts, args.warm, args.rounds, limit, args.cache_sim, keep)
        cycles = c.per_token(c.cycles)
        estimate = "" if cycles is None else f", {cycles:,.0f} cycles estimated"
        print(
            f"{name}: {c.per_token(c.instructions):,.0f} instructions per token{estimate} "
            f"({c.instructions:,} for {c.tokens:,} tokens in {c.frames:,} frames, "
            f"{c.per_token(c.frames):.2f} frames per token, "
            f"{c.complete}/{c.streams} streams complete)",
            flush=True,
        )


if __name__ == "__main__":
    main()

"""What one turn costs: the Redis commands it sends, and the gateway's CPU per turn.

Each checkout (`--source NAME=DIR`, default this one) is served by its own gateway process
(`python -m gateway serve`, the checkout first on its path) on a private redis-server, with
the `echo` model answering two words at once (`ECHO_DELAY_MS=0`) and no rate limit. One user
on one socket (`?activity=0`) runs a conversation's turns one after another: 50 unrecorded,
then `--turns` timed, the process's user and system time (`/proc/<pid>/stat`) over them per
turn, and the redis-server's. Checkouts alternate round by round.

`--profile PY_SPY` records the timed turns with that py-spy (raw stacks, 1,000 samples a second,
`bench/results/turn-profile-<name>.txt`) and sums them per function, own time and with callees.

`--commands` instead prints every command one turn sends (after two unrecorded turns, so the
scripts are loaded), as Redis's MONITOR sees them: each command of the gateway with the
commands a script of it ran indented below it, then the total.

    .venv/bin/python -m bench.turn_cost --source main=/work/main --source branch=. --rounds 4
    .venv/bin/python -m bench.turn_cost --commands
    .venv/bin/python -m bench.turn_cost --source main=/work/main --profile "$(command -v py-spy)"
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import signal
import statistics
import subprocess
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import redis

from bench.profile import own_time
from tests.support.processes import GatewayProcess, start_process
from tests.support.redis import running_redis
from tests.support.tokens import mint
from tests.support.ws import connected, receive, send

WARM_TURNS = 50
SETTLE_S = 0.5  # the log writer's window and the end's writes, after the last turn
TICK = os.sysconf("SC_CLK_TCK")
RESULTS = Path(__file__).resolve().parent / "results"
PROFILE_RATE = 1000
PROFILE_TOP = 40


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


async def turn(ws: Any, request_id: str, conversation_id: str | None) -> str:
    """One turn to its `done`; the conversation's id."""
    frame: dict[str, Any] = {"type": "completion", "id": request_id, "message": "a b"}
    if conversation_id is not None:
        frame["conversation_id"] = conversation_id
    await send(ws, **frame)
    while True:
        got = await receive(ws)
        if got.get("id") == request_id and got.get("done"):
            return str(got["conversation_id"])


def gateway(folder: Path, redis_url: str, source: Path) -> GatewayProcess:
    return start_process(
        folder,
        {
            "PYTHONPATH": str(source),
            "REDIS_URL": redis_url,
            "ECHO_DELAY_MS": "0",
            "LIMIT_REQUESTS_PER_MINUTE": "0",
        },
    )


@contextlib.contextmanager
def recorded(py_spy: Path | None, pid: int, out: Path) -> Iterator[None]:
    """py-spy's raw stacks of `pid` while the block runs, into `out` (nothing without py-spy)."""
    if py_spy is None:
        yield
        return
    argv = [str(py_spy), "record", "--pid", str(pid), "--format", "raw", "--gil", "--nonblocking"]
    out.parent.mkdir(parents=True, exist_ok=True)  # bench/results is not in a fresh clone
    with tempfile.TemporaryFile() as said:  # a file, not a pipe: nothing read it meanwhile
        recorder = subprocess.Popen(
            [*argv, "--rate", str(PROFILE_RATE), "-o", str(out)],
            stdout=subprocess.DEVNULL,
            stderr=said,
        )
        try:
            time.sleep(0.5)  # py-spy attaches before the turns start
            yield
        finally:
            recorder.send_signal(signal.SIGINT)  # it writes its file on the way out
            recorder.wait(timeout=30)
            if not out.exists():
                said.seek(0)
                error = said.read().decode(errors="replace")[-300:]
                raise SystemExit(f"py-spy wrote no profile of {out.name}: {error}")


async def timed(
    url: str, pids: tuple[int, int], turns: int, py_spy: Path | None, out: Path
) -> tuple[float, float]:
    """The gateway's and the redis-server's CPU µs per turn."""
    pid, redis_pid = pids
    ws = await connected(url, mint("alice"), activity=False)
    conversation_id = await turn(ws, "w", None)
    for n in range(WARM_TURNS):
        await turn(ws, f"w{n}", conversation_id)
    with recorded(py_spy, pid, out):
        gateway_before, redis_before = cpu_seconds(pid), cpu_seconds(redis_pid)
        for n in range(turns):
            await turn(ws, f"t{n}", conversation_id)
        gateway_cpu = cpu_seconds(pid) - gateway_before
        redis_cpu = cpu_seconds(redis_pid) - redis_before
    await ws.close()
    return gateway_cpu / turns * 1e6, redis_cpu / turns * 1e6


def measure(source: Path, turns: int, py_spy: Path | None, out: Path) -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as folder, running_redis(Path(folder)) as server:
        process = gateway(Path(folder), server.url, source)
        pids = (process.process.pid, server.process.pid)
        try:
            return asyncio.run(timed(process.url, pids, turns, py_spy, out))
        finally:
            process.stop()


def summary(raw: Path, turns: int) -> list[str]:
    """The functions taking most of a turn, in µs of samples per turn: own time and with
    callees (each function once per stack)."""
    # A function's lines are one function here: "name (file:line)" becomes "name (file)".
    lines = [re.sub(r":\d+\)(?=;| )", ")", line) for line in raw.read_text().splitlines()]
    inclusive: Counter[str] = Counter()
    for line in lines:
        stack, _, count = line.rstrip().rpartition(" ")
        if stack and count.isdigit():
            for frame in set(stack.split(";")):
                inclusive[frame] += int(count)
    per_turn = 1e6 / PROFILE_RATE / turns
    own = [f"  {share:6.1%} own  {frame}" for frame, share in own_time(lines, PROFILE_TOP)]
    with_callees = [
        f"  {count * per_turn:7.0f} µs  {frame}"
        for frame, count in inclusive.most_common(PROFILE_TOP)
    ]
    return ["with callees, per turn:", *with_callees, "own time, share of samples:", *own]


async def watched_turn(url: str, recording: threading.Event) -> None:
    ws = await connected(url, mint("alice"), activity=False)
    conversation_id = await turn(ws, "w0", None)
    await turn(ws, "w1", conversation_id)
    await asyncio.sleep(SETTLE_S)
    recording.set()
    await turn(ws, "t", conversation_id)
    await asyncio.sleep(SETTLE_S)
    recording.clear()
    await ws.close()


def commands(source: Path) -> list[str]:
    """One turn's commands as MONITOR shows them, a script's own indented."""
    seen: list[str] = []
    recording, done = threading.Event(), threading.Event()
    with tempfile.TemporaryDirectory() as folder, running_redis(Path(folder)) as server:
        process = gateway(Path(folder), server.url, source)

        def monitor() -> None:
            with (
                contextlib.suppress(redis.ConnectionError),
                redis.Redis.from_url(server.url).monitor() as watch,  # type: ignore[no-untyped-call]
            ):
                for command in watch.listen():
                    if done.is_set():
                        return
                    # PING: the pool's health checks, not the turn's.
                    if recording.is_set() and command["command"] != "PING":
                        lua = command.get("client_type") == "lua"
                        seen.append(("    " if lua else "") + command["command"])

        watcher = threading.Thread(target=monitor, daemon=True)
        watcher.start()
        try:
            asyncio.run(watched_turn(process.url, recording))
        finally:
            done.set()
            process.stop()
    return seen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", action="append", default=[], help="NAME=DIR, repeatable")
    parser.add_argument("--turns", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--commands", action="store_true", help="list one turn's commands")
    parser.add_argument("--profile", type=Path, metavar="PY_SPY", help="record the turns")
    options = parser.parse_args()
    sources = [s.split("=", 1) for s in options.source] or [["this", "."]]
    if options.commands:
        for name, folder in sources:
            seen = commands(Path(folder).resolve())
            print(f"# {name}", *(line[:160] for line in seen), f"{len(seen)} commands", sep="\n")
        return
    figures: dict[str, list[tuple[float, float]]] = {name: [] for name, _ in sources}
    for _ in range(options.rounds):
        for name, folder in sources:
            out = RESULTS / f"turn-profile-{name}.txt"
            cost = measure(Path(folder).resolve(), options.turns, options.profile, out)
            figures[name].append(cost)
            started = time.strftime("%H:%M:%S")
            print(
                f"{started} {name}: {figures[name][-1][0]:.0f} µs gateway CPU per turn", flush=True
            )
    if options.profile is not None:
        for name, _ in sources:
            print(
                f"# {name}, the last round",
                *summary(RESULTS / f"turn-profile-{name}.txt", options.turns),
                sep="\n",
            )
    for name, runs in figures.items():
        gateway_runs = ", ".join(f"{g:.0f}" for g, _ in runs)
        redis_runs = ", ".join(f"{r:.0f}" for _, r in runs)
        print(
            f"{name}: gateway median {statistics.median(g for g, _ in runs):.0f} µs per turn "
            f"({gateway_runs}); redis-server median "
            f"{statistics.median(r for _, r in runs):.0f} ({redis_runs})"
        )


if __name__ == "__main__":
    main()

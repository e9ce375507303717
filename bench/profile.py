"""A sampling profile of the gateway under the top closed-loop level (`--profile`), taken by
py-spy from the bench's own virtual environment, never the project's."""

from __future__ import annotations

import asyncio
import subprocess
from collections import Counter
from collections.abc import Iterable

from bench.options import ROOT
from bench.paths import factory
from bench.phases import Context, say
from bench.rounds import run_round

PROFILE_SECONDS = 10
SAMPLE_RATE = 250
TOP = 15


def own_time(collapsed: Iterable[str], top: int = TOP) -> list[tuple[str, float]]:
    """From py-spy's raw (collapsed) stacks, `frame;frame;... count` per line: the innermost
    frames by their share of all samples."""
    own: Counter[str] = Counter()
    total = 0
    for line in collapsed:
        stack, _, count = line.rstrip().rpartition(" ")
        if not stack or not count.isdigit():
            continue
        own[stack.rsplit(";", 1)[-1]] += int(count)
        total += int(count)
    return [(frame, n / total) for frame, n in own.most_common(top)] if total else []


async def profile_gateway(ctx: Context) -> None:
    py_spy = ctx.opts.litellm_venv / "bin" / "py-spy"
    if not py_spy.exists():
        ctx.run.notes.append(f"No profile: {py_spy} is missing (pip install py-spy there).")
        return
    count = max(ctx.opts.streams)
    out = ctx.opts.results.parent / f"profile-ws-{count}.txt"
    argv = [str(py_spy), "record", "--pid", str(ctx.gateway.child.pid), "--format", "raw", "--gil"]
    argv += ["--rate", str(SAMPLE_RATE), "--duration", str(PROFILE_SECONDS), "-o", str(out)]
    say(f"profiling the gateway for {PROFILE_SECONDS} s at {count} WebSocket streams ...")
    recorder = await asyncio.to_thread(
        subprocess.Popen, argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        make, port = factory("ws", ctx.targets)
        loop = asyncio.get_running_loop()
        until = loop.time() + PROFILE_SECONDS
        while loop.time() < until:
            await run_round(make, port, count, ctx.opts.round_timeout, ctx.meter())
        _, err = await asyncio.to_thread(recorder.communicate, timeout=30)
    except subprocess.TimeoutExpired:
        err = b"it did not finish in time"
    finally:
        if recorder.poll() is None:
            recorder.kill()
            recorder.wait(timeout=5)
    if recorder.returncode != 0 or not out.exists():
        ctx.run.notes.append(f"No profile: py-spy failed: {err.decode(errors='replace')[-300:]}")
        return
    ctx.run.profile = str(out.relative_to(ROOT)) if out.is_relative_to(ROOT) else str(out)
    lines = await asyncio.to_thread(out.read_text)
    top = own_time(lines.splitlines())
    ctx.run.profile_top = [f"- {share:.1%} `{frame}`" for frame, share in top]

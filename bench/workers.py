"""Two workers against one: the closed loop's top level over WebSocket against `serve
--workers 2` on the same Redis and upstream, to set beside the one-worker figure of the run."""

from __future__ import annotations

import asyncio
import dataclasses
import os

from bench.paths import factory
from bench.phases import ROUND_PAUSE_S, Context, fits, later_phases_s, say
from bench.procs import Meter, reset_peak_rss, stop, tree_peak_rss_kib
from bench.results import Workers
from bench.rounds import run_round
from bench.services import Gateway, start_gateway
from bench.stats import Round, summarize

WORKERS = 2
# The warm-up's streams: enough that both workers take some and pay their first-use costs.
WARM_STREAMS = 50


async def workers_phase(ctx: Context) -> None:
    if not fits(ctx, "workers"):
        return
    count = max(ctx.opts.streams)
    say(f"workers: {count} WebSocket streams against {WORKERS} workers ...")
    gateway = start_gateway(
        ctx.opts, ctx.work, ctx.redis.port, ctx.upstream.port, "gateway-workers", 0, WORKERS
    )
    try:
        rounds = await _rounds(ctx, gateway, count)
        peak = tree_peak_rss_kib(gateway.child.pid)
    finally:
        stop(gateway.child)
    if rounds:
        summary = summarize(rounds, ctx.opts.tokens)
        ctx.run.workers = Workers(WORKERS, count, summary, peak, gateway.ready_s)


async def _rounds(ctx: Context, gateway: Gateway, count: int) -> list[Round]:
    opts = ctx.opts
    make, port = factory("ws", dataclasses.replace(ctx.targets, gateway=gateway))
    pids = {"gateway": gateway.child.pid, "upstream": ctx.upstream.child.pid}
    pids |= {"redis": ctx.redis.child.pid, "client": os.getpid()}
    meter = Meter(pids, frozenset({"gateway"}))  # the serving process and its workers
    await run_round(make, port, min(count, WARM_STREAMS), opts.round_timeout, meter)
    reset_peak_rss(gateway.child.pid)
    reserve = later_phases_s(opts, "workers")
    rounds: list[Round] = []
    for _ in range(opts.rounds_at(count)):
        if not ctx.deadline.allows(reserve + 2 * opts.stream_seconds + 3):
            ctx.run.notes.append(f"Time ran out: {WORKERS} workers had fewer rounds.")
            break
        limit = min(opts.round_timeout, max(1.0, ctx.deadline.left() - reserve))
        rounds.append(await run_round(make, port, count, limit, meter))
        await asyncio.sleep(ROUND_PAUSE_S)
    return rounds

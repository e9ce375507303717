"""The performance goals, each judged against a baseline measured in the same run.

Pure: every verdict comes from the `Run` alone, so a report can be re-rendered from JSON.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from bench.paths import GATEWAY_PATHS
from bench.results import Idle, Level, Run
from bench.stats import Summary, added

LATENCY_FACTOR = 4.0  # LiteLLM adds at least this many times the gateway's latency
CPU_FACTOR = 7.0  # and spends at least this many times its CPU per chunk
CEILING_SHARE = 0.65
RSS_PER_SOCKET_BYTES = 38_000
CONNECTS_PER_S = 630.0
LOAD_LEVEL = 500
# Below this the gateway's added latency is within the clock's and the scheduler's noise;
# a ratio against it would mean nothing, so the floor stands in.
ADDED_FLOOR_MS = 0.05


@dataclass(frozen=True, slots=True)
class Goal:
    name: str
    target: str
    figure: str
    met: bool | None  # None: not measured in this run

    @property
    def verdict(self) -> str:
        return {True: "met", False: "missed", None: "not measured"}[self.met]


def goals(run: Run) -> list[Goal]:
    return [
        latency_goal(run.levels),
        cpu_goal(run.levels),
        sse_goal(run.levels),
        *ceiling_goals(run),
        load_goal(run.levels),
        open_loop_goal(run),
        *idle_goals(run.idle),
    ]


def _latency_ratios(level: Level) -> list[tuple[str, float]]:
    """LiteLLM's added latency over the gateway's, both on /v1/chat/completions."""
    direct, gateway, proxy = (level.paths.get(p) for p in ("direct", "openai", "litellm"))
    if direct is None or gateway is None or proxy is None:
        return []
    ratios = []
    for label, measure in (("TTFT p50", Summary.ttft), ("lag p50", Summary.lag)):
        ours = added(measure(gateway, 50), measure(direct, 50))
        theirs = added(measure(proxy, 50), measure(direct, 50))
        if ours is not None and theirs is not None:
            ratios.append((label, theirs / max(ours, ADDED_FLOOR_MS)))
    return ratios


def latency_goal(levels: Iterable[Level]) -> Goal:
    found = [(lv.concurrency, label, r) for lv in levels for label, r in _latency_ratios(lv)]
    target = f"LiteLLM adds ≥{LATENCY_FACTOR:g}x the gateway's latency (every level)"
    if not found:
        return Goal("1. latency added, against LiteLLM", target, "LiteLLM not measured", None)
    streams, label, worst = min(found, key=lambda item: item[2])
    figure = f"worst {worst:.1f}x ({label} at {streams} streams)"
    return Goal("1. latency added, against LiteLLM", target, figure, worst >= LATENCY_FACTOR)


def cpu_goal(levels: Iterable[Level]) -> Goal:
    target = f"LiteLLM spends ≥{CPU_FACTOR:g}x the gateway's CPU per chunk (every level)"
    found = []
    for level in levels:
        gateway, proxy = level.paths.get("openai"), level.paths.get("litellm")
        if gateway is None or proxy is None:
            continue
        ours, theirs = gateway.cpu_per_chunk_us("gateway"), proxy.cpu_per_chunk_us("litellm")
        if ours and theirs:
            found.append((level.concurrency, theirs / ours, ours, theirs))
    if not found:
        return Goal("1. CPU per chunk, against LiteLLM", target, "LiteLLM not measured", None)
    streams, worst, ours, theirs = min(found, key=lambda item: item[1])
    figure = f"worst {worst:.1f}x at {streams} streams ({theirs:.0f} µs vs {ours:.0f} µs)"
    return Goal("1. CPU per chunk, against LiteLLM", target, figure, worst >= CPU_FACTOR)


def sse_goal(levels: Iterable[Level]) -> Goal:
    target = "SSE measured at every level: every stream complete, none lost or duplicated"
    measured = [lv.paths["sse"] for lv in levels if "sse" in lv.paths]
    if not measured:
        return Goal("2. SSE transport", target, "not measured", None)
    streams = sum(s.streams for s in measured)
    complete = sum(s.complete for s in measured)
    lost = sum(s.lost + s.duplicated for s in measured)
    figure = f"{complete:,}/{streams:,} complete, {lost} lost or duplicated"
    return Goal("2. SSE transport", target, figure, complete == streams and lost == 0)


def ceiling_goals(run: Run) -> list[Goal]:
    found = []
    for ceiling in run.ceilings:
        name = f"3. {ceiling.transport} send ceiling"
        target = f"gateway ≥{CEILING_SHARE:.0%} of bare uvicorn + Starlette frames/s"
        share = ceiling.share
        if share is None or ceiling.gateway.errors:
            trouble = ", ".join(ceiling.gateway.errors) or "no frames"
            found.append(Goal(name, target, trouble, False))
            continue
        figure = (
            f"{share:.0%} ({ceiling.gateway.frames_per_s:,.0f} vs "
            f"{ceiling.bare.frames_per_s:,.0f} frames/s)"
        )
        found.append(Goal(name, target, figure, share >= CEILING_SHARE))
    return found or [Goal("3. send ceilings", "≥65% of bare", "not measured", None)]


def load_goal(levels: Iterable[Level]) -> Goal:
    target = f"{LOAD_LEVEL} streams at once: 0 errors, 0 lost or duplicated chunks (by seq)"
    at_load = next((lv for lv in levels if lv.concurrency == LOAD_LEVEL), None)
    if at_load is None:
        return Goal("4. closed loop at 500", target, f"{LOAD_LEVEL} not measured", None)
    summaries = [at_load.paths[p] for p in GATEWAY_PATHS if p in at_load.paths]
    errors = sum(s.failed for s in summaries)
    bad = sum(s.lost + s.duplicated for s in summaries)
    figure = f"{errors} errors, {bad} lost or duplicated over {', '.join(GATEWAY_PATHS)}"
    return Goal("4. closed loop at 500", target, figure, errors == 0 and bad == 0)


def open_loop_goal(run: Run) -> Goal:
    target = "open loop through the gateway: 0 errors, 0 lost or duplicated"
    ours = [run.open_loop[p] for p in GATEWAY_PATHS if p in run.open_loop]
    if not ours:
        return Goal("4. open loop", target, "not measured", None)
    errors = sum(s.failed for s in ours)
    bad = sum(s.lost + s.duplicated for s in ours)
    direct = run.open_loop.get("direct")
    worst = max((s.ttft(99) or 0.0) for s in ours)
    base = f" (direct {direct.ttft(99):.1f} ms)" if direct and direct.ttft(99) else ""
    figure = f"{errors} errors, {bad} lost or duplicated; TTFT p99 up to {worst:.1f} ms{base}"
    return Goal("4. open loop", target, figure, errors == 0 and bad == 0)


def _per_size(
    idle: Iterable[Idle], value: Callable[[Idle], float | None]
) -> list[tuple[int, float]]:
    return [(i.sockets, v) for i in idle if i.server == "gateway" and (v := value(i)) is not None]


def idle_goals(idle: list[Idle]) -> list[Goal]:
    ours = [i for i in idle if i.server == "gateway"]
    if not ours:
        return [Goal("5. idle sockets", "see below", "not measured", None)]
    rss = _per_size(ours, lambda i: i.rss_per_socket_bytes)
    rate = _per_size(ours, lambda i: i.connects_per_s if i.connected else None)
    drops = sum(i.drops + (i.sockets - i.connected) for i in ours)
    worst_rss = max(rss, key=lambda item: item[1], default=None)
    worst_rate = min(rate, key=lambda item: item[1], default=None)
    return [
        Goal(
            "5. memory per idle socket",
            f"≤{RSS_PER_SOCKET_BYTES / 1000:g} kB (RSS delta / sockets, every size)",
            "n/a"
            if worst_rss is None
            else f"worst {worst_rss[1] / 1000:.1f} kB at {worst_rss[0]:,}",
            None if worst_rss is None else worst_rss[1] <= RSS_PER_SOCKET_BYTES,
        ),
        Goal(
            "5. connect rate",
            f"≥{CONNECTS_PER_S:g} authenticated connections/s (every size)",
            "n/a" if worst_rate is None else f"worst {worst_rate[1]:,.0f}/s at {worst_rate[0]:,}",
            None if worst_rate is None else worst_rate[1] >= CONNECTS_PER_S,
        ),
        Goal(
            "5. drops",
            "0 sockets lost or refused while held",
            f"{drops} over {sum(i.sockets for i in ours):,} sockets",
            drops == 0,
        ),
    ]

"""The performance goals, each judged against a baseline measured in the same run.

Pure: every verdict comes from the `Run` alone, so a report can be re-rendered from JSON.
One gateway worker unless a goal says otherwise. A goal whose figures the run lacks (a phase
skipped, LiteLLM absent, a smaller preset) is "not measured", and its figure says why.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from bench.options import OPEN_GOAL_RATE
from bench.paths import GATEWAY_PATHS
from bench.results import Idle, Level, Run
from bench.stats import Summary, added

# 1. Added latency, against the upstream read directly at the same level.
ONE_TTFT_MS = (3.0, 5.0)  # p50, p99 at one stream
ONE_LAG_MS = (0.5, 1.5)
FIFTY = 50
FIFTY_LAG_P99_MS = 10.0
FIFTY_TTFT_P99_MS = 50.0
LATENCY_FACTOR = 4.0  # LiteLLM adds at least this many times the gateway's latency
# 2. Capacity: the open loop.
OPEN_RATE = OPEN_GOAL_RATE  # new streams per second
OPEN_TTFT_P99_MS = 100.0
OPEN_LAG_P99_MS = 10.0
CPU_PER_CHUNK_US = 150.0
CPU_FACTOR = 7.0  # LiteLLM spends at least this many times the gateway's CPU per chunk
# 3. Overload: the closed loop at 500.
LOAD_LEVEL = 500
RSS_CAP_MIB = 512
CEILING_FACTOR = 7.0  # the gateway's chunks/s at 500 over LiteLLM's best at any level
WORKERS_FACTOR = 1.8
# 4. Frame path.
CEILING_SHARE = 0.65
# 5. Upstream ingest.
INGEST_FACTOR = 1.25
# 6. Idle sockets.
RSS_PER_SOCKET_BYTES = 38_000
IDLE_SOCKETS = 10_000
IDLE_HOLD_S = 45.0
IDLE_CPU_SHARE = 0.05
CONNECTS_PER_S = 630.0
# 7. Redis.
REDIS_CPU_PER_EVENT_US = 15.0
# 8. Footprint.
IDLE_RSS_BYTES = 100_000_000
READY_S = 1.5
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
        *one_stream_goals(run.levels),
        fifty_streams_goal(run.levels),
        litellm_latency_goal(run.levels),
        open_loop_goal(run),
        open_cpu_goal(run),
        litellm_cpu_goal(run),
        load_goal(run.levels),
        load_memory_goal(run.levels),
        litellm_ceiling_goal(run.levels),
        workers_goal(run),
        *ceiling_goals(run),
        ingest_goal(run),
        *idle_goals(run.idle),
        *redis_goals(run),
        *footprint_goals(run),
    ]


def _level(levels: Iterable[Level], streams: int) -> Level | None:
    return next((lv for lv in levels if lv.concurrency == streams), None)


Measure = Callable[[Summary, float], float | None]
Check = tuple[str, Measure, float, float]  # label, measure, percentile, limit in ms


def _worst_added(paths: dict[str, Summary], measure: Measure, q: float) -> tuple[str, float] | None:
    """The gateway path that adds the most to a percentile over direct, and by how much."""
    direct = paths.get("direct")
    if direct is None:
        return None
    found = [
        (path, extra)
        for path in GATEWAY_PATHS
        if path in paths
        and (extra := added(measure(paths[path], q), measure(direct, q))) is not None
    ]
    return max(found, key=lambda item: item[1], default=None)


def _added_goal(
    name: str, target: str, levels: Iterable[Level], streams: int, checks: Sequence[Check]
) -> Goal:
    """Every check at the level of `streams`, on the gateway path that is worst for it."""
    level = _level(levels, streams)
    if level is None:
        return Goal(name, target, f"{streams} streams not measured", None)
    figures, met = [], True
    for label, measure, q, limit in checks:
        worst = _worst_added(dict(level.paths), measure, q)
        if worst is None:
            return Goal(name, target, "no direct or gateway path at this level", None)
        path, extra = worst
        figures.append(f"{label} {extra:+.2f} ms ({path})")
        met = met and extra <= limit
    return Goal(name, target, ", ".join(figures), met)


def one_stream_goals(levels: Sequence[Level]) -> list[Goal]:
    every = "added over direct, worst gateway path"
    ttft_50, ttft_99 = ONE_TTFT_MS
    lag_50, lag_99 = ONE_LAG_MS
    return [
        _added_goal(
            "1. time to first token, 1 stream",
            f"≤{ttft_50:g} ms p50 and ≤{ttft_99:g} ms p99 {every}",
            levels,
            1,
            [("p50", Summary.ttft, 50, ttft_50), ("p99", Summary.ttft, 99, ttft_99)],
        ),
        _added_goal(
            "1. chunk lag, 1 stream",
            f"≤{lag_50:g} ms p50 and ≤{lag_99:g} ms p99 {every}",
            levels,
            1,
            [("p50", Summary.lag, 50, lag_50), ("p99", Summary.lag, 99, lag_99)],
        ),
    ]


def fifty_streams_goal(levels: Sequence[Level]) -> Goal:
    return _added_goal(
        f"1. latency at {FIFTY} streams",
        f"lag p99 ≤{FIFTY_LAG_P99_MS:g} ms and time to first token p99 "
        f"≤{FIFTY_TTFT_P99_MS:g} ms, added over direct at {FIFTY}, worst gateway path",
        levels,
        FIFTY,
        [
            ("lag p99", Summary.lag, 99, FIFTY_LAG_P99_MS),
            ("TTFT p99", Summary.ttft, 99, FIFTY_TTFT_P99_MS),
        ],
    )


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


def litellm_latency_goal(levels: Iterable[Level]) -> Goal:
    name = "1. latency added, against LiteLLM"
    found = [(lv.concurrency, label, r) for lv in levels for label, r in _latency_ratios(lv)]
    target = f"LiteLLM adds ≥{LATENCY_FACTOR:g}x the gateway's latency (p50s, every level)"
    if not found:
        return Goal(name, target, "LiteLLM not measured", None)
    streams, label, worst = min(found, key=lambda item: item[2])
    figure = f"worst {worst:.1f}x ({label} at {streams} streams)"
    return Goal(name, target, figure, worst >= LATENCY_FACTOR)


def _open_loop(run: Run) -> tuple[dict[str, Summary], str | None]:
    """The open loop's gateway paths at the goal's rate, or why the capacity goals cannot be
    judged."""
    at_rate = run.open_loop.get(OPEN_RATE, {})
    ours = {p: at_rate[p] for p in GATEWAY_PATHS if p in at_rate}
    if ours:
        return ours, None
    if at_rate:
        return ours, f"no gateway path in the open loop at {OPEN_RATE}/s"
    rates = ", ".join(f"{r}/s" for r, paths in run.open_loop.items() if paths)
    if not rates:
        return ours, "open loop not measured"
    return ours, f"open loop ran at {rates}, the goal is at {OPEN_RATE}/s"


def open_loop_goal(run: Run) -> Goal:
    name = f"2. {OPEN_RATE} new streams/s (open loop)"
    target = (
        f"0 errors, 0 lost or duplicated; TTFT p99 ≤{OPEN_TTFT_P99_MS:g} ms and lag p99 "
        f"≤{OPEN_LAG_P99_MS:g} ms added over direct at the same rate (every gateway path)"
    )
    ours, why = _open_loop(run)
    direct = run.open_loop.get(OPEN_RATE, {}).get("direct")
    if why is not None:
        return Goal(name, target, why, None)
    if direct is None:
        return Goal(name, target, "no direct open loop to compare with", None)
    errors = sum(s.failed for s in ours.values())
    bad = sum(s.lost + s.duplicated for s in ours.values())
    paths = {**ours, "direct": direct}
    ttft = _worst_added(paths, Summary.ttft, 99)
    lag = _worst_added(paths, Summary.lag, 99)
    if ttft is None or lag is None:
        return Goal(name, target, f"{errors} errors; no stream delivered a chunk", False)
    delivered = min(s.chunks_per_s for s in ours.values())
    figure = (
        f"{errors} errors, {bad} lost or duplicated; TTFT p99 {ttft[1]:+.1f} ms ({ttft[0]}), "
        f"lag p99 {lag[1]:+.1f} ms ({lag[0]}); at least {delivered:,.0f} chunks/s delivered"
    )
    met = not errors and not bad and ttft[1] <= OPEN_TTFT_P99_MS and lag[1] <= OPEN_LAG_P99_MS
    return Goal(name, target, figure, met)


def open_cpu_goal(run: Run) -> Goal:
    name = "2. gateway CPU per chunk"
    target = (
        f"≤{CPU_PER_CHUNK_US:g} µs all-in (the gateway's CPU over the open loop / chunks "
        f"delivered) at {OPEN_RATE}/s, every gateway path"
    )
    ours, why = _open_loop(run)
    found = [(p, us) for p, s in ours.items() if (us := s.cpu_per_chunk_us("gateway"))]
    if why is None and not found:
        why = "no chunks delivered"
    if why is not None:
        return Goal(name, target, why, None)
    path, worst = max(found, key=lambda item: item[1])
    return Goal(name, target, f"worst {worst:,.0f} µs ({path})", worst <= CPU_PER_CHUNK_US)


def litellm_cpu_goal(run: Run) -> Goal:
    name = "2. CPU per chunk, against LiteLLM"
    target = (
        f"LiteLLM spends ≥{CPU_FACTOR:g}x the gateway's CPU per chunk (open loop, "
        "/v1/chat/completions both)"
    )
    _, why = _open_loop(run)
    at_rate = run.open_loop.get(OPEN_RATE, {})
    gateway, proxy = at_rate.get("openai"), at_rate.get("litellm")
    ours = gateway.cpu_per_chunk_us("gateway") if gateway else None
    theirs = proxy.cpu_per_chunk_us("litellm") if proxy else None
    if why is not None:
        return Goal(name, target, why, None)
    if not ours or not theirs:
        missing = "LiteLLM" if not theirs else "the gateway's OpenAI path"
        return Goal(name, target, f"{missing} not measured in the open loop", None)
    ratio = theirs / ours
    figure = f"{ratio:.1f}x ({theirs:,.0f} µs vs {ours:,.0f} µs)"
    return Goal(name, target, figure, ratio >= CPU_FACTOR)


def load_goal(levels: Iterable[Level]) -> Goal:
    name = f"3. closed loop at {LOAD_LEVEL}"
    target = f"{LOAD_LEVEL} streams at once: 0 errors, 0 lost or duplicated tokens (by stamp)"
    at_load = _level(levels, LOAD_LEVEL)
    paths = {p: at_load.paths[p] for p in GATEWAY_PATHS if p in at_load.paths} if at_load else {}
    if not paths:
        return Goal(name, target, f"{LOAD_LEVEL} not measured", None)
    errors = sum(s.failed for s in paths.values())
    bad = sum(s.lost + s.duplicated for s in paths.values())
    figure = f"{errors} errors, {bad} lost or duplicated over {', '.join(paths)}"
    return Goal(name, target, figure, errors == 0 and bad == 0)


def load_memory_goal(levels: Iterable[Level]) -> Goal:
    name = f"3. memory at {LOAD_LEVEL}"
    target = f"peak RSS during the level ≤{RSS_CAP_MIB} MiB (bounded: below this cap)"
    at_load = _level(levels, LOAD_LEVEL)
    if at_load is None or not at_load.gateway_peak_rss_kib:
        return Goal(name, target, f"{LOAD_LEVEL} not measured", None)
    peak = at_load.gateway_peak_rss_kib / 1024
    return Goal(name, target, f"{peak:.1f} MiB", peak <= RSS_CAP_MIB)


def _best_gateway(level: Level) -> tuple[str, float] | None:
    found = [(p, level.paths[p].chunks_per_s) for p in GATEWAY_PATHS if p in level.paths]
    return max(found, key=lambda item: item[1], default=None)


def litellm_ceiling_goal(levels: Sequence[Level]) -> Goal:
    name = "3. throughput, against LiteLLM's ceiling"
    target = (
        f"gateway chunks/s at {LOAD_LEVEL} (best transport) ≥{CEILING_FACTOR:g}x LiteLLM's "
        "highest at any level"
    )
    at_load = _level(levels, LOAD_LEVEL)
    ours = _best_gateway(at_load) if at_load else None
    theirs = [
        (lv.concurrency, lv.paths["litellm"].chunks_per_s) for lv in levels if "litellm" in lv.paths
    ]
    best = max(theirs, key=lambda item: item[1], default=None)
    if ours is None or best is None or not best[1]:
        why = f"gateway at {LOAD_LEVEL} not measured" if ours is None else "LiteLLM not measured"
        return Goal(name, target, why, None)
    ratio = ours[1] / best[1]
    figure = (
        f"{ratio:.1f}x ({ours[1]:,.0f} chunks/s over {ours[0]} vs {best[1]:,.0f} at "
        f"{best[0]} streams)"
    )
    return Goal(name, target, figure, ratio >= CEILING_FACTOR)


def workers_goal(run: Run) -> Goal:
    name = "3. two workers"
    target = (
        f"2 workers deliver ≥{WORKERS_FACTOR:g}x one worker's chunks/s ({LOAD_LEVEL} streams, ws)"
    )
    workers = run.workers
    if workers is None:
        return Goal(name, target, "workers phase not run", None)
    if workers.streams != LOAD_LEVEL:
        return Goal(name, target, f"workers measured at {workers.streams} streams", None)
    one = _level(run.levels, LOAD_LEVEL)
    single = one.paths.get("ws") if one else None
    if single is None or not single.chunks_per_s:
        return Goal(name, target, f"one worker not measured at {LOAD_LEVEL} over ws", None)
    ratio = workers.summary.chunks_per_s / single.chunks_per_s
    figure = (
        f"{ratio:.2f}x ({workers.summary.chunks_per_s:,.0f} vs {single.chunks_per_s:,.0f} "
        f"chunks/s; {workers.summary.failed} errors)"
    )
    return Goal(name, target, figure, ratio >= WORKERS_FACTOR and not workers.summary.failed)


def ceiling_goals(run: Run) -> list[Goal]:
    found = []
    for ceiling in run.ceilings:
        name = f"4. {ceiling.transport} send path"
        target = f"≥{CEILING_SHARE:.0%} of bare uvicorn + Starlette's frames/s"
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
    target = f"≥{CEILING_SHARE:.0%} of bare"
    return found or [Goal("4. send paths", target, "ceilings phase not run", None)]


def ingest_goal(run: Run) -> Goal:
    name = "5. upstream ingest"
    target = f"≤{INGEST_FACTOR:g}x a raw SSE line parse's CPU per upstream chunk"
    ingest = run.ingest
    if ingest is None or ingest.ratio is None:
        return Goal(name, target, "ingest phase not run", None)
    ours, raw = ingest.gateway_us or 0.0, ingest.raw_us or 0.0
    figure = f"{ingest.ratio:.2f}x ({ours:.1f} vs {raw:.1f} µs per chunk)"
    return Goal(name, target, figure, ingest.ratio <= INGEST_FACTOR)


def _per_size(
    idle: Iterable[Idle], value: Callable[[Idle], float | None]
) -> list[tuple[int, float]]:
    return [(i.sockets, v) for i in idle if (v := value(i)) is not None]


def idle_goals(idle: list[Idle]) -> list[Goal]:
    ours = [i for i in idle if i.server == "gateway"]
    return [_idle_memory_goal(ours), _held_goal(ours), _idle_cpu_goal(ours), _connect_goal(ours)]


def _idle_memory_goal(ours: Sequence[Idle]) -> Goal:
    name = "6. memory per idle socket"
    target = f"≤{RSS_PER_SOCKET_BYTES / 1000:g} kB (RSS delta / sockets, every size)"
    rss = _per_size(ours, lambda i: i.rss_per_socket_bytes)
    if not rss:
        return Goal(name, target, "no idle socket measured", None)
    sockets, worst = max(rss, key=lambda item: item[1])
    figure = f"worst {worst / 1000:.1f} kB at {sockets:,}"
    return Goal(name, target, figure, worst <= RSS_PER_SOCKET_BYTES)


def _connect_goal(ours: Sequence[Idle]) -> Goal:
    name = "6. connect rate"
    target = f"≥{CONNECTS_PER_S:g} authenticated connections/s (every size)"
    rates = _per_size(ours, lambda i: i.connects_per_s if i.connected else None)
    if not rates:
        return Goal(name, target, "no idle socket measured", None)
    sockets, worst = min(rates, key=lambda item: item[1])
    return Goal(name, target, f"worst {worst:,.0f}/s at {sockets:,}", worst >= CONNECTS_PER_S)


def _at_size(ours: Iterable[Idle]) -> Idle | None:
    """The gateway's hold at the goal's size and length, if the run had one."""
    return next((i for i in ours if i.sockets >= IDLE_SOCKETS and i.hold_s >= IDLE_HOLD_S), None)


def _largest(ours: Sequence[Idle]) -> str:
    if not ours:
        return "no idle socket measured"
    i = max(ours, key=lambda i: i.sockets)
    return f"only {i.sockets:,} sockets for {i.hold_s:g} s measured"


def _held_goal(ours: Sequence[Idle]) -> Goal:
    name = f"6. {IDLE_SOCKETS:,} idle sockets held"
    target = f"{IDLE_SOCKETS:,} held {IDLE_HOLD_S:g} s with heartbeats: 0 dropped or refused"
    held = _at_size(ours)
    if held is None:
        return Goal(name, target, _largest(ours), None)
    lost = held.drops + held.sockets - held.connected
    figure = f"{lost} lost of {held.sockets:,}; {held.pings:,} heartbeats answered"
    return Goal(name, target, figure, lost == 0 and held.pings > 0)


def _idle_cpu_goal(ours: Sequence[Idle]) -> Goal:
    name = f"6. CPU while idle at {IDLE_SOCKETS:,}"
    target = f"≤{IDLE_CPU_SHARE:.0%} of a core while the sockets are held"
    held = _at_size(ours)
    if held is None:
        return Goal(name, target, _largest(ours), None)
    share = held.cpu_share
    return Goal(name, target, f"{share:.1%} of a core", share <= IDLE_CPU_SHARE)


def redis_goals(run: Run) -> list[Goal]:
    cpu_name, trips_name = "7. Redis client CPU", "7. Redis round trips"
    cpu_target = f"≤{REDIS_CPU_PER_EVENT_US:g} µs per log event (all-in CPU of the writing process)"
    trips_target = (
        "nothing on the send path awaits Redis per chunk (round trips < events); "
        "a finish with its answer: 1 round trip"
    )
    load = run.redis_load
    if load is None or load.cpu_per_event_us is None:
        return [
            Goal(cpu_name, cpu_target, "redis phase not run", None),
            Goal(trips_name, trips_target, "redis phase not run", None),
        ]
    per_event = load.cpu_per_event_us
    finishes = load.finish_round_trips
    per_finish = max(finishes, default=0)
    trips_figure = (
        f"{load.round_trips:,} round trips for {load.events:,} events; "
        f"up to {per_finish} per finish"
    )
    return [
        Goal(cpu_name, cpu_target, f"{per_event:.1f} µs", per_event <= REDIS_CPU_PER_EVENT_US),
        Goal(
            trips_name,
            trips_target,
            trips_figure,
            load.round_trips < load.events and bool(finishes) and set(finishes) == {1},
        ),
    ]


def footprint_goals(run: Run) -> list[Goal]:
    ours = [s for s in run.starts if s.server == "gateway"]
    rss_target = f"≤{IDLE_RSS_BYTES / 1e6:g} MB at ready, before any traffic (median of starts)"
    ready_target = f"≤{READY_S:g} s from spawn to ready, Redis external (median of starts)"
    if not ours:
        return [
            Goal("8. idle RSS", rss_target, "no start measured", None),
            Goal("8. start to ready", ready_target, "no start measured", None),
        ]
    rss = statistics.median(s.rss_kib * 1024 for s in ours)
    ready = statistics.median(s.ready_s for s in ours)
    return [
        Goal("8. idle RSS", rss_target, f"{rss / 1e6:.1f} MB", rss <= IDLE_RSS_BYTES),
        Goal("8. start to ready", ready_target, f"{ready:.2f} s", ready <= READY_S),
    ]

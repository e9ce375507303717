"""What one run of the bench measured, phase by phase; filled in as the run goes."""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from bench.stats import Summary


@dataclass(frozen=True, slots=True)
class Level:
    """Closed loop: N streams at once, per path. `redis_commands` counts what Redis ran
    during a path's rounds (INFO commandstats), for the gateway's paths."""

    concurrency: int
    paths: Mapping[str, Summary]
    redis_commands: Mapping[str, Mapping[str, int]] = field(default_factory=dict)
    gateway_rss_kib: int = 0  # after the level
    gateway_peak_rss_kib: int = 0  # the most during the level (VmHWM, reset before it)


@dataclass(frozen=True, slots=True)
class Workers:
    """The closed loop over WebSocket against a gateway of `workers` processes."""

    workers: int
    streams: int
    summary: Summary  # CPU named "gateway" sums the serving process and its workers
    peak_rss_kib: int  # the workers' peaks during the level, added up
    ready_s: float


@dataclass(frozen=True, slots=True)
class Burst:
    """One side of a ceiling: frames sent as fast as they go to one client."""

    frames: int
    span_s: float  # from the first frame received to the last, summed over the bursts
    cpu_s: float  # the server's CPU over the bursts
    errors: tuple[str, ...] = ()

    @property
    def frames_per_s(self) -> float:
        return self.frames / self.span_s if self.span_s else 0.0

    @property
    def cpu_per_frame_us(self) -> float | None:
        return 1e6 * self.cpu_s / self.frames if self.frames else None


@dataclass(frozen=True, slots=True)
class Ceiling:
    transport: str  # "WebSocket" or "SSE"
    bare: Burst
    gateway: Burst

    @property
    def share(self) -> float | None:
        bare = self.bare.frames_per_s
        return self.gateway.frames_per_s / bare if bare else None


@dataclass(frozen=True, slots=True)
class Idle:
    """K sockets opened, authenticated (`ready` received) and held."""

    server: str  # "gateway" or "bare"
    sockets: int
    connected: int
    connect_s: float  # from the first connect to the last `ready`
    rss_before_kib: int
    rss_after_kib: int  # at the end of the hold, every socket still open
    hold_s: float
    cpu_s: float  # the server's CPU during the hold
    drops: int
    pings: int  # heartbeats the clients answered during the hold
    nofile: int | None  # the server's open-files limit
    errors: tuple[str, ...] = ()

    @property
    def connects_per_s(self) -> float:
        return self.connected / self.connect_s if self.connect_s else 0.0

    @property
    def rss_per_socket_bytes(self) -> float | None:
        if not self.connected:
            return None
        return 1024 * (self.rss_after_kib - self.rss_before_kib) / self.connected

    @property
    def cpu_share(self) -> float:
        return self.cpu_s / self.hold_s if self.hold_s else 0.0


def _median_us(cpu_s: Sequence[float], chunks: int) -> float | None:
    return 1e6 * statistics.median(cpu_s) / chunks if cpu_s and chunks else None


@dataclass(frozen=True, slots=True)
class Ingest:
    """The same upstream answers read in the bench's own process, by turns: through the
    gateway's upstream client, and by a raw SSE line parse. CPU seconds per turn and side."""

    answers: int  # per turn and side
    tokens: int  # per answer: the denominator, however the chunks were merged on the way
    gateway_cpu_s: tuple[float, ...]
    raw_cpu_s: tuple[float, ...]

    @property
    def gateway_us(self) -> float | None:
        return _median_us(self.gateway_cpu_s, self.answers * self.tokens)

    @property
    def raw_us(self) -> float | None:
        return _median_us(self.raw_cpu_s, self.answers * self.tokens)

    @property
    def ratio(self) -> float | None:
        ours, raw = self.gateway_us, self.raw_us
        return ours / raw if ours is not None and raw else None


@dataclass(frozen=True, slots=True)
class RedisLoad:
    """The gateway's log writer in the bench's own process: generations adding an event
    every interval, then finishing one by one, each with its answer."""

    generations: int
    interval_ms: float
    window_ms: float  # the writer's flush window (LOG_FLUSH_MS's default)
    wall_s: float
    cpu_s: float  # the writing process's CPU over the whole of it
    events: int  # written to Redis
    round_trips: int
    finish_round_trips: tuple[int, ...]  # per finish

    @property
    def cpu_per_event_us(self) -> float | None:
        return 1e6 * self.cpu_s / self.events if self.events else None


@dataclass(frozen=True, slots=True)
class Start:
    """A server from spawn to ready, and its RSS then."""

    server: str
    ready_s: float
    rss_kib: int


@dataclass(slots=True)
class Run:
    command: str
    date: str
    options: Mapping[str, Any]
    machine: dict[str, str]
    levels: list[Level] = field(default_factory=list)
    open_loop: dict[int, dict[str, Summary]] = field(default_factory=dict)  # by rate, path
    ceilings: list[Ceiling] = field(default_factory=list)
    idle: list[Idle] = field(default_factory=list)
    starts: list[Start] = field(default_factory=list)
    workers: Workers | None = None
    ingest: Ingest | None = None
    redis_load: RedisLoad | None = None
    gateway_warm_rss_kib: int = 0
    gateway_peak_rss_kib: int = 0
    litellm: str | None = None  # its version, or why it is absent
    profile: str | None = None  # where the gateway's profile was written
    profile_top: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    elapsed_s: float = 0.0

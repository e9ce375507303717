"""What one run of the bench measured, phase by phase; filled in as the run goes."""

from __future__ import annotations

from collections.abc import Mapping
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
    gateway_rss_kib: int = 0


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
    open_loop: dict[str, Summary] = field(default_factory=dict)
    ceilings: list[Ceiling] = field(default_factory=list)
    idle: list[Idle] = field(default_factory=list)
    starts: list[Start] = field(default_factory=list)
    gateway_warm_rss_kib: int = 0
    gateway_peak_rss_kib: int = 0
    litellm: str | None = None  # its version, or why it is absent
    profile: str | None = None  # where the gateway's profile was written
    profile_top: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    elapsed_s: float = 0.0

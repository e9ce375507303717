"""What one stream looked like to the client, and the percentiles and sums over many.

Pure: no I/O, so the report and its tests share the same arithmetic.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

NS_PER_MS = 1_000_000


@dataclass(frozen=True, slots=True)
class Stream:
    """One stream as the client saw it. Each chunk is (received_ns, stamped_ns), one per
    upstream token: a frame carrying several tokens (read together, the gateway sends them
    as one) gives one each, at the frame's time. The stamp is None when the content was not a
    send time. `seqs` holds the frames' sequence numbers where the transport carries them
    (the gateway's WebSocket and native SSE)."""

    sent_ns: int
    chunks: tuple[tuple[int, int | None], ...]
    complete: bool
    error: str | None = None
    seqs: tuple[int, ...] = ()

    @property
    def ttft_ms(self) -> float | None:
        if not self.chunks:
            return None
        return (self.chunks[0][0] - self.sent_ns) / NS_PER_MS

    def lags_ms(self) -> list[float]:
        return [(got - stamp) / NS_PER_MS for got, stamp in self.chunks if stamp is not None]

    def lost(self, expected: int) -> int:
        """Tokens that never arrived: by stamp, where the content is one, else by seq."""
        return max(0, expected - len(set(self._keys())))

    def duplicated(self) -> int:
        """Tokens that arrived more than once, by stamp, else by seq."""
        keys = self._keys()
        return sum(n - 1 for n in Counter(keys).values()) if keys else 0

    def _keys(self) -> Sequence[int]:
        # A stamp names a token whichever frame carried it; a seq names a frame, which may
        # carry several tokens.
        stamps = [stamp for _, stamp in self.chunks if stamp is not None]
        return stamps or self.seqs


@dataclass(frozen=True, slots=True)
class Round:
    """N streams measured together. `cpu_s` is the CPU time each process used during the
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
    lost: int = 0
    duplicated: int = 0

    @property
    def chunks_per_s(self) -> float:
        return self.chunks / self.span_s if self.span_s else 0.0

    @property
    def failed(self) -> int:
        return self.streams - self.complete

    def ttft(self, q: float) -> float | None:
        return percentile(self.ttft_ms, q)

    def lag(self, q: float) -> float | None:
        return percentile(self.lag_ms, q)

    def cpu_per_chunk_us(self, name: str) -> float | None:
        if not self.chunks or name not in self.cpu_s:
            return None
        return 1e6 * self.cpu_s[name] / self.chunks

    def cpu_share(self, *names: str) -> float:
        """CPU time of the named processes over wall time: 1.0 is one core kept busy."""
        used = sum(self.cpu_s.get(name, 0.0) for name in names)
        return used / self.wall_s if self.wall_s else 0.0


def summarize(rounds: Sequence[Round], expected_chunks: int) -> Summary:
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
        errors=error_counts(s.error for s in streams),
        lost=sum(s.lost(expected_chunks) for s in streams),
        duplicated=sum(s.duplicated() for s in streams),
    )


def error_counts(errors: Iterable[str | None]) -> tuple[str, ...]:
    counted = Counter(e for e in errors if e)
    return tuple(f"{reason} ({count})" for reason, count in sorted(counted.items()))


def percentile(values: Sequence[float], q: float) -> float | None:
    """Linear interpolation between closest ranks (numpy's default), None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def added(through: float | None, direct: float | None) -> float | None:
    """What a proxy adds to a figure measured directly in the same run."""
    return None if through is None or direct is None else through - direct

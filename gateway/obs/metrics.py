"""Prometheus metrics: counters, gauges and histograms, rendered in the text exposition
format 0.0.4, with no dependency beyond the standard library.

    registry = Registry()
    sent = registry.counter("frames_sent_total", "Frames sent.", ["transport"])
    ws_sent = sent.labels("ws")      # bind a child once where a hot path needs it
    ws_sent.inc()
    registry.expose()                # the text served at GET /metrics

Label values must come from a bounded set the gateway knows (transports, error codes,
configured model names), never from what a client sends: every value is a series kept for
the life of the process.

A registry belongs to one process and is used from its event loop only: updates are plain
attribute arithmetic, with no lock. Under `serve --workers N` each worker has its own
registry and a scrape through a load balancer reads one worker at random; see
docs/observability.md.
"""

from __future__ import annotations

import math
import re
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator, Sequence
from itertools import pairwise
from typing import ClassVar, Generic, TypeVar

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_NAME_RE = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
_LABEL_RE = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")

LabelValues = tuple[str, ...]


def format_value(value: float) -> str:
    """A sample value as Prometheus parses it (Go's ParseFloat): `+Inf`, `-Inf`, `NaN`."""
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(value)


def escape_label_value(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def label_text(names: Sequence[str], values: Sequence[str]) -> str:
    """`{a="1",b="2"}`, or "" without labels."""
    if not names:
        return ""
    pairs = ",".join(f'{n}="{escape_label_value(v)}"' for n, v in zip(names, values, strict=True))
    return "{" + pairs + "}"


class CounterChild:
    """One series of a counter."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value: float = 0

    def inc(self, amount: float = 1) -> None:
        """Add `amount` (1 by default); a counter only goes up."""
        if amount < 0:
            raise ValueError("A counter cannot decrease.")
        self.value += amount


class GaugeChild:
    """One series of a gauge: set it, move it, or let a function give it at scrape time."""

    __slots__ = ("_function", "_value")

    def __init__(self) -> None:
        self._value: float = 0
        self._function: Callable[[], float] | None = None

    def set(self, value: float) -> None:
        self._value = value

    def inc(self, amount: float = 1) -> None:
        self._value += amount

    def dec(self, amount: float = 1) -> None:
        self._value -= amount

    def set_function(self, function: Callable[[], float]) -> None:
        """Read the value from `function` at every scrape (e.g. `len(running)`): nothing to
        keep in step, nothing to leak when an exception skips a `dec()`."""
        self._function = function

    @property
    def value(self) -> float:
        return self._value if self._function is None else self._function()


class HistogramChild:
    """One series of a histogram. `observe` is a bisect over the bucket bounds and two
    additions: no allocation beyond the float sum itself."""

    __slots__ = ("_bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self._bounds = bounds
        # Per-bucket (not cumulative) counts; the last slot is the +Inf bucket.
        self.counts = [0] * (len(bounds) + 1)
        self.sum: float = 0.0

    def observe(self, value: float) -> None:
        # bisect_left finds the first bound >= value: Prometheus buckets are `le` (<=).
        self.counts[bisect_left(self._bounds, value)] += 1
        self.sum += value


Child = TypeVar("Child", CounterChild, GaugeChild, HistogramChild)


class Metric(Generic[Child]):
    """A metric family: a name, a help text, label names, and one child per label values."""

    kind: ClassVar[str]

    def __init__(self, name: str, help: str, labels: Sequence[str] = ()) -> None:
        if not _NAME_RE.match(name):
            raise ValueError(f"Invalid metric name '{name}'.")
        for label in labels:
            if not _LABEL_RE.match(label) or label.startswith("__") or label == "le":
                raise ValueError(f"Invalid label name '{label}' on '{name}'.")
        self.name = name
        self.help = help
        self.label_names = tuple(labels)
        self._children: dict[LabelValues, Child] = {}
        self._labels_text: dict[LabelValues, str] = {}
        if not labels:
            self._only: Child | None = self.labels()
        else:
            self._only = None

    def labels(self, *values: str) -> Child:
        """The child for these label values, in the order of the label names; a dict lookup
        after the first call. Keep the child where a hot path can reach it."""
        child = self._children.get(values)
        if child is None:
            child = self._add(values)
        return child

    def _add(self, values: LabelValues) -> Child:
        if len(values) != len(self.label_names):
            raise ValueError(f"'{self.name}' takes labels {self.label_names}, got {values}.")
        if not all(isinstance(v, str) for v in values):
            raise TypeError(f"Label values of '{self.name}' must be strings.")
        child = self._new_child()
        self._children[values] = child
        self._labels_text[values] = label_text(self.label_names, values)
        return child

    def _single(self) -> Child:
        if self._only is None:
            raise ValueError(f"'{self.name}' has labels {self.label_names}: call .labels() first.")
        return self._only

    def _new_child(self) -> Child:
        raise NotImplementedError

    def samples(self) -> Iterator[str]:
        """The sample lines, without HELP and TYPE."""
        raise NotImplementedError

    def expose(self) -> Iterator[str]:
        yield f"# HELP {self.name} {escape_help(self.help)}"
        yield f"# TYPE {self.name} {self.kind}"
        yield from self.samples()


class Counter(Metric[CounterChild]):
    kind = "counter"

    def __init__(self, name: str, help: str, labels: Sequence[str] = ()) -> None:
        if not name.endswith("_total"):
            raise ValueError(f"Counter '{name}' must end in _total.")
        super().__init__(name, help, labels)

    def _new_child(self) -> CounterChild:
        return CounterChild()

    def inc(self, amount: float = 1) -> None:
        """For a counter without labels."""
        self._single().inc(amount)

    def samples(self) -> Iterator[str]:
        for values, child in list(self._children.items()):
            yield f"{self.name}{self._labels_text[values]} {format_value(child.value)}"


class Gauge(Metric[GaugeChild]):
    kind = "gauge"

    def _new_child(self) -> GaugeChild:
        return GaugeChild()

    def set(self, value: float) -> None:
        self._single().set(value)

    def inc(self, amount: float = 1) -> None:
        self._single().inc(amount)

    def dec(self, amount: float = 1) -> None:
        self._single().dec(amount)

    def set_function(self, function: Callable[[], float]) -> None:
        """For a gauge without labels: see `GaugeChild.set_function`."""
        self._single().set_function(function)

    def samples(self) -> Iterator[str]:
        for values, child in list(self._children.items()):
            try:
                value = child.value
            except Exception:  # a failing callback loses its sample, not the whole scrape
                continue
            yield f"{self.name}{self._labels_text[values]} {format_value(value)}"


class Histogram(Metric[HistogramChild]):
    kind = "histogram"

    def __init__(
        self, name: str, help: str, buckets: Iterable[float], labels: Sequence[str] = ()
    ) -> None:
        bounds = tuple(float(b) for b in buckets if not math.isinf(b))
        if not bounds or any(a >= b for a, b in pairwise(bounds)):
            raise ValueError(f"Histogram '{name}' needs increasing bucket bounds.")
        self.bounds = bounds
        self._le = [format_value(b) for b in bounds] + ["+Inf"]
        super().__init__(name, help, labels)

    def _new_child(self) -> HistogramChild:
        return HistogramChild(self.bounds)

    def observe(self, value: float) -> None:
        """For a histogram without labels."""
        self._single().observe(value)

    def samples(self) -> Iterator[str]:
        for values, child in list(self._children.items()):
            yield from self._child_samples(values, child)

    def _child_samples(self, values: LabelValues, child: HistogramChild) -> Iterator[str]:
        pairs = self._labels_text[values][1:-1]  # without braces, to add `le`
        prefix = pairs + "," if pairs else ""
        counts, total_sum = list(child.counts), child.sum  # one consistent reading
        cumulative = 0
        for le, count in zip(self._le, counts, strict=True):
            cumulative += count
            yield f'{self.name}_bucket{{{prefix}le="{le}"}} {cumulative}'
        braces = self._labels_text[values]
        yield f"{self.name}_sum{braces} {format_value(total_sum)}"
        yield f"{self.name}_count{braces} {cumulative}"


_AnyMetric = TypeVar("_AnyMetric", Counter, Gauge, Histogram)


class Registry:
    """The metrics one process exposes, in the order they were made."""

    def __init__(self) -> None:
        self._metrics: dict[str, Counter | Gauge | Histogram] = {}

    def counter(self, name: str, help: str, labels: Sequence[str] = ()) -> Counter:
        return self._register(Counter(name, help, labels))

    def gauge(self, name: str, help: str, labels: Sequence[str] = ()) -> Gauge:
        return self._register(Gauge(name, help, labels))

    def histogram(
        self, name: str, help: str, buckets: Iterable[float], labels: Sequence[str] = ()
    ) -> Histogram:
        return self._register(Histogram(name, help, buckets, labels))

    def _register(self, metric: _AnyMetric) -> _AnyMetric:
        if metric.name in self._metrics:
            raise ValueError(f"Metric '{metric.name}' is already registered.")
        self._metrics[metric.name] = metric
        return metric

    def expose(self) -> str:
        """Every metric in the text exposition format 0.0.4."""
        lines = [line for metric in self._metrics.values() for line in metric.expose()]
        return "\n".join(lines) + "\n"


# Seconds. Time to first token spans a cached 1 ms answer to a 30 s cold start.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
# What the gateway itself adds to a chunk: tens of microseconds when healthy.
OVERHEAD_BUCKETS = (
    0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001,
    0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
)  # fmt: skip
# Gaps between chunks: a fast upstream sends them a fraction of a millisecond apart.
GAP_BUCKETS = (0.0001, 0.0005, *LATENCY_BUCKETS)
TRANSPORTS = ("ws", "sse", "http")


class GatewayMetrics:
    """The gateway's metrics, one instance per process (held as `services.metrics`).

    Call sites name a metric and, where it has labels, its label values in order:

        metrics.errors.labels("rate_limited").inc()
        metrics.time_to_first_token.labels(model).observe(seconds)
        metrics.generations_running.set_function(lambda: len(running))
        frames = metrics.frames_sent.labels("ws")   # bind once per connection, then
        frames.inc()                                 # a plain method call per frame

    Times are in seconds (`time.perf_counter()` differences).
    """

    def __init__(self) -> None:
        r = self.registry = Registry()
        # Connections. transport: ws (WebSockets), sse (event-stream responses), http (other
        # requests in progress).
        self.connections = r.gauge(
            "gateway_connections", "Open client connections, by transport.", ["transport"]
        )
        self.connections_total = r.counter(
            "gateway_connections_total", "Client connections ended, by transport.", ["transport"]
        )
        self.frames_sent = r.counter(
            "gateway_frames_sent_total",
            "Frames (WebSocket messages, SSE events) sent to clients, by transport.",
            ["transport"],
        )
        self.frames_received = r.counter(
            "gateway_frames_received_total",
            "Frames received from clients, by transport.",
            ["transport"],
        )
        # Generations. outcome: done, cancelled, failed, interrupted.
        self.generations_running = r.gauge(
            "gateway_generations_running", "Generations running in this process."
        )
        self.generations_total = r.counter(
            "gateway_generations_total", "Generations ended, by outcome.", ["outcome"]
        )
        self.time_to_first_token = r.histogram(
            "gateway_time_to_first_token_seconds",
            "From accepting a completion to publishing its first content chunk, by model.",
            LATENCY_BUCKETS,
            ["model"],
        )
        self.chunk_gap = r.histogram(
            "gateway_chunk_gap_seconds",
            "Time between two consecutive content chunks of a generation.",
            GAP_BUCKETS,
        )
        self.overhead = r.histogram(
            "gateway_overhead_seconds",
            "From an event reaching its generation to its frames being queued for every "
            "subscriber (numbering, logging, encoding, fan-out).",
            OVERHEAD_BUCKETS,
        )
        self.cancel_latency = r.histogram(
            "gateway_cancel_seconds",
            "From a cancel request to the upstream request being closed.",
            LATENCY_BUCKETS,
        )
        # Failures and refusals. code: the error codes of docs/protocol.md.
        self.errors = r.counter(
            "gateway_errors_total", "Errors sent to clients, by code.", ["code"]
        )
        self.rate_limited = r.counter(
            "gateway_rate_limited_total", "Requests refused by a limit, by limit name.", ["limit"]
        )
        # Upstream (the model servers) and Redis.
        self.upstream_latency = r.histogram(
            "gateway_upstream_request_seconds",
            "From sending an upstream request to its response headers, by model.",
            LATENCY_BUCKETS,
            ["model"],
        )
        self.upstream_errors = r.counter(
            "gateway_upstream_errors_total", "Failed upstream requests, by error code.", ["code"]
        )
        self.redis_errors = r.counter(
            "gateway_redis_errors_total", "Redis commands that failed or timed out."
        )
        # Resume.
        self.resumes = r.counter("gateway_resumes_total", "Generations resumed by a client.")
        self.replayed_events = r.counter(
            "gateway_replayed_events_total", "Events replayed to resuming clients."
        )
        # Series that exist from the start, so a rate() sees their first increase.
        for transport in TRANSPORTS:
            self.connections.labels(transport)
            self.connections_total.labels(transport)
        for transport in ("ws", "sse"):
            self.frames_sent.labels(transport)
        self.frames_received.labels("ws")

    def expose(self) -> str:
        return self.registry.expose()

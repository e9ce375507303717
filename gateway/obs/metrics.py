"""The gateway's Prometheus metrics, on prometheus-client.

One process: a registry of its own per `GatewayMetrics`, with the standard process_* metrics.
Under `serve --workers N` (PROMETHEUS_MULTIPROC_DIR set by the serving process, see
`gateway.obs.multiprocess`): every worker writes its samples to files in that folder and a
scrape, whichever worker answers it, reads them all: counters summed, histograms merged,
gauges summed over the live workers only, and no `pid` label.

Label values must come from a bounded set the gateway knows (transports, error codes,
configured model names), never from what a client sends: every value is a series kept for
the life of the process.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import os
from pathlib import Path

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
    multiprocess,
)
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

from gateway.obs.multiprocess import MULTIPROC_ENV

CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4

# Read once, as prometheus-client itself does on import: the values it stores follow it.
_FOLDER = os.environ.get(MULTIPROC_ENV) or None

# `*_created` series were never part of our exposition, and multiprocess mode has none.
disable_created_metrics()  # type: ignore[no-untyped-call]

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
        metrics.generations_running.set(len(running))
        frames = metrics.frames_sent.labels("ws")   # bind once per connection, then
        frames.inc()                                 # a plain method call per frame

    Gauges are set, moved or summed as live values: a gauge read from a function at scrape
    time (`set_function`) only works in one process, since a scrape in multiprocess mode reads
    files, not other workers' functions. Times are in seconds (`time.perf_counter()`
    differences).
    """

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.multiprocess_folder = _FOLDER
        # Connections. transport: ws (WebSockets), sse (event-stream responses), http (other
        # requests in progress).
        self.connections = _gauge(
            r, "gateway_connections", "Open client connections, by transport.", ["transport"]
        )
        # Named gateway_connections_total before prometheus-client, which reserves a
        # counter's name without `_total` and so refuses it beside the gauge above.
        self.connections_total = Counter(
            "gateway_connections_closed_total",
            "Client connections ended, by transport.",
            ["transport"],
            registry=r,
        )
        self.frames_sent = Counter(
            "gateway_frames_sent_total",
            "Frames (WebSocket messages, SSE events) sent to clients, by transport.",
            ["transport"],
            registry=r,
        )
        self.frames_received = Counter(
            "gateway_frames_received_total",
            "Frames received from clients, by transport.",
            ["transport"],
            registry=r,
        )
        # Generations. outcome: done, cancelled, failed, interrupted.
        self.generations_running = _gauge(
            r, "gateway_generations_running", "Generations running in the gateway's processes."
        )
        self.generations_total = Counter(
            "gateway_generations_total", "Generations ended, by outcome.", ["outcome"], registry=r
        )
        self.time_to_first_token = Histogram(
            "gateway_time_to_first_token_seconds",
            "From accepting a completion to publishing its first content chunk, by model.",
            ["model"],
            registry=r,
            buckets=LATENCY_BUCKETS,
        )
        self.chunk_gap = Histogram(
            "gateway_chunk_gap_seconds",
            "Time between two consecutive content chunks of a generation.",
            registry=r,
            buckets=GAP_BUCKETS,
        )
        self.overhead = Histogram(
            "gateway_overhead_seconds",
            "From an event reaching its generation to its frames being queued for every "
            "subscriber (numbering, logging, encoding, fan-out).",
            registry=r,
            buckets=OVERHEAD_BUCKETS,
        )
        self.cancel_latency = Histogram(
            "gateway_cancel_seconds",
            "From a cancel request to the upstream request being closed.",
            registry=r,
            buckets=LATENCY_BUCKETS,
        )
        # Failures and refusals. code: the error codes of docs/protocol.md.
        self.errors = Counter(
            "gateway_errors_total", "Errors sent to clients, by code.", ["code"], registry=r
        )
        self.rate_limited = Counter(
            "gateway_rate_limited_total",
            "Requests refused by a limit, by limit name.",
            ["limit"],
            registry=r,
        )
        # Upstream (the model servers) and Redis.
        self.upstream_latency = Histogram(
            "gateway_upstream_request_seconds",
            "From sending an upstream request to its response headers, by model.",
            ["model"],
            registry=r,
            buckets=LATENCY_BUCKETS,
        )
        self.upstream_errors = Counter(
            "gateway_upstream_errors_total",
            "Failed upstream requests, by error code.",
            ["code"],
            registry=r,
        )
        self.redis_errors = Counter(
            "gateway_redis_errors_total", "Redis commands that failed or timed out.", registry=r
        )
        # Resume.
        self.resumes = Counter(
            "gateway_resumes_total", "Generations resumed by a client.", registry=r
        )
        self.replayed_events = Counter(
            "gateway_replayed_events_total", "Events replayed to resuming clients.", registry=r
        )
        # Series that exist from the start, so a rate() sees their first increase.
        for transport in TRANSPORTS:
            self.connections.labels(transport)
            self.connections_total.labels(transport)
        for transport in ("ws", "sse"):
            self.frames_sent.labels(transport)
        self.frames_received.labels("ws")
        self._scraped = self._scrape_registry()

    def _scrape_registry(self) -> CollectorRegistry:
        if self.multiprocess_folder is None:
            ProcessCollector(registry=self.registry)
            return self.registry
        _forget_this_worker_at_exit()
        merged = CollectorRegistry()
        multiprocess.MultiProcessCollector(merged, self.multiprocess_folder)  # type: ignore[no-untyped-call]
        return merged

    def expose(self) -> str:
        """Every metric in the Prometheus text format 0.0.4."""
        if self.multiprocess_folder is not None:
            forget_dead_workers(Path(self.multiprocess_folder))
        return generate_latest(self._scraped).decode()


def _gauge(
    registry: CollectorRegistry, name: str, help: str, labels: list[str] | None = None
) -> Gauge:
    # livesum: one scrape shows the sum over the workers running now; a worker's share goes
    # when it is marked dead. Without a folder the mode is ignored.
    return Gauge(name, help, labels or [], registry=registry, multiprocess_mode="livesum")


@functools.cache
def _forget_this_worker_at_exit() -> None:
    """Drop this worker's live gauges when it exits, so a scrape stops counting its
    connections and generations; its counters stay, as counters never go down."""
    atexit.register(lambda: multiprocess.mark_process_dead(os.getpid(), _FOLDER))  # type: ignore[no-untyped-call]


def forget_dead_workers(folder: Path) -> None:
    """Drop the live gauges of workers that ended without running their exit hook (killed),
    so that their sockets and generations stop counting; uvicorn starts a new worker in
    their place, which counts from zero."""
    for path in folder.glob("gauge_live*_*.db"):
        pid = int(path.stem.rsplit("_", 1)[1])
        if not _running(pid):
            with contextlib.suppress(FileNotFoundError):  # another worker got there first
                multiprocess.mark_process_dead(pid, str(folder))  # type: ignore[no-untyped-call]


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process, hence alive
        return True
    return True

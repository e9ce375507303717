"""Metrics: the exposition read back by a small parser of our own, /metrics end to end with and
without METRICS_TOKEN, and X-Gateway-Overhead-Ms on HTTP responses."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import replace

import httpx2
import pytest

from gateway.app import create_app
from gateway.config import Limits, Secret, Settings
from gateway.obs.metrics import CONTENT_TYPE, OVERHEAD_BUCKETS, GatewayMetrics
from gateway.server.options import uvicorn_options
from tests.client import connected, send, until_done
from tests.conftest import GatewayFactory
from tests.exposition import parse
from tests.upstream import serve_in_thread

Mint = Callable[..., str]
METRICS_TOKEN = "scrape-secret-0123456789"

# --- The gateway's registry, read back --------------------------------------------------------


def test_histogram_buckets_are_cumulative_with_sum_and_count() -> None:
    metrics = GatewayMetrics()
    child = metrics.time_to_first_token.labels("a")
    for value in (0.05, 0.1, 0.3, 0.7, 2.0, 50.0):
        child.observe(value)
    found = parse(metrics.expose())
    buckets = {
        dict(labels)["le"]: value
        for labels, value in found.series("gateway_time_to_first_token_seconds_bucket").items()
    }
    # `le` is inclusive: 0.1 falls in the 0.1 bucket.
    assert buckets["0.05"] == 1 and buckets["0.1"] == 2 and buckets["0.25"] == 2
    assert buckets["0.5"] == 3 and buckets["1.0"] == 4 and buckets["2.5"] == 5
    assert buckets["30.0"] == 5 and buckets["+Inf"] == 6
    assert found.value("gateway_time_to_first_token_seconds_count", model="a") == 6
    assert found.value("gateway_time_to_first_token_seconds_sum", model="a") == pytest.approx(53.15)


def test_label_values_are_escaped() -> None:
    metrics = GatewayMetrics()
    tricky = 'back\\slash "quoted"\nnew line'
    metrics.upstream_errors.labels(tricky).inc()
    text = metrics.expose()
    assert '{code="back\\\\slash \\"quoted\\"\\nnew line"}' in text
    assert parse(text).value("gateway_upstream_errors_total", code=tricky) == 1


def test_a_gauge_moves_and_a_counter_refuses_to_decrease() -> None:
    metrics = GatewayMetrics()
    ws = metrics.connections.labels("ws")
    ws.inc()
    ws.inc()
    ws.dec()
    metrics.replayed_events.inc(2.5)
    with pytest.raises(ValueError, match="increment"):
        metrics.resumes.inc(-1)
    found = parse(metrics.expose())
    assert found.value("gateway_connections", transport="ws") == 1
    assert found.value("gateway_replayed_events_total") == 2.5


def test_one_process_has_the_process_metrics() -> None:
    found = parse(GatewayMetrics().expose())
    assert found.types["process_cpu_seconds_total"] == "counter"
    assert found.value("process_resident_memory_bytes") > 0
    assert found.value("process_open_fds") > 0
    assert found.value("process_start_time_seconds") > 0


def test_gateway_metrics_expose_every_family() -> None:
    metrics = GatewayMetrics()
    metrics.errors.labels("rate_limited").inc()
    metrics.time_to_first_token.labels("fake").observe(0.2)
    metrics.overhead.observe(0.00003)
    metrics.rate_limited.labels("requests_per_minute").inc()
    metrics.resumes.inc()
    metrics.replayed_events.inc(12)
    metrics.generations_running.set_function(lambda: 4)
    found = parse(metrics.expose())
    gateway_types = {k: v for k, v in found.types.items() if k.startswith("gateway_")}
    assert gateway_types == {
        "gateway_connections": "gauge",
        "gateway_connections_closed_total": "counter",  # gateway_connections_total before
        "gateway_frames_sent_total": "counter",
        "gateway_frames_received_total": "counter",
        "gateway_generations_running": "gauge",
        "gateway_generations_total": "counter",
        "gateway_time_to_first_token_seconds": "histogram",
        "gateway_chunk_gap_seconds": "histogram",
        "gateway_overhead_seconds": "histogram",
        "gateway_cancel_seconds": "histogram",
        "gateway_errors_total": "counter",
        "gateway_rate_limited_total": "counter",
        "gateway_upstream_request_seconds": "histogram",
        "gateway_upstream_errors_total": "counter",
        "gateway_redis_errors_total": "counter",
        "gateway_resumes_total": "counter",
        "gateway_replayed_events_total": "counter",
    }
    assert all(found.helps[name] for name in gateway_types)
    assert found.value("gateway_connections", transport="sse") == 0
    assert found.value("gateway_errors_total", code="rate_limited") == 1
    assert found.value("gateway_time_to_first_token_seconds_bucket", model="fake", le="0.25") == 1
    assert found.value("gateway_time_to_first_token_seconds_bucket", model="fake", le="0.1") == 0
    assert found.value("gateway_overhead_seconds_bucket", le="5e-05") == 1
    assert found.value("gateway_replayed_events_total") == 12
    assert found.value("gateway_generations_running") == 4
    assert OVERHEAD_BUCKETS[0] == 0.00001 and OVERHEAD_BUCKETS[-1] == 0.1


# --- /metrics end to end --------------------------------------------------------------------


@pytest.fixture
def served(settings: Settings) -> Iterator[tuple[str, GatewayMetrics]]:
    """A gateway and the metrics its process exposes."""
    app = create_app(settings, upstream_retries=0)
    with serve_in_thread(app, **uvicorn_options(settings)) as url:
        httpx2.get(f"{url}/healthz", timeout=10)  # the lifespan has run once this answers
        yield url, app.state.services.metrics


def test_metrics_endpoint_serves_the_live_registry(served: tuple[str, GatewayMetrics]) -> None:
    url, metrics = served
    metrics.errors.labels("upstream_error").inc(3)
    response = httpx2.get(f"{url}/metrics", timeout=10)
    assert response.status_code == 200
    assert response.headers["content-type"] == CONTENT_TYPE
    assert "x-gateway-overhead-ms" not in response.headers
    found = parse(response.text)
    assert found.value("gateway_errors_total", code="upstream_error") == 3
    assert "gateway_time_to_first_token_seconds" in found.types
    assert found.value("process_resident_memory_bytes") > 0  # one process: process_* too


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/completion", {"message": "a b c", "model": "fake", "stream": True}),
        (
            "/v1/chat/completions",
            {"model": "fake", "stream": True, "messages": [{"role": "user", "content": "a b c"}]},
        ),
        (
            "/api/chat",
            {
                "id": "frames-chat",
                "model": "fake",
                "messages": [{"role": "user", "parts": [{"type": "text", "text": "a b c"}]}],
            },
        ),
    ],
)
def test_every_event_of_an_http_stream_is_a_frame_sent(
    served: tuple[str, GatewayMetrics], token: Mint, path: str, body: dict[str, object]
) -> None:
    """Each SSE event the three HTTP streams write counts under transport="sse" (keep-alive
    comments are not events)."""
    url, metrics = served
    before = parse(metrics.expose()).value("gateway_frames_sent_total", transport="sse")
    headers = {"Authorization": f"Bearer {token()}"}
    response = httpx2.post(f"{url}{path}", json=body, headers=headers, timeout=20)
    assert response.status_code == 200
    events = [b for b in response.text.split("\n\n") if b and not b.startswith(":")]
    assert len(events) >= 3
    found = parse(metrics.expose())
    assert found.value("gateway_frames_sent_total", transport="sse") - before == len(events)
    assert found.value("gateway_frames_sent_total", transport="ws") == 0


def test_metrics_token_is_required_when_set(start_gateway: GatewayFactory) -> None:
    with start_gateway(metrics_token=Secret(METRICS_TOKEN)) as url:
        refusals = [
            httpx2.get(f"{url}/metrics", timeout=10),
            httpx2.get(f"{url}/metrics", headers={"Authorization": "Bearer wrong"}, timeout=10),
            httpx2.get(
                f"{url}/metrics", headers={"Authorization": f"Basic {METRICS_TOKEN}"}, timeout=10
            ),
        ]
        allowed = httpx2.get(
            f"{url}/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"}, timeout=10
        )
    for refused in refusals:
        assert refused.status_code == 401
        body = refused.json()
        assert body["error"] == "unauthorized" and body["detail"] and body["timestamp"]
        assert refused.headers["www-authenticate"] == "Bearer"
        assert METRICS_TOKEN not in refused.text
    assert allowed.status_code == 200
    assert "gateway_connections" in parse(allowed.text).types


def test_a_user_token_does_not_open_metrics(start_gateway: GatewayFactory, token: Mint) -> None:
    with start_gateway(metrics_token=Secret(METRICS_TOKEN)) as url:
        response = httpx2.get(
            f"{url}/metrics", headers={"Authorization": f"Bearer {token()}"}, timeout=10
        )
    assert response.status_code == 401


# --- X-Gateway-Overhead-Ms ------------------------------------------------------------------


def overhead_ms(response: httpx2.Response) -> float:
    value = float(response.headers["x-gateway-overhead-ms"])
    assert value >= 0
    return value


def test_overhead_header_on_healthz(gateway: str) -> None:
    response = httpx2.get(f"{gateway}/healthz", timeout=10)
    assert response.status_code == 200
    assert overhead_ms(response) < 1000


def test_overhead_header_on_errors(gateway: str) -> None:
    response = httpx2.get(f"{gateway}/models", timeout=10)
    assert response.status_code == 401
    overhead_ms(response)


def test_overhead_header_on_json_and_sse_completions(gateway: str, token: Mint) -> None:
    headers = {"Authorization": f"Bearer {token()}"}
    with httpx2.Client(timeout=20, headers=headers) as client:
        whole = client.post(f"{gateway}/completion", json={"message": "hi", "model": "fake"})
        stream = client.post(
            f"{gateway}/completion", json={"message": "a b", "model": "fake", "stream": True}
        )
    assert whole.status_code == 200 and whole.json()["content"] == "You said: hi"
    overhead_ms(whole)
    assert stream.status_code == 200
    assert stream.headers["content-type"].startswith("text/event-stream")
    events = [
        json.loads(line[6:]) for line in stream.text.splitlines() if line.startswith("data: ")
    ]
    assert events[-1]["type"] == "done"  # the body streamed through the middleware untouched
    overhead_ms(stream)


def test_header_is_exposed_to_browsers_with_cors(settings: Settings) -> None:
    configured = replace(settings, allowed_origins=("https://app.example",))
    app = create_app(configured, upstream_retries=0)
    with serve_in_thread(app, **uvicorn_options(configured)) as url:
        response = httpx2.get(
            f"{url}/healthz", headers={"Origin": "https://app.example"}, timeout=10
        )
    assert "x-gateway-overhead-ms" in response.headers["access-control-expose-headers"].lower()
    overhead_ms(response)


async def test_streams_errors_and_limits_are_counted(
    start_gateway: GatewayFactory, token: Mint
) -> None:
    """After real traffic the scrape shows it: a WebSocket stream, an SSE stream, a failed
    upstream, a refused frame and a turn over a per-user limit."""
    with start_gateway(limits=Limits(requests_per_minute=4)) as url:
        ws = await connected(url, token())
        # Paced, so its tokens arrive one by one: chunk gaps are measured between chunks.
        await send(ws, type="completion", id="a", message="one two three", model="fake-i5-n20")
        assert (await until_done(ws, "a"))[-1]["type"] == "done"
        await send(ws, type="completion", id="b", message="x", model="fake-err401")
        await until_done(ws, "b")
        await send(ws, type="nonsense")
        headers = {"Authorization": f"Bearer {token()}"}
        async with httpx2.AsyncClient(timeout=20) as client:
            # A long stream, cancelled once the scrape has seen it open.
            body = {"message": "hi", "model": "fake-i20-n200", "stream": True}
            async with client.stream("POST", f"{url}/completion", json=body, headers=headers) as r:
                lines = r.aiter_lines()
                start = json.loads(
                    (await anext(x async for x in lines if x.startswith("data:")))[5:]
                )
                open_while_streaming = parse((await client.get(f"{url}/metrics")).text)
                cancel = f"{url}/generations/{start['generation_id']}/cancel"
                assert (await client.post(cancel, headers=headers)).status_code == 202
                last = [json.loads(x[5:]) async for x in lines if x.startswith("data:")][-1]
            assert last["finish_reason"] == "cancelled"
            statuses = [
                (await client.post(f"{url}/completion", json={"message": "x"}, headers=headers))
                for _ in range(2)
            ]
            found = parse((await client.get(f"{url}/metrics")).text)
    assert open_while_streaming.value("gateway_connections", transport="sse") == 1
    assert open_while_streaming.value("gateway_connections", transport="ws") == 1
    assert [s.status_code for s in statuses] == [200, 429]
    assert found.value("gateway_generations_total", outcome="done") == 2
    assert found.value("gateway_generations_total", outcome="cancelled") == 1
    assert found.value("gateway_generations_total", outcome="failed") == 1
    assert found.value("gateway_errors_total", code="upstream_credentials") == 1
    assert found.value("gateway_errors_total", code="bad_request") == 1
    assert found.value("gateway_errors_total", code="rate_limited") == 1
    assert found.value("gateway_rate_limited_total", limit="requests_per_minute") == 1
    assert found.value("gateway_upstream_errors_total", code="upstream_credentials") == 1
    assert found.value("gateway_time_to_first_token_seconds_count", model="fake") == 1
    assert found.value("gateway_time_to_first_token_seconds_count", model="fake-i5-n20") == 1
    assert found.value("gateway_cancel_seconds_count") == 1
    assert found.value("gateway_chunk_gap_seconds_count") > 0
    assert found.value("gateway_overhead_seconds_count") > 0
    assert found.value("gateway_upstream_request_seconds_count", model="fake") >= 1
    assert found.value("gateway_upstream_request_seconds_count", model="fake-i5-n20") >= 1
    assert found.value("gateway_frames_sent_total", transport="ws") >= 8
    assert found.value("gateway_frames_received_total", transport="ws") == 3
    assert found.value("gateway_connections_closed_total", transport="sse") == 1
    assert found.value("gateway_generations_running") == 0

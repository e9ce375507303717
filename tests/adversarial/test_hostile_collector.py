"""A hostile trace collector (tests/support/hostile_receiver.py, `endless`): its answer sets
cookies and never ends. The exporter's session (`CollectorSession`) reads a bounded part of
it, keeps no cookie, and the export ends."""

from __future__ import annotations

import asyncio

from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SpanExportResult

from gateway.obs.otel import CollectorSession
from tests.adversarial.conftest import MEMORY_SLACK_BYTES
from tests.support.gateways import rss_bytes
from tests.support.hostile_receiver import HostileReceiver


def a_span() -> ReadableSpan:
    with TracerProvider().get_tracer("t").start_as_current_span("x") as span:
        pass
    assert isinstance(span, ReadableSpan)
    return span


async def test_an_endless_answer_with_cookies_is_read_in_part_and_none_kept() -> None:
    collector = HostileReceiver("endless")
    endpoint = (await collector.start()).replace("/hook", "/v1/traces")
    session = CollectorSession()
    exporter = OTLPSpanExporter(endpoint=endpoint, timeout=5, session=session)
    before = rss_bytes()
    try:
        for _ in range(3):
            exported = await asyncio.wait_for(asyncio.to_thread(exporter.export, [a_span()]), 10)
            assert exported is SpanExportResult.SUCCESS
    finally:
        session.close()
        await collector.stop()
    assert collector.cookie_bytes == [0, 0, 0]
    grown = rss_bytes() - before
    assert grown < MEMORY_SLACK_BYTES, f"memory grew by {grown / 2**20:.0f} MiB"

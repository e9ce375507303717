"""A small OTLP/HTTP trace receiver for tests: accepts `POST /v1/traces`, decodes the protobuf
(gzip too) with opentelemetry-proto, and keeps the spans for a test to wait on.

`python -m tests.otlp_receiver` runs one for the bench (docs/performance.md#tracing): it prints
its endpoint, and the spans it received when stopped (Ctrl-C or SIGTERM)."""

from __future__ import annotations

import gzip
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span as ProtoSpan


@dataclass(frozen=True)
class Span:
    name: str
    kind: str  # SERVER, CLIENT, INTERNAL...
    trace_id: str  # hex, as in a traceparent
    span_id: str
    parent_id: str  # "" for a root span
    attributes: dict[str, Any]
    links: tuple[tuple[str, str], ...]  # (trace id, span id) of each linked span
    error: bool
    service: str


def _value(value: AnyValue) -> Any:
    field = value.WhichOneof("value")
    if field == "array_value":
        return [_value(v) for v in value.array_value.values]
    return getattr(value, field) if field else None


def _span(span: ProtoSpan, service: str) -> Span:
    return Span(
        name=span.name,
        kind=ProtoSpan.SpanKind.Name(span.kind).removeprefix("SPAN_KIND_"),
        trace_id=span.trace_id.hex(),
        span_id=span.span_id.hex(),
        parent_id=span.parent_span_id.hex(),
        attributes={a.key: _value(a.value) for a in span.attributes},
        links=tuple((link.trace_id.hex(), link.span_id.hex()) for link in span.links),
        error=span.status.code == span.status.STATUS_CODE_ERROR,
        service=service,
    )


class Receiver:
    def __init__(self) -> None:
        self.spans: list[Span] = []
        self.posts = 0
        self._arrived = threading.Condition()

    def add(self, body: bytes) -> None:
        request = ExportTraceServiceRequest.FromString(body)
        with self._arrived:
            self.posts += 1
            for resource in request.resource_spans:
                attributes = {a.key: _value(a.value) for a in resource.resource.attributes}
                service = str(attributes.get("service.name", ""))
                for scope in resource.scope_spans:
                    self.spans.extend(_span(s, service) for s in scope.spans)
            self._arrived.notify_all()

    def wait_for(
        self, found: Callable[[list[Span]], list[Span]], timeout: float = 15.0
    ) -> list[Span]:
        """The spans `found` picks once it picks any; fails after `timeout` seconds."""
        with self._arrived:
            picked: list[Span] = []

            def ready() -> bool:
                nonlocal picked
                picked = found(list(self.spans))
                return bool(picked)

            if not self._arrived.wait_for(ready, timeout):
                names = sorted({(s.name, s.trace_id) for s in self.spans})
                raise AssertionError(f"no such spans within {timeout} s; received: {names}")
            return picked


def _handler(receiver: Receiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            if self.headers.get("Content-Encoding") == "gzip":
                body = gzip.decompress(body)
            if self.path != "/v1/traces":
                self.send_error(404)
                return
            receiver.add(body)
            answer = ExportTraceServiceResponse().SerializeToString()
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, format: str, *args: Any) -> None:
            return None  # quiet

    return Handler


@contextmanager
def otlp_receiver() -> Iterator[tuple[Receiver, str]]:
    """A receiver on a free loopback port, and the endpoint to export to."""
    receiver = Receiver()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(receiver))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def main() -> None:
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with otlp_receiver() as (receiver, endpoint):
        print(endpoint, flush=True)
        with suppress(KeyboardInterrupt):
            stop.wait()
    print(f"{len(receiver.spans)} spans in {receiver.posts} exports", flush=True)


if __name__ == "__main__":
    main()

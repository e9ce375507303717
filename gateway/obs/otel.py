"""OpenTelemetry's implementation of `gateway.obs.tracing`, imported only when tracing is on.

Configured by the standard variables alone, read by the SDK itself: the exporter
(`OTEL_EXPORTER_OTLP_ENDPOINT`, headers, timeout, compression) sends OTLP over HTTP with
protobuf; `OTEL_SERVICE_NAME` and `OTEL_RESOURCE_ATTRIBUTES` name the service
(`chat-gateway` unless set); `OTEL_TRACES_SAMPLER` samples; `OTEL_BSP_*` batch; and
`OTEL_PROPAGATORS` chooses the propagation (W3C trace context and baggage by default). The
provider is this process's own, not the global one, so each app the process makes has its own.

Spans follow the GenAI semantic conventions: `invoke_agent {agent}` per generation and
`chat {model}` (a client span) per upstream call. Exceptions are recorded by their error code
(`error.type`) only: their messages may quote a request.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, TypeVar

import requests
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import Link, Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from requests.cookies import RequestsCookieJar

from gateway.cookies import no_cookie_policy
from gateway.events import Finish, TextDelta, ToolCall
from gateway.obs.tracing import ASGIApp, CallInfo, GenerationTrace, ModelCall, Work

log = logging.getLogger("gateway.tracing")

T = TypeVar("T")
# The model an OpenAI-style response names; looked for in its first few kilobytes only.
RESPONSE_MODEL = re.compile(rb'"model"\s*:\s*"([^"\\]{1,200})"')
MODEL_SEARCH_BYTES = 8192
# What the exporter reads of a collector's answer (an OTLP answer is a few bytes of protobuf).
MAX_COLLECTOR_ANSWER_BYTES = 64 * 1024
_W3C = TraceContextTextMapPropagator()


class CollectorSession(requests.Session):
    """What the exporter posts through: it keeps no cookie (a requests jar has no bound) and
    reads at most MAX_COLLECTOR_ANSWER_BYTES of an answer, as sent: requests would read a
    whole body, inflated, into memory, and a collector's answer only needs its status."""

    def __init__(self) -> None:
        super().__init__()
        self.cookies = RequestsCookieJar(no_cookie_policy())

    def request(
        self, method: str, url: str | bytes, *args: Any, **kwargs: Any
    ) -> requests.Response:
        kwargs["stream"] = True
        response = super().request(method, url, *args, **kwargs)
        try:
            body = response.raw.read(MAX_COLLECTOR_ANSWER_BYTES + 1, decode_content=False)
        except BaseException:
            response.close()  # read in part: its connection is closed, not reused
            raise
        if len(body) > MAX_COLLECTOR_ANSWER_BYTES:
            response.raw.close()  # the rest is never read: the connection is not reused
        # Where requests keeps a body it read itself, so the exporter's reads find this one.
        response._content = body[:MAX_COLLECTOR_ANSWER_BYTES]
        response._content_consumed = True
        response.close()  # a connection whose answer was read whole goes back to the pool
        return response


def error_type(exc: BaseException) -> str:
    """The gateway's error code, else the exception's class: never its message."""
    code = getattr(exc, "code", None)
    return code if isinstance(code, str) else type(exc).__qualname__


def _fail(span: Span, exc: BaseException) -> None:
    span.set_status(Status(StatusCode.ERROR))
    span.set_attribute("error.type", error_type(exc))


def _traceparent(span: Span) -> str:
    carrier: dict[str, str] = {}
    _W3C.inject(carrier, context=trace.set_span_in_context(span))
    return carrier.get("traceparent", "")


def _link(traceparent: str) -> list[Link]:
    if not traceparent:
        return []
    found = trace.get_current_span(_W3C.extract({"traceparent": traceparent}))
    context = found.get_span_context()
    return [Link(context)] if context.is_valid else []


class _Call:
    """One upstream call's span, its propagation headers and the model its response names."""

    def __init__(self, span: Span) -> None:
        self.span = span
        carrier: dict[str, str] = {}
        propagate.inject(carrier, context=trace.set_span_in_context(span))
        self.headers: Mapping[str, str] = carrier
        self.response_model: str | None = None

    async def body(self, pieces: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        head = b""
        async for piece in pieces:
            yield piece
            head += piece
            if found := RESPONSE_MODEL.search(head):
                self.response_model = found.group(1).decode(errors="replace")
                break
            if len(head) > MODEL_SEARCH_BYTES:
                break
        async for piece in pieces:  # the rest, without looking
            yield piece


class _Generation:
    def __init__(self, span: Span) -> None:
        self._span = span
        self.traceparent = _traceparent(span)

    async def run(self, work: Work) -> None:
        try:
            token = otel_context.attach(trace.set_span_in_context(self._span))
            try:
                await work
            finally:
                otel_context.detach(token)
        finally:
            work.close()  # a task cancelled before it started never awaited it
            self._span.end()

    def ended(self, outcome: str, error: str | None) -> None:
        self._span.set_attribute("gateway.generation.outcome", outcome)
        if error is not None:
            self._span.set_status(Status(StatusCode.ERROR))
            self._span.set_attribute("error.type", error)


class OtelTracing:
    enabled = True

    def __init__(self, environ: Mapping[str, str]) -> None:
        self._environ = environ
        protocol = environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or environ.get(
            "OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"
        )
        if protocol != "http/protobuf":
            log.warning("traces are exported over OTLP/HTTP with protobuf, not %s", protocol)
        named = environ.get("OTEL_SERVICE_NAME") or "service.name=" in environ.get(
            "OTEL_RESOURCE_ATTRIBUTES", ""
        )
        resource = Resource.create({} if named else {"service.name": "chat-gateway"})
        self._provider = TracerProvider(resource=resource)
        self._provider.add_span_processor(
            BatchSpanProcessor(OTLPSpanExporter(session=CollectorSession()))
        )
        self._tracer = self._provider.get_tracer("gateway")
        log.info("tracing on: spans exported over OTLP/HTTP")

    @contextmanager
    def frame(
        self, kind: str, request_id: str | None, frame: Mapping[str, object], headers: Any
    ) -> Iterator[None]:
        attributes = {"gateway.transport": "websocket", "gateway.frame.type": kind}
        if request_id:
            attributes["gateway.request.id"] = request_id
        with self._tracer.start_as_current_span(
            f"websocket {kind}",
            context=_frame_parent(frame, headers),
            kind=SpanKind.SERVER,
            attributes=attributes,
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            try:
                yield
            except Exception as exc:
                _fail(span, exc)
                raise

    def generation(
        self, generation_id: str, conversation_id: str, model: str, agent: str
    ) -> GenerationTrace:
        span = self._tracer.start_span(
            f"invoke_agent {agent}",
            attributes={
                "gen_ai.operation.name": "invoke_agent",
                "gen_ai.agent.name": agent,
                "gen_ai.conversation.id": conversation_id,
                "gateway.generation.id": generation_id,
                "gateway.model": model,
            },
        )
        return _Generation(span)

    async def follow(self, generation_id: str, traceparent: str, work: Work) -> None:
        try:
            with self._tracer.start_as_current_span(
                "follow generation",
                links=_link(traceparent),
                attributes={"gateway.generation.id": generation_id},
                record_exception=False,
                set_status_on_exception=False,
            ) as span:
                try:
                    await work
                except Exception as exc:
                    _fail(span, exc)
                    raise
        finally:
            work.close()

    async def model_call(
        self, info: CallInfo, run: Callable[[ModelCall], AsyncIterator[T]]
    ) -> AsyncIterator[T]:
        span = self._tracer.start_span(
            f"chat {info.upstream_model}", kind=SpanKind.CLIENT, attributes=_request(info)
        )
        call = _Call(span)
        started = time.monotonic()
        answering = False
        events = run(call)
        try:
            async for event in events:
                if not answering and isinstance(event, TextDelta | ToolCall):
                    answering = True
                    span.set_attribute(
                        "gen_ai.response.time_to_first_chunk", time.monotonic() - started
                    )
                elif isinstance(event, Finish):
                    _finished(span, event)
                yield event
        except Exception as exc:
            _fail(span, exc)
            raise
        finally:
            # Closed with this one: it holds the model's gate and the upstream response.
            close = getattr(events, "aclose", None)
            if close is not None:
                await close()
            if call.response_model is not None:
                span.set_attribute("gen_ai.response.model", call.response_model)
            span.end()

    def asgi(self, app: ASGIApp, routes: list[Any]) -> ASGIApp:
        from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
        from opentelemetry.util.http import parse_excluded_urls

        traced = OpenTelemetryMiddleware(
            app,
            excluded_urls=parse_excluded_urls(_excluded(self._environ)),
            tracer_provider=self._provider,
            # No span per message sent or received: one per request.
            exclude_spans=["receive", "send"],
            default_span_details=lambda scope: _route(scope, routes),
        )

        async def http_only(scope: dict[str, Any], receive: Any, send: Any) -> None:
            # A WebSocket's spans are its frames' (see `frame`), not one per connection.
            if scope["type"] == "http":
                await traced(scope, receive, send)
            else:
                await app(scope, receive, send)

        return http_only

    def shutdown(self) -> None:
        self._provider.shutdown()


# Probes and scrapes, every few seconds, are no story worth a trace unless asked for.
UNTRACED_PATHS = r"/healthz$,/readyz$,/metrics$"


def _excluded(environ: Mapping[str, str]) -> str:
    """The paths with no server span: the standard variables' list, else `UNTRACED_PATHS`."""
    for name in ("OTEL_PYTHON_ASGI_EXCLUDED_URLS", "OTEL_PYTHON_EXCLUDED_URLS"):
        if name in environ:
            return environ[name]
    return UNTRACED_PATHS


def _request(info: CallInfo) -> dict[str, Any]:
    attributes: dict[str, Any] = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": info.provider,
        "gen_ai.request.model": info.upstream_model,
        "gateway.model": info.model,
    }
    if info.max_tokens is not None:
        attributes["gen_ai.request.max_tokens"] = info.max_tokens
    if info.temperature is not None:
        attributes["gen_ai.request.temperature"] = info.temperature
    if info.base_url:
        host = re.match(r"^\w+://([^/:]+)(?::(\d+))?", info.base_url)
        if host:
            attributes["server.address"] = host.group(1)
            if host.group(2):
                attributes["server.port"] = int(host.group(2))
    return attributes


def _finished(span: Span, finish: Finish) -> None:
    span.set_attributes(
        {
            "gen_ai.response.finish_reasons": [finish.reason],
            "gen_ai.usage.input_tokens": int(finish.usage.prompt_tokens),
            "gen_ai.usage.output_tokens": int(finish.usage.completion_tokens),
        }
    )


def _frame_parent(frame: Mapping[str, object], headers: Any) -> otel_context.Context:
    """The frame's own `traceparent` (and `tracestate`) if valid, else the handshake's."""
    carrier = {k: v for k in ("traceparent", "tracestate") if isinstance(v := frame.get(k), str)}
    if carrier:
        parent = propagate.extract(carrier)
        if trace.get_current_span(parent).get_span_context().is_valid:
            return parent
    return propagate.extract(headers)


def _route(scope: dict[str, Any], routes: list[Any]) -> tuple[str, dict[str, str]]:
    """`METHOD /route/{template}`: span names of bounded cardinality."""
    method = scope.get("method", "HTTP")
    for route in routes:
        match, _ = route.matches(scope)
        if match.name == "FULL":  # starlette's Match, not imported here (see the contracts)
            return f"{method} {route.path}", {"http.route": route.path}
    return method, {}

"""Tracing: the spans the gateway makes, behind an interface whose no-op is chosen at start-up.

OpenTelemetry is an optional extra (`chat-gateway[otel]`) and off unless
`OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set. `install`
decides once per process: off, `active` stays `NoTracing`, whose calls hand back what they
were given, so the hot path does no per-chunk work and OpenTelemetry is never imported; on,
`active` is the OpenTelemetry implementation of `gateway.obs.otel`.

The code that makes spans calls `active` at a few places per request, never per chunk:

- `frame`: the server span of one WebSocket frame (a completion or a resume);
- `generation`: a generation's span, whose context is stored in its record so that a follower
  on any instance can link to it (`follow`);
- `model_call`: the client span of one upstream model call (GenAI semantic conventions), which
  hands the upstream request the headers that carry its context;
- `asgi`: the server span of each HTTP request (not of a WebSocket connection).

No message text, tool arguments or tokens go into a span.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

log = logging.getLogger("gateway.tracing")

T = TypeVar("T")
Work = Coroutine[Any, Any, None]
# An ASGI application, as loosely typed as the frameworks type it.
ASGIApp = Callable[..., Any]
NO_HEADERS: Mapping[str, str] = {}


@dataclass(frozen=True, slots=True)
class CallInfo:
    """What a model call's span says of the request; never its messages."""

    provider: str  # gen_ai.provider.name
    model: str  # the gateway's name for the model
    upstream_model: str  # gen_ai.request.model
    base_url: str | None = None
    max_tokens: int | None = None
    temperature: float | None = None


class ModelCall(Protocol):
    """One upstream call as its policy sees it."""

    @property
    def headers(self) -> Mapping[str, str]:
        """Headers the upstream request carries (its `traceparent`)."""
        ...

    def body(self, pieces: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        """The response's body, read through (the model it names, when on)."""
        ...


class GenerationTrace(Protocol):
    @property
    def traceparent(self) -> str:
        """The span's W3C context, stored in the generation's record; empty when off."""
        ...

    def run(self, work: Work) -> Work:
        """`work` (the generation's task) with the span as its current one, ending it after."""
        ...

    def ended(self, outcome: str, error: str | None) -> None: ...


class Tracing(Protocol):
    enabled: bool

    def frame(
        self, kind: str, request_id: str | None, frame: Mapping[str, object], headers: Any
    ) -> AbstractContextManager[None]:
        """The server span of one WebSocket frame: its parent is the frame's `traceparent`,
        else the handshake's (`headers`)."""
        ...

    def generation(
        self, generation_id: str, conversation_id: str, model: str, agent: str
    ) -> GenerationTrace: ...

    def follow(self, generation_id: str, traceparent: str, work: Work) -> Work:
        """`work` (a follower's task) in a span linked to the generation's."""
        ...

    def model_call(
        self, info: CallInfo, run: Callable[[ModelCall], AsyncIterator[T]]
    ) -> AsyncIterator[T]:
        """`run`'s events in a client span that records usage, finish and first token."""
        ...

    def asgi(self, app: ASGIApp, routes: list[Any]) -> ASGIApp:
        """`app` with a server span per HTTP request."""
        ...

    def shutdown(self) -> None:
        """Export what is buffered, then stop."""
        ...


class _NoCall:
    headers = NO_HEADERS

    def body(self, pieces: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        return pieces


class _NoGeneration:
    traceparent = ""

    def run(self, work: Work) -> Work:
        return work

    def ended(self, outcome: str, error: str | None) -> None:
        return None


NO_CALL = _NoCall()
NO_GENERATION = _NoGeneration()
_NO_SPAN: AbstractContextManager[None] = nullcontext()


class NoTracing:
    """Tracing off: every call hands back what it was given."""

    enabled = False

    def frame(
        self, kind: str, request_id: str | None, frame: Mapping[str, object], headers: Any
    ) -> AbstractContextManager[None]:
        return _NO_SPAN

    def generation(
        self, generation_id: str, conversation_id: str, model: str, agent: str
    ) -> GenerationTrace:
        return NO_GENERATION

    def follow(self, generation_id: str, traceparent: str, work: Work) -> Work:
        return work

    def model_call(
        self, info: CallInfo, run: Callable[[ModelCall], AsyncIterator[T]]
    ) -> AsyncIterator[T]:
        return run(NO_CALL)

    def asgi(self, app: ASGIApp, routes: list[Any]) -> ASGIApp:
        return app

    def shutdown(self) -> None:
        return None


active: Tracing = NoTracing()


def wanted(environ: Mapping[str, str]) -> bool:
    """Whether the standard variables ask for traces to be exported."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    if environ.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower() == "none":
        return False
    return bool(
        environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        or environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    )


def install(environ: Mapping[str, str]) -> Tracing:
    """Choose this process's tracing from the environment, once, before its models are made."""
    global active
    active.shutdown()
    active = NoTracing()
    if not wanted(environ):
        return active
    try:
        from gateway.obs.otel import OtelTracing
    except ImportError as exc:
        log.warning(
            "OTEL_EXPORTER_OTLP_ENDPOINT is set, but OpenTelemetry is not installed (%s): "
            "install chat-gateway[otel] for traces; running without them",
            exc,
        )
        return active
    active = OtelTracing(environ)
    return active

"""Open client connections by transport, counted at the ASGI edge for every route.

A WebSocket counts from its accept to its end. An HTTP request counts as `http` while it is
handled, and as `sse` from the start of its response when that response is an event stream.
Probes and scrapes are not client traffic and are not counted.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.obs.metrics import TRANSPORTS, GatewayMetrics

UNCOUNTED_PATHS = frozenset({"/metrics", "/healthz", "/readyz"})
EVENT_STREAM = b"text/event-stream"


class TrafficCounter:
    def __init__(self, app: ASGIApp, metrics: GatewayMetrics) -> None:
        self.app = app
        self.open = {t: metrics.connections.labels(t) for t in TRANSPORTS}
        self.total = {t: metrics.connections_total.labels(t) for t in TRANSPORTS}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or scope["path"] in UNCOUNTED_PATHS:
            await self.app(scope, receive, send)
            return
        counted: list[str] = []  # the transport this connection counts under now

        def move_to(transport: str) -> None:
            if counted:
                self.open[counted.pop()].dec()
            counted.append(transport)
            self.open[transport].inc()

        async def counting_send(message: Message) -> None:
            kind = message["type"]
            if kind == "websocket.accept":
                move_to("ws")
            elif kind == "http.response.start" and _is_event_stream(message):
                move_to("sse")
            await send(message)

        if scope["type"] == "http":
            move_to("http")
        try:
            await self.app(scope, receive, counting_send)
        finally:
            if counted:
                transport = counted.pop()
                self.open[transport].dec()
                self.total[transport].inc()  # once, under what it turned out to be


def _is_event_stream(message: Message) -> bool:
    return any(
        name == b"content-type" and value.startswith(EVENT_STREAM)
        for name, value in message.get("headers", ())
    )

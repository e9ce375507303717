"""`X-Gateway-Overhead-Ms` on HTTP responses: the time to headers.

The header holds the milliseconds from the moment the application is handed the request to
the moment it starts its response (`http.response.start`). For a JSON answer that includes
the wait for the upstream model, for a stream it is the time until the stream opens (the
turn is open and the generation started): it is "time to headers", not a measure of the
gateway's own CPU. What the gateway adds to each streamed chunk is the
`gateway_overhead_seconds` histogram on /metrics.

A pure ASGI middleware: it wraps `send` and touches only the response's first message, so
streamed bodies pass through unbuffered (Starlette's BaseHTTPMiddleware would buffer them).
WebSocket and lifespan scopes go straight to the app.
"""

from __future__ import annotations

from collections.abc import Collection
from time import perf_counter_ns

from starlette.types import ASGIApp, Message, Receive, Scope, Send

HEADER = b"x-gateway-overhead-ms"
# Not user traffic: scrapes and probes neither need the header nor should be timed as requests.
UNTIMED_PATHS = frozenset({"/metrics"})


class OverheadHeader:
    def __init__(self, app: ASGIApp, untimed: Collection[str] = UNTIMED_PATHS) -> None:
        self.app = app
        self.untimed = frozenset(untimed)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self.untimed:
            await self.app(scope, receive, send)
            return
        started = perf_counter_ns()

        async def send_with_header(message: Message) -> None:
            if message["type"] == "http.response.start":
                # Integer formatting: a float's costs about twice as much.
                elapsed = b"%d.%03d" % divmod((perf_counter_ns() - started) // 1000, 1000)
                message["headers"] = [*message.get("headers", ()), (HEADER, elapsed)]
            await send(message)

        await self.app(scope, receive, send_with_header)

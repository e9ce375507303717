"""The ASGI apps the bench serves in processes of their own (uvicorn factories).

`bare_app` is the ceiling: uvicorn and Starlette with nothing of the gateway, sending frames
built once, as fast as the stack lets it, in the same shapes as the gateway's frames.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from tests.support.upstream import FakeUpstream

SUBPROTOCOL = "chat-gateway.v1"
READY = json.dumps(
    {"type": "ready", "protocol": 1, "user": "bench", "connection_id": "conn_bench0000000"},
    separators=(",", ":"),
)
REF = {"generation_id": "gen_bench00000000000", "conversation_id": "conv_bench0000000000"}


def upstream_app() -> Starlette:
    """The fake OpenAI-compatible upstream of the tests, in its own process."""
    return FakeUpstream().app


def bare_app() -> Starlette:
    return Starlette(
        routes=[
            Route("/healthz", _healthz),
            Route("/sse", _sse, methods=["POST"]),
            WebSocketRoute("/ws", _ws),
        ]
    )


def _event(kind: str, request_id: str, seq: int, content: str, done: bool) -> str:
    frame = {"type": kind, "id": request_id, **REF, "seq": seq, "content": content, "done": done}
    if kind == "chunk":
        frame["metadata"] = None
    return json.dumps(frame, separators=(",", ":"))


def _words(message: object) -> int:
    return len(str(message).split())


async def _healthz(request: Request) -> Response:
    return PlainTextResponse("ok")


async def _ws(ws: WebSocket) -> None:
    """Send `ready`; for each completion frame, one chunk frame per word of its message (the
    same frame every time), then `done`; hold the socket until the client leaves."""
    await ws.accept(subprotocol=SUBPROTOCOL)
    await ws.send_text(READY)
    try:
        while True:
            request = json.loads(await ws.receive_text())
            request_id = str(request.get("id"))
            chunk = _event("chunk", request_id, 2, " w", False)
            for _ in range(_words(request.get("message"))):
                await ws.send_text(chunk)
            await ws.send_text(_event("done", request_id, 3, "", True))
    except WebSocketDisconnect:
        return


async def _sse(request: Request) -> Response:
    """The native SSE stream's shape (`id:` and `data:`), one event per word of `message`."""
    body = await request.json()
    request_id = str(body.get("id"))
    chunk = f"id: 2\ndata: {_event('chunk', request_id, 2, ' w', False)}\n\n"
    done = f"id: 3\ndata: {_event('done', request_id, 3, '', True)}\n\n"
    count = _words(body.get("message"))

    async def events() -> AsyncIterator[str]:
        for _ in range(count):
            yield chunk
        yield done

    return StreamingResponse(events(), media_type="text/event-stream")

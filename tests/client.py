"""A small WebSocket test client over the real `websockets` library."""

from __future__ import annotations

import json
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed
from websockets.typing import Subprotocol

OPEN: list[ClientConnection] = []  # closed after each test by the `close_sockets` fixture


def ws_url(base: str) -> str:
    return base.replace("http://", "ws://") + "/ws"


async def open_socket(
    base: str, token: str | None = None, *, carrier: str = "subprotocol", **options: Any
) -> ClientConnection:
    """Connect with the token in the given carrier: subprotocol, header, query, frame or none."""
    url, headers = ws_url(base), None
    protocols = [Subprotocol("chat-gateway.v1")]
    if carrier == "subprotocol" and token:
        protocols = [Subprotocol("chat-gateway.v1"), Subprotocol(f"bearer.{token}")]
    elif carrier == "header" and token:
        headers = {"Authorization": f"Bearer {token}"}
    elif carrier == "query" and token:
        url += f"?token={token}"
    ws = await connect(
        url,
        subprotocols=protocols,
        additional_headers=headers,
        ping_interval=None,
        open_timeout=10,
        **options,
    )
    OPEN.append(ws)
    if carrier == "frame" and token:
        await send(ws, type="auth", token=token)
    return ws


async def close_all() -> None:
    while OPEN:
        await OPEN.pop().close()


async def send(ws: ClientConnection, **frame: Any) -> None:
    await ws.send(json.dumps(frame))


async def receive(ws: ClientConnection) -> dict[str, Any]:
    frame: dict[str, Any] = json.loads(await ws.recv())
    return frame


async def connected(base: str, token: str, **options: Any) -> ClientConnection:
    """An authenticated socket whose `ready` frame has been read."""
    ws = await open_socket(base, token, **options)
    ready = await receive(ws)
    assert ready["type"] == "ready", ready
    return ws


async def until_done(ws: ClientConnection, request_id: str) -> list[dict[str, Any]]:
    """Frames for `request_id` up to and including the one with done=true."""
    frames: list[dict[str, Any]] = []
    while True:
        frame = await receive(ws)
        if frame.get("id") != request_id:
            continue
        frames.append(frame)
        if frame.get("done"):
            return frames


async def close_code(ws: ClientConnection) -> int | None:
    """Read until the server closes; return its close code."""
    try:
        while True:
            await ws.recv()
    except ConnectionClosed as closed:
        return closed.rcvd.code if closed.rcvd else None


def text_of(frames: list[dict[str, Any]]) -> str:
    return "".join(f["content"] for f in frames if f["type"] == "chunk")

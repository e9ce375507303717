"""A small WebSocket test client over the real `websockets` library, and what tests read
from its frames."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterable, Mapping
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


Frames = list[dict[str, Any]]


def final(frame: dict[str, Any]) -> bool:
    return bool(frame.get("done"))


async def until_done(
    ws: ClientConnection,
    request_id: str,
    through: Callable[[dict[str, Any]], bool] = final,
    within: float | None = None,
) -> Frames:
    """Frames for `request_id` up to and including the final one (done=true), or the first
    one `through` holds for; fails after `within` seconds when given."""
    frames: Frames = []
    async with asyncio.timeout(within):
        while not frames or not (final(frames[-1]) or through(frames[-1])):
            frame = await receive(ws)
            if frame.get("id") == request_id:
                frames.append(frame)
    return frames


def through_seq(seq: int) -> Callable[[dict[str, Any]], bool]:
    """For `until_done`: stop at the frame with `seq` (or the final one before it)."""
    return lambda frame: frame.get("seq", 0) >= seq


async def close_code(ws: ClientConnection) -> int | None:
    """Read until the server closes; return its close code."""
    try:
        while True:
            await ws.recv()
    except ConnectionClosed as closed:
        return closed.rcvd.code if closed.rcvd else None


def text_of(frames: list[dict[str, Any]]) -> str:
    return "".join(f["content"] for f in frames if f["type"] == "chunk")


def kinds(frames: Iterable[Mapping[str, Any]]) -> list[str]:
    """Frame types, a run of chunks counted once: tokens that reach the gateway together
    travel as one chunk, so how many chunks carry an answer's text is not fixed."""
    found: list[str] = []
    for frame in frames:
        if not (frame["type"] == "chunk" and found[-1:] == ["chunk"]):
            found.append(frame["type"])
    return found

"""The I/O of one socket, around its `SocketSession`: open it, read its frames into the
session, send what the session says each run needs, keep it alive with heartbeats, and renew
its token live."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from gateway_client.connection import SUBPROTOCOL, Lost, why_not
from gateway_client.errors import GatewayError
from gateway_client.run import Run
from gateway_client.session import PING, SessionEvent, SocketSession
from gateway_client.tokens import Tokens


async def open_socket(url: str, token: str, open_timeout: float) -> ClientConnection | Lost:
    """A socket to the gateway, or how opening it failed."""
    try:
        return await connect(
            url,
            subprotocols=[SUBPROTOCOL],
            additional_headers={"Authorization": f"Bearer {token}"},
            ping_interval=None,  # the gateway pings; our own `ping` frames are the heartbeat
            open_timeout=open_timeout,
            max_size=None,
            close_timeout=2,
        )
    except (OSError, InvalidHandshake, TimeoutError) as exc:
        reason = why_not(exc, url)
        blocked = not isinstance(exc, ConnectionRefusedError)
        return Lost(opened=False, code=None, reason=reason, token=token, blocked=blocked)


async def serve(
    ws: ClientConnection, session: SocketSession, on_event: Callable[[SessionEvent], None]
) -> Lost:
    """Read the socket into its session until it closes; `on_event` acts on what it says."""
    loop = asyncio.get_running_loop()
    try:
        async for text in ws:
            event = session.receive(text, loop.time())
            if event is not None:
                on_event(event)
    except ConnectionClosed:
        pass
    return session.lost(ws.close_code, ws.close_reason)


async def send_runs(
    ws: ClientConnection, session: SocketSession, outbox: asyncio.Queue[Run]
) -> None:
    """The socket's one writer of runs: what the session says each needs, when it is due
    (a run not sent yet may be taken back, and then it sends nothing)."""
    while True:
        run = await outbox.get()
        try:
            for frame in session.frames_for(run):
                await ws.send(frame)
        except ConnectionClosed:
            return  # the reader sees the close; the next socket sends them all again


async def heartbeat(
    ws: ClientConnection, session: SocketSession, interval: float, pong_wait: float
) -> None:
    """Heartbeats: a `ping` frame every `interval`; no frame at all within
    `pong_wait` after it and the socket counts as dead. A socket whose network went
    away can look open for minutes, and a close would wait on a handshake that never
    comes, so it is dropped and the next one opened."""
    loop = asyncio.get_running_loop()
    while True:
        await asyncio.sleep(interval)
        sent = loop.time()
        try:
            await ws.send(PING)
        except ConnectionClosed:
            return
        await asyncio.sleep(pong_wait)
        if session.silent_since(sent):
            ws.transport.abort()
            return


async def renew_live(ws: ClientConnection, tokens: Tokens) -> None:
    """`token_expiring`: send a fresh token on the live socket (protocol §4.5), so running
    answers are not disturbed. Without a callback the socket closes with 4401 at expiry."""
    if not tokens.can_refresh:
        return
    try:
        await tokens.renew(tokens.token)
        await ws.send(json.dumps({"type": "auth", "token": tokens.token}))
    except (GatewayError, ConnectionClosed):
        return  # the socket still works until expiry; the reconnect then says why

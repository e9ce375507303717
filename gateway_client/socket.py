"""What one socket does for the client besides reading: open it, send its runs (each started or
resumed, then cancelled if asked), keep it alive with heartbeats, and renew its token live."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from gateway_client.connection import SUBPROTOCOL, Lost, why_not
from gateway_client.errors import GatewayError
from gateway_client.run import Run
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


async def send_runs(ws: ClientConnection, outbox: asyncio.Queue[Run]) -> None:
    """The socket's one writer of runs: (re)start each, then its cancel if asked for."""
    while True:
        run = await outbox.get()
        if run.ended:
            continue
        try:
            if run.socket is not ws:
                run.socket = ws
                run.cancel_sent = False
                await ws.send(json.dumps(run.opening_frame()))
            if run.cancel_requested and not run.cancel_sent:
                run.cancel_sent = True
                # By generation id when known: it also reaches it on another instance.
                target = (
                    {"generation_id": run.generation_id} if run.generation_id else {"id": run.id}
                )
                await ws.send(json.dumps({"type": "cancel", **target}))
        except ConnectionClosed:
            return  # the reader sees the close; the next socket sends them all again


async def heartbeat(
    ws: ClientConnection, interval: float, pong_wait: float, last_frame: Callable[[], float]
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
            await ws.send('{"type":"ping"}')
        except ConnectionClosed:
            return
        await asyncio.sleep(pong_wait)
        if last_frame() < sent:
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

"""The WebSocket transport at `/ws`: protocol v1 (see docs/protocol.md), the socket's I/O only.

Each connection is one structured scope: this coroutine reads frames and hands them to the
connection's `SocketSession` (ws_session.py), which decides what they do; one writer task
drains the session's bounded outbox; generations publish into the outbox without waiting.
Leaving the scope cancels the writer and detaches from generations, which run on and store
their answers.
"""

from __future__ import annotations

import asyncio
import contextlib

from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from gateway.auth.tokens import bearer_token, choose_subprotocol, subprotocol_token
from gateway.errors import Disconnect
from gateway.handlers import slots
from gateway.handlers.common import services_of
from gateway.handlers.runtime import Runtime
from gateway.handlers.ws_session import SocketSession
from gateway.obs.logs import bind
from gateway.principal import Principal


async def websocket_endpoint(ws: WebSocket) -> None:
    offered = list(ws.scope.get("subprotocols", []))
    await ws.accept(subprotocol=choose_subprotocol(offered))
    services = services_of(ws)
    session = SocketSession(services, close=lambda decision: _close(ws, decision))
    session.handshake = ws.headers  # the parent of frames that carry no trace context
    bind(connection_id=session.id)  # on every log line of this socket and its generations
    try:
        principal = await _open(ws, session, offered)
    except Disconnect as exc:
        await _send_queued(ws, session)  # over the connection limit: its error frame
        await _close(ws, exc)
        return
    try:
        try:
            await _serve(ws, session, principal)
        finally:
            await _count_out(services, principal, session.id)
    except Disconnect as exc:
        await _close(ws, exc)


async def _open(ws: WebSocket, session: SocketSession, offered: list[str]) -> Principal:
    """Authenticate the socket and count it against its user's connections."""
    session.check_origin(ws.headers.get("origin"))
    token = _token_on_connect(ws, offered)
    if token is None:
        token = session.first_frame_token(await _first_text(ws, session))
    principal = await session.authenticate(token)
    bind(user=principal.sub)
    # Without Redis the socket is let in uncounted: the limit guards against abuse, not
    # against an outage.
    session.admit(await slots.count_in(session.services, principal, session.id))
    return principal


def _token_on_connect(ws: WebSocket, offered: list[str]) -> str | None:
    return (
        bearer_token(ws.headers.get("authorization"))
        or subprotocol_token(offered)
        or ws.query_params.get("token")
    )


async def _first_text(ws: WebSocket, session: SocketSession) -> str | None:
    """The first frame, for a client that gave no token on connect."""
    try:
        async with asyncio.timeout(session.settings.auth_timeout):
            return await _receive_text(ws, session)
    except TimeoutError:
        session.no_auth_frame()


async def _count_out(services: Runtime, principal: Principal, connection_id: str) -> None:
    with contextlib.suppress(Exception):  # an uncounted entry lapses on its own
        await slots.count_out(services, principal, connection_id)


async def _serve(ws: WebSocket, session: SocketSession, principal: Principal) -> None:
    session.begin(principal)
    writer = asyncio.create_task(_write(ws, session), name=f"writer-{session.id}")
    try:
        while (text := await _receive_text(ws, session)) is not None:
            await session.receive(text)
    finally:
        await session.end()
        writer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await writer


async def _receive_text(ws: WebSocket, session: SocketSession) -> str | None:
    """The next text frame; None when the client has gone."""
    message = await ws.receive()
    if message["type"] == "websocket.disconnect":
        return None
    return session.check_frame(message.get("text"))


async def _write(ws: WebSocket, session: SocketSession) -> None:
    try:
        while (frame := await session.outbox.get()) is not None:
            await ws.send_text(frame)
            session.frames_sent.inc()
    except (WebSocketDisconnect, RuntimeError, OSError):
        # The socket went under a send (reset for not reading, or closed beneath us):
        # the reader gets the disconnect and ends the connection.
        return
    if (closing := session.outbox_ended()) is not None:
        await _close(ws, closing)


async def _send_queued(ws: WebSocket, session: SocketSession) -> None:
    while (frame := session.outbox.take()) is not None:
        await ws.send_text(frame)
        session.frames_sent.inc()


async def _close(ws: WebSocket, decision: Disconnect) -> None:
    if ws.application_state == WebSocketState.CONNECTED:
        with contextlib.suppress(RuntimeError, OSError, WebSocketDisconnect):
            await ws.close(decision.close_code, decision.reason)

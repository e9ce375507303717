"""The I/O of one socket, around its sans-I/O `SocketSession`: open it, read its frames into
the session, send what the session says each run needs, keep it alive with heartbeats, and
renew its token live."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterable

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


class Socket:
    """One opened socket, served: every frame read into its session and, once the gateway
    said `ready` (`start`), a writer of runs and a heartbeat. A transport of runs (`send`,
    `cancel`) from then until it closes."""

    def __init__(self, ws: ClientConnection, session: SocketSession) -> None:
        self.ws = ws
        self.session = session
        self._outbox: asyncio.Queue[Run] = asyncio.Queue()  # runs to (re)send, or cancel
        self._helpers: list[asyncio.Task[None]] = []

    async def serve(self, on_event: Callable[[SessionEvent], None]) -> Lost:
        """Read the socket until it closes; `on_event` acts on what the session says."""
        try:
            await self._read(on_event)
            return self.session.lost(self.ws.close_code, self.ws.close_reason)
        finally:
            for helper in self._helpers:
                helper.cancel()
            self.ws.transport.abort()  # closed already, or declared dead

    async def _read(self, on_event: Callable[[SessionEvent], None]) -> None:
        loop = asyncio.get_running_loop()
        try:
            async for text in self.ws:
                event = self.session.receive(text, loop.time())
                if event is not None:
                    on_event(event)
        except ConnectionClosed:
            pass

    def start(self, runs: Iterable[Run], ping_interval: float, pong_timeout: float) -> None:
        """The gateway is ready: send every run (each resumes where it stopped) and watch
        the socket."""
        for run in runs:
            self.send(run)
        beat = heartbeat(self.ws, self.session, ping_interval, pong_timeout)
        loop = asyncio.get_running_loop()
        writer = send_runs(self.ws, self.session, self._outbox)
        self._helpers = [loop.create_task(writer), loop.create_task(beat)]

    def send(self, run: Run) -> None:
        self._outbox.put_nowait(run)

    def cancel(self, run: Run) -> None:
        self._outbox.put_nowait(run)  # the writer sends what the run needs: its cancel

    async def close(self) -> None:
        await self.ws.close()  # a clean 1000; the reader then ends


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

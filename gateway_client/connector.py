"""The client's I/O loop: keeps a transport for its runs for as long as the client lives.

It opens sockets one after another (each served by `socket.py` around its sans-I/O
`SocketSession`), does what `reconnect.py` decides once one is gone (renew the token, back
off, wait idle for a run, fall back to HTTP, give up), hands each run to the transport in
use, and reports every change of state. The decisions are made in those pure modules; what
is left here is awaiting, task keeping and callbacks.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

from gateway_client.backoff import backoff
from gateway_client.connection import ConnectionState, Lost, Options, State
from gateway_client.errors import GatewayError
from gateway_client.http import HttpApi
from gateway_client.reconnect import Idle, Reconnects, Renew, Stop, Wait
from gateway_client.run import Run
from gateway_client.runs import Runs
from gateway_client.session import (
    Activity,
    Authenticated,
    Ready,
    SessionEvent,
    SocketSession,
    TokenExpiring,
)
from gateway_client.socket import Socket, open_socket, renew_live
from gateway_client.sse import HttpRuns
from gateway_client.tokens import Tokens


class Connector:
    """A client's connection: `start` it, `submit` and `cancel` runs, `close` it. `state` and
    `ready` are what `GatewayClient` reports of it."""

    def __init__(
        self,
        options: Options,
        tokens: Tokens,
        http: HttpApi,
        runs: Runs,
        on_state: Callable[[ConnectionState], None] | None = None,
        on_activity: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        self.options = options
        self.state: State = "closed"
        self.ready: Ready | None = None  # what the last socket's `ready` frame said
        self._tokens = tokens
        self._http = http
        self._runs = runs
        self._on_state = on_state
        self._on_activity = on_activity  # each `activity` frame: the user's doings elsewhere
        self._transport: Socket | HttpRuns | None = None  # what runs go over, once usable
        self._supervisor: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._wanted = asyncio.Event()  # a run waits for a socket
        self._connected = asyncio.Event()  # ready, on HTTP, or failed for good
        self._fatal: GatewayError | None = None
        self._closing = False

    def start(self) -> None:
        if self._supervisor is None and self._fatal is None:
            self._supervisor = asyncio.get_running_loop().create_task(self._supervise())

    async def connected(self) -> None:
        """Wait until runs can be sent; raise the error that ended the client, if one did."""
        self.start()
        await self._connected.wait()
        if self._fatal is not None:
            raise self._fatal

    async def close(self) -> None:
        self._closing = True
        self._shutdown(GatewayError("The client was closed.", code="closed"))
        if self._transport is not None:
            await self._transport.close()
        tasks = [t for t in (self._supervisor, *self._tasks) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # Runs.

    def submit(self, run: Run) -> None:
        """Send `run` over whichever transport is (or next becomes) usable."""
        if self._fatal is not None or self._closing:
            # Nothing will send it: say so, rather than leave the caller waiting for ever.
            run.end(self._fatal or GatewayError("The client was closed.", code="closed"))
            return
        self.start()
        self._runs.add(run)
        self._wanted.set()
        if self._transport is not None:
            self._transport.send(run)

    def cancel(self, run: Run) -> None:
        if self.state != "http" and run.socket is None:
            self._runs.end(run)  # never sent: nothing to stop
            return
        run.cancel_requested = True
        if self._transport is not None:
            self._transport.cancel(run)

    # Sockets, one after another.

    async def _supervise(self) -> None:
        try:
            if self.options.transport == "http":
                self._use_http()
                return
            await self._keep_connected()
        except GatewayError as error:
            self._shutdown(error, fatal=True)

    async def _keep_connected(self) -> None:
        o = self.options
        reconnects = Reconnects(o.first_delay, o.max_delay, o.fallback_after, o.transport)
        self._set_state("connecting")
        while not self._closing:
            lost = await self._socket_life()
            if self._closing:
                return
            match reconnects.after(lost, busy=bool(self._runs)):
                case Renew():
                    await self._renew(lost)
                case Stop(error=error):
                    raise error
                case Idle():
                    await self._idle()
                case Wait() as wait:
                    if wait.try_http and await self._http.reachable():
                        self._use_http()
                        return
                    await self._wait(wait, lost)

    async def _renew(self, lost: Lost) -> None:
        """A new token for the next socket; raises `GatewayError` when renewing is hopeless."""
        if self._tokens.can_refresh:
            self._set_state("reconnecting", delay=0.0, reason=lost.reason, close_code=lost.code)
        await self._tokens.renew(lost.token, lost.reason or "The token was refused.")

    async def _wait(self, wait: Wait, lost: Lost) -> None:
        reason, code = lost.reason, lost.code
        self._set_state(
            "reconnecting", delay=wait.delay, reason=reason, close_code=code, error=wait.error
        )
        await asyncio.sleep(wait.delay)

    async def _idle(self) -> None:
        self._set_state("idle")
        self._wanted.clear()
        await self._wanted.wait()
        self._set_state("connecting")

    async def _socket_life(self) -> Lost:
        """Open one socket and serve it until it closes."""
        token = await self._tokens.current()
        ws = await open_socket(self.options.ws_url, token, self.options.open_timeout)
        if isinstance(ws, Lost):
            return ws
        socket = Socket(ws, SocketSession(self._runs, token))
        try:
            return await socket.serve(lambda event: self._on_event(socket, event))
        finally:
            self._transport = None

    def _on_event(self, socket: Socket, event: SessionEvent) -> None:
        match event:
            case Ready():
                self._on_ready(socket, event)
            case Authenticated(expires_at=expires_at):
                self._tokens.accepted(expires_at)
            case TokenExpiring():
                self._spawn(renew_live(socket.ws, self._tokens))
            case Activity(frame=frame) if self._on_activity is not None:
                self._on_activity(frame)

    def _on_ready(self, socket: Socket, ready: Ready) -> None:
        self.ready = ready
        self._tokens.accepted(ready.expires_at)
        self._transport = socket
        socket.start(self._runs, self.options.ping_interval, self.options.pong_timeout)
        self._set_state("connected")
        self._connected.set()

    # HTTP, for good.

    def _use_http(self) -> None:
        self._transport = HttpRuns(self._http, self._runs, self._spawn, self._pause, self._fail)
        self._set_state("http")
        self._connected.set()
        for run in self._runs:
            self._transport.send(run)

    async def _pause(self, attempt: int) -> None:
        await asyncio.sleep(backoff(attempt, self.options.first_delay, self.options.max_delay))

    # Either.

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _set_state(self, state: State, **details: Any) -> None:
        self.state = state
        if self._on_state is not None:
            self._on_state(ConnectionState(state, **details))

    def _fail(self, error: GatewayError) -> None:
        self._shutdown(error, fatal=True)

    def _shutdown(self, error: GatewayError, *, fatal: bool = False) -> None:
        if fatal:
            self._fatal = error
        self._runs.end_all(error)
        self._connected.set()
        if self.state != "closed":
            self._set_state("closed", error=error)

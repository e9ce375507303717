"""`GatewayClient`: one multiplexed WebSocket to a gateway, kept alive for its runs.

It hides the connection: heartbeats, reconnects with backoff and jitter that resume every
unfinished run from the last seq seen (waiting as long as the gateway asks when it refuses a
connection), token renewal through a callback, and a fallback to HTTP streaming when no
WebSocket gets through. Guide: docs/client-python.md.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable
from types import TracebackType
from typing import Any

from websockets.asyncio.client import ClientConnection

from gateway_client import sse
from gateway_client.backoff import backoff
from gateway_client.connection import RESERVED, ConnectionState, Lost, State, Transport
from gateway_client.errors import GatewayError
from gateway_client.events import Item
from gateway_client.http import HttpApi
from gateway_client.reconnect import Idle, Reconnects, Renew, Stop, Wait
from gateway_client.run import Run
from gateway_client.runs import Runs, oversized
from gateway_client.session import (
    Activity,
    Authenticated,
    Ready,
    SessionEvent,
    SocketSession,
    TokenExpiring,
)
from gateway_client.socket import heartbeat, open_socket, renew_live, send_runs, serve
from gateway_client.tokens import TokenRefresh, Tokens


class GatewayClient:
    """`async with GatewayClient(url, token=…) as client:` then
    `async for event in client.complete("Hello"): …`."""

    def __init__(
        self,
        url: str = "http://127.0.0.1:8000",
        *,
        token: str | None = None,
        token_refresh: TokenRefresh | None = None,
        ws_url: str | None = None,
        transport: Transport = "auto",
        ping_interval: float = 25.0,
        pong_timeout: float = 10.0,
        reconnect_delay: float = 0.5,
        max_reconnect_delay: float = 30.0,
        fallback_after: int = 3,
        open_timeout: float = 10.0,
        max_frame_bytes: int = 1_048_576,
        on_state: Callable[[ConnectionState], None] | None = None,
        on_activity: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        base = url.rstrip("/")
        self.url = base
        self.ws_url = ws_url or base.replace("http", "ws", 1) + "/ws"
        self.transport = transport
        self.user: str | None = None  # the token's sub, from the gateway's `ready` frame
        self.connection_id: str | None = None
        # The user's generations running on any instance when the socket last opened
        # (`ready.running`): `attach` to each to show it.
        self.running: list[dict[str, Any]] = []
        self._on_activity = on_activity  # each `activity` frame: the user's doings elsewhere
        self.state: State = "closed"
        self._tokens = Tokens(token, token_refresh)
        self.http = HttpApi(base, self._tokens)
        self._ping_interval = ping_interval
        self._pong_timeout = pong_timeout
        self._first_delay = reconnect_delay
        self._max_delay = max_reconnect_delay
        self._fallback_after = fallback_after
        self._open_timeout = open_timeout
        self._max_frame_bytes = max_frame_bytes
        self._on_state = on_state
        self._runs = Runs()
        self._supervisor: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._ws: ClientConnection | None = None  # the socket runs go over, once ready
        self._outbox: asyncio.Queue[Run] | None = None  # runs to (re)send on that socket
        self._wanted = asyncio.Event()  # a run waits for a socket
        self._connected = asyncio.Event()  # ready, on HTTP, or failed for good
        self._fatal: GatewayError | None = None
        self._closing = False
        self._helpers: list[asyncio.Task[None]] = []  # the current socket's writer and heartbeat

    @property
    def token_refreshes(self) -> int:
        """How many times the token_refresh callback has been called."""
        return self._tokens.refresh_calls

    @property
    def expires_at(self) -> float | None:
        """The current token's `exp` (Unix seconds), as the gateway last stated it."""
        return self._tokens.expires_at

    async def __aenter__(self) -> GatewayClient:
        self._start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def connect(self) -> None:
        """Wait until runs can be sent (a socket is ready, or HTTP is in use). Raises
        `GatewayError` when the token is refused for good; retries any other failure."""
        self._start()
        await self._connected.wait()
        if self._fatal is not None:
            raise self._fatal

    def complete(
        self,
        message: str,
        *,
        model: str | None = None,
        agent: str | None = None,
        conversation_id: str | None = None,
        idempotency_key: str | None = None,
        **fields: Any,
    ) -> Run:
        """Start a completion (the fields of protocol §4.1) and return its run at once. An
        edit is a completion with `parent_id`, the parent of the message edited."""
        named = {"model": model, "agent": agent, "conversation_id": conversation_id}
        return self._submit({"message": message, **named, **fields}, idempotency_key)

    def regenerate(
        self,
        answer_id: str,
        *,
        conversation_id: str,
        idempotency_key: str | None = None,
        **fields: Any,
    ) -> Run:
        """Make an answer (`msg_…`) again: a new answer to the same user message, kept beside
        the old one; its run at once."""
        body = {"regenerate": answer_id, "conversation_id": conversation_id, **fields}
        return self._submit(body, idempotency_key)

    def _submit(self, fields: dict[str, Any], idempotency_key: str | None) -> Run:
        body = {k: v for k, v in fields.items() if k not in RESERVED and v is not None}
        # Sent again after a reconnect, the same key re-attaches to the answer it started.
        body["idempotency_key"] = idempotency_key or secrets.token_hex(16)
        run = Run(self._runs.new_id(), self._cancel, body=body)
        refusal = oversized(run, self._max_frame_bytes)
        if refusal is not None:
            run.deliver(refusal)
            return run
        self._track(run)
        return run

    def attach(self, generation_id: str, *, after: int = 0) -> Run:
        """Follow an existing generation of the same user: every event after seq `after`,
        then the live ones. A generation that has ended, followed from its end, gives none."""
        run = Run(self._runs.new_id(), self._cancel, generation_id=generation_id, after=after)
        self._track(run)
        return run

    async def cancel(self, generation_id: str) -> str:
        """Cancel a generation by id, wherever it runs; returns its status (`running` while
        the cancel is on its way, else its final status)."""
        return await self.http.cancel(generation_id)

    async def conversation(
        self, conversation_id: str, *, cursor: str | None = None, limit: int | None = None
    ) -> dict[str, Any] | None:
        """`GET /conversations/{id}`: a page of its messages (see `HttpApi.conversation`)."""
        return await self.http.conversation(conversation_id, cursor=cursor, limit=limit)

    async def messages(self, conversation_id: str) -> list[dict[str, Any]]:
        """Every stored message of a conversation, oldest first (see `HttpApi.messages`)."""
        return await self.http.messages(conversation_id)

    async def aclose(self) -> None:
        """Close the connection; unfinished runs raise `GatewayError` (`closed`)."""
        self._closing = True
        self._shutdown(GatewayError("The client was closed.", code="closed"))
        if self._ws is not None:
            await self._ws.close()  # a clean 1000; the reader then ends
        tasks = [t for t in (self._supervisor, *self._tasks) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.http.aclose()

    # Runs.

    def _track(self, run: Run) -> None:
        if self._fatal is not None:
            run.end(self._fatal)
            return
        if self._closing:
            # Nothing will send it: say so, rather than leave the caller waiting for ever.
            run.end(GatewayError("The client was closed.", code="closed"))
            return
        self._start()
        self._runs.add(run)
        self._wanted.set()
        if self.state == "http":
            self._spawn(self._follow_http(run))
        elif self._outbox is not None:
            self._outbox.put_nowait(run)

    def _deliver(self, run: Run, item: Item) -> None:
        if not self._runs.deliver(run, item) and self.state == "http":
            self._cancel_over_http(run)  # a cancel waits for the generation id

    def _cancel(self, run: Run) -> None:
        if self.state != "http" and run.socket is None:
            self._runs.end(run)  # never sent: nothing to stop
            return
        run.cancel_requested = True
        if self.state == "http":
            self._cancel_over_http(run)
        elif self._outbox is not None:
            self._outbox.put_nowait(run)

    def _cancel_over_http(self, run: Run) -> None:
        if run.cancel_requested and not run.cancel_sent and run.generation_id is not None:
            run.cancel_sent = True
            self._spawn(self._post_cancel(run))

    async def _post_cancel(self, run: Run) -> None:
        assert run.generation_id is not None
        try:
            await self.cancel(run.generation_id)
        except Exception:
            run.cancel_sent = False  # sent again with the run's next event

    # The connection.

    def _start(self) -> None:
        if self._supervisor is None and self._fatal is None:
            self._supervisor = asyncio.get_running_loop().create_task(self._supervise())

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _set_state(self, state: State, **details: Any) -> None:
        self.state = state
        if self._on_state is not None:
            self._on_state(ConnectionState(state, **details))

    async def _supervise(self) -> None:
        """Open sockets one after another for as long as the client lives."""
        try:
            if self.transport == "http":
                self._use_http()
                return
            await self._keep_connected()
        except GatewayError as error:
            self._shutdown(error, fatal=True)

    async def _keep_connected(self) -> None:
        reconnects = Reconnects(
            self._first_delay, self._max_delay, self._fallback_after, self.transport
        )
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
                    if wait.try_http and await self.http.reachable():
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
        """The gateway closed a socket nothing used: open the next one when a run needs it."""
        self._set_state("idle")
        self._wanted.clear()
        await self._wanted.wait()
        self._set_state("connecting")

    async def _socket_life(self) -> Lost:
        """Open one socket and serve it until it closes."""
        token = await self._tokens.current()
        ws = await open_socket(self.ws_url, token, self._open_timeout)
        if isinstance(ws, Lost):
            return ws
        session = SocketSession(self._runs, token)
        try:
            return await serve(ws, session, lambda event: self._on_event(ws, session, event))
        finally:
            for helper in self._helpers:
                helper.cancel()
            self._helpers = []
            self._ws = self._outbox = None
            ws.transport.abort()  # closed already, or declared dead

    def _on_event(self, ws: ClientConnection, session: SocketSession, event: SessionEvent) -> None:
        match event:
            case Ready():
                self._on_ready(ws, session, event)
            case Authenticated(expires_at=expires_at):
                self._tokens.accepted(expires_at)
            case TokenExpiring():
                self._spawn(renew_live(ws, self._tokens))
            case Activity(frame=frame) if self._on_activity is not None:
                self._on_activity(frame)

    def _on_ready(self, ws: ClientConnection, session: SocketSession, ready: Ready) -> None:
        self.user = ready.user
        self.connection_id = ready.connection_id
        self.running = ready.running
        self._tokens.accepted(ready.expires_at)
        self._ws = ws
        self._outbox = asyncio.Queue()
        for run in self._runs:
            self._outbox.put_nowait(run)  # each resumes where it stopped
        self._set_state("connected")
        self._connected.set()
        loop = asyncio.get_running_loop()
        beat = heartbeat(ws, session, self._ping_interval, self._pong_timeout)
        self._helpers = [
            loop.create_task(send_runs(ws, session, self._outbox)),
            loop.create_task(beat),
        ]

    # HTTP.

    def _use_http(self) -> None:
        self._set_state("http")
        self._connected.set()
        for run in self._runs:
            self._spawn(self._follow_http(run))

    async def _follow_http(self, run: Run) -> None:
        run.socket = self.http
        try:
            await sse.follow(self.http, run, self._deliver, self._pause)
        except GatewayError as error:
            self._shutdown(error, fatal=True)
        finally:
            self._runs.forget(run)

    async def _pause(self, attempt: int) -> None:
        await asyncio.sleep(backoff(attempt, self._first_delay, self._max_delay))

    def _shutdown(self, error: GatewayError, *, fatal: bool = False) -> None:
        if fatal:
            self._fatal = error
        self._runs.end_all(error)
        self._connected.set()
        if self.state != "closed":
            self._set_state("closed", error=error)

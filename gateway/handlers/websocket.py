"""The WebSocket transport at `/ws`: protocol v1 (see docs/protocol.md).

Each connection is one structured scope: this coroutine reads frames; one writer task drains a
bounded outbox; generations publish into the outbox without waiting. Leaving the scope cancels
the writer and detaches from generations, which run on and store their answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections import deque

from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from gateway.auth.tokens import bearer_token, choose_subprotocol, subprotocol_token
from gateway.core.generations import Follow
from gateway.core.outbox import Outbox
from gateway.errors import (
    CLOSE_AUTH_TIMEOUT,
    CLOSE_FORBIDDEN_ORIGIN,
    CLOSE_NORMAL,
    CLOSE_POLICY,
    CLOSE_RATE_LIMITED,
    CLOSE_SLOW_CONSUMER,
    CLOSE_TOO_BIG,
    CLOSE_UNAUTHORIZED,
    CLOSE_UNSUPPORTED_DATA,
    BadRequest,
    Disconnect,
    InternalError,
    RateLimited,
    RequestError,
    Unauthorized,
)
from gateway.events import Event, GenerationRef, is_final
from gateway.handlers import slots
from gateway.handlers.common import services_of
from gateway.handlers.expiry import Expiry
from gateway.handlers.idle import Idle
from gateway.handlers.runtime import Runtime
from gateway.obs.logs import bind, log_context
from gateway.principal import Principal
from gateway.protocol.frames import (
    PONG_FRAME,
    Auth,
    Cancel,
    CompletionRequest,
    Ping,
    Resume,
    authenticated_frame,
    dumps,
    encode_event,
    error_frame,
    notice_object,
    parse_frame_object,
    parse_json_object,
    ready_frame,
    refused_id,
    resumed_frame,
    token_expiring_frame,
)
from gateway.store.unreachable import store_error

log = logging.getLogger("gateway.ws")
ERROR_WINDOW_SECONDS = 60.0


async def websocket_endpoint(ws: WebSocket) -> None:
    offered = list(ws.scope.get("subprotocols", []))
    await ws.accept(subprotocol=choose_subprotocol(offered))
    connection = Connection(ws, services_of(ws))
    bind(connection_id=connection.id)  # on every log line of this socket and its generations
    try:
        # Browsers send Origin on every handshake and CORS does not cover WebSockets, so a
        # page on another site could otherwise use a visitor's socket.
        if not origin_allowed(ws.headers.get("origin"), connection.settings.allowed_origins):
            raise Disconnect(CLOSE_FORBIDDEN_ORIGIN, "This origin may not connect.")
        principal = await connection.authenticate(_token_on_connect(ws, offered))
        bind(user=principal.sub)
        await connection.count_in(principal)
        try:
            await connection.serve(principal)
        finally:
            await connection.count_out(principal)
    except Disconnect as exc:
        await connection.close(exc.close_code, exc.reason)


def origin_allowed(origin: str | None, allowed: tuple[str, ...]) -> bool:
    """No list allows every origin; with one, a browser's Origin must be on it. Clients that
    send no Origin (native apps, servers) are not browsers and are let through."""
    return not allowed or origin is None or origin in allowed or "*" in allowed


def _token_on_connect(ws: WebSocket, offered: list[str]) -> str | None:
    return (
        bearer_token(ws.headers.get("authorization"))
        or subprotocol_token(offered)
        or ws.query_params.get("token")
    )


class Delivery:
    """One request's events into its connection's outbox, tagged with the request id."""

    __slots__ = ("connection", "request_id")

    def __init__(self, connection: Connection, request_id: str) -> None:
        self.connection = connection
        self.request_id = request_id

    def __call__(self, ref: GenerationRef, event: Event) -> None:
        self.connection.deliver(self.request_id, ref, event)

    async def room(self) -> bool:
        return await self.connection.outbox.room()

    def notice(self, ref: GenerationRef, code: str, message: str) -> None:
        self.connection.outbox.put(dumps(notice_object(self.request_id, ref, code, message)))


class Connection:
    def __init__(self, ws: WebSocket, services: Runtime) -> None:
        self.ws = ws
        self.services = services
        self.settings = services.settings
        self.id = f"conn_{secrets.token_urlsafe(9)}"
        self.outbox: Outbox[str] = Outbox(self.settings.max_queued_frames)
        self.active: dict[str, Follow | None] = {}
        self.started: set[str] = set()
        self.refusals: deque[float] | None = None  # made at the first refusal: sockets are many
        self.principal: Principal | None = None
        self.frames_sent = services.metrics.frames_sent.labels("ws")
        self.frames_received = services.metrics.frames_received.labels("ws")

    async def authenticate(self, token: str | None) -> Principal:
        """Verify the token given on connect, else wait AUTH_TIMEOUT for an auth frame."""
        if token is None:
            token = await self._auth_frame()
        try:
            return await self.services.verifier.verify(token)
        except Unauthorized as exc:
            raise Disconnect(CLOSE_UNAUTHORIZED, exc.message) from None

    async def count_in(self, principal: Principal) -> None:
        """Count the socket against the user's connection limit; over it, the client gets an
        error frame with retry_after, then close 4429. Without Redis the socket is let in
        uncounted: the limit guards against abuse, not against an outage."""
        refused = await slots.count_in(self.services, principal, self.id)
        if refused is not None:
            await self.ws.send_text(error_frame(None, refused, done=False))
            raise Disconnect(CLOSE_RATE_LIMITED, "Too many connections for this user.")

    async def count_out(self, principal: Principal) -> None:
        with contextlib.suppress(Exception):  # an uncounted entry lapses on its own
            await slots.count_out(self.services, principal, self.id)

    async def _auth_frame(self) -> str:
        try:
            async with asyncio.timeout(self.settings.auth_timeout):
                text = await self._receive_text()
        except TimeoutError:
            raise Disconnect(CLOSE_AUTH_TIMEOUT, "No auth frame in time.") from None
        if text is None:
            raise Disconnect(CLOSE_UNAUTHORIZED, "Closed before authenticating.")
        try:
            frame = parse_frame_object(parse_json_object(text))
        except RequestError:
            frame = None
        if not isinstance(frame, Auth):
            raise Disconnect(CLOSE_UNAUTHORIZED, "The first frame must be an auth frame.")
        return frame.token

    async def serve(self, principal: Principal) -> None:
        self.principal = principal
        self.outbox.put(ready_frame(principal.sub, self.id, principal.expires_at))
        self.expiry = Expiry(
            principal.expires_at,
            self.settings.token_expiry_warning,
            self.settings.token_expiry_grace,
            warn=self._warn_expiry,
            expire=lambda: self.close(CLOSE_UNAUTHORIZED, "The token expired."),
        )
        idle = self.settings.ws_idle_timeout
        self.idle = Idle(
            idle,
            busy=lambda: bool(self.active),
            close=lambda: self.close(CLOSE_NORMAL, f"Idle: no frames for {idle:g} s."),
        )
        # One task besides this one; the token's expiry and idleness are timer handles.
        writer = asyncio.create_task(self._write(), name=f"writer-{self.id}")
        self.expiry.start()
        self.idle.start()
        try:
            while (text := await self._receive_text()) is not None:
                self.idle.touch()
                await self._handle_text(text)
        finally:
            self.expiry.stop()
            self.idle.stop()
            self.outbox.close()
            await self._leave()
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writer

    async def _leave(self) -> None:
        """Detach from every generation; with ON_DISCONNECT=cancel, also cancel those this
        socket started (not during a drain: those clients are told to resume elsewhere)."""
        follows = [f for f in self.active.values() if f is not None]
        self.active.clear()
        for follow in follows:
            follow.stop()
        cancel = self.settings.on_disconnect == "cancel"
        if cancel and self.principal and not self.services.generations.draining.is_set():
            for generation_id in self.started & {f.generation_id for f in follows}:
                with contextlib.suppress(Exception):
                    await self.services.chat.cancel(self.principal, generation_id)

    async def _receive_text(self) -> str | None:
        """The next text frame; None when the client has gone. Enforces frame rules."""
        message = await self.ws.receive()
        if message["type"] == "websocket.disconnect":
            return None
        self.frames_received.inc()
        text = message.get("text")
        if text is None:
            raise Disconnect(CLOSE_UNSUPPORTED_DATA, "Binary frames are not supported.")
        limit = self.settings.max_frame_bytes
        if len(text) > limit // 4 and len(text.encode()) > limit:
            raise Disconnect(CLOSE_TOO_BIG, f"Frames are limited to {limit} bytes.")
        return str(text)

    async def _handle_text(self, text: str) -> None:
        obj: dict[str, object] = {}
        try:
            obj = parse_json_object(text)
            frame = parse_frame_object(obj)
            if isinstance(frame, CompletionRequest):
                await self._start(frame)
            elif isinstance(frame, Resume):
                await self._resume(frame)
            elif isinstance(frame, Cancel):
                await self._cancel(frame)
            elif isinstance(frame, Ping):
                self.outbox.put(PONG_FRAME)
            else:
                await self._renew(frame.token)
        except Disconnect:
            raise
        except RequestError as exc:
            self._refuse(obj, exc)
        except Exception as exc:
            translated = store_error(exc)
            if translated is None:
                log.exception("connection %s: a frame failed unexpectedly", self.id)
            else:
                self.services.metrics.redis_errors.inc()
            self._refuse(obj, translated or InternalError())

    def _warn_expiry(self, seconds: int) -> None:
        self.outbox.put(token_expiring_frame(seconds))

    async def _renew(self, token: str) -> None:
        """A fresh token on the live socket. A bad one is an error frame (the current token
        stays good until it expires); one for another user ends the socket."""
        assert self.principal is not None
        principal = await self.services.verifier.verify(token)
        if principal.sub != self.principal.sub:
            raise Disconnect(CLOSE_UNAUTHORIZED, "A renewed token must be for the same user.")
        self.principal = principal
        self.expiry.renew(principal.expires_at)
        self.outbox.put(authenticated_frame(principal.sub, principal.expires_at))

    def _refuse(self, obj: dict[str, object], error: RequestError) -> None:
        # A client that keeps sending bad frames is broken or probing: stop answering it.
        now = time.monotonic()
        refusals = self.refusals = self.refusals if self.refusals is not None else deque()
        refusals.append(now)
        while refusals and refusals[0] < now - ERROR_WINDOW_SECONDS:
            refusals.popleft()
        if len(refusals) > self.settings.max_error_frames:
            raise Disconnect(CLOSE_POLICY, "Too many refused frames.")
        self.services.metrics.errors.labels(error.code).inc()
        request_id, done = refused_id(obj)
        # An error about an id that is running here must not end it for the client.
        done = done and request_id not in self.active
        self.outbox.put(error_frame(request_id, error, done=done))

    def _claim(self, request_id: str) -> None:
        if request_id in self.active:
            raise BadRequest(f"A completion with id '{request_id}' is already running.")
        if len(self.active) >= self.settings.max_concurrent_per_connection:
            raise RateLimited(
                f"At most {self.settings.max_concurrent_per_connection} completions may run "
                "at once on one connection; wait for one to finish."
            )
        self.active[request_id] = None  # reserved until the follow exists

    def _hold(self, request_id: str, follow: Follow) -> None:
        # A replay may already have delivered the final event and released the id.
        if request_id in self.active:
            self.active[request_id] = follow

    async def _start(self, request: CompletionRequest) -> None:
        assert request.id is not None and self.principal is not None
        self._claim(request.id)
        try:
            # The generation's task starts inside: its log lines carry the request id too.
            with log_context(request_id=request.id):
                follow = await self.services.chat.start(
                    self.principal, request, Delivery(self, request.id)
                )
        except BaseException:
            self.active.pop(request.id, None)
            raise
        self.started.add(follow.generation_id)
        self._hold(request.id, follow)

    async def _resume(self, frame: Resume) -> None:
        assert self.principal is not None
        chat = self.services.chat
        meta = await chat.locate(self.principal, frame.generation_id)
        chat.check_after(meta, frame.after)
        request_id = frame.id or meta.request_id or meta.generation_id
        ended = meta.status != "running"
        # Nothing follows a resume past the end, except the end of an interrupted generation.
        if not (ended and frame.after >= meta.last_seq and meta.status != "interrupted"):
            self._claim(request_id)
        self.outbox.put(
            resumed_frame(
                request_id,
                meta.generation_id,
                frame.after,
                meta.status,
                meta.last_seq if ended else None,
            )
        )
        if request_id in self.active:
            follow = chat.attach(meta, frame.after, Delivery(self, request_id))
            self._hold(request_id, follow)

    async def _cancel(self, frame: Cancel) -> None:
        """Cancel is idempotent: an id unknown on this socket, or a finished one, is ignored;
        a generation_id must be the user's own (else not_found)."""
        assert self.principal is not None
        generation_id = frame.generation_id
        if generation_id is None:
            follow = self.active.get(frame.id or "")
            if follow is None:
                return
            generation_id = follow.generation_id
        await self.services.chat.cancel(self.principal, generation_id)

    def deliver(self, request_id: str, ref: GenerationRef, event: Event) -> None:
        if is_final(event):
            self.idle.touch()  # the idle clock starts when the last generation ends
            self.active.pop(request_id, None)
        self.outbox.put(encode_event(event, ref, request_id))

    async def _write(self) -> None:
        try:
            while (frame := await self.outbox.get()) is not None:
                await self.ws.send_text(frame)
                self.frames_sent.inc()
        except (WebSocketDisconnect, RuntimeError, OSError):
            # The socket went under a send (reset for not reading, or closed beneath us):
            # the reader gets the disconnect and ends the connection.
            return
        if self.outbox.overflowed:
            await self.close(CLOSE_SLOW_CONSUMER, "The client is not reading fast enough.")

    async def close(self, code: int, reason: str) -> None:
        if self.ws.application_state == WebSocketState.CONNECTED:
            with contextlib.suppress(RuntimeError, OSError, WebSocketDisconnect):
                await self.ws.close(code, reason)

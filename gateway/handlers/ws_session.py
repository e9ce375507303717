"""One WebSocket's protocol v1 logic, with no socket in it (docs/protocol.md).

In the sans-I/O spirit of websockets' `protocol.py`: the handler (`websocket.py`) reads text
frames and hands them to the session, and writes what the session queues in its outbox; the
session decides the rest: who the client is, what each frame does, which generations run on
the socket (several at once, each under its request id), and when the socket must close. A
close is decided by raising `Disconnect`, or, when a timer decides (the token expired, the
socket is idle), by calling the `close` hook it was given. The session awaits the core
(tokens, chat) but never the socket, so its flows are tested without a server.

It lives among the handlers, not in the core: frames, request ids and close codes belong to
this one transport, and the core serves every transport alike.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, NoReturn

from gateway.core.activity import Snapshot
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
from gateway.handlers.expiry import Expiry
from gateway.handlers.idle import Idle
from gateway.handlers.runtime import disconnect_policy
from gateway.obs import tracing
from gateway.obs.logs import log_context
from gateway.obs.tracing import NO_HEADERS
from gateway.principal import Principal
from gateway.protocol.activity import ActivityEntry
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

if TYPE_CHECKING:
    from gateway.core.generations import Follow
    from gateway.handlers.runtime import Runtime

log = logging.getLogger("gateway.ws")
ERROR_WINDOW_SECONDS = 60.0

# How the I/O side closes its socket when a timer decides it.
CloseHook = Callable[[Disconnect], Awaitable[None]]


def origin_allowed(origin: str | None, allowed: tuple[str, ...]) -> bool:
    """No list allows every origin; with one, a browser's Origin must be on it. Clients that
    send no Origin (native apps, servers) are not browsers and are let through."""
    return not allowed or origin is None or origin in allowed or "*" in allowed


class Delivery:
    """One request's events into its session's outbox, tagged with the request id."""

    __slots__ = ("request_id", "session")

    def __init__(self, session: SocketSession, request_id: str) -> None:
        self.session = session
        self.request_id = request_id

    def __call__(self, ref: GenerationRef, event: Event) -> None:
        self.session.deliver(self.request_id, ref, event)

    async def room(self) -> bool:
        return await self.session.outbox.room()

    def notice(self, ref: GenerationRef, code: str, message: str) -> None:
        self.session.outbox.put(dumps(notice_object(self.request_id, ref, code, message)))


class SocketSession:
    """A socket's state from its accept to its close: authenticate (`check_origin`,
    `first_frame_token`, `authenticate`, `admit`), then `begin`, a `receive` per text frame
    (each checked by `check_frame` first), and `end`. Frames to send wait in `outbox`."""

    def __init__(self, services: Runtime, close: CloseHook, activity: bool = True) -> None:
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
        self._close = close
        # The handshake's headers: a frame without a traceparent of its own joins its trace.
        self.handshake: Mapping[str, str] = NO_HEADERS
        self.activity = activity  # the user's activity frames (`?activity=0` turns them off)
        self._listening: str | None = None  # the user whose activity reaches this socket

    # Before the first frame is served.

    def check_origin(self, origin: str | None) -> None:
        # Browsers send Origin on every handshake and CORS does not cover WebSockets, so a
        # page on another site could otherwise use a visitor's socket.
        if not origin_allowed(origin, self.settings.allowed_origins):
            raise Disconnect(CLOSE_FORBIDDEN_ORIGIN, "This origin may not connect.")

    def first_frame_token(self, text: str | None) -> str:
        """The token of the `auth` frame a client sends first when it gave none on connect;
        `text` is None when the client left before sending one."""
        if text is None:
            raise Disconnect(CLOSE_UNAUTHORIZED, "Closed before authenticating.")
        try:
            frame = parse_frame_object(parse_json_object(text))
        except RequestError:
            frame = None
        if not isinstance(frame, Auth):
            raise Disconnect(CLOSE_UNAUTHORIZED, "The first frame must be an auth frame.")
        return frame.token

    def no_auth_frame(self) -> NoReturn:
        """`AUTH_TIMEOUT` passed without a first frame."""
        raise Disconnect(CLOSE_AUTH_TIMEOUT, "No auth frame in time.")

    async def authenticate(self, token: str) -> Principal:
        try:
            return await self.services.verifier.verify(token)
        except Unauthorized as exc:
            raise Disconnect(CLOSE_UNAUTHORIZED, exc.message) from None

    def admit(self, refused: RateLimited | None) -> None:
        """Over the user's connection limit (`refused`, from counting the socket in) the
        client gets an error frame with retry_after, then close 4429. The handler counts
        (`slots.py`, shared with the HTTP streams, is not free of Starlette)."""
        if refused is not None:
            self.outbox.put(error_frame(None, refused, done=False))
            raise Disconnect(CLOSE_RATE_LIMITED, "Too many connections for this user.")

    # Serving frames.

    async def begin(self, principal: Principal) -> None:
        """`ready` first (with the user's running generations), activity from then on, then
        the token's expiry and the socket's idleness are watched: timer handles, not tasks,
        as sockets are many and mostly quiet."""
        self.principal = principal
        await self._ready(principal)
        self.expiry = Expiry(
            principal.expires_at,
            self.settings.token_expiry_warning,
            self.settings.token_expiry_grace,
            warn=self._warn_expiry,
            expire=lambda: self._close(Disconnect(CLOSE_UNAUTHORIZED, "The token expired.")),
        )
        idle = self.settings.ws_idle_timeout
        self.idle = Idle(
            idle,
            busy=lambda: bool(self.active),
            close=lambda: self._close(Disconnect(CLOSE_NORMAL, f"Idle: no frames for {idle:g} s.")),
        )
        self.expiry.start()
        self.idle.start()

    def check_frame(self, text: str | None) -> str:
        """A received frame's text, under the frame rules (any time, before `begin` too);
        `text` is None for a binary frame."""
        self.frames_received.inc()
        if text is None:
            raise Disconnect(CLOSE_UNSUPPORTED_DATA, "Binary frames are not supported.")
        limit = self.settings.max_frame_bytes
        if len(text) > limit // 4 and len(text.encode()) > limit:
            raise Disconnect(CLOSE_TOO_BIG, f"Frames are limited to {limit} bytes.")
        return str(text)

    async def receive(self, text: str) -> None:
        """One client frame. A refused one is an error frame; `Disconnect` ends the socket."""
        self.idle.touch()
        obj: dict[str, object] = {}
        try:
            obj = parse_json_object(text)
            frame = parse_frame_object(obj)
            if isinstance(frame, CompletionRequest):
                with tracing.active.frame("completion", frame.id, obj, self.handshake):
                    await self._start(frame)
            elif isinstance(frame, Resume):
                with tracing.active.frame("resume", frame.id, obj, self.handshake):
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

    def deliver(self, request_id: str, ref: GenerationRef, event: Event) -> None:
        if is_final(event):
            self.idle.touch()  # the idle clock starts when the last generation ends
            self.active.pop(request_id, None)
        self.outbox.put(encode_event(event, ref, request_id))

    def outbox_ended(self) -> Disconnect | None:
        """Why to close once the outbox gives no more frames: an overflow means the client
        fell `MAX_QUEUED_FRAMES` behind."""
        if self.outbox.overflowed:
            return Disconnect(CLOSE_SLOW_CONSUMER, "The client is not reading fast enough.")
        return None

    async def end(self) -> None:
        """The socket is done: stop the timers and the outbox, and leave every generation."""
        if self._listening is not None:
            self.services.activity.unlisten(self._listening, self._on_activity)
            self._listening = None
        self.expiry.stop()
        self.idle.stop()
        self.outbox.close()
        await self._leave()

    async def _leave(self) -> None:
        """Detach from every generation; with ON_DISCONNECT=cancel, also cancel those this
        socket started (not during a drain: those clients are told to resume elsewhere)."""
        follows = [f for f in self.active.values() if f is not None]
        self.active.clear()
        for follow in follows:
            follow.stop()
        if self.principal is not None:
            left = self.started & {f.generation_id for f in follows}
            await disconnect_policy(self.services).left(self.principal, left)

    async def _ready(self, principal: Principal) -> None:
        """The `ready` frame, then the user's activity with no await in between, so none is
        lost or sent before it. Without the store the socket opens all the same: `running`
        is null and activity is read from now on."""
        if not self.activity:
            self.outbox.put(ready_frame(principal.sub, self.id, principal.expires_at))
            return
        activity = self.services.activity
        try:
            snapshot = await activity.snapshot(principal.sub)
        except Exception as exc:
            if store_error(exc) is None:
                raise
            self.services.metrics.redis_errors.inc()
            snapshot = Snapshot(f"{int(time.time() * 1000)}-0", None)
        self.outbox.put(
            ready_frame(
                principal.sub, self.id, principal.expires_at, snapshot.running, snapshot.last_id
            )
        )
        activity.listen(principal.sub, self._on_activity, snapshot.last_id)
        self._listening = principal.sub

    def _on_activity(self, entry: ActivityEntry) -> None:
        # The frame is rendered once per instance, whatever the sockets; a socket that falls
        # MAX_QUEUED_FRAMES behind is closed (4008) as for any frame.
        self.outbox.put(entry.frame())

    # The frames.

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

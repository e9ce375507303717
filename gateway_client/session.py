"""One socket's protocol state, with no socket in it (docs/protocol.md).

In the sans-I/O spirit of websockets' `protocol.py`, as the gateway's own
`handlers/ws_session.py`: the socket's I/O (`socket.py`) hands each frame it reads to
`receive` and sends what `frames_for` returns; the session decides the rest: which run a
frame belongs to and whether it is stale (sent before the run was resumed here), when a
resumed run is over, what the client must act on (`ready`, a token accepted or expiring, the
user's activity), and how the socket ended. It awaits nothing and reads no clock, so every
flow is tested by feeding it frames.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from gateway_client.connection import Lost, nothing_follows, number
from gateway_client.events import ErrorEvent, parse_frame
from gateway_client.run import Run
from gateway_client.runs import Runs

PING = '{"type":"ping"}'


@dataclass(frozen=True)
class Ready:
    """The gateway accepted the socket: runs may be sent on it."""

    user: str
    connection_id: str
    # The user's generations running on any instance (`ready.running`): attach to show them.
    running: list[dict[str, Any]] = field(default_factory=list)
    expires_at: float | None = None


@dataclass(frozen=True)
class Authenticated:
    """The gateway took the token sent on the live socket."""

    expires_at: float | None


@dataclass(frozen=True)
class TokenExpiring:
    """The token expires soon: send a fresh one on this socket (protocol §4.5)."""


@dataclass(frozen=True)
class Activity:
    """An `activity` frame: the user's doings on any device or instance."""

    frame: dict[str, Any]


SessionEvent = Ready | Authenticated | TokenExpiring | Activity


class SocketSession:
    """A socket from its handshake to its close. `receive` each frame with the time it came;
    `frames_for` a run when it is to be sent or cancelled; `lost` once the socket closed."""

    def __init__(self, runs: Runs, token: str) -> None:
        self.runs = runs
        self.token = token  # the one the socket opened with: a 4401 refused it
        self.ready = False
        self.last_frame: float | None = None  # when any frame last came, by the loop's clock
        self.refusal: ErrorEvent | None = None  # a connection-level error (before a 4429)

    def receive(self, text: str | bytes, now: float) -> SessionEvent | None:
        """Take one frame: deliver a run's events to it; return what the client must do."""
        self.last_frame = now
        frame = _decode(text)
        kind = frame.get("type")
        if kind == "ready":
            return self._ready(frame)
        if kind == "authenticated":
            return Authenticated(number(frame.get("expires_at")))
        if kind == "token_expiring":
            return TokenExpiring()
        if kind == "activity":
            return Activity(frame)
        if kind == "error" and frame.get("id") is None:
            self._refused(frame)
        elif kind == "resumed":
            self._resumed(frame)
        else:
            self._route(frame)
        return None

    def frames_for(self, run: Run) -> list[str]:
        """What to send for `run` now: its opening frame the first time on this socket (a
        resume, or the completion again), then its cancel if one is asked for and not sent."""
        if run.ended:
            return []
        frames = []
        if run.socket is not self:
            run.socket = self
            run.cancel_sent = False
            frames.append(json.dumps(run.opening_frame()))
        if run.cancel_requested and not run.cancel_sent:
            run.cancel_sent = True
            frames.append(json.dumps(cancel_frame(run)))
        return frames

    def silent_since(self, sent: float) -> bool:
        """No frame came since `sent` (a heartbeat's time): the socket counts as dead."""
        return self.last_frame is None or self.last_frame < sent

    def lost(self, code: int | None, reason: str | None) -> Lost:
        """How the socket ended, once it closed with `code` and `reason`."""
        return Lost(
            opened=True,
            ready=self.ready,
            code=code,
            reason=reason or "",
            token=self.token,
            refusal=self.refusal,
        )

    def _ready(self, frame: dict[str, Any]) -> Ready:
        self.ready = True
        running = frame.get("running")
        return Ready(
            user=str(frame.get("user", "")),
            connection_id=str(frame.get("connection_id", "")),
            running=[r for r in running if isinstance(r, dict)]
            if isinstance(running, list)
            else [],
            expires_at=number(frame.get("expires_at")),
        )

    def _refused(self, frame: dict[str, Any]) -> None:
        item = parse_frame(frame)  # e.g. the rate_limited before a 4429 close
        if isinstance(item, ErrorEvent):
            self.refusal = item

    def _resumed(self, frame: dict[str, Any]) -> None:
        run = self.runs.get(frame.get("id"))
        if run is not None and nothing_follows(frame):
            self.runs.end(run)

    def _route(self, frame: dict[str, Any]) -> None:
        run = self.runs.get(frame.get("id"))
        if run is None or run.socket is not self:
            return  # a run that ended, or a frame from before its resume
        item = parse_frame(frame)
        if item is not None:
            self.runs.deliver(run, item)


def cancel_frame(run: Run) -> dict[str, Any]:
    """By generation id when known: that also reaches it on another instance."""
    if run.generation_id:
        return {"type": "cancel", "generation_id": run.generation_id}
    return {"type": "cancel", "id": run.id}


def _decode(text: str | bytes) -> dict[str, Any]:
    """A frame as a JSON object; anything else, which the gateway never sends, as nothing."""
    try:
        frame = json.loads(text)
    except ValueError:
        return {}
    return frame if isinstance(frame, dict) else {}

"""What to do once a socket is gone, by how it ended: pure, like `backoff.py`, so the path of
every close code is tested without a gateway (docs/client-python.md#reconnecting-and-resuming).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from gateway_client.backoff import backoff, reconnect_delay
from gateway_client.connection import (
    CLOSE_FORBIDDEN,
    CLOSE_IDLE,
    CLOSE_TOO_MANY,
    CLOSE_UNAUTHORIZED,
    Lost,
    Transport,
    too_many,
)
from gateway_client.errors import GatewayError


@dataclass(frozen=True)
class Renew:
    """The token was refused (4401): renewing it is the only thing that can help; then
    reconnect at once."""


@dataclass(frozen=True)
class Stop:
    """Nothing will help: the client ends with `error`."""

    error: GatewayError


@dataclass(frozen=True)
class Idle:
    """The gateway closed a socket nothing used: open the next one when a run needs it."""


@dataclass(frozen=True)
class Wait:
    """Reconnect after `delay` seconds; `error` says why a wait is longer than the backoff
    (`rate_limited`). With `try_http`, enough sockets failed to open that HTTP is tried first."""

    delay: float
    error: GatewayError | None = None
    try_http: bool = False


Step = Renew | Stop | Idle | Wait


class Reconnects:
    """The attempts since a socket was last accepted, and the sockets in a row that did not
    open; `after` each lost socket says what comes next."""

    def __init__(
        self,
        first_delay: float,
        max_delay: float,
        fallback_after: int,
        transport: Transport = "auto",
        rng: random.Random | None = None,
    ) -> None:
        self.first_delay = first_delay
        self.max_delay = max_delay
        self.fallback_after = fallback_after
        self.transport = transport
        self.rng = rng
        self.attempt = 0
        self.unopened = 0

    def after(self, lost: Lost, *, busy: bool) -> Step:
        """`busy`: runs wait for a socket."""
        if lost.ready:
            self.attempt = 0
        if lost.code == CLOSE_UNAUTHORIZED:
            return Renew()
        if lost.code == CLOSE_FORBIDDEN:
            return Stop(
                GatewayError(lost.reason or "This origin may not connect.", code="forbidden")
            )
        # "Connection refused" is not counted: a gateway restarting must not push us onto HTTP.
        self.unopened = 0 if lost.opened else self.unopened + lost.blocked
        if lost.code == CLOSE_IDLE and not busy:
            self.attempt = 0
            return Idle()
        return self._wait(lost)

    def _wait(self, lost: Lost) -> Wait:
        waiting = too_many(lost) if lost.code == CLOSE_TOO_MANY else None
        pause = backoff(self.attempt, self.first_delay, self.max_delay, self.rng)
        delay = reconnect_delay(pause, waiting.retry_after if waiting else None)
        self.attempt += 1
        try_http = self.transport == "auto" and self.unopened >= self.fallback_after
        return Wait(delay, waiting, try_http)

"""A live socket's token: warn before it expires, close after a grace unless it was renewed.

Sockets outlive tokens (a phone keeps one open for hours); checking `exp` only at connect
would let a revoked or expired user keep streaming.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Literal

Step = Literal["warn", "expire", "wait"]


def next_step(
    now: float, expires_at: float, warned: bool, warning: float, grace: float
) -> tuple[Step, float]:
    """What to do now, or until when to wait. Pure, so the schedule is unit-tested."""
    if now >= expires_at + grace:
        return "expire", now
    if not warned and now >= expires_at - warning:
        return "warn", now
    return "wait", expires_at + grace if warned else expires_at - warning


class Expiry:
    """One timer handle per socket, not a task: it fires to warn, then to close, and is
    moved by a renewal. Sockets are many and mostly quiet; a task each would cost memory."""

    def __init__(
        self,
        expires_at: float,
        warning: float,
        grace: float,
        warn: Callable[[int], None],
        expire: Callable[[], Awaitable[None]],
    ) -> None:
        self.expires_at = expires_at
        self._warning = warning
        self._grace = grace
        self._warn = warn
        self._expire = expire
        self._warned_for: float | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._closing: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._step()

    def renew(self, expires_at: float) -> None:
        self.expires_at = expires_at
        self._step()

    def stop(self) -> None:
        """Cancel the timer; a close already under way finishes (it is what ended the socket)."""
        if self._timer is not None:
            self._timer.cancel()

    def _step(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        now = time.time()
        warned = self._warned_for == self.expires_at
        step, until = next_step(now, self.expires_at, warned, self._warning, self._grace)
        if step == "expire":
            self._closing = asyncio.ensure_future(self._expire())
            return
        if step == "warn":
            self._warned_for = self.expires_at
            self._warn(max(0, int(self.expires_at - now)))
            step, until = next_step(now, self.expires_at, True, self._warning, self._grace)
            if step == "expire":  # warned and already past the grace: the next step is now
                until = now
        self._timer = asyncio.get_running_loop().call_later(until - now, self._step)

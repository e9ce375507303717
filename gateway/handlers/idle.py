"""A live socket's idleness: closed after `WS_IDLE_TIMEOUT` without a client frame while
nothing runs on it.

A forgotten tab or an abandoned client holds a socket, a task and a slot of the user's
connection limit for as long as TCP lets it. Only the client's own frames (the app-level `ping`
included) count as activity, and the end of a generation restarts the clock. Protocol-level
pongs do not count: a browser answers them by itself, so they show that the peer is reachable,
not that anyone is using it.

Cost: one float stored per received frame and one timer handle per socket, which fires about
once per `WS_IDLE_TIMEOUT`; no timer or task is made per frame, and no task per socket.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable


def idle_wait(now: float, last: float, timeout: float, busy: bool) -> float | None:
    """Seconds to wait before looking again, or None when the socket is idle and must close.
    Pure, so the schedule is unit-tested."""
    if busy:
        return timeout
    remaining = last + timeout - now
    return None if remaining <= 0 else remaining


class Idle:
    __slots__ = ("_busy", "_close", "_closing", "_timeout", "_timer", "last")

    def __init__(
        self, timeout: float, busy: Callable[[], bool], close: Callable[[], Awaitable[None]]
    ) -> None:
        self._timeout = timeout
        self._busy = busy
        self._close = close
        self._timer: asyncio.TimerHandle | None = None
        self._closing: asyncio.Task[None] | None = None
        self.last = time.monotonic()

    def touch(self) -> None:
        self.last = time.monotonic()

    def start(self) -> None:
        self._check()

    def stop(self) -> None:
        """Cancel the timer; a close already under way finishes (it is what ended the socket)."""
        if self._timer is not None:
            self._timer.cancel()

    def _check(self) -> None:
        # A schedule, not a poll: each check is at the earliest moment the socket could be
        # idle, given the last frame seen so far.
        wait = idle_wait(time.monotonic(), self.last, self._timeout, self._busy())
        if wait is None:
            self._closing = asyncio.ensure_future(self._close())
            return
        self._timer = asyncio.get_running_loop().call_later(wait, self._check)

"""A live socket's token: warn before it expires, close after a grace unless it was renewed.

Sockets outlive tokens (a phone keeps one open for hours); checking `exp` only at connect
would let a revoked or expired user keep streaming.
"""

from __future__ import annotations

import asyncio
import contextlib
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
        self._renewed = asyncio.Event()

    def renew(self, expires_at: float) -> None:
        self.expires_at = expires_at
        self._renewed.set()

    async def run(self) -> None:
        warned_for: float | None = None
        while True:
            now = time.time()
            step, until = next_step(
                now, self.expires_at, warned_for == self.expires_at, self._warning, self._grace
            )
            if step == "expire":
                await self._expire()
                return
            if step == "warn":
                warned_for = self.expires_at
                self._warn(max(0, int(self.expires_at - now)))
                continue
            self._renewed.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(until - now):
                    await self._renewed.wait()

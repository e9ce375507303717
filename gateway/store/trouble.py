"""How a reader's loop meets a failing Redis: say so once when it starts and once when it
ends, not at each retry, and retry quickly at first (a blip), then once a second, so that an
outage costs neither a log line nor a spin per attempt."""

from __future__ import annotations

import asyncio
import logging

log = logging.getLogger("gateway.store")

# The store's loops (the readers here, and the log writer) retry this often while it fails.
RETRY_FIRST = 0.05
RETRY_MAX = 1.0


class Trouble:
    """One loop's failures: `met` on each, `over` on a success, `back_off` (or `step`) before
    retrying."""

    def __init__(self, what: str) -> None:
        self._what = what
        self._failing = False
        self._delay = RETRY_FIRST

    def met(self, exc: Exception) -> None:
        if not self._failing:
            log.warning("%s failed: %s", self._what, type(exc).__name__)
        self._failing = True

    def over(self) -> None:
        if self._failing:
            log.warning("%s works again", self._what)
        self._failing = False
        self._delay = RETRY_FIRST

    async def back_off(self) -> None:
        await asyncio.sleep(self.step())

    def step(self) -> float:
        """How long to wait before the next retry, for a loop that waits its own way (longer
        each time, up to RETRY_MAX)."""
        delay = self._delay
        self._delay = min(self._delay * 2, RETRY_MAX)
        return delay

"""The tests' one way to wait for something observed from outside (a process's output read
by a thread, a count in Redis, a file): poll it under a deadline."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

POLL_SECONDS = 0.02


async def settle(condition: Callable[[], bool | Awaitable[bool]], within: float = 10.0) -> bool:
    """Wait until `condition` holds, polling it; False if it still does not after `within`
    seconds (the caller asserts, with its own message)."""
    deadline = time.monotonic() + within
    while True:
        result = condition()
        if not isinstance(result, bool):
            result = await result
        if result or time.monotonic() > deadline:
            return result
        await asyncio.sleep(POLL_SECONDS)

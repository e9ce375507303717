"""A cap on one model's requests in flight (per process), so a burst of users cannot open more
upstream requests than the model's account or server allows.

A request past the cap waits for a slot, at most `wait` seconds, then fails `rate_limited`
with a `retry_after`: the client learns to come back instead of hanging. The slot is held for
the whole answer, retries included, and released on every exit: the end, an error, or a
cancel.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from gateway.errors import RateLimited

# What a refused client is told to wait: slots usually free within an answer or two.
BUSY_RETRY_AFTER = 1.0


class ConcurrencyGate:
    def __init__(self, model: str, limit: int, wait: float) -> None:
        self._model = model
        self._limit = limit
        self._wait = wait
        self._slots = asyncio.Semaphore(limit)

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        if self._slots.locked():
            await self._queue()
        else:
            await self._slots.acquire()  # a free slot: taken at once, no timer
        try:
            yield
        finally:
            self._slots.release()

    async def _queue(self) -> None:
        try:
            async with asyncio.timeout(self._wait):
                await self._slots.acquire()
        except TimeoutError:
            raise RateLimited(
                f"Model '{self._model}' is answering its limit of {self._limit} requests at "
                "once; try again shortly.",
                retry_after=BUSY_RETRY_AFTER,
            ) from None

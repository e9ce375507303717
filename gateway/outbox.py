"""A bounded FIFO between producers that must never wait and one consumer that may.

Generations publish into a connection's outbox without awaiting, so a slow client can never
slow a generation down; when a client falls `limit` items behind, its outbox overflows and
the transport drops that client (its generations run on).
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Generic, TypeVar

T = TypeVar("T")


class Outbox(Generic[T]):
    def __init__(self, limit: int) -> None:
        self._items: deque[T] = deque()
        self._limit = limit
        self._wakeup = asyncio.Event()
        self._roomy = asyncio.Event()
        self._roomy.set()
        self.closed = False
        self.overflowed = False

    def put(self, item: T) -> bool:
        """Queue `item`; False when the outbox is closed or has just overflowed."""
        if self.closed:
            return False
        if len(self._items) >= self._limit:
            self.overflowed = True
            self.close()
            return False
        self._items.append(item)
        self._wakeup.set()
        return True

    def close(self) -> None:
        self.closed = True
        self._wakeup.set()
        self._roomy.set()

    async def get(self) -> T | None:
        """The next item; None once closed and drained (at once after an overflow)."""
        while not self._items:
            if self.closed:
                return None
            self._wakeup.clear()
            await self._wakeup.wait()
        if self.overflowed:
            return None
        item = self._items.popleft()
        if len(self._items) <= self._limit // 2:
            self._roomy.set()
        return item

    async def room(self) -> bool:
        """Wait until the outbox is at most half full; False once it is closed. Producers
        that can wait (a replay) call this before each put, so only live events can overflow."""
        while not self.closed and len(self._items) > self._limit // 2:
            self._roomy.clear()
            await self._roomy.wait()
        return not self.closed

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
    # Futures made only while someone waits, not asyncio.Events: an Event holds a deque of
    # its own, and an outbox exists per socket (about 1.7 kB less for each).
    __slots__ = ("_getter", "_items", "_limit", "_roomy", "closed", "overflowed")

    def __init__(self, limit: int) -> None:
        self._items: deque[T] = deque()
        self._limit = limit
        self._getter: asyncio.Future[None] | None = None  # the consumer, waiting for an item
        self._roomy: asyncio.Future[None] | None = None  # producers, waiting for room
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
        self._wake_getter()
        return True

    def close(self) -> None:
        self.closed = True
        self._wake_getter()
        self._wake_roomy()

    def __len__(self) -> int:
        return len(self._items)

    async def get(self) -> T | None:
        """The next item; None once closed and drained (at once after an overflow). One
        consumer at a time."""
        while not self._items:
            if self.closed:
                return None
            self._getter = asyncio.get_running_loop().create_future()
            try:
                await self._getter
            finally:
                self._getter = None
        return self.take()

    def take(self) -> T | None:
        """The next item if one is queued, without waiting; else None (also after an
        overflow). Lets a consumer send everything already queued in one write."""
        if not self._items or self.overflowed:
            return None
        item = self._items.popleft()
        if len(self._items) <= self._limit // 2:
            self._wake_roomy()
        return item

    async def room(self) -> bool:
        """Wait until the outbox is at most half full; False once it is closed. Producers
        that can wait (a replay) call this before each put, so only live events can overflow."""
        while not self.closed and len(self._items) > self._limit // 2:
            if self._roomy is None:
                self._roomy = asyncio.get_running_loop().create_future()
            # Shared by every waiting producer: one leaving (cancelled) must not cancel it.
            await asyncio.shield(self._roomy)
        return not self.closed

    def _wake_getter(self) -> None:
        if self._getter is not None and not self._getter.done():
            self._getter.set_result(None)

    def _wake_roomy(self) -> None:
        roomy, self._roomy = self._roomy, None
        if roomy is not None and not roomy.done():
            roomy.set_result(None)

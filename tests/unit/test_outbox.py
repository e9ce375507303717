"""The bounded outbox between generations and a connection's writer."""

from __future__ import annotations

import asyncio

from gateway.core.outbox import Outbox


async def test_items_come_out_in_order_then_none_after_close() -> None:
    box: Outbox[int] = Outbox(limit=3)
    assert box.put(1) and box.put(2)
    box.close()
    assert [await box.get(), await box.get(), await box.get()] == [1, 2, None]
    assert not box.put(3)


async def test_overflow_closes_and_drops_the_backlog() -> None:
    box: Outbox[int] = Outbox(limit=2)
    assert box.put(1) and box.put(2)
    assert not box.put(3)
    assert box.overflowed and box.closed
    assert await box.get() is None


async def test_a_waiting_consumer_wakes_on_put() -> None:
    box: Outbox[str] = Outbox(limit=2)
    waiting = asyncio.create_task(box.get())
    await asyncio.sleep(0)  # let the consumer block on the empty outbox
    assert not waiting.done()
    box.put("x")
    assert await waiting == "x"


def test_take_returns_what_is_queued_without_waiting() -> None:
    box: Outbox[int] = Outbox(limit=4)
    assert box.take() is None
    box.put(1)
    box.put(2)
    assert len(box) == 2
    assert [box.take(), box.take(), box.take()] == [1, 2, None]
    for item in range(4):
        box.put(item)
    assert not box.put(5)  # overflowed: the backlog is dropped, take gives nothing
    assert box.take() is None


async def test_every_waiting_producer_gets_room_even_if_one_gives_up() -> None:
    box: Outbox[int] = Outbox(limit=4)
    for item in range(3):  # more than half full
        box.put(item)
    first = asyncio.create_task(box.room())
    second = asyncio.create_task(box.room())
    leaving = asyncio.create_task(box.room())
    await asyncio.sleep(0)  # let the three block
    assert not (first.done() or second.done() or leaving.done())
    leaving.cancel()
    await asyncio.sleep(0)
    assert await box.get() == 0  # two left: at most half full again
    assert await first is True and await second is True
    box.close()
    assert await box.room() is False

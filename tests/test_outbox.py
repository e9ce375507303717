"""The bounded outbox between generations and a connection's writer."""

from __future__ import annotations

import asyncio

from gateway.outbox import Outbox


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

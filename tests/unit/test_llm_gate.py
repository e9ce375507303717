"""The per-model cap on requests in flight, on a real event loop."""

from __future__ import annotations

import asyncio

import pytest

from gateway.errors import RateLimited
from gateway.llm.gate import BUSY_RETRY_AFTER, ConcurrencyGate


async def test_past_the_cap_a_request_is_refused_after_its_wait() -> None:
    gate = ConcurrencyGate("m", limit=1, wait=0.05)
    async with gate.slot():
        with pytest.raises(RateLimited) as refused:
            async with gate.slot():
                pytest.fail("a second slot was handed out")
    assert refused.value.code == "rate_limited"
    assert refused.value.retry_after == BUSY_RETRY_AFTER
    assert "limit of 1" in refused.value.message


async def test_a_waiting_request_gets_the_slot_when_it_frees() -> None:
    gate = ConcurrencyGate("m", limit=1, wait=10.0)
    order: list[str] = []

    async def second() -> None:
        async with gate.slot():
            order.append("second")

    async with gate.slot():
        order.append("first")
        waiter = asyncio.create_task(second())
        done, _ = await asyncio.wait({waiter}, timeout=0.1)
        assert not done  # it queues while the slot is held
    await asyncio.wait_for(waiter, 5)
    assert order == ["first", "second"]


@pytest.mark.parametrize("ending", ["error", "cancel"])
async def test_every_exit_gives_the_slot_back(ending: str) -> None:
    gate = ConcurrencyGate("m", limit=1, wait=0.05)
    inside = asyncio.Event()

    async def holder() -> None:
        async with gate.slot():
            inside.set()
            if ending == "error":
                raise ValueError("the answer failed")
            await asyncio.Event().wait()

    task = asyncio.create_task(holder())
    await asyncio.wait_for(inside.wait(), 5)
    if ending == "cancel":
        task.cancel()
    with pytest.raises((ValueError, asyncio.CancelledError)):
        await task
    async with gate.slot():  # refused after 0.05 s if the slot leaked
        pass


async def test_a_request_cancelled_while_queued_takes_no_slot() -> None:
    gate = ConcurrencyGate("m", limit=1, wait=10.0)
    async with gate.slot():
        waiter = asyncio.create_task(gate.slot().__aenter__())
        done, _ = await asyncio.wait({waiter}, timeout=0.1)
        assert not done  # queued behind the holder
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
    async with asyncio.timeout(1):
        async with gate.slot():  # the only slot is free again
            pass

"""The tool workers, as real processes: a time limit ends the work, a worker's death or its
memory fails one call only, waiting counts against the limit, and none outlives the pool."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator

import pytest

from gateway.tools.base import Tool, ToolError, target_of
from gateway.tools.pool import CLOSED, MAX_WAITING_PER_WORKER, STOPPED, WorkerPool
from tests import plugin_tools
from tests.support.workers import alive, computing, gone

PID = target_of(plugin_tools.PID)
SPIN = target_of(plugin_tools.SPIN)


@pytest.fixture
async def pool() -> AsyncIterator[WorkerPool]:
    workers = WorkerPool(1, 128)
    yield workers
    await workers.aclose()


async def worker_pid(pool: WorkerPool) -> int:
    return int(await pool.call(PID, {}, 10))


async def test_a_call_past_its_time_limit_gets_its_worker_killed_and_replaced(
    pool: WorkerPool,
) -> None:
    first = await worker_pid(pool)
    with pytest.raises(TimeoutError):
        await pool.call(SPIN, {}, 0.5)
    assert await gone(first), "the worker still runs"
    second = await worker_pid(pool)
    assert second != first and alive(second)


async def test_a_cancelled_call_gets_its_worker_killed(pool: WorkerPool) -> None:
    first = await worker_pid(pool)
    call = asyncio.create_task(pool.call(SPIN, {}, 60))
    assert await computing(first)
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    assert await gone(first)
    assert await worker_pid(pool) != first


@pytest.mark.parametrize(
    ("tool", "message"),
    [
        (plugin_tools.HOG, "needed more than the 128 MiB of memory it may use"),
        (plugin_tools.CRASH, STOPPED),
    ],
)
async def test_a_worker_that_runs_out_of_memory_or_dies_fails_only_its_call(
    pool: WorkerPool, tool: Tool, message: str
) -> None:
    first = await worker_pid(pool)
    with pytest.raises(ToolError) as caught:
        await pool.call(target_of(tool), {}, 10)
    assert message in str(caught.value)
    assert await gone(first)
    assert await worker_pid(pool) != first


async def test_a_worker_killed_from_outside_while_idle_is_replaced(pool: WorkerPool) -> None:
    first = await worker_pid(pool)
    os.kill(first, signal.SIGKILL)  # the kernel's OOM killer, say
    assert await gone(first)
    assert await worker_pid(pool) != first


async def test_what_a_tool_prints_does_not_reach_the_protocol(pool: WorkerPool) -> None:
    assert await pool.call(target_of(plugin_tools.CHATTY), {}, 10) == "said it"
    assert await pool.call(target_of(plugin_tools.CHATTY), {}, 10) == "said it"


async def test_waiting_for_a_free_worker_counts_against_the_time_limit(pool: WorkerPool) -> None:
    await worker_pid(pool)
    # Tasks start in the order they are made: the spin takes the only worker.
    spin, waiter = await asyncio.gather(
        pool.call(SPIN, {}, 2), pool.call(PID, {}, 0.5), return_exceptions=True
    )
    assert isinstance(spin, TimeoutError)
    assert isinstance(waiter, ToolError)
    assert (
        str(waiter)
        == "No tool worker was free within 0.5 s (all 1 were busy); the tool did not run."
    )


async def test_past_the_queue_bound_a_call_is_refused_at_once(pool: WorkerPool) -> None:
    await worker_pid(pool)
    spin = asyncio.create_task(pool.call(SPIN, {}, 60))
    waiters = [asyncio.create_task(pool.call(PID, {}, 60)) for _ in range(MAX_WAITING_PER_WORKER)]
    with pytest.raises(ToolError, match="Too many tool calls are waiting for a worker"):
        await asyncio.wait_for(pool.call(PID, {}, 60), 10)
    assert not spin.done() and not any(w.done() for w in waiters)
    for task in (spin, *waiters):
        task.cancel()
    await asyncio.gather(spin, *waiters, return_exceptions=True)


async def test_closing_the_pool_kills_every_worker() -> None:
    pool = WorkerPool(2, 128)
    pids = {int(p) for p in await asyncio.gather(pool.call(PID, {}, 10), pool.call(PID, {}, 10))}
    assert len(pids) == 2
    spin = asyncio.create_task(pool.call(SPIN, {}, 60))
    assert await computing(*pids)
    await pool.aclose()
    assert not any(alive(pid) for pid in pids), "a worker outlived its pool"
    with pytest.raises(ToolError, match=STOPPED):
        await spin
    with pytest.raises(ToolError, match=CLOSED):
        await pool.call(PID, {}, 10)


def test_a_worker_ends_itself_past_its_cpu_limit() -> None:
    # The backstop, should the gateway fail to kill it: the call's seconds plus one of CPU.
    worker = subprocess.Popen(
        [sys.executable, "-m", "gateway.tools.worker", "128", json.dumps(sys.path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    assert worker.stdin is not None and worker.stdout is not None
    request = {"target": SPIN, "arguments": {}, "seconds": 0}
    worker.stdin.write(json.dumps(request).encode() + b"\n")
    worker.stdin.flush()
    try:
        code = worker.wait(timeout=30)
    finally:
        worker.kill()
        worker.stdin.close()
        worker.stdout.close()
    assert code == -signal.SIGXCPU

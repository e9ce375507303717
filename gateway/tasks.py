"""Stopping the process's background tasks for good.

A task is stopped by cancelling it and waiting until it ends. On Python 3.11 one cancel is not
always enough: `asyncio.wait_for`, under which redis-py sends every command, returns what it
awaited instead of raising when a cancel lands as that completes (python/cpython#86296, fixed
in 3.12), and a task that loops on Redis then runs on as if it had never been cancelled.
"""

from __future__ import annotations

import asyncio
from typing import Any

# Seconds a cancelled task has to end before its cancel counts as lost and is sent again.
RECANCEL_AFTER = 0.1


async def stop_tasks(*tasks: asyncio.Task[Any] | None) -> None:
    """Cancel `tasks` and wait until every one has ended, cancelling again each that is
    still running RECANCEL_AFTER after its last cancel. What they raised is not raised here."""
    pending = {task for task in tasks if task is not None}
    while pending := {task for task in pending if not task.done()}:
        for task in pending:
            task.cancel()
        await asyncio.wait(pending, timeout=RECANCEL_AFTER)

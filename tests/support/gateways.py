"""In-thread gateways whose event loop and app a test can inspect: their asyncio tasks, the
process's memory, a gateway with a model of the test's own."""

from __future__ import annotations

import asyncio
import ctypes
import gc
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

from starlette.applications import Starlette
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.app import create_app
from gateway.config import ModelConfig, Settings
from gateway.server.options import uvicorn_options
from tests.support.serving import serve_in_thread


@dataclass
class RunningGateway:
    url: str
    settings: Settings
    loop: asyncio.AbstractEventLoop | None = None
    app: Starlette | None = None  # its `state.services` once it has started


class LoopProbe:
    """An ASGI wrapper that notes the event loop the server runs the app on."""

    def __init__(self, app: ASGIApp, running: RunningGateway) -> None:
        self.app = app
        self.running = running

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.running.loop is None:
            self.running.loop = asyncio.get_running_loop()
        await self.app(scope, receive, send)


# Process-wide tasks that start on first use and stop on their own a while after their
# last user: not a leak of the attack.
LONG_LIVED_TASKS = frozenset({"limits-refresh"})


def gateway_tasks(running: RunningGateway) -> int:
    """How many asyncio tasks the gateway's loop holds right now."""
    return len(gateway_task_names(running))


def new_tasks(running: RunningGateway, baseline: list[str]) -> list[str]:
    """Tasks running now that were not at `baseline` (names are unique per task), apart
    from LONG_LIVED_TASKS."""
    return [
        name
        for name in gateway_task_names(running)
        if name not in baseline and name.split(":")[0] not in LONG_LIVED_TASKS
    ]


def gateway_task_names(running: RunningGateway) -> list[str]:
    """What the gateway's loop is running: each task's name and coroutine."""
    loop = running.loop
    assert loop is not None, "the gateway has not served a request yet"

    async def names() -> list[str]:
        current = asyncio.current_task()
        return [_describe(t) for t in asyncio.all_tasks() if t is not current]

    return asyncio.run_coroutine_threadsafe(names(), loop).result(timeout=10)


def _describe(task: asyncio.Task[Any]) -> str:
    coro = task.get_coro()
    return f"{task.get_name()}:{getattr(coro, '__qualname__', coro)}"


def rss_bytes() -> int:
    """Resident memory of this process (in-thread gateways live here)."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


# glibc's, where there is one: gives the C allocator's free pages back to the system.
_malloc_trim = getattr(ctypes.CDLL(None), "malloc_trim", None)


def held_bytes() -> int:
    """Resident memory still held: unreachable objects collected and the C allocator's free
    pages given back first, so a large request served and let go does not count (its copies'
    pages would otherwise stay resident, a high-water mark rather than what is held)."""
    gc.collect()
    if _malloc_trim is not None:
        _malloc_trim(0)
    return rss_bytes()


# Short enough that a file runs in seconds, long enough for a loaded 2-core machine.
FAST: dict[str, Any] = {
    "upstream_connect_timeout": 2.0,
    "upstream_first_token_timeout": 2.0,
    "upstream_read_timeout": 2.0,
    "upstream_max_retries": 2,
    "upstream_retry_max_wait": 5.0,
}


@contextmanager
def gateway_with(
    settings: Settings,
    running: list[RunningGateway],
    model: ModelConfig,
    **changes: Any,
) -> Iterator[str]:
    """A gateway that also serves `model` (as "probe"), with the gateway's own retries on."""
    configured = replace(
        settings, models={**settings.models, "probe": model}, **{**FAST, **changes}
    )
    gateway = RunningGateway("", configured)
    app = LoopProbe(create_app(configured), gateway)
    with serve_in_thread(app, **uvicorn_options(configured)) as url:
        gateway.url = url
        running.append(gateway)
        try:
            yield url
        finally:
            running.remove(gateway)

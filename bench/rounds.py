"""Rounds of streams: closed loop (N streams started at one instant, read to the end) and
open loop (streams started at a fixed rate, whether or not earlier ones have ended)."""

from __future__ import annotations

import asyncio
import time

from bench.clients import ClientFactory, StreamClient
from bench.procs import HOST, BenchError, Meter
from bench.stats import Round, Stream


async def run_round(
    factory: ClientFactory, port: int, count: int, limit: float, meter: Meter
) -> Round:
    """Open `count` connections, start every stream at once, read them to the end."""
    clients: list[StreamClient] = []
    before, started = meter.snapshot(), time.monotonic()
    try:
        await open_all(clients, factory, port, count, limit)
        for client in clients:
            client.start()
        await asyncio.wait([c.finished for c in clients], timeout=limit)
    finally:
        await asyncio.gather(*(c.close() for c in clients))
    used, wall = Meter.used(before, meter.snapshot()), time.monotonic() - started
    return Round(tuple(c.stream() for c in clients), used, wall)


async def open_all(
    clients: list[StreamClient], factory: ClientFactory, port: int, count: int, limit: float
) -> None:
    def made() -> StreamClient:
        client = factory()
        clients.append(client)
        return client

    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(limit):
            await asyncio.gather(*(loop.create_connection(made, HOST, port) for _ in range(count)))
            await asyncio.gather(*(c.ready for c in clients))
    except TimeoutError:
        raise BenchError(f"{count} connections were not ready within {limit:.0f} s") from None
    except OSError as exc:
        raise BenchError(f"a connection to 127.0.0.1:{port} failed: {exc}") from None
    if failed := [c.error for c in clients if c.error]:
        raise BenchError(f"{len(failed)} of {count} streams could not start: {failed[0]}")


async def open_loop(
    factory: ClientFactory, port: int, rate: int, seconds: float, limit: float, meter: Meter
) -> Round:
    """Start `rate` streams a second for `seconds`, each on a new connection; every stream
    has `limit` seconds from its connect to its end."""
    loop = asyncio.get_running_loop()
    count = max(1, round(rate * seconds))
    before, started = meter.snapshot(), time.monotonic()
    first = loop.time()
    tasks: list[asyncio.Task[Stream]] = []
    for i in range(count):
        # Pacing, not synchronisation: the next arrival is due at a fixed time.
        await asyncio.sleep(max(0.0, first + i / rate - loop.time()))
        tasks.append(asyncio.create_task(_one_stream(factory, port, limit)))
    streams = await asyncio.gather(*tasks)
    used, wall = Meter.used(before, meter.snapshot()), time.monotonic() - started
    return Round(tuple(streams), used, wall)


async def _one_stream(factory: ClientFactory, port: int, limit: float) -> Stream:
    loop = asyncio.get_running_loop()
    client: StreamClient | None = None
    try:
        async with asyncio.timeout(limit):
            _, client = await loop.create_connection(factory, HOST, port)
            await client.ready
            if client.error is None:
                client.start()
                await client.finished
    except (TimeoutError, OSError) as exc:
        reason = "timed out" if isinstance(exc, TimeoutError) else f"connect failed: {exc}"
        if client is None:
            return Stream(time.time_ns(), (), False, reason)
        client.fail(reason)
    finally:
        if client is not None:
            await client.close()
    return client.stream()

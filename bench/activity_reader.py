"""What the process's activity reader (`ActivityHub`) costs per event, apart from the sockets:
how that cost moves with the users listening on the instance, and what an event of a user who
listens elsewhere costs it.

    python -m bench.activity_reader [--listening 0,200,1000] [--events 2000] [--seconds 5]

For each count of listening users, a reader in this process on a private redis-server gets one
listener per user (which builds the entry's frame, as a socket's would); a child process then
publishes `--events` events, spread evenly over `--seconds`, round robin over those users (with
0, over 1,000 users listening nowhere). This process's CPU from the first publish until every
event was handed over, divided by the events, is the reader's cost of one event.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
import uuid
from pathlib import Path

from redis.asyncio import Redis

from gateway.protocol.activity import ActivityEntry, generation_ended
from gateway.store.activity import ActivityLog
from gateway.store.activity_hub import ActivityHub
from gateway.store.keys import Keys
from tests.support.polling import settle
from tests.support.redis import running_redis

ELSEWHERE = 1000  # users who get the events when none listens here
SETTLE_S = 1.0  # after joining, before measuring: the first read of every user is done


async def publish(url: str, prefix: str, users: int, events: int, seconds: float) -> None:
    """As another instance would: one publish per event, at an even pace."""
    client = Redis.from_url(url, decode_responses=True)
    log = ActivityLog(client, Keys(prefix), 600)
    started = time.monotonic()
    for n in range(events):
        ended = generation_ended("c", f"gen_{n}", "complete", "stop")
        await log.publish(f"u{n % users}", [ended])
        await asyncio.sleep(max(0.0, started + (n + 1) * seconds / events - time.monotonic()))
    await client.aclose()


async def measure(url: str, listening: int, options: argparse.Namespace) -> str:
    prefix = f"br{uuid.uuid4().hex[:6]}:"
    client = Redis.from_url(url, decode_responses=True)
    hub = ActivityHub(ActivityLog(client, Keys(prefix), 600))
    hub.start()
    heard = 0

    def listener(entry: ActivityEntry) -> None:
        nonlocal heard
        entry.frame()
        heard += 1

    for n in range(listening):
        hub.join(f"u{n}", listener, "0-0")
    await asyncio.sleep(SETTLE_S)  # a pause before measuring, not a synchronisation
    users = listening or ELSEWHERE
    cpu = time.process_time()
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.activity_reader", "--publish", url, prefix, str(users),
        str(options.events), str(options.seconds),
    )  # fmt: skip
    await child.wait()
    expected = options.events if listening else 0
    await settle(lambda: heard >= expected, within=5)
    per_event = (time.process_time() - cpu) / options.events * 1e6
    await hub.close()
    await client.aclose()
    return f"| {listening:,} | {options.events:,} | {heard:,} | {per_event:.0f} µs |"


async def run(options: argparse.Namespace) -> list[str]:
    lines = [
        "| users listening | events | handed over | reader CPU per event |",
        "|---|---|---|---|",
    ]
    with (
        tempfile.TemporaryDirectory(prefix="bench-reader-") as folder,
        running_redis(Path(folder)) as redis,
    ):
        for listening in options.listening:
            lines.append(await measure(redis.url, listening, options))
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.activity_reader", description=__doc__)
    parser.add_argument("--listening", default="0,200,1000")
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--publish", nargs=5, help=argparse.SUPPRESS)
    options = parser.parse_args(argv)
    if options.publish:
        url, prefix, users, events, seconds = options.publish
        asyncio.run(publish(url, prefix, int(users), int(events), float(seconds)))
        return
    options.listening = [int(n) for n in options.listening.split(",")]
    print("\n".join(asyncio.run(run(options))))


if __name__ == "__main__":
    main()

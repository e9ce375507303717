"""What following generations on another instance costs: Redis commands and the serving
process's CPU per follower, while the followed generations are quiet and while they stream.

    python -m bench.followers [--followers 100] [--generations 1] [--seconds 10] [--cluster]
                              [--source DIR]

A gateway process serves `--followers` SSE streams (`GET /generations/{id}/events`) of
`--generations` generations that this process writes, as another instance would: records,
leases renewed, a log writer flushing every LOG_FLUSH_MS (50 ms), one chunk per generation
every 20 ms while streaming. Each figure is measured for `--seconds` with no followers, then
again with them; the difference, divided by followers and seconds, is theirs. Commands come
from `INFO commandstats` (summed over the nodes of `--cluster`, three primaries); CPU from
/proc/<pid>/stat of the gateway. `--source` runs the gateway from another checkout (say, an
older commit exported with `git archive`), for a before and after.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from redis.asyncio import Redis

from bench.procs import CLOCK_TICKS, HOST
from gateway.auth.tokens import mint_token
from gateway.config import Secret, Settings
from gateway.events import Chunk, Start
from gateway.services import open_client
from gateway.store.client import StoreClient
from gateway.store.keys import Keys
from gateway.store.log_writer import LogWriter
from gateway.store.logs import GenerationLog
from gateway.store.records import GenerationMeta
from tests.support.processes import GatewayProcess, start_process
from tests.support.redis import start_redis
from tests.support.serving import free_port
from tests.support.tokens import TEST_SECRET

OWNER = "bench-follower"
CHUNK_EVERY_S = 0.02
# What following costs in Redis: the reader's XREADs (or, on a cluster, its XRANGEs, with the
# followers' own), the followers' XRANGEs and HGETALLs, and their lease checks (one EVALSHA of
# the interrupt script each, the only caller of EXISTS). The producer calls none of these.
FOLLOWED = ("xread", "xrange", "hgetall", "exists")


@dataclass(frozen=True)
class Sample:
    commands: Counter[str]
    cpu_s: float
    at: float


@dataclass(frozen=True)
class Phase:
    name: str
    commands: Counter[str]
    cpu_s: float
    seconds: float


class Store:
    """The Redis server or cluster under the bench, and the producer's parts on it."""

    def __init__(self, urls: list[str], client: StoreClient, cluster: bool) -> None:
        self.urls = urls
        self.client = client
        self.cluster = cluster
        self.keys = Keys(f"bf{uuid.uuid4().hex[:6]}:")
        self.log = GenerationLog(
            client, self.keys, ended_ttl=600, max_events=100_000, lease_ttl=10, instance="bench"
        )
        self.writer = LogWriter(self.log, window_ms=50)

    async def commands(self) -> Counter[str]:
        total: Counter[str] = Counter()
        for url in self.urls:
            node = Redis.from_url(url, decode_responses=True)
            stats = await node.info("commandstats")
            await node.aclose()
            for name, values in stats.items():
                total[name.removeprefix("cmdstat_")] += int(values["calls"])
        return total


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime


class Follower(asyncio.Protocol):
    """One SSE stream, read with as little work as possible: it counts events."""

    def __init__(self) -> None:
        self.events = 0
        self.started: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def data_received(self, data: bytes) -> None:
        self.events += data.count(b"\nid: ") + data.startswith(b"id: ")
        if self.events and not self.started.done():
            self.started.set_result(None)


class Producer:
    """Generations running "elsewhere": their records, leases and logs, written here."""

    def __init__(self, store: Store, count: int) -> None:
        self.store = store
        self.ids = [f"gen_{uuid.uuid4().hex[:16]}" for _ in range(count)]
        self.seq = 1
        self.streaming = False
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        log = self.store.log
        async with self.store.client.pipeline(transaction=False) as pipe:
            for gid in self.ids:
                log.queue_create(pipe, GenerationMeta(gid, OWNER, f"c{gid}", None, "m", "a"))
            await pipe.execute()
        for gid in self.ids:
            self.store.writer.add(gid, Start(1, "m", "a"))
        await self.store.writer.flush()
        self.store.writer.start()
        self._tasks = [asyncio.create_task(self._leases()), asyncio.create_task(self._chunks())]

    async def _leases(self) -> None:
        while True:
            await asyncio.sleep(3)  # a third of the lease, as the gateway renews
            await self.store.log.renew(self.ids)

    async def _chunks(self) -> None:
        while True:
            await asyncio.sleep(CHUNK_EVERY_S)  # the pace of a streaming answer
            if self.streaming:
                self.seq += 1
                for gid in self.ids:
                    self.store.writer.add(gid, Chunk(self.seq, " tok"))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await self.store.writer.close()


async def measure(
    name: str, store: Store, gateway: GatewayProcess, seconds: float
) -> tuple[Phase, Sample]:
    before = Sample(await store.commands(), cpu_seconds(gateway.process.pid), time.monotonic())
    await asyncio.sleep(seconds)  # the measured window
    after = Sample(await store.commands(), cpu_seconds(gateway.process.pid), time.monotonic())
    commands = after.commands.copy()
    commands.subtract(before.commands)
    commands["info"] -= 2 * len(store.urls)  # our own
    phase = Phase(name, commands, after.cpu_s - before.cpu_s, after.at - before.at)
    return phase, after


def per_follower(phase: Phase, base: Phase, followers: int) -> tuple[dict[str, float], float]:
    commands = {
        name: (phase.commands[name] / phase.seconds - base.commands[name] / base.seconds)
        / followers
        for name in FOLLOWED
    }
    cpu_us = (phase.cpu_s / phase.seconds - base.cpu_s / base.seconds) / followers * 1e6
    return commands, cpu_us


@contextlib.contextmanager
def servers(cluster: bool, folder: Path) -> Iterator[list[str]]:
    if not cluster:
        server = start_redis(free_port(), folder)
        try:
            yield [server.url]
        finally:
            server.process.kill()
            server.process.wait(timeout=10)
        return
    from tests.support.redis_cluster import running_cluster

    with running_cluster(folder, primaries=3) as nodes:
        yield [f"redis://{HOST}:{node.port}/0" for node in nodes.nodes]


async def run(options: argparse.Namespace, folder: Path) -> list[str]:
    with servers(options.cluster, folder) as urls:
        settings = Settings(redis_url=urls[0], redis_cluster=options.cluster)
        client = open_client(settings, urls[0])
        store = Store(urls, client, options.cluster)
        env = {
            "REDIS_URL": urls[0],
            "REDIS_PREFIX": store.keys.prefix,
            "LIMIT_CONNECTIONS": "0",
            **({"REDIS_CLUSTER": "1"} if options.cluster else {}),
            **({"PYTHONPATH": str(options.source)} if options.source else {}),
        }
        gateway = await asyncio.to_thread(start_process, folder, env)
        producer = Producer(store, options.generations)
        try:
            await producer.start()
            base_idle, _ = await measure("quiet, no followers", store, gateway, options.seconds)
            producer.streaming = True
            base_active, _ = await measure(
                "streaming, no followers", store, gateway, options.seconds
            )
            producer.streaming = False
            followers = await open_followers(gateway.port, producer.ids, options.followers)
            idle, _ = await measure("quiet", store, gateway, options.seconds)
            producer.streaming = True
            received = sum(f.events for f in followers)
            active, _ = await measure("streaming", store, gateway, options.seconds)
            received = sum(f.events for f in followers) - received
        finally:
            await producer.stop()
            gateway.stop()
            await client.aclose()
    lines = report(options, [(idle, base_idle), (active, base_active)])
    rate = received / active.seconds / options.followers
    lines.append(f"\nEvents received while streaming: {rate:.1f} per follower per second.")
    return lines


async def open_followers(port: int, ids: list[str], count: int) -> list[Follower]:
    token = mint_token(Settings(jwt_secret=Secret(TEST_SECRET)), OWNER, 3600)
    followers = []
    loop = asyncio.get_running_loop()
    for n in range(count):
        transport, follower = await loop.create_connection(Follower, HOST, port)
        path = f"/generations/{ids[n % len(ids)]}/events"
        request = f"GET {path} HTTP/1.1\r\nHost: {HOST}\r\nAuthorization: Bearer {token}\r\n\r\n"
        transport.write(request.encode())
        followers.append(follower)
    async with asyncio.timeout(60):
        await asyncio.gather(*(f.started for f in followers))
    return followers


def report(options: argparse.Namespace, phases: list[tuple[Phase, Phase]]) -> list[str]:
    where = "a Redis Cluster of three primaries" if options.cluster else "one Redis server"
    lines = [
        f"{options.followers} followers of {options.generations} generation(s) on {where}, "
        f"{options.seconds:g} s per phase; per follower per second:",
        "",
        "| phase | " + " | ".join(FOLLOWED) + " (lease checks) | all | gateway CPU (µs) |",
        "|---|" + "---|" * (len(FOLLOWED) + 2),
    ]
    totals = []
    for phase, base in phases:
        commands, cpu_us = per_follower(phase, base, options.followers)
        cells = " | ".join(f"{commands[name]:.2f}" for name in FOLLOWED)
        lines.append(f"| {phase.name} | {cells} | {sum(commands.values()):.2f} | {cpu_us:.0f} |")
        totals.append(f"{phase.name} {sum(commands.values()) * options.followers:.0f}")
    lines.append(f"\nFollowers' commands per second in all: {', '.join(totals)}.")
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.followers", description=__doc__)
    parser.add_argument("--followers", type=int, default=100)
    parser.add_argument("--generations", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--cluster", action="store_true")
    parser.add_argument("--source", type=Path, default=None)
    options = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-followers-") as folder:
        lines = asyncio.run(run(options, Path(folder)))
    print("\n".join(lines))


if __name__ == "__main__":
    main()

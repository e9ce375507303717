"""What activity costs the gateway: memory per idle socket with it off and on, and CPU per
event fanned out to many idle sockets.

    python -m bench.activity [--sockets 2000] [--users 200] [--events 400] [--seconds 5]

For each mode (activity off: `/ws?activity=0`; on), a fresh gateway process on a private
redis-server takes `--sockets` idle WebSockets of `--users` users (round robin); its RSS
before and after, divided by the sockets, is the memory per socket. With activity on, its CPU
is then measured for `--seconds` while nothing happens, and again while `--events` events are
published (as another instance would, straight into the users' streams, spread evenly over
`--seconds`); the difference, divided by the events, is the CPU per event, which reaches
sockets/users sockets each. Every socket counts the frames it gets, so a lost one shows.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from bench.clients import StreamClient, WsClient
from bench.followers import cpu_seconds
from bench.phases import _close_all, _connect_all
from bench.procs import memory_kib
from gateway.auth.tokens import mint_token
from gateway.config import Secret, Settings
from gateway.protocol.activity import generation_ended
from gateway.services import open_client
from gateway.store.activity import ActivityLog
from gateway.store.keys import Keys
from tests.support.processes import GatewayProcess, start_process
from tests.support.redis import running_redis
from tests.support.tokens import TEST_SECRET

SETTLE_S = 2.0  # after connecting, before the memory is read: the last handshakes finish


@dataclass(frozen=True)
class Memory:
    mode: str
    sockets: int
    ready: int
    kib_before: int
    kib_after: int

    @property
    def per_socket_kb(self) -> float:
        return (self.kib_after - self.kib_before) * 1.024 / max(self.ready, 1)


@dataclass(frozen=True)
class FanOut:
    events: int
    quiet_cpu_s: float
    busy_cpu_s: float
    seconds: float
    frames: int
    expected: int

    @property
    def cpu_us_per_event(self) -> float:
        return (self.busy_cpu_s - self.quiet_cpu_s) / self.events * 1e6


def users(count: int) -> list[str]:
    return [f"bench-activity-{n}" for n in range(count)]


async def connect(
    gateway: GatewayProcess, subs: list[str], sockets: int, activity: bool
) -> list[WsClient]:
    settings = Settings(jwt_secret=Secret(TEST_SECRET))
    tokens = [mint_token(settings, sub, 3600) for sub in subs]
    path = "/ws" if activity else "/ws?activity=0"
    made = iter(range(sockets))
    clients: list[StreamClient] = []

    def make() -> WsClient:
        return WsClient(gateway.port, tokens[next(made) % len(tokens)], b"", path)

    await _connect_all(clients, make, gateway.port, sockets, 100)
    return [c for c in clients if isinstance(c, WsClient)]


async def hold(
    gateway: GatewayProcess, options: argparse.Namespace, activity: bool
) -> tuple[Memory, FanOut | None]:
    """The memory the sockets take; with activity on, the CPU of a fan-out to them."""
    pid = gateway.process.pid
    before = memory_kib(pid)
    clients = await connect(gateway, users(options.users), options.sockets, activity)
    try:
        await asyncio.sleep(SETTLE_S)  # a pause before reading memory, not a synchronisation
        ready = sum(c.ready.done() and c.error is None for c in clients)
        mode = "on" if activity else "off"
        held = Memory(mode, options.sockets, ready, before, memory_kib(pid))
        return held, (await fan_out(gateway, options, clients) if activity else None)
    finally:
        await _close_all(list(clients))


async def fan_out(
    gateway: GatewayProcess, options: argparse.Namespace, clients: list[WsClient]
) -> FanOut:
    pid = gateway.process.pid
    client = open_client(Settings(), options.redis_url)
    store = ActivityLog(client, Keys(options.prefix), 600)
    subs = users(options.users)
    before_quiet = cpu_seconds(pid)
    await asyncio.sleep(options.seconds)  # the quiet window is what is measured
    quiet = cpu_seconds(pid) - before_quiet
    received = sum(len(c.received) for c in clients)
    gap = options.seconds / options.events
    started = time.monotonic()
    before_busy = cpu_seconds(pid)
    for n in range(options.events):
        sub = subs[n % len(subs)]
        await store.publish(sub, [generation_ended("c", f"gen_{n}", "complete", "stop")])
        await asyncio.sleep(max(0.0, started + (n + 1) * gap - time.monotonic()))  # the pace
    await asyncio.sleep(0.5)  # the last events reach the sockets within the window
    busy = cpu_seconds(pid) - before_busy
    seconds = time.monotonic() - started
    await client.aclose()
    per_user = [0] * len(subs)
    for n in range(options.events):
        per_user[n % len(subs)] += 1
    sockets_of = [len(range(u, options.sockets, len(subs))) for u in range(len(subs))]
    expected = sum(e * s for e, s in zip(per_user, sockets_of, strict=True))
    frames = sum(len(c.received) for c in clients) - received
    # The quiet window scaled to the busy one's length.
    return FanOut(
        options.events, quiet * seconds / options.seconds, busy, seconds, frames, expected
    )


async def run(options: argparse.Namespace, folder: Path) -> list[str]:
    results: list[Memory] = []
    fan: FanOut | None = None
    with running_redis(folder) as redis:
        options.redis_url = redis.url
        for activity in (False, True):
            options.prefix = f"ba{uuid.uuid4().hex[:6]}:"
            env = {"REDIS_URL": redis.url, "REDIS_PREFIX": options.prefix, "LIMIT_CONNECTIONS": "0"}
            gateway = await asyncio.to_thread(start_process, folder, env)
            try:
                held, fanned = await hold(gateway, options, activity)
            finally:
                gateway.stop()
            results.append(held)
            fan = fanned or fan
    return report(options, results, fan)


def report(options: argparse.Namespace, memory: list[Memory], fan: FanOut | None) -> list[str]:
    lines = [
        f"{options.sockets} idle sockets of {options.users} users; RSS per socket:",
        "",
        "| activity | sockets ready | RSS before, MiB | RSS after, MiB | per socket, kB |",
        "|---|---|---|---|---|",
    ]
    for m in memory:
        lines.append(
            f"| {m.mode} | {m.ready} | {m.kib_before / 1024:.1f} | {m.kib_after / 1024:.1f} "
            f"| {m.per_socket_kb:.1f} |"
        )
    if fan is not None:
        per_socket = options.sockets / options.users
        lines += [
            "",
            f"{fan.events} events in {fan.seconds:.1f} s, each to {per_socket:g} sockets: "
            f"gateway CPU {fan.busy_cpu_s:.2f} s against {fan.quiet_cpu_s:.2f} s quiet, "
            f"{fan.cpu_us_per_event:.0f} µs per event "
            f"({fan.cpu_us_per_event / per_socket:.1f} µs per frame delivered); "
            f"frames received {fan.frames} of {fan.expected}.",
        ]
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.activity", description=__doc__)
    parser.add_argument("--sockets", type=int, default=2000)
    parser.add_argument("--users", type=int, default=200)
    parser.add_argument("--events", type=int, default=400)
    parser.add_argument("--seconds", type=float, default=5.0)
    options = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-activity-") as folder:
        lines = asyncio.run(run(options, Path(folder)))
    print("\n".join(lines))


if __name__ == "__main__":
    main()

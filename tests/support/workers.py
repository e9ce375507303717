"""Tool worker processes as the tests observe them, through /proc: whether one still runs,
and whether it is computing."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from tests.support.polling import settle


def stat(pid: int) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the command's name; None once it is reaped."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):  # reaped before, or while, it was read
        return None


def alive(pid: int) -> bool:
    """The process exists and is not a zombie waiting to be reaped."""
    fields = stat(pid)
    return fields is not None and fields[0] != "Z"


def cpu_ticks(pid: int) -> int:
    fields = stat(pid)
    return 0 if fields is None else int(fields[11]) + int(fields[12])  # utime + stime


async def gone(pid: int) -> bool:
    """Whether the process ends within a few seconds."""
    return await settle(lambda: not alive(pid))


async def computing(*pids: int) -> bool:
    """Whether one of `pids` takes a tenth of a second of CPU more than now, within a few
    seconds: a tool call runs there."""
    before = {pid: cpu_ticks(pid) for pid in pids}
    return await settle(lambda: any(cpu_ticks(pid) > before[pid] + 10 for pid in pids))


def workers_of_this_process() -> list[int]:
    """Live tool workers started by this process (the tests' in-thread gateways live here)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        fields = stat(int(entry.name))
        if fields is None or fields[0] == "Z" or int(fields[1]) != os.getpid():
            continue
        with contextlib.suppress(FileNotFoundError):
            if b"gateway.tools.worker" in (entry / "cmdline").read_bytes():
                found.append(int(entry.name))
    return found

"""Worker processes as the tests observe them, through /proc: whether a tool worker still
runs and whether it is computing; which uvicorn workers `serve --workers N` runs, and what
each of them has counted in the metrics folder they share."""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

from prometheus_client.mmap_dict import MmapedDict

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


def serving_workers(parent: int) -> list[int]:
    """The live uvicorn workers of the `serve` process `parent`."""
    return [
        int(entry.name)
        for entry in Path("/proc").iterdir()
        if entry.name.isdigit()
        and (fields := stat(int(entry.name))) is not None
        and fields[0] != "Z"
        and int(fields[1]) == parent
        and b"spawn_main" in _read(entry / "cmdline")
    ]


def metrics_folder(worker: int) -> Path:
    """The multiprocess metrics folder a worker was started with."""
    variables = dict(
        item.split(b"=", 1) for item in _read(Path(f"/proc/{worker}/environ")).split(b"\0") if item
    )
    return Path(variables[b"PROMETHEUS_MULTIPROC_DIR"].decode())


def counted_by_worker(folder: Path, sample: str, **labels: str) -> dict[int, float]:
    """A sample's value in each worker's own file, read with prometheus-client's reader (what
    a scrape adds up), summed over the series whose labels include `labels`: for histogram
    buckets, stored one by one rather than cumulative, that is how many it observed."""
    found: dict[int, float] = {}
    for path in folder.glob("*.db"):
        pid = int(path.stem.rsplit("_", 1)[1])
        for key, value, *_ in MmapedDict.read_all_values_from_file(str(path)):  # type: ignore[no-untyped-call]
            _, name, key_labels, _ = json.loads(key)
            if name == sample and labels.items() <= key_labels.items():
                found[pid] = found.get(pid, 0.0) + value
    return found


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except (FileNotFoundError, ProcessLookupError):  # it ended meanwhile
        return b""

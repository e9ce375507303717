"""Packing Redis commands for the wire: redis-py's way against `gateway/store/packing.py`'s
(hiredis in one call), in one run, as µs per command and their ratio.

The commands are those a turn sends most: a generation log's append (the log writer sends one
per running generation per flush window, with two arguments per event), a stream read and a
hash write. No server is involved: packing is pure CPU on the gateway's event loop.

    .venv/bin/python -m bench.packing
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable

from redis.asyncio.connection import Connection

from gateway.store.packing import packed_by_hiredis

GID = "g-5f0c2a9e6b1d4c3f8a7e"
EVENT = json.dumps({"type": "chunk", "seq": 17, "delta": " the"})
COMMANDS: dict[str, tuple[object, ...]] = {
    "log append, 3 events": (
        "EVALSHA",
        "9f1c" * 10,
        3,
        f"gw:{{{GID}}}:gen",
        f"gw:{{{GID}}}:events",
        f"gw:{{{GID}}}:lease",
        10_000,
        0,
        "",
        0,
        0,
        0,
        *(arg for seq in (17, 18, 19) for arg in (seq, EVENT)),
    ),
    "XREAD of one log": ("XREAD", "COUNT", 1000, "STREAMS", f"gw:{{{GID}}}:events", "17-0"),
    "HSET of 6 fields": ("HSET", f"gw:{{{GID}}}:gen", *("status", "running", "seq", 17) * 3),
}


def per_call(pack: Callable[..., object], args: tuple[object, ...], calls: int) -> float:
    """µs per call, the best of five timings (the least disturbed by the rest of the machine)."""
    timings = []
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(calls):
            pack(*args)
        timings.append((time.perf_counter() - start) / calls * 1e6)
    return min(timings)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=50_000, help="calls per timing")
    calls = parser.parse_args().calls
    plain = Connection(host="127.0.0.1", port=1)
    ours = packed_by_hiredis(Connection)(host="127.0.0.1", port=1)
    print("| command | arguments | redis-py, µs | hiredis in one call, µs | ratio |")
    print("|---|---|---|---|---|")
    ratios = []
    for name, args in COMMANDS.items():
        before = per_call(plain.pack_command, args, calls)
        after = per_call(ours.pack_command, args, calls)
        ratios.append(after / before)
        print(f"| {name} | {len(args)} | {before:.2f} | {after:.2f} | {after / before:.2f} |")
    print(f"\nmedian ratio {statistics.median(ratios):.2f}")


if __name__ == "__main__":
    main()

"""A tool worker, the child side: runs plain-function tools for one gateway process, one call
at a time, in a process the gateway kills when a call outlives its time limit.

Started by `gateway/tools/pool.py` as `python -m gateway.tools.worker MEMORY_MB SYS_PATH`
(SYS_PATH: the gateway's `sys.path` as JSON, so that a plugin imports here as it does there).
It reads one JSON request a line on stdin,

    {"target": "module:qualname", "arguments": {...}, "seconds": 10}

and writes one JSON answer a line on stdout:

    {"result": text}     the tool's answer
    {"error": text}      a ToolError, or a bound kept here; shown to the model
    {"failure": text}    any other exception, with its traceback, for the gateway's log
    {"memory": true}     the call ran out of memory; the worker then exits

A function is imported by its name at its first call. The process's address space is limited
to MEMORY_MB, and its CPU time to what the call's time limit allows, plus a second: a backstop
in case the gateway cannot kill it. It exits when stdin closes, and on Linux when the gateway
process dies.
"""

from __future__ import annotations

import ctypes
import json
import math
import os
import resource
import signal
import sys
import traceback
from collections.abc import Callable
from typing import Any, BinaryIO

from gateway.tools.base import MAX_RESULT_CHARS, ToolError, resolve

MAX_FAILURE_CHARS = 20_000  # of a traceback, for the log
PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def main(argv: list[str]) -> None:
    memory_mb, path = int(argv[1]), json.loads(argv[2])
    sys.path[:] = path
    requests, answers = _protocol_streams()
    _limit_memory(memory_mb)
    _die_with_parent()
    functions: dict[str, Callable[[dict[str, Any]], Any]] = {}
    for line in requests:
        answer = _answer(json.loads(line), functions)
        answers.write(json.dumps(answer).encode() + b"\n")
        answers.flush()
        if "memory" in answer:
            return  # what is left of the heap is no state to run the next call in


def _answer(
    request: dict[str, Any], functions: dict[str, Callable[[dict[str, Any]], Any]]
) -> dict[str, Any]:
    _limit_cpu(float(request["seconds"]))
    target = str(request["target"])
    try:
        function = functions.get(target)
        if function is None:
            function = functions[target] = resolve(target)
        text = str(function(request["arguments"]))
    except ToolError as exc:
        return {"error": str(exc)[:MAX_RESULT_CHARS]}
    except MemoryError:
        return {"memory": True}
    except Exception:
        return {"failure": traceback.format_exc()[-MAX_FAILURE_CHARS:]}
    if len(text) > MAX_RESULT_CHARS:
        return {"error": f"The tool's answer is longer than {MAX_RESULT_CHARS:,} characters."}
    return {"result": text}


def _protocol_streams() -> tuple[BinaryIO, BinaryIO]:
    """The pipes to the gateway, kept out of the tools' reach: what a tool prints goes to
    stderr (it would break the protocol on stdout), and it reads an empty stdin."""
    requests = os.fdopen(os.dup(0), "rb")
    answers = os.fdopen(os.dup(1), "wb")
    empty = os.open(os.devnull, os.O_RDONLY)
    os.dup2(empty, 0)
    os.close(empty)
    os.dup2(2, 1)
    return requests, answers


def _limit_memory(memory_mb: int) -> None:
    # The hard limit too, so a tool cannot raise it; and no core file when a limit kills us.
    wanted = memory_mb * 1024 * 1024
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def _limit_cpu(seconds: float) -> None:
    # The soft limit only (SIGXCPU ends the process): the hard one could never be raised
    # again for the next call.
    usage = resource.getrusage(resource.RUSAGE_SELF)
    soft = math.ceil(usage.ru_utime + usage.ru_stime + seconds) + 1
    _, hard = resource.getrlimit(resource.RLIMIT_CPU)
    if hard != resource.RLIM_INFINITY:
        soft = min(soft, hard)
    resource.setrlimit(resource.RLIMIT_CPU, (soft, hard))


def _die_with_parent() -> None:
    """On Linux, the kernel kills this process when the gateway's process ends, even by
    SIGKILL. Elsewhere a closed stdin ends an idle worker, and the CPU limit a busy one."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


if __name__ == "__main__":
    main(sys.argv)

"""Plain-function tools written outside the gateway, loaded by dotted path in the tests as a
plugin's would be (`tests.plugin_tools:SPIN`): a well-behaved one that names its worker, and
hostile ones that only a worker process can contain."""

from __future__ import annotations

import os
import signal
from typing import Any

from gateway.tools.base import Tool

ANY_ARGUMENTS = {"type": "object", "properties": {}}


def _pid(arguments: dict[str, Any]) -> str:
    return str(os.getpid())


def _spin(arguments: dict[str, Any]) -> str:
    """Computes forever without releasing the interpreter: only a kill stops it."""
    count = 0
    while True:
        count += 1


def _hog(arguments: dict[str, Any]) -> str:
    """Takes memory until there is none."""
    held = []
    while True:
        held.append(bytearray(16 * 1024 * 1024))


def _crash(arguments: dict[str, Any]) -> str:
    """Dies as a segfault in a C extension would."""
    os.kill(os.getpid(), signal.SIGSEGV)
    return "unreachable"


def _chatty(arguments: dict[str, Any]) -> str:
    """Prints, as debugging code does: the worker's protocol must not see it."""
    print("a line on stdout")
    print('{"result": "forged"}')
    return "said it"


def _verbose(arguments: dict[str, Any]) -> str:
    return "x" * 200_000


def _broken(arguments: dict[str, Any]) -> str:
    raise RuntimeError("secret internals")


def tool(name: str, function: Any) -> Tool:
    return Tool(name, f"The {name} tool of the tests.", ANY_ARGUMENTS, function)


PID = tool("pid", _pid)
SPIN = tool("spin", _spin)
HOG = tool("hog", _hog)
CRASH = tool("crash", _crash)
CHATTY = tool("chatty", _chatty)
VERBOSE = tool("verbose", _verbose)
BROKEN = tool("broken", _broken)

"""What a tool is, and how tools are found by name or dotted path.

A tool's function takes the model's arguments as a dict and returns a string. An async
function runs on the gateway's event loop; a plain one runs in a worker process
(`gateway/tools/pool.py`), which imports it by `module:qualname`, so a plain function must be
importable by that name: `load_tools` refuses one that is not.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from gateway.events import ToolSpec
from gateway.importer import import_from_string

ToolFunction = Callable[[dict[str, Any]], Awaitable[str] | str]
# A tool's answer goes back into the model's context: a few thousand words is already long.
MAX_RESULT_CHARS = 100_000


class ToolError(Exception):
    """Raised by a tool to tell the model what went wrong; the message is shown as is."""


@dataclass(frozen=True, slots=True)
class Tool:
    name: str
    description: str
    parameters: Mapping[str, Any]  # a JSON Schema object
    function: ToolFunction

    @property
    def spec(self) -> ToolSpec:
        """What the model is told of the tool; each upstream dialect renders it its way."""
        return ToolSpec(self.name, self.description, self.parameters)

    @property
    def runs_on_the_loop(self) -> bool:
        """An async function: it runs on the event loop; any other runs in a worker."""
        return inspect.iscoroutinefunction(self.function)


def load_tools(names: Iterable[str], builtins: Mapping[str, Tool]) -> dict[str, Tool]:
    """Tools by built-in name or `module:attribute` path; ValueError names the bad entry."""
    tools: dict[str, Tool] = {}
    for name in names:
        tool = builtins.get(name) or _import(name)
        if not tool.runs_on_the_loop:
            target_of(tool)  # refused now rather than at its first call
        tools[tool.name] = tool
    return tools


def target_of(tool: Tool) -> str:
    """`module:qualname` of a plain tool function, the name its worker imports it by.

    ValueError when that name does not lead back to the very same function: a lambda, a
    nested function, a bound method, a `functools.partial`, a function of `__main__`."""
    function = tool.function
    module = getattr(function, "__module__", None)
    qualname = getattr(function, "__qualname__", None)
    if isinstance(module, str) and isinstance(qualname, str) and module != "__main__":
        target = f"{module}:{qualname}"
        try:
            if resolve(target) is function:
                return target
        except (ImportError, AttributeError):
            pass
    raise ValueError(
        f"Tool '{tool.name}': its function cannot run in a worker process, which imports it "
        f"by name ({module}:{qualname}). Define it at the top level of a module (not as a "
        "lambda, a nested function or a method), or make it async to run it on the event loop."
    )


def resolve(target: str) -> Any:
    """The object a `module:qualname` path names; ImportError or AttributeError if none."""
    return import_from_string(target)


def _import(path: str) -> Tool:
    if not path.partition(":")[2]:
        raise ValueError(f"Unknown tool '{path}': not built in, and not a 'module:attribute' path.")
    try:
        found = resolve(path)
    except (ImportError, AttributeError, ValueError) as exc:
        raise ValueError(f"Cannot load tool '{path}': {exc}") from None
    if not isinstance(found, Tool):
        raise ValueError(f"'{path}' is not a gateway.tools.base.Tool.")
    return found

"""What a tool is, how one is run, and how tools are found by name or dotted path."""

from __future__ import annotations

import asyncio
import importlib
import inspect
import json
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("gateway.tools")

ToolFunction = Callable[[dict[str, Any]], Awaitable[str] | str]


class ToolError(Exception):
    """Raised by a tool to tell the model what went wrong; the message is shown as is."""


@dataclass(frozen=True, slots=True)
class Tool:
    name: str
    description: str
    parameters: Mapping[str, Any]  # a JSON Schema object
    function: ToolFunction

    def definition(self) -> dict[str, Any]:
        """The tool in OpenAI's function-tool shape, for the model."""
        return {
            "type": "function",
            "function": {
                "name": self.name,
                "description": self.description,
                "parameters": dict(self.parameters),
            },
        }


@dataclass(frozen=True, slots=True)
class Outcome:
    text: str
    is_error: bool = False


async def run_tool(tool: Tool, arguments: str, time_limit: float) -> Outcome:
    """Run `tool` with the model's JSON `arguments`; every failure becomes an error outcome
    the model can read, never an exception."""
    try:
        values = json.loads(arguments or "{}")
    except ValueError:
        return Outcome("The arguments are not valid JSON.", is_error=True)
    if not isinstance(values, dict):
        return Outcome("The arguments must be a JSON object.", is_error=True)
    missing = [k for k in tool.parameters.get("required", ()) if k not in values]
    if missing:
        return Outcome(f"Missing required argument(s): {', '.join(missing)}.", is_error=True)
    try:
        async with asyncio.timeout(time_limit):
            result = await _call(tool.function, values)
    except TimeoutError:
        return Outcome(
            f"The tool took longer than {time_limit:g} s and was stopped.", is_error=True
        )
    except ToolError as exc:
        return Outcome(str(exc), is_error=True)
    except Exception:
        log.exception("tool %s failed", tool.name)
        return Outcome("The tool failed unexpectedly.", is_error=True)
    return Outcome(result)


async def _call(function: ToolFunction, values: dict[str, Any]) -> str:
    if inspect.iscoroutinefunction(function):
        return str(await function(values))
    # Plain functions run in a thread so a slow one cannot stall every stream.
    result = await asyncio.to_thread(function, values)
    return str(await result if inspect.isawaitable(result) else result)


def load_tools(names: Iterable[str], builtins: Mapping[str, Tool]) -> dict[str, Tool]:
    """Tools by built-in name or `module:attribute` path; ValueError names the bad entry."""
    tools: dict[str, Tool] = {}
    for name in names:
        tool = builtins.get(name) or _import(name)
        tools[tool.name] = tool
    return tools


def _import(path: str) -> Tool:
    module_name, _, attribute = path.partition(":")
    if not attribute:
        raise ValueError(f"Unknown tool '{path}': not built in, and not a 'module:attribute' path.")
    try:
        found = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"Cannot load tool '{path}': {exc}") from None
    if not isinstance(found, Tool):
        raise ValueError(f"'{path}' is not a gateway.tools.base.Tool.")
    return found

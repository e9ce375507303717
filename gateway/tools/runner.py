"""How one tool call runs: its arguments checked, its time limit kept, and every failure turned
into a result the model can read, never an exception.

A plain function runs in a worker process (`pool.py`), which is killed at the time limit. An
async function runs on the event loop under `asyncio.timeout`: it is cancelled at the limit,
which ends it only if it awaits; one that computes without awaiting, or swallows the
cancellation, holds the loop, so its author owns its cooperativeness.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from typing import Any

from gateway.tools.base import MAX_RESULT_CHARS, Tool, ToolError, target_of
from gateway.tools.pool import ToolFailure, WorkerPool

log = logging.getLogger("gateway.tools")


@dataclass(frozen=True, slots=True)
class Outcome:
    text: str
    is_error: bool = False


class ToolRunner:
    def __init__(self, pool: WorkerPool, time_limit: float) -> None:
        self._pool = pool
        self._time_limit = time_limit

    async def run(self, tool: Tool, arguments: str) -> Outcome:
        """Run `tool` with the model's JSON `arguments`."""
        try:
            values = json.loads(arguments or "{}")
        except ValueError:
            return Outcome("The arguments are not valid JSON.", is_error=True)
        except RecursionError:  # json's C parser recurses once per level of nesting
            return Outcome("The arguments are nested too deeply.", is_error=True)
        if not isinstance(values, dict):
            return Outcome("The arguments must be a JSON object.", is_error=True)
        missing = [k for k in tool.parameters.get("required", ()) if k not in values]
        if missing:
            return Outcome(f"Missing required argument(s): {', '.join(missing)}.", is_error=True)
        try:
            text = await self._call(tool, values)
        except TimeoutError:
            return Outcome(
                f"The tool took longer than {self._time_limit:g} s and was stopped.", is_error=True
            )
        except ToolError as exc:
            return Outcome(str(exc), is_error=True)
        except ToolFailure as exc:
            log.error("tool %s failed in its worker:\n%s", tool.name, exc)
            return Outcome("The tool failed unexpectedly.", is_error=True)
        except Exception:
            log.exception("tool %s failed", tool.name)
            return Outcome("The tool failed unexpectedly.", is_error=True)
        if len(text) > MAX_RESULT_CHARS:
            return Outcome(
                f"The tool's answer is longer than {MAX_RESULT_CHARS:,} characters.", is_error=True
            )
        return Outcome(text)

    async def _call(self, tool: Tool, values: dict[str, Any]) -> str:
        if tool.runs_on_the_loop:
            async with asyncio.timeout(self._time_limit):
                return str(await tool.function(values))  # type: ignore[misc]
        return await self._pool.call(target_of(tool), values, self._time_limit)

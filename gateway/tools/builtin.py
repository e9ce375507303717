"""The built-in tool set: needs no network and no keys."""

from __future__ import annotations

from gateway.tools.base import Tool
from gateway.tools.calculator import CALCULATE
from gateway.tools.clock import CURRENT_TIME, DATE_ADD, DATE_DIFF

BUILTIN_TOOLS: dict[str, Tool] = {t.name: t for t in (CALCULATE, CURRENT_TIME, DATE_ADD, DATE_DIFF)}

"""The built-in tools and the tool runner."""

from __future__ import annotations

import asyncio
import functools
import tracemalloc
from collections.abc import AsyncIterator
from typing import Any

import pytest

from gateway.events import ToolSpec, UseTool
from gateway.llm.openai.dialect import wire_tool, wire_tool_choice
from gateway.tools.base import MAX_RESULT_CHARS, Tool, ToolError, load_tools
from gateway.tools.builtin import BUILTIN_TOOLS
from gateway.tools.calculator import evaluate, format_number
from gateway.tools.pool import WorkerPool
from gateway.tools.runner import Outcome, ToolRunner
from tests import plugin_tools


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("2 + 3 * 4", "14"),
        ("(2 + 3) * 4", "20"),
        ("2 ^ 10", "1024"),
        ("7 // 2", "3"),
        ("7 % 4", "3"),
        ("10 / 4", "2.5"),
        ("-3 ** 2", "-9"),
        ("sqrt(16) + abs(-2)", "6"),
        ("round(pi, 4)", "3.1416"),
        ("max(1, 9, 3) - min(4, 2)", "7"),
        ("log(e)", "1"),
        ("2 ** 100", "1267650600228229401496703205376"),
        ("0.1 + 0.2", "0.3"),
        ("round(123456, -3)", "123000"),
        ("round(10 ** 2999, -2999)", "1" + "0" * 2999),
        ("2 ** 9964 // 2 ** 9963", "2"),  # 2 ** 9964 is the largest power of 2 allowed
        ("10 ** 2999 * 5", "5" + "0" * 2999),
    ],
)
def test_calculator(expression: str, expected: str) -> None:
    assert format_number(evaluate(expression)) == expected


@pytest.mark.parametrize(
    ("expression", "fragment"),
    [
        ("__import__('os').system('true')", "not supported"),
        ("(1).__class__", "not supported"),
        ("x + 1", "not supported"),
        ("[1, 2]", "not supported"),
        ("'a' * 3", "not supported"),
        ("sqrt(x=4)", "not supported"),
        ("9 ** 9 ** 9", "Exponents"),
        ("12345 ** 9999", "too large"),
        ("1 / 0", "Division by zero"),
        ("1e308 * 10", "too large"),
        ("sqrt(-1)", "undefined"),
        ("2 +", "not valid"),
        ("1" * 501, "longer than"),
        # Whole numbers are bounded before the work is done, however they would grow.
        ("round(1, -10**7)", "round() takes at most 3,000 digits"),
        ("round(2.5, 10**9)", "round() takes at most 3,000 digits"),
        ("2 ** 9965", "about 3,000 digits"),
        ("10 ** 2999 * 10", "about 3,000 digits"),
        ("(2 ** 5000) ** 2", "about 3,000 digits"),
        ("9 ** 5000 * 9 ** 5000", "about 3,000 digits"),
        ("3 ** 6000 * 3 ** 6000 * 3 ** 6000", "about 3,000 digits"),
        ("2 ** 9964 + 2 ** 9964", "about 3,000 digits"),
        ("floor(1e308) ** 10", "about 3,000 digits"),
        ("sqrt(2 ** 9000)", "too large"),
        ("2 ** 9000 / 3", "too large"),
        ("exp(1000)", "too large"),
        ("(-8) ** (1 / 3)", "not a real number"),
        ("round(1.5, 2.5)", "wrong number or kind"),
        ("max()", "wrong number or kind"),
        ("-" * 499 + "1", "nested too deeply"),
    ],
)
def test_calculator_refuses(expression: str, fragment: str) -> None:
    with pytest.raises(ToolError) as caught:
        evaluate(expression)
    assert fragment in str(caught.value)


@pytest.mark.parametrize(
    "expression",
    ["round(1, -10**7)", "(2 ** 9964) ** 9999", "(10 ** 2999) ** 10000", "round(7, -3001)"],
)
def test_numbers_too_large_are_refused_before_they_are_made(expression: str) -> None:
    # Made, each would take megabytes (and minutes of CPU for the first); parsing and walking
    # the expression take about 13 KiB.
    tracemalloc.start()
    try:
        with pytest.raises(ToolError, match="3,000 digits"):
            evaluate(expression)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 64 * 1024, f"{peak} bytes"


@pytest.fixture
async def pool() -> AsyncIterator[WorkerPool]:
    workers = WorkerPool(2, 256)
    yield workers
    await workers.aclose()


async def run(pool: WorkerPool, name: str, arguments: str) -> tuple[str, bool]:
    outcome = await ToolRunner(pool, 10).run(BUILTIN_TOOLS[name], arguments)
    return outcome.text, outcome.is_error


async def test_date_tools(pool: WorkerPool) -> None:
    assert await run(pool, "date_add", '{"date": "2026-11-23", "days": 10}') == (
        "2026-12-03 (Thursday)",
        False,
    )
    assert await run(pool, "date_add", '{"date": "2026-11-23T09:30", "hours": -10}') == (
        "2026-11-22T23:30:00+00:00 (Sunday)",
        False,
    )
    assert await run(pool, "date_diff", '{"start": "2026-01-01", "end": "2026-03-01"}') == (
        "59 days (8 weeks and 3 days; 1416 hours)",
        False,
    )
    text, error = await run(pool, "current_time", '{"timezone": "Asia/Tokyo"}')
    assert not error and "+09:00" in text
    text, error = await run(pool, "current_time", '{"timezone": "Mars/Olympus"}')
    assert error and "Unknown time zone" in text
    text, error = await run(pool, "date_add", '{"date": "soon"}')
    assert error and "not an ISO date" in text


async def test_the_runner_turns_every_failure_into_a_readable_result(pool: WorkerPool) -> None:
    assert await run(pool, "calculate", "not json") == ("The arguments are not valid JSON.", True)
    assert await run(pool, "calculate", "[1]") == ("The arguments must be a JSON object.", True)
    assert await run(pool, "calculate", "[" * 100_000) == (
        "The arguments are nested too deeply.",
        True,
    )
    assert await run(pool, "calculate", '{"expression": ' + "9" * 5000 + "}") == (
        "The arguments are not valid JSON.",
        True,
    )
    assert await run(pool, "calculate", "{}") == (
        "Missing required argument(s): expression.",
        True,
    )
    assert await run(pool, "calculate", '{"expression": "6*7"}') == ("42", False)
    assert await run(pool, "calculate", '{"expression": "round(1, -10**7)"}') == (
        "round() takes at most 3,000 digits.",
        True,
    )

    async def slow(arguments: dict[str, Any]) -> str:
        await asyncio.sleep(10)
        return "late"

    async def wordy(arguments: dict[str, Any]) -> str:
        return "x" * (MAX_RESULT_CHARS + 1)

    late = await ToolRunner(pool, 0.05).run(plugin_tools.tool("slow", slow), "{}")
    assert late == Outcome("The tool took longer than 0.05 s and was stopped.", is_error=True)
    runner = ToolRunner(pool, 10)
    crash = await runner.run(plugin_tools.BROKEN, "{}")
    assert crash == Outcome("The tool failed unexpectedly.", is_error=True)
    too_long = "The tool's answer is longer than 100,000 characters."
    assert await runner.run(plugin_tools.VERBOSE, "{}") == Outcome(too_long, is_error=True)
    assert await runner.run(plugin_tools.tool("wordy", wordy), "{}") == Outcome(
        too_long, is_error=True
    )


def test_tools_load_by_name_or_dotted_path() -> None:
    tools = load_tools(["calculate", "gateway.tools.clock:DATE_DIFF"], BUILTIN_TOOLS)
    assert list(tools) == ["calculate", "date_diff"]
    for bad in ("nope", "gateway.tools.clock:MISSING", "gateway.tools.clock:_zone"):
        with pytest.raises(ValueError, match=bad.split(":")[0]):
            load_tools([bad], BUILTIN_TOOLS)


def _module_level(arguments: dict[str, Any]) -> str:
    return "fine"


def test_a_plain_tool_function_must_be_importable_by_name() -> None:
    # Its worker process imports it by module and qualified name.
    def nested(arguments: dict[str, Any]) -> str:
        return ""

    async def nested_async(arguments: dict[str, Any]) -> str:
        return ""

    refused: list[Any] = [lambda arguments: "", nested, functools.partial(_module_level), str.upper]
    for function in refused:
        tool = Tool("odd", "", {}, function)
        with pytest.raises(ValueError, match="Tool 'odd': its function cannot run in a worker"):
            load_tools(["odd"], {"odd": tool})
    # Async functions run on the event loop, wherever they are defined.
    for function in (_module_level, nested_async):
        assert load_tools(["ok"], {"ok": Tool("ok", "", {}, function)}) == {
            "ok": Tool("ok", "", {}, function)
        }
    assert list(load_tools(["tests.plugin_tools:SPIN"], BUILTIN_TOOLS)) == ["spin"]


def test_definitions_are_openai_function_tools() -> None:
    definition = wire_tool(BUILTIN_TOOLS["calculate"].spec)
    assert definition["type"] == "function"
    assert definition["function"]["name"] == "calculate"
    assert definition["function"]["parameters"]["required"] == ["expression"]


def test_a_spec_renders_only_the_fields_it_has() -> None:
    # A client's tool goes upstream as it came: nothing added, nothing lost.
    schema = {"type": "object", "properties": {}}
    assert wire_tool(ToolSpec("a")) == {"type": "function", "function": {"name": "a"}}
    assert wire_tool(ToolSpec("b", "B", schema, False)) == {
        "type": "function",
        "function": {"name": "b", "description": "B", "parameters": schema, "strict": False},
    }
    assert wire_tool_choice(UseTool("b")) == {"type": "function", "function": {"name": "b"}}
    assert wire_tool_choice("none") == "none"

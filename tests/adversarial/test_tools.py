"""Tool calls that would take the process down: a hostile calculation is refused before any
work, and a tool that computes forever, takes all memory or dies is contained in its worker
process: killed at the time limit (or replaced), an error `tool_result` for the caller alone,
while other users are served. The fake upstream calls the agent's first tool with the user's
message as its arguments."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection

from gateway.config import AgentConfig, Settings
from tests.adversarial.conftest import FRESH_REQUEST_SECONDS, Survives
from tests.conftest import GatewayFactory
from tests.support.bystander import fresh_request_seconds, healthy
from tests.support.polling import settle
from tests.support.workers import alive, computing, gone, workers_of_this_process
from tests.support.ws import connected, send, text_of, until_done

Mint = Callable[..., str]
# Below the fake upstream's keep-alive (uvicorn's 5 s): the turn's second request may reuse
# the first one's connection, idle while the tool ran.
TIME_LIMIT = 3.0


def agents(settings: Settings) -> dict[str, AgentConfig]:
    """The configured agents, and one per test tool: each offers the model only that tool."""
    mine = {
        name: AgentConfig(name, kind="tools", tools=(f"tests.plugin_tools:{name.upper()}",))
        for name in ("pid", "spin", "hog", "crash")
    }
    return {**settings.agents, **mine}


def tool_gateway(start_gateway: GatewayFactory, settings: Settings, **changes: Any) -> Any:
    options: dict[str, Any] = {
        "agents": agents(settings),
        "tool_timeout": TIME_LIMIT,
        "tool_workers": 1,
        "tool_memory_mb": 128,
        **changes,
    }
    return start_gateway(**options)


async def ask(ws: ClientConnection, agent: str, arguments: str = "{}") -> list[dict[str, Any]]:
    """One turn with `agent`: every frame through the final one."""
    await send(ws, type="completion", id=agent, message=arguments, agent=agent)
    return await asyncio.wait_for(until_done(ws, agent), 60)


def tool_result(frames: list[dict[str, Any]]) -> dict[str, Any]:
    (result,) = [f for f in frames if f["type"] == "tool_result"]
    assert frames[-1]["type"] == "done", (frames[-1].get("code"), frames[-1].get("message"))
    return result


async def worker_pid(ws: ClientConnection) -> int:
    result = tool_result(await ask(ws, "pid"))
    assert result["is_error"] is False, result
    return int(result["result"])


@pytest.mark.parametrize(
    ("expression", "refusal"),
    [
        ("round(1, -10**7)", "round() takes at most 3,000 digits."),
        ("9 ** 9999 * 9 ** 9999", "whole numbers are limited to about 3,000 digits"),
        ("(2 ** 9964) ** 9999", "whole numbers are limited to about 3,000 digits"),
        ("(10 ** 2999) ** 10000 // 7", "whole numbers are limited to about 3,000 digits"),
    ],
)
async def test_a_hostile_calculation_is_refused_at_once(
    start_gateway: GatewayFactory,
    settings: Settings,
    token: Mint,
    survives: Survives,
    expression: str,
    refusal: str,
) -> None:
    with tool_gateway(start_gateway, settings) as url:
        async with survives(url):
            ws = await connected(url, token("mallory"))
            frames = await ask(ws, "tools", json.dumps({"expression": expression}))
            result = tool_result(frames)
            assert result["is_error"] is True and refusal in result["result"], result
            assert text_of(frames) == f"Result: {result['result']}"
            # The calculator still answers.
            frames = await ask(ws, "tools", json.dumps({"expression": "2 ** 100 % 7"}))
            assert tool_result(frames)["result"] == "2"
            await ws.close()


async def test_a_tool_that_computes_forever_is_killed_at_its_time_limit(
    start_gateway: GatewayFactory, settings: Settings, token: Mint, survives: Survives
) -> None:
    with tool_gateway(start_gateway, settings) as url:
        ws = await connected(url, token("mallory"))
        first = await worker_pid(ws)
        async with survives(url):
            attack = asyncio.create_task(ask(ws, "spin"))
            assert await computing(first), "the tool never ran"
            # The tool holds a CPU in its worker; the gateway's process serves everyone else.
            assert await healthy(url)
            seconds = await fresh_request_seconds(url, token("bob"))
            assert seconds < FRESH_REQUEST_SECONDS, f"a request took {seconds:.2f} s"
            assert alive(first) and not attack.done(), "the probes ran after the tool ended"
            result = tool_result(await attack)
        assert result["is_error"] is True
        assert result["result"] == f"The tool took longer than {TIME_LIMIT:g} s and was stopped."
        assert await gone(first), "the worker still runs"
        # Another call gets a fresh worker.
        second = await worker_pid(ws)
        assert second != first and alive(second)
        await ws.close()


@pytest.mark.parametrize(
    ("agent", "message"),
    [
        ("hog", "The tool needed more than the 128 MiB of memory it may use and was stopped."),
        ("crash", "The tool stopped unexpectedly and did not finish."),
    ],
)
async def test_a_tool_that_takes_all_memory_or_dies_fails_alone(
    start_gateway: GatewayFactory,
    settings: Settings,
    token: Mint,
    survives: Survives,
    agent: str,
    message: str,
) -> None:
    with tool_gateway(start_gateway, settings) as url:
        ws = await connected(url, token("mallory"))
        first = await worker_pid(ws)
        async with survives(url):
            result = tool_result(await ask(ws, agent))
        assert result["is_error"] is True and result["result"] == message
        assert await gone(first)
        second = await worker_pid(ws)
        assert second != first and alive(second)
        await ws.close()


async def test_no_worker_outlives_its_gateway(
    start_gateway: GatewayFactory, settings: Settings, token: Mint
) -> None:
    # One worker computing when the gateway stops (no time limit would end it first), and one
    # idle.
    assert workers_of_this_process() == []
    with tool_gateway(
        start_gateway, settings, tool_workers=2, tool_timeout=600.0, shutdown_drain_seconds=1.0
    ) as url:
        ws = await connected(url, token("mallory"))
        await send(ws, type="completion", id="spin", message="{}", agent="spin")
        assert await settle(lambda: len(workers_of_this_process()) == 1)
        (busy,) = workers_of_this_process()
        assert await computing(busy)
        idle = await worker_pid(ws)
        assert sorted(workers_of_this_process()) == sorted([busy, idle])
    assert workers_of_this_process() == [], "a tool worker outlived the gateway"

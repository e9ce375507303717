"""Agents end to end (the fake upstream through the openai SDK), and the tool loop's rules."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, get_args

import httpx2
import pytest

from gateway.agents.base import AgentInput
from gateway.agents.registry import AGENT_KINDS, build_agent
from gateway.agents.tools import ToolsAgent
from gateway.config import AgentConfig, AgentKind, ConfigError
from gateway.events import Finish, Message, TextDelta, ToolCall, ToolResult, ToolSpec, Usage
from gateway.llm.base import ModelParams
from gateway.tools.builtin import BUILTIN_TOOLS
from gateway.tools.pool import WorkerPool
from gateway.tools.runner import ToolRunner
from tests.support.sse import sse_events
from tests.support.upstream import FakeUpstream
from tests.support.ws import connected, receive, send, text_of, until_done

Mint = Callable[..., str]


async def test_the_tools_agent_runs_the_loop_and_streams_calls_and_results(
    gateway: str, token: Mint, fake_upstream: FakeUpstream
) -> None:
    ws = await connected(gateway, token())
    await send(ws, type="completion", id="r", message='{"expression": "2 + 3 * 4"}', agent="tools")
    frames = await until_done(ws, "r")
    kinds = [f["type"] for f in frames]
    assert kinds[:3] == ["start", "tool_call", "tool_result"] and kinds[-1] == "done"
    call, result = frames[1], frames[2]
    assert call["name"] == "calculate" and json.loads(call["arguments"]) == {
        "expression": "2 + 3 * 4"
    }
    assert result["call_id"] == call["call_id"] and result["result"] == "14"
    assert result["is_error"] is False
    assert text_of(frames) == "Result: 14"
    assert frames[-1]["finish_reason"] == "stop"
    assert frames[-1]["usage"]["completion_tokens"] == 1 + 2  # both rounds counted
    first, second = fake_upstream.requests[-2:]
    assert [t["function"]["name"] for t in first.body["tools"]] == [
        "calculate",
        "current_time",
        "date_add",
        "date_diff",
    ]
    assert second.messages[-2]["tool_calls"][0]["id"] == call["call_id"]
    assert second.messages[-1] == {"role": "tool", "content": "14", "tool_call_id": call["call_id"]}


async def test_tool_errors_go_back_to_the_model(gateway: str, token: Mint) -> None:
    ws = await connected(gateway, token())
    await send(ws, type="completion", id="r", message="no arguments here", agent="tools")
    frames = await until_done(ws, "r")
    result = next(f for f in frames if f["type"] == "tool_result")
    assert result["is_error"] is True and "expression" in result["result"]
    assert text_of(frames).startswith("Result: Missing required argument")


async def test_tool_events_reach_sse_clients_too(gateway: str, token: Mint) -> None:
    async with httpx2.AsyncClient(timeout=20) as client:
        response = await client.post(
            f"{gateway}/completion",
            headers={"Authorization": f"Bearer {token()}"},
            json={"message": '{"expression": "6*7"}', "agent": "tools", "stream": True},
        )
    events = [e for _, e in sse_events(response.text)]
    assert [e["type"] for e in events][:3] == ["start", "tool_call", "tool_result"]
    assert events[2]["result"] == "42"


async def test_an_agent_refuses_models_it_does_not_allow(gateway: str, token: Mint) -> None:
    ws = await connected(gateway, token())
    await send(ws, type="completion", id="r", message="x", agent="calc-only", model="echo")
    error = await receive(ws)
    assert (
        error["code"] == "bad_request" and "works with these models only: fake" in error["message"]
    )


async def test_the_grounded_agent_cites_its_sources(
    gateway: str, token: Mint, fake_upstream: FakeUpstream
) -> None:
    ws = await connected(gateway, token())
    sources = [
        {
            "id": "doc-1",
            "title": "Manual",
            "url": "https://example.com/m",
            "content": "The reset button is on the back.",
        },
        "Warranty lasts two years.",
    ]
    await send(
        ws,
        type="completion",
        id="r",
        message="Where is it? [1]",
        agent="grounded",
        sources=sources,
        project_id="p-7",
    )
    done = (await until_done(ws, "r"))[-1]
    assert done["metadata"]["citations"] == [
        {"n": 1, "id": "doc-1", "title": "Manual", "url": "https://example.com/m"}
    ]
    assert done["metadata"]["sources"] == {"included": 2, "trimmed": [], "omitted": []}
    assert done["metadata"]["project_id"] == "p-7"
    system = fake_upstream.requests[-1].messages[0]
    assert system["role"] == "system"
    assert "[1] Manual <https://example.com/m>\nThe reset button" in system["content"]
    assert "[2]\nWarranty lasts two years." in system["content"]


async def test_a_plugin_agent_loaded_by_dotted_path(gateway: str, token: Mint) -> None:
    ws = await connected(gateway, token())
    await send(ws, type="completion", id="r", message="hello there", agent="shout")
    frames = await until_done(ws, "r")
    assert frames[0]["agent"] == "shout" and text_of(frames) == "HELLO!THERE!"


class ScriptedModel:
    """Calls `tool` every round it may; records the params of each round."""

    name = "scripted"
    streaming = True

    def __init__(self, tool: str) -> None:
        self.tool = tool
        self.rounds: list[ModelParams] = []

    async def stream(
        self, messages: Sequence[Message], params: ModelParams
    ) -> AsyncIterator[TextDelta | ToolCall | Finish]:
        self.rounds.append(params)
        if params.tool_choice == "none":
            yield TextDelta("giving up")
            yield Finish("stop", Usage(1, 1))
            return
        yield ToolCall(f"call_{len(self.rounds)}", self.tool, '{"expression": "1+1"}')
        yield Finish("tool_calls", Usage(1, 1))

    async def aclose(self) -> None:
        return None


async def collect(
    agent: ToolsAgent, model: ScriptedModel, tools: tuple[ToolSpec, ...] = ()
) -> list[Any]:
    given = AgentInput("go", [], model, ModelParams(tools=tools))
    return [event async for event in agent.run(given)]


@pytest.fixture
async def runner() -> AsyncIterator[ToolRunner]:
    pool = WorkerPool(1, 256)
    yield ToolRunner(pool, 10)
    await pool.aclose()


async def test_the_loop_stops_after_max_rounds_and_asks_for_an_answer(runner: ToolRunner) -> None:
    agent = ToolsAgent("t", None, {"calculate": BUILTIN_TOOLS["calculate"]}, 2, runner)
    model = ScriptedModel("calculate")
    events = await collect(agent, model)
    assert [type(e).__name__ for e in events] == [
        "ToolCall",
        "ToolResult",
        "ToolCall",
        "ToolResult",
        "TextDelta",
        "Finish",
    ]
    assert [p.tool_choice for p in model.rounds] == [None, None, "none"]
    assert events[-1] == Finish("stop", Usage(3, 3))


async def test_a_call_of_a_client_tool_ends_the_turn_for_the_client(runner: ToolRunner) -> None:
    agent = ToolsAgent("t", None, {"calculate": BUILTIN_TOOLS["calculate"]}, 4, runner)
    model = ScriptedModel("weather")
    client_tool = ToolSpec("weather")
    events = await collect(agent, model, (client_tool,))
    assert [type(e).__name__ for e in events] == ["ToolCall", "Finish"]
    assert events[-1].reason == "tool_calls"
    assert [t.name for t in model.rounds[0].tools] == ["calculate", "weather"]
    assert not any(isinstance(e, ToolResult) for e in events)


def test_the_registry_has_a_line_for_every_agent_kind_and_no_other() -> None:
    assert list(AGENT_KINDS) == list(get_args(AgentKind))


@pytest.mark.parametrize("kind", list(AGENT_KINDS))
async def test_every_kind_builds_its_agent_from_its_configuration(
    kind: AgentKind, runner: ToolRunner
) -> None:
    agent = build_agent(AgentConfig("a", kind=kind, tools=("calculate",)), runner)
    assert agent.name == "a"
    assert type(agent).__name__ == AGENT_KINDS[kind].rpartition(":")[2]


async def test_an_unknown_kind_or_tool_is_a_configuration_error(runner: ToolRunner) -> None:
    with pytest.raises(ConfigError, match="Unknown agent kind 'wizard'; use one of chat"):
        build_agent(AgentConfig("a", kind="wizard"), runner)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="Agent 'a': Unknown tool 'nope'"):
        build_agent(AgentConfig("a", kind="tools", tools=("nope",)), runner)

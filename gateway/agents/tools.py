"""The `tools` agent: runs OpenAI's tool-calling loop with the gateway's own tools.

The model asks, the gateway runs the tool (with a time limit: `gateway/tools/runner.py`), the
result goes back, and the model answers; every call and result is streamed as an event. A call
of a tool the gateway does not have (one the client passed in) ends the turn with
finish_reason "tool_calls" so the client can run it. After `max_rounds` rounds the model must
answer without tools.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Mapping

from gateway.agents.base import AgentInput, build_messages
from gateway.config import AgentConfig, ConfigError
from gateway.events import AgentEvent, Finish, Message, TextDelta, ToolCall, ToolResult, Usage
from gateway.tools.base import Tool, load_tools
from gateway.tools.builtin import BUILTIN_TOOLS
from gateway.tools.runner import ToolRunner


class ToolsAgent:
    def __init__(
        self,
        name: str,
        system_prompt: str | None,
        tools: Mapping[str, Tool],
        max_rounds: int,
        runner: ToolRunner,
    ) -> None:
        self.name = name
        self._system_prompt = system_prompt
        self._tools = dict(tools)
        self._specs = tuple(tool.spec for tool in self._tools.values())
        self._max_rounds = max_rounds
        self._runner = runner

    @classmethod
    def from_config(cls, config: AgentConfig, runner: ToolRunner) -> ToolsAgent:
        """ConfigError when a configured tool cannot be found or run."""
        try:
            tools = load_tools(config.tools, BUILTIN_TOOLS)
        except ValueError as exc:
            raise ConfigError(f"Agent '{config.name}': {exc}") from None
        return cls(config.name, config.system_prompt, tools, config.max_tool_rounds, runner)

    async def run(self, given: AgentInput) -> AsyncIterator[AgentEvent]:
        messages = build_messages(self._system_prompt, given)
        specs = (*self._specs, *given.params.tools)
        usage = Usage()
        for round_ in range(self._max_rounds + 1):
            last = round_ == self._max_rounds
            params = dataclasses.replace(
                given.params,
                tools=specs,
                tool_choice="none" if last else given.params.tool_choice,
            )
            text: list[str] = []
            calls: list[ToolCall] = []
            finish = Finish("stop", Usage())
            async for event in given.model.stream(messages, params):
                if isinstance(event, Finish):
                    finish = event
                    continue
                if isinstance(event, TextDelta):
                    text.append(event.text)
                elif isinstance(event, ToolCall):
                    calls.append(event)
                yield event
            usage = _add(usage, finish.usage)
            if last or not calls or any(c.name not in self._tools for c in calls):
                yield Finish(finish.reason, usage, finish.metadata)
                return
            messages.append(Message("assistant", "".join(text), tool_calls=tuple(calls)))
            for call in calls:
                outcome = await self._runner.run(self._tools[call.name], call.arguments)
                yield ToolResult(call.call_id, call.name, outcome.text, outcome.is_error)
                messages.append(Message("tool", outcome.text, tool_call_id=call.call_id))


def _add(total: Usage, more: Usage) -> Usage:
    return Usage(
        total.prompt_tokens + more.prompt_tokens, total.completion_tokens + more.completion_tokens
    )

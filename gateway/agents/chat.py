"""The built-in `chat` agent: system prompt, history and the message, straight to the model."""

from __future__ import annotations

from collections.abc import AsyncIterator

from gateway.agents.base import AgentInput, build_messages
from gateway.config import AgentConfig
from gateway.events import AgentEvent
from gateway.tools.runner import ToolRunner


class ChatAgent:
    def __init__(self, name: str, system_prompt: str | None = None) -> None:
        self.name = name
        self._system_prompt = system_prompt

    @classmethod
    def from_config(cls, config: AgentConfig, runner: ToolRunner) -> ChatAgent:
        return cls(config.name, config.system_prompt)

    async def run(self, given: AgentInput) -> AsyncIterator[AgentEvent]:
        messages = build_messages(self._system_prompt, given)
        async for event in given.model.stream(messages, given.params):
            yield event

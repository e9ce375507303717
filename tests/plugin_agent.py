"""An agent written outside the gateway, loaded by dotted path in the tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

from gateway.agents.base import AgentInput
from gateway.config import AgentConfig
from gateway.events import AgentEvent, Finish, TextDelta, Usage


class ShoutAgent:
    """Answers with the message in capitals, without calling any model."""

    def __init__(self, name: str, config: AgentConfig) -> None:
        self.name = name

    async def run(self, given: AgentInput) -> AsyncIterator[AgentEvent]:
        for word in given.message.upper().split():
            yield TextDelta(word + "!")
        yield Finish("stop", Usage(completion_tokens=len(given.message.split())))

"""Agents by name, built from Settings."""

from __future__ import annotations

from collections.abc import Mapping

from gateway.agents.base import Agent
from gateway.agents.chat import ChatAgent
from gateway.config import AgentConfig, Settings


def build_agents(settings: Settings) -> Mapping[str, tuple[Agent, AgentConfig]]:
    return {
        name: (ChatAgent(name, config.system_prompt), config)
        for name, config in settings.agents.items()
    }

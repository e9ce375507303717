"""Agents by name, built once from Settings: the built-in kinds, or a plugin class."""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

from gateway.agents.base import Agent
from gateway.agents.chat import ChatAgent
from gateway.agents.grounded import GroundedAgent
from gateway.agents.tools import ToolsAgent
from gateway.config import AgentConfig, ConfigError, Settings
from gateway.tools.base import load_tools
from gateway.tools.builtin import BUILTIN_TOOLS
from gateway.tools.pool import WorkerPool
from gateway.tools.runner import ToolRunner


def build_agents(settings: Settings, tools: WorkerPool) -> Mapping[str, tuple[Agent, AgentConfig]]:
    """`tools`: the workers that run the plain-function tools of `tools` agents."""
    runner = ToolRunner(tools, settings.tool_timeout)
    return {name: (build_agent(config, runner), config) for name, config in settings.agents.items()}


def build_agent(config: AgentConfig, runner: ToolRunner) -> Agent:
    if config.plugin is not None:
        return _plugin(config)
    if config.kind == "grounded":
        return GroundedAgent(config.name, config.system_prompt, config.source_budget)
    if config.kind == "tools":
        try:
            tools = load_tools(config.tools, BUILTIN_TOOLS)
        except ValueError as exc:
            raise ConfigError(f"Agent '{config.name}': {exc}") from None
        return ToolsAgent(config.name, config.system_prompt, tools, config.max_tool_rounds, runner)
    return ChatAgent(config.name, config.system_prompt)


def _plugin(config: AgentConfig) -> Agent:
    """`module:Class`, constructed as Class(name=..., config=...)."""
    assert config.plugin is not None
    module_name, _, class_name = config.plugin.partition(":")
    try:
        factory: Any = getattr(importlib.import_module(module_name), class_name)
        agent: Agent = factory(name=config.name, config=config)
    except Exception as exc:
        raise ConfigError(
            f"Agent '{config.name}': cannot load plugin '{config.plugin}': {exc}"
        ) from None
    if not callable(getattr(agent, "run", None)):
        raise ConfigError(f"Agent '{config.name}': plugin '{config.plugin}' has no run() method.")
    return agent

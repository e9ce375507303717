"""Agents by name, built once from Settings: a kind from the registry, or a plugin class.

`AGENT_KINDS` maps each kind an agent table may name (`config.AgentKind`) to the
`module:attribute` path of its class, imported only when an agent of that kind is configured
(uvicorn's `config.py` style): a new kind is a module with a class that has `from_config`
(`AgentClass`) and a line here. A plugin (`plugin = "module:Class"`) is a class of the
operator's own, constructed as `Class(name=..., config=...)`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

from gateway.agents.base import Agent, AgentClass
from gateway.config import AgentConfig, AgentKind, ConfigError, Settings
from gateway.importer import import_from_string
from gateway.tools.pool import WorkerPool
from gateway.tools.runner import ToolRunner

AGENT_KINDS: Mapping[AgentKind, str] = {
    "chat": "gateway.agents.chat:ChatAgent",
    "grounded": "gateway.agents.grounded:GroundedAgent",
    "tools": "gateway.agents.tools:ToolsAgent",
}


def build_agents(settings: Settings, tools: WorkerPool) -> Mapping[str, tuple[Agent, AgentConfig]]:
    """`tools`: the workers that run the plain-function tools of `tools` agents."""
    runner = ToolRunner(tools, settings.tool_timeout)
    return {name: (build_agent(config, runner), config) for name, config in settings.agents.items()}


def build_agent(config: AgentConfig, runner: ToolRunner) -> Agent:
    if config.plugin is not None:
        return _plugin(config, config.plugin)
    return load_kind(config.kind).from_config(config, runner)


def load_kind(kind: AgentKind) -> AgentClass:
    """The agent class registered for `kind`, imported now."""
    path = AGENT_KINDS.get(kind)
    if path is None:
        raise ConfigError(f"Unknown agent kind '{kind}'; use one of {', '.join(AGENT_KINDS)}.")
    return cast(AgentClass, import_from_string(path))


def _plugin(config: AgentConfig, path: str) -> Agent:
    """`module:Class`, constructed as Class(name=..., config=...)."""
    try:
        factory: Any = import_from_string(path)
        agent: Agent = factory(name=config.name, config=config)
    except Exception as exc:
        raise ConfigError(f"Agent '{config.name}': cannot load plugin '{path}': {exc}") from None
    if not callable(getattr(agent, "run", None)):
        raise ConfigError(f"Agent '{config.name}': plugin '{path}' has no run() method.")
    return agent

"""What a UI may offer: the configured models and agents, by name.

Pure: built from Settings alone. Only names and what a client may ask for appear here; keys,
base URLs, upstream names and system prompts never do.
"""

from __future__ import annotations

from typing import Any

from gateway.config import AgentConfig, Settings


def models(settings: Settings) -> dict[str, Any]:
    return {
        "data": [
            {"id": name, "streaming": config.streaming, "default": name == settings.default_model}
            for name, config in settings.models.items()
        ],
        "default": settings.default_model,
    }


def agents(settings: Settings) -> dict[str, Any]:
    return {
        "data": [
            {
                "id": name,
                "model": _default_model(config, settings),
                "models": list(config.allowed_models or settings.models),
                "default": name == settings.default_agent,
            }
            for name, config in settings.agents.items()
        ],
        "default": settings.default_agent,
    }


def _default_model(agent: AgentConfig, settings: Settings) -> str | None:
    """The model a request that names none gets with this agent; None when that model is not
    one the agent allows, so a request must name one."""
    model = agent.model or settings.default_model
    if agent.allowed_models and model not in agent.allowed_models:
        return None
    return model

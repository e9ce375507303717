"""Settings, read once from the environment and an optional TOML file.

`fields` is what a setting is (its declaration, parsing and bound); `settings` declares them;
`rules` checks what joins several; `tables` reads the models, agents and limits of the file.
"""

from gateway.config.fields import ConfigError, Secret
from gateway.config.rules import JWT_ALGORITHMS, MIN_SECRET_BYTES
from gateway.config.settings import Settings, variables
from gateway.config.tables import (
    NAME_RE,
    AgentConfig,
    AgentKind,
    Limits,
    ModelConfig,
    ProviderName,
)

__all__ = [
    "JWT_ALGORITHMS",
    "MIN_SECRET_BYTES",
    "NAME_RE",
    "AgentConfig",
    "AgentKind",
    "ConfigError",
    "Limits",
    "ModelConfig",
    "ProviderName",
    "Secret",
    "Settings",
    "variables",
]

"""Moved to tests/support/processes.py; kept until every test module imports it from there."""

from tests.support.processes import (
    MODELS,
    GatewayProcess,
    config_file,
    gateway_environment,
    spawn,
    start_pair,
    start_process,
)

__all__ = [
    "MODELS",
    "GatewayProcess",
    "config_file",
    "gateway_environment",
    "spawn",
    "start_pair",
    "start_process",
]

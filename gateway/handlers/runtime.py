"""What the handlers see of the running gateway: small interfaces, not its wiring.

`gateway.services.Services` is the one implementation; typing the handlers against this
protocol keeps the Redis client and the upstream SDKs out of whatever imports a handler.
"""

from __future__ import annotations

from typing import Protocol

from gateway.config import Settings
from gateway.core.chat import ChatService
from gateway.core.conversations import ConversationService
from gateway.core.disconnect import DisconnectPolicy
from gateway.core.running import GenerationRegistry
from gateway.limits import Refusal
from gateway.obs.metrics import GatewayMetrics
from gateway.principal import Principal


class Verifier(Protocol):
    async def verify(self, token: str) -> Principal: ...


class ConnectionSlots(Protocol):
    """Each user's open connections, counted across instances (LIMIT_CONNECTIONS)."""

    async def connect(self, sub: str, limit: int, connection_id: str) -> Refusal | None: ...
    async def disconnect(self, sub: str, connection_id: str) -> None: ...


class Runtime(Protocol):
    @property
    def settings(self) -> Settings: ...
    @property
    def verifier(self) -> Verifier: ...
    @property
    def chat(self) -> ChatService: ...
    @property
    def generations(self) -> GenerationRegistry: ...
    @property
    def conversations(self) -> ConversationService: ...
    @property
    def limits(self) -> ConnectionSlots: ...
    @property
    def metrics(self) -> GatewayMetrics: ...

    async def store_ready(self) -> bool:
        """True when the store answers (on a Redis Cluster, every primary)."""
        ...


def disconnect_policy(runtime: Runtime) -> DisconnectPolicy:
    """ON_DISCONNECT as the core applies it, for a transport whose client left early."""
    return DisconnectPolicy(
        runtime.settings.on_disconnect, runtime.generations.draining, runtime.chat
    )

"""What becomes of a generation when the client that asked for it leaves before its end.

A generation is not a connection: by default (`ON_DISCONNECT=continue`) it runs on and its
answer is stored. With `ON_DISCONNECT=cancel` the generations a client started are cancelled
when it leaves early, except while the process drains: those clients were told to go and
resume elsewhere, so their generations must run on. The policy is the core's, not a
transport's: `left` takes every generation a client started, one or many.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal, Protocol

from gateway.principal import Principal

log = logging.getLogger("gateway.chat")

OnDisconnect = Literal["continue", "cancel"]


class Canceller(Protocol):
    """What the policy needs of the core: an idempotent cancel on the user's behalf."""

    async def cancel(self, principal: Principal, generation_id: str) -> object: ...


@dataclass(frozen=True, slots=True)
class DisconnectPolicy:
    """`ON_DISCONNECT`, applied: `left` when a client leaves before its generations end."""

    on_disconnect: OnDisconnect
    draining: asyncio.Event
    chat: Canceller

    def cancels(self) -> bool:
        """Whether a client leaving now cancels what it started (never during a drain)."""
        return self.on_disconnect == "cancel" and not self.draining.is_set()

    async def left(self, principal: Principal, started: Iterable[str]) -> None:
        """The client that started `started` left before they ended. A cancel that fails
        (the store is unreachable) is logged: the client is gone, there is no one to tell."""
        if not self.cancels():
            return
        for generation_id in started:
            try:
                await self.chat.cancel(principal, generation_id)
            except Exception:
                log.warning("generation %s: not cancelled after its client left", generation_id)

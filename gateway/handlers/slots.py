"""Connection slots: each WebSocket, and each HTTP stream that follows a generation
(`GET /generations/{id}/events`, `GET /api/chat/{id}/stream`), holds one of its user's
LIMIT_CONNECTIONS slots while it is open, on whatever instance. A follower costs the process
a task and its share of the log reader; without a cap one user could open them by thousands.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import AsyncIterator, Callable, Mapping

from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from gateway.errors import RateLimited
from gateway.handlers.runtime import Runtime
from gateway.limits import limits_for
from gateway.principal import Principal
from gateway.store.unreachable import store_error

log = logging.getLogger("gateway.limits")


async def count_in(
    services: Runtime, principal: Principal, connection_id: str
) -> RateLimited | None:
    """Count a connection against its user's limit; the error to refuse it with when the user
    is at the limit. While the store is unreachable the connection is let in uncounted: the
    limit guards against abuse, not against an outage."""
    limits = limits_for(principal, services.settings)
    try:
        refusal = await services.limits.connect(principal.sub, limits.connections, connection_id)
    except Exception as exc:
        if store_error(exc) is None:
            raise
        log.warning(
            "connection %s: not counted against limits, the store is unreachable", connection_id
        )
        return None
    if refusal is None:
        return None
    services.metrics.rate_limited.labels(refusal.limit).inc()
    return refusal.error(limits)


async def count_out(services: Runtime, principal: Principal, connection_id: str) -> None:
    """Give the slot back; an entry left behind (the store failed) lapses on its own."""
    try:
        await services.limits.disconnect(principal.sub, connection_id)
    except Exception as exc:
        if store_error(exc) is None:
            raise


class Slot:
    """A stream's slot, taken by `take`; `release` gives it back, once."""

    def __init__(self, services: Runtime, principal: Principal, connection_id: str) -> None:
        self._services = services
        self._principal = principal
        self.id = connection_id
        self._held = True

    @classmethod
    async def take(cls, services: Runtime, principal: Principal) -> Slot:
        """A slot for a following stream; RateLimited (HTTP 429 with Retry-After) when the
        user has LIMIT_CONNECTIONS connections open."""
        slot = cls(services, principal, f"stream_{secrets.token_urlsafe(9)}")
        refused = await count_in(services, principal, slot.id)
        if refused is not None:
            raise refused
        return slot

    async def release(self) -> None:
        if self._held:
            self._held = False
            await count_out(self._services, self._principal, self.id)


class SlotStream(StreamingResponse):
    """A stream of server-sent events holding a connection slot: `on_close` runs and the slot
    is given back when the response is over, however it ends, even when its body never
    started (the client left before the first byte)."""

    def __init__(
        self,
        content: AsyncIterator[str],
        headers: Mapping[str, str],
        slot: Slot,
        on_close: Callable[[], None],
    ) -> None:
        super().__init__(content, media_type="text/event-stream", headers=headers)
        self._slot = slot
        self._on_close = on_close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._on_close()
            await asyncio.shield(self._slot.release())

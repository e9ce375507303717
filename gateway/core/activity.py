"""A user's activity across tabs, devices and instances (docs/activity.md): what the core
publishes when a generation starts or ends and when a conversation changes, and what a
transport needs to show it: the user's running generations, the events after an id, the
process's one reader to listen to.

Publishing never fails the work it describes: a store error is logged and the event is lost
(clients that missed it find the truth in the conversations and `ready.running`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from gateway.core.ports import ActivityStore, Pipeline
from gateway.core.webhooks import Webhooks
from gateway.protocol.activity import ActivityEntry, ActivityEvent, running_object
from gateway.store.activity_hub import ActivityHub, Listener

log = logging.getLogger("gateway.core.activity")


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Where a listener starts: the id of the user's latest event, and what runs."""

    last_id: str
    running: list[dict[str, Any]] | None  # None: not known (the store failed)


class ActivityService:
    def __init__(
        self, store: ActivityStore, hub: ActivityHub, webhooks: Webhooks | None = None
    ) -> None:
        self._store = store
        self.hub = hub
        self.webhooks = webhooks  # with WEBHOOK_URL

    def queue(self, pipe: Pipeline, sub: str, events: Sequence[ActivityEvent]) -> None:
        """Publish in a round trip the caller makes anyway (a turn's end)."""
        self._store.queue_publish(pipe, sub, events)

    async def publish(
        self,
        sub: str,
        events: Sequence[ActivityEvent],
        also: Callable[[Pipeline], None] | None = None,
    ) -> None:
        try:
            await self._store.publish(sub, events, also)
        except Exception as exc:
            log.warning(
                "activity of a user lost (%s): %s",
                ", ".join(e.name for e in events),
                type(exc).__name__,
            )

    async def snapshot(self, sub: str) -> Snapshot:
        last_id, running = await self._store.snapshot(sub)
        return Snapshot(last_id, [running_object(*found) for found in running])

    async def after(self, sub: str, after: str) -> list[ActivityEntry]:
        return await self._store.after(sub, after)

    def listen(self, sub: str, listener: Listener, after: str) -> None:
        self.hub.join(sub, listener, after)

    def unlisten(self, sub: str, listener: Listener) -> None:
        self.hub.leave(sub, listener)

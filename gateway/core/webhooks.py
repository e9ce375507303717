"""Webhooks when nobody is watching (docs/activity.md#webhooks): when a generation ends and no
client of its user followed it to its end, the gateway POSTs `generation.completed` or
`generation.failed`, signed per Standard Webhooks, to WEBHOOK_URL.

The delivery is queued in the round trip that stores the answer (so it is never lost, and
never delays the answer), then sent by whichever instance's sender claims it first, retried
with backoff on failures and timeouts (`RETRY_SCHEDULE`), with the same `webhook-id` each
time. Followed from this instance means a subscriber attached here at the end; from another,
a mark its follow left on the generation (`watch`), checked by the sender before sending.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

from gateway.core.ports import Pipeline
from gateway.events import Usage
from gateway.obs.metrics import GatewayMetrics
from gateway.protocol import webhooks as wire
from gateway.tasks import stop_tasks

log = logging.getLogger("gateway.webhooks")

BATCH = 16  # deliveries claimed at once
IDLE_POLL = 1.0  # seconds between looks at the queue while nothing is due here
RETRY_FIRST, RETRY_MAX = 0.1, 5.0  # pauses while Redis fails

# Sends one attempt: the status of the answer; raises on a network error or a timeout.
Post = Callable[[str, dict[str, str]], Awaitable[int]]


class WebhookStore(Protocol):
    def queue(self, pipe: Pipeline, message_id: str, record: dict[str, Any]) -> None: ...
    async def claim(self, lease: float, count: int) -> list[tuple[str, dict[str, Any]]]: ...
    async def later(self, message_id: str, record: dict[str, Any], delay: float) -> None: ...
    async def forget(self, message_id: str) -> None: ...
    async def watch(self, generation_id: str, follow_id: str) -> None: ...
    async def unwatch(self, generation_id: str, follow_id: str) -> None: ...
    async def watched(self, generation_id: str) -> bool: ...


class Webhooks:
    def __init__(
        self,
        store: WebhookStore,
        post: Post,
        key: bytes,
        when: Literal["unwatched", "always"],
        include_text: bool,
        timeout: float,
        metrics: GatewayMetrics,
    ) -> None:
        self._store = store
        self._post = post
        self._key = key
        self._when = when
        self._include_text = include_text
        self._lease = timeout + 5.0  # a delivery in flight is not claimed again before
        self._metrics = metrics.webhook_deliveries
        self._nudge = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def queue_end(
        self,
        pipe: Pipeline,
        owner: str,
        ids: tuple[str, str],
        status: str,
        finish_reason: str | None,
        usage: Usage | None,
        text: str,
        followed_here: bool,
    ) -> None:
        """Queue the end's webhook in the round trip that stores the answer, unless it needs
        none: a cancel, or (WEBHOOK_WHEN=unwatched) an end a client here followed."""
        kind = wire.ended_type(status)
        if kind is None or (self._when == "unwatched" and followed_here):
            return
        conversation_id, generation_id = ids
        data: dict[str, Any] = {
            "user": owner,
            "conversation_id": conversation_id,
            "generation_id": generation_id,
            "status": status,
            "finish_reason": finish_reason,
            "usage": None if usage is None else usage.as_dict(),
        }
        if self._include_text:
            data["text"] = text
        stamp = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        record = {
            "body": wire.body(kind, stamp, data),
            "generation_id": generation_id,
            "check": self._when == "unwatched",
            "attempts": 0,
        }
        self._store.queue(pipe, f"msg_{secrets.token_urlsafe(16)}", record)
        self._nudge.set()

    async def watch(self, generation_id: str, follow_id: str) -> None:
        """A follow from this instance of a generation another one runs."""
        try:
            await self._store.watch(generation_id, follow_id)
        except Exception as exc:  # the end may then be told of as unwatched: at least once
            log.warning("could not mark generation %s watched: %s", generation_id, exc)

    async def unwatch(self, generation_id: str, follow_id: str) -> None:
        try:
            await self._store.unwatch(generation_id, follow_id)
        except Exception as exc:
            log.warning("could not unmark generation %s: %s", generation_id, exc)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="webhooks")

    async def close(self) -> None:
        await stop_tasks(self._task)

    async def _run(self) -> None:
        pause = RETRY_FIRST
        while True:
            try:
                due = await self._store.claim(self._lease, BATCH)
            except Exception as exc:
                log.warning("could not read the webhook queue: %s", type(exc).__name__)
                await asyncio.sleep(pause)  # back off while Redis is down: don't spin
                pause = min(pause * 2, RETRY_MAX)
                continue
            pause = RETRY_FIRST
            if due:
                await asyncio.gather(*(self._deliver(i, r) for i, r in due))
                continue
            self._nudge.clear()
            try:  # nothing due: look again in a while, or at once when an end is queued here
                async with asyncio.timeout(IDLE_POLL):
                    await self._nudge.wait()
            except TimeoutError:
                pass

    async def _deliver(self, message_id: str, record: dict[str, Any]) -> None:
        try:
            if record.get("check") and await self._store.watched(record["generation_id"]):
                self._metrics.labels("watched").inc()
                await self._store.forget(message_id)
                return
            if await self._attempt(message_id, record["body"]):
                self._metrics.labels("delivered").inc()
                await self._store.forget(message_id)
                return
            record["attempts"] += 1
            delay = wire.retry_after(record["attempts"])
            if delay is None:
                log.warning(
                    "webhook %s given up after %d attempts",
                    message_id,
                    len(wire.RETRY_SCHEDULE) + 1,
                )
                self._metrics.labels("failed").inc()
                await self._store.forget(message_id)
            else:
                self._metrics.labels("retried").inc()
                await self._store.later(message_id, record, delay)
        except Exception as exc:  # Redis: the claim's lease lapses and it is sent again
            log.warning("webhook %s: %s", message_id, type(exc).__name__)

    async def _attempt(self, message_id: str, body: str) -> bool:
        headers = wire.headers(self._key, message_id, int(time.time()), body)
        try:
            status = await self._post(body, headers)
        except Exception as exc:  # refused, reset, timed out: tried again later
            log.info("webhook %s not delivered: %s", message_id, type(exc).__name__)
            return False
        return 200 <= status < 300

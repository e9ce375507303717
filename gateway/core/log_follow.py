"""Following a generation that runs on another instance, from its log in Redis: the backlog
first, then what the process's one log reader (`LogHub`) brings, until the final event. While
the store is unreachable the follower says so once and keeps trying; a generation whose
process died is ended `interrupted` here (exactly one instance wins)."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time

from gateway.config import Settings
from gateway.core.notices import NOTICES, STORE_UNREACHABLE, NoticeSink, Sink
from gateway.core.ports import Conversations, GenerationLogs
from gateway.events import Chunk, Event, Failed, GenerationRef, Usage, is_final
from gateway.obs.metrics import GatewayMetrics
from gateway.store.log_hub import LogHub, Subscription
from gateway.store.messages import StoredMessage
from gateway.store.records import READ_PAGE, GenerationMeta
from gateway.store.unreachable import store_error

log = logging.getLogger("gateway.core.chat")

FOLLOW_FAILED = (
    "The gateway failed to read this answer's log; resume from the last event you received."
)


@dataclasses.dataclass
class _Delivered:
    """How far a follower has delivered: the seq of its last event."""

    last: int


class StoreOutage:
    """A follower reading a generation's log while the store is unreachable: its client is
    told once, and the follower retries with a growing pause until the store is back."""

    FIRST_PAUSE = 0.1
    LONGEST_PAUSE = 2.0

    def __init__(
        self, generation_id: str, ref: GenerationRef, sink: Sink, metrics: GatewayMetrics
    ) -> None:
        self._generation_id = generation_id
        self._ref = ref
        self._sink = sink
        self._metrics = metrics
        self._pause = 0.0
        self._told = False

    async def wait(self) -> None:
        self._metrics.redis_errors.inc()
        if not self._told and isinstance(self._sink, NoticeSink):
            log.warning(
                "generation %s: following paused, the store is unreachable", self._generation_id
            )
            self._sink.notice(self._ref, STORE_UNREACHABLE, NOTICES[STORE_UNREACHABLE])
        self._told = True
        self._pause = min(self.LONGEST_PAUSE, max(self.FIRST_PAUSE, self._pause * 2))
        await asyncio.sleep(self._pause)  # a retry pause, not a synchronisation

    def over(self) -> None:
        self._pause = 0.0


class LogFollower:
    """Followers of generations running elsewhere, reading their logs."""

    def __init__(
        self,
        generation_log: GenerationLogs,
        hub: LogHub,
        conversations: Conversations,
        metrics: GatewayMetrics,
        settings: Settings,
    ) -> None:
        self._log = generation_log
        self._hub = hub  # reads the logs of generations followed from here
        self._conversations = conversations
        self._metrics = metrics
        self._max_log_events = settings.max_log_events
        self._block_ms = int(min(1000.0, settings.lease_ttl * 500))

    async def follow(self, meta: GenerationMeta, after: int, sink: Sink) -> None:
        """Deliver the generation's events after `after` from its log, then the new ones the
        process's log reader brings, until its final event or until `sink` has gone. A fault
        other than an outage (an unreadable record, a bug) ends the follower with a final
        error rather than leave its client waiting; the generation itself is not touched."""
        ref = GenerationRef(meta.generation_id, meta.conversation_id)
        subscription = self._hub.subscribe(meta.generation_id)
        delivered = _Delivered(after)
        try:
            await self._deliver(meta, ref, sink, subscription, delivered)
        except Exception:
            log.exception("generation %s: following it from its log failed", meta.generation_id)
            if await sink.room():
                sink(ref, Failed(delivered.last + 1, "internal", FOLLOW_FAILED, True))
        finally:
            subscription.close()

    async def _deliver(
        self,
        meta: GenerationMeta,
        ref: GenerationRef,
        sink: Sink,
        subscription: Subscription,
        delivered: _Delivered,
    ) -> None:
        outage = StoreOutage(meta.generation_id, ref, sink, self._metrics)
        while True:
            try:
                events = await self._next_from_log(meta, delivered.last, subscription)
            except Exception as exc:
                if store_error(exc) is None:
                    raise
                subscription.stale = True  # read the log again once the store is back
                await outage.wait()  # the store is down: say so once, then keep trying
                continue
            outage.over()
            self._metrics.replayed_events.inc(len(events))
            for event in events:
                if not await sink.room():
                    return
                sink(ref, event)
                delivered.last = event.seq
                if is_final(event):
                    return

    async def _next_from_log(
        self, meta: GenerationMeta, last: int, subscription: Subscription
    ) -> list[Event]:
        """Events after `last`, waiting a while for new ones; empty when none came. They come
        from the process's log reader (`LogHub`), which holds no pooled connection for this
        follower, except when it cannot vouch for what came before (the first read, after
        falling behind or an outage): then from the log itself. A wait in vain checks the
        lease, and whether the generation still exists or ended behind `last`."""
        if subscription.stale:
            subscription.stale = False  # what the hub reads from now on is kept for it
            events = await self._log.read_after(meta.generation_id, last)
            if len(events) >= READ_PAGE:
                subscription.stale = True  # more to read first
            if not events:
                events = await self._end_behind(meta.generation_id, last)
            if events:
                return events
        deadline = asyncio.get_running_loop().time() + self._block_ms / 1000
        while not (events := subscription.take(last)) and not subscription.stale:
            if not await subscription.wait(deadline - asyncio.get_running_loop().time()):
                if await self.interrupt_if_abandoned(meta):
                    subscription.stale = True  # its terminal event is in the log now
                    return []
                return await self._end_behind(meta.generation_id, last)
        return events

    async def _end_behind(self, generation_id: str, last: int) -> list[Event]:
        """When a process dies, events it delivered but had not yet stored are lost, so a
        client may have seen seqs past the stored terminal event. It then gets that event
        numbered after what it saw: every follower ends, and seqs never repeat for it."""
        meta = await self._log.meta(generation_id)
        if meta is None:  # deleted, or its turn was refused before it started
            return [Failed(last + 1, "not_found", "The generation no longer exists.", False)]
        if meta.status == "running" or meta.last_seq > last:
            return []
        final = await self._log.last_event(generation_id)
        return [dataclasses.replace(final, seq=last + 1)] if final is not None else []

    async def interrupt_if_abandoned(self, meta: GenerationMeta) -> bool:
        """If the generation's process died, end it as interrupted and store its partial
        answer; exactly one instance wins. True when it is now ended."""
        if not await self._log.interrupt_if_abandoned(meta.generation_id):
            return False
        events = await self._log.read_after(meta.generation_id, 0, count=self._max_log_events)
        text = "".join(e.content for e in events if isinstance(e, Chunk))
        usage = Usage(completion_tokens=len(text.split()))  # an estimate: the real one died
        answer = StoredMessage(
            "assistant",
            text,
            int(time.time() * 1000),
            "incomplete",
            meta.model,
            meta.agent,
            meta.generation_id,
            usage,
        )
        await self._conversations.append_answer(meta.owner, meta.conversation_id, answer)
        return True

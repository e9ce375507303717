"""Each user's activity in Redis: a capped stream on the user's keys (`user:{sub}:activity`),
and news of it on the user's pub/sub channel (`activity:<sub>`).

An event is appended with XADD (its entry id is its `activity_id`), capped at
`MAX_STORED_EVENTS` and trimmed to ACTIVITY_TTL by entry time, and the user's channel is told
the id it reaches, all in one script; the key expires ACTIVITY_TTL after the user's last event.
Reads are by entry id, so a client that gives the last id it saw gets what followed it, from
any instance. Each process's reader (`activity_hub.py`) hears, on one connection, the channels
of the users who listen there, and reads the streams of those with news: an instance where a
user does not listen hears nothing of that user's events.

The user's running generations are read from the running set the limits keep
(`user:{sub}:running`) and checked against each generation's record and log.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import secrets
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from typing import Any, cast

from gateway.protocol.activity import MAX_RUNNING, ActivityEntry, ActivityEvent
from gateway.store.activity_hub import READ_COUNT, Found, News
from gateway.store.client import Listener, StoreClient, StorePipeline, open_pubsub
from gateway.store.keys import Keys
from gateway.store.lua import Arg, Lua

# Channels named in one SUBSCRIBE or UNSUBSCRIBE: a reader joining again with every listening
# user sends them in commands of this many.
CHANNELS_PER_COMMAND = 1000
# The reader lets other tasks run after this many messages: a join of thousands of users
# brings as many confirmations at once, read from one buffer without a pause.
YIELD_EVERY = 500

# Each user's stream holds at most this many events (approximately: trimming is by whole
# nodes), whatever ACTIVITY_TTL: a user's burst cannot grow it without bound.
MAX_STORED_EVENTS = 1000

# KEYS: the user's stream. ARGV: channel, sub, max length, oldest id kept, TTL in ms, then a
# name and a JSON per event. PUBLISH has no key, so it may go with the stream's commands even on
# a Redis Cluster (whose nodes pass a message on to the subscribers of every node); and in one
# script the news never reaches a reader before the entries it names.
_PUBLISH = """
local id
for i = 6, #ARGV, 2 do
  id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[3], '*', 'e', ARGV[i], 'a', ARGV[i + 1])
end
redis.call('XTRIM', KEYS[1], 'MINID', '~', ARGV[4])
redis.call('PEXPIRE', KEYS[1], ARGV[5])
redis.call('PUBLISH', ARGV[1], id .. ' ' .. ARGV[2])
return id
"""


def entries(rows: Any) -> list[ActivityEntry]:
    """Stream entries (id, {"e": name, "a": json}) as activity entries. An entry without
    those fields (another version's, or written by anything else with access to Redis) is
    left out: failing on it would fail the reader's whole read, every user in it, again at
    every retry."""
    return [
        ActivityEntry(entry_id, fields["e"], fields["a"])
        for entry_id, fields in rows
        if "e" in fields and "a" in fields
    ]


class ActivityLog:
    def __init__(self, redis: StoreClient, keys: Keys, ttl: int) -> None:
        self._redis = redis
        self._keys = keys
        self._ttl_ms = ttl * 1000
        self._publish = Lua(redis, _PUBLISH)
        self._heard: set[str] = set()  # the users whose channels the reader is to hear
        self._changes: dict[str, bool] = {}  # not yet (un)subscribed: sub -> to be heard
        self._changed = asyncio.Event()
        # This reader's own channel, where it is told of changes to make (see `news`).
        self._wake = keys.activity_wake(secrets.token_hex(8))

    def queue_publish(self, pipe: StorePipeline, sub: str, events: Sequence[ActivityEvent]) -> None:
        """Append `events` to the user's stream in `pipe`, trim it, and tell the channel."""
        if events:
            self._publish.queue(pipe, [self._keys.user_activity(sub)], self._args(sub, events))

    async def publish(
        self,
        sub: str,
        events: Sequence[ActivityEvent],
        also: Callable[[StorePipeline], None] | None = None,
    ) -> None:
        """Publish in a round trip of its own; `also` queues more commands into it."""
        if also is None:
            # The script alone, by hash once the server has it: about 80 µs of CPU less than
            # a pipeline that sends it whole, on every turn's start.
            if events:
                await self._publish([self._keys.user_activity(sub)], self._args(sub, events))
            return
        async with self._redis.pipeline(transaction=False) as pipe:
            self.queue_publish(pipe, sub, events)
            also(pipe)
            await pipe.execute()

    def _args(self, sub: str, events: Sequence[ActivityEvent]) -> list[Arg]:
        # The instance's clock, not Redis's: a skew only moves where trimming cuts.
        oldest = max(int(time.time() * 1000) - self._ttl_ms, 0)
        args: list[Arg] = [
            self._keys.user_activity_channel(sub),
            sub,
            MAX_STORED_EVENTS,
            f"{oldest}-0",
            self._ttl_ms,
        ]
        for event in events:
            args += [event.name, event.stored()]
        return args

    async def after(self, sub: str, after: str) -> list[ActivityEntry]:
        """The user's events kept after the id `after`, oldest first (at most about
        MAX_STORED_EVENTS), read a page at a time."""
        key = self._keys.user_activity(sub)
        found: list[ActivityEntry] = []
        while True:
            page = entries(
                await self._redis.xrange(key, min=f"({after}", max="+", count=READ_COUNT)
            )
            found += page
            if len(page) < READ_COUNT or len(found) >= 2 * MAX_STORED_EVENTS:
                return found
            after = page[-1].id

    async def read(self, cursors: Mapping[str, str]) -> Found:
        """Each user's entries after its cursor (at most READ_COUNT each), in one pipeline:
        one round trip, or one per node of a Redis Cluster."""
        subs = list(cursors)
        async with self._redis.pipeline(transaction=False) as pipe:
            for sub in subs:
                key = self._keys.user_activity(sub)
                pipe.xrange(key, min=f"({cursors[sub]}", max="+", count=READ_COUNT)
            replies = await pipe.execute(raise_on_error=False)
        return {
            sub: reply if isinstance(reply, Exception) else entries(reply)
            for sub, reply in zip(subs, replies, strict=True)
        }

    def follow(self, sub: str) -> None:
        """Hear the user's channel from now on (its confirmation comes as `(sub, None)`)."""
        self._heard.add(sub)
        self._change(sub, True)

    def unfollow(self, sub: str) -> None:
        self._heard.discard(sub)
        self._change(sub, False)

    def _change(self, sub: str, heard: bool) -> None:
        self._changes[sub] = heard
        self._changed.set()

    async def news(self) -> AsyncIterator[News]:
        """What the channels say, as they say it: None once the reader's connection has
        joined (anything may have been missed before), `(sub, None)` once a user's channel is
        heard (anything of that user's may have been missed before), `(sub, id)` for news. A
        dropped connection ends the iteration with its error; the caller joins again.

        Users' channels are (un)subscribed between two messages, by this task alone: redis-py
        reconnects a pub/sub connection whose command fails, which another task reading it
        at the same moment can leave half-open. So that a change need not wait for the next
        message (or the idle ping, within LISTEN_CHECK), a change is announced on the
        reader's own wake channel, through the pool (`announce_changes`)."""
        everyone = self._keys.activity_channel()
        users = self._keys.user_activity_channel("")
        async with await open_pubsub(self._redis) as pubsub:
            self._changes.clear()  # every user heard now is subscribed below
            await pubsub.subscribe(everyone, self._wake)
            await _subscribe(pubsub, list(self._heard), True, self._keys)
            handled = 0
            async for message in pubsub.listen():
                handled += 1
                if handled % YIELD_EVERY == 0:
                    await asyncio.sleep(0)  # replies already read do not let other tasks run
                if self._changes:
                    await self._apply_changes(pubsub)
                kind, channel = message["type"], str(message.get("channel"))
                if kind == "subscribe" and channel == everyone:
                    yield None
                elif kind == "subscribe" and channel.startswith(users):
                    sub = channel.removeprefix(users)
                    if sub in self._heard:
                        yield sub, None
                    else:  # redis-py, reconnecting, subscribed again a channel being left
                        self._change(sub, False)
                elif kind == "message" and channel != self._wake:
                    entry_id, _, sub = str(message["data"]).partition(" ")
                    yield sub, entry_id

    async def _apply_changes(self, pubsub: Listener) -> None:
        changes, self._changes = self._changes, {}
        off = [sub for sub, heard in changes.items() if not heard]
        await _subscribe(pubsub, off, False, self._keys)
        on = [sub for sub, heard in changes.items() if heard]
        await _subscribe(pubsub, on, True, self._keys)

    async def announce_changes(self) -> None:
        """Run by the reader: tell its connection that users' channels are to change. A
        publish that fails is not retried: the connection's idle ping comes within
        LISTEN_CHECK anyway."""
        while True:
            await self._changed.wait()
            self._changed.clear()
            if self._changes:
                with contextlib.suppress(Exception):
                    await self._redis.publish(self._wake, "")

    async def snapshot(self, sub: str) -> tuple[str, list[tuple[str, str, int]]]:
        """The id of the user's latest event kept (`0-0` when none is), and the user's
        generations still running on any instance, each as (conversation_id, generation_id,
        last seq in its log), oldest first, at most MAX_RUNNING."""
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.xrevrange(self._keys.user_activity(sub), count=1)
            pipe.zrange(self._keys.user_generations(sub), 0, MAX_RUNNING - 1)
            latest, members = await pipe.execute()
        last_id = str(latest[0][0]) if latest else "0-0"
        return last_id, await self._running([str(member) for member in members])

    async def _running(self, generation_ids: list[str]) -> list[tuple[str, str, int]]:
        if not generation_ids:
            return []
        async with self._redis.pipeline(transaction=False) as pipe:
            for generation_id in generation_ids:
                pipe.hmget(self._keys.generation(generation_id), "status", "conversation_id")
                pipe.xrevrange(self._keys.events(generation_id), count=1)
            replies = await pipe.execute()
        found = []
        for i, generation_id in enumerate(generation_ids):
            status, conversation_id = cast(list[str | None], replies[2 * i])
            last = cast(list[tuple[str, Any]], replies[2 * i + 1])
            if status == "running" and conversation_id is not None:
                last_seq = int(last[0][0].split("-")[0]) if last else 0
                found.append((conversation_id, generation_id, last_seq))
        return found


async def _subscribe(pubsub: Listener, subs: Iterable[str], heard: bool, keys: Keys) -> None:
    channels = (keys.user_activity_channel(sub) for sub in subs)
    while batch := list(itertools.islice(channels, CHANNELS_PER_COMMAND)):
        await (pubsub.subscribe if heard else pubsub.unsubscribe)(*batch)

"""The gateway's generation-log writer in the bench's own process, on the bench's Redis.

The same classes the gateway opens (`gateway/services.py`): a `LogWriter` over a
`GenerationLog`, with the client and the flush window of an unconfigured gateway
(LOG_FLUSH_MS's default). 50 generations each add an event every 20 ms, as a streaming
answer does; then each ends the way the gateway ends one: its last chunk and `finish` with
the answer's storing commands (`ConversationStore.queue_answer`) in the same write. The
CPU is all of this process's (`time.process_time()`) from the first event to the last
finish, pacing included; creating the generations' records before that is left out.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Sequence

import redis.exceptions

from bench.phases import Context, fits, say
from bench.procs import HOST, BenchError
from bench.results import RedisLoad
from gateway.config import ConfigError, Settings
from gateway.events import Chunk, Done, Start, Usage
from gateway.services import open_client
from gateway.store.client import StoreClient
from gateway.store.conversations import ConversationStore
from gateway.store.keys import Keys
from gateway.store.log_writer import LogWriter
from gateway.store.logs import GenerationLog
from gateway.store.messages import StoredMessage
from gateway.store.records import GenerationMeta

GENERATIONS = 50
INTERVAL_S = 0.02
# A quarter of the interval: each event is added within 5 ms of its time, and the writer's
# batches (its window is 10 ms) hold what they would if events came one by one.
TICK_S = 0.005
PREFIX = "bench-log:"  # apart from the keys of the gateway under test
OWNER = "bench"


async def redis_phase(ctx: Context) -> None:
    if not fits(ctx, "redis"):
        return
    say(f"redis: {GENERATIONS} generations' logs for {ctx.opts.redis_seconds:g} s ...")
    url = f"redis://{HOST}:{ctx.redis.port}/0"
    try:
        settings = Settings.from_env({"REDIS_URL": url, "REDIS_PREFIX": PREFIX})
    except ConfigError as exc:
        raise BenchError(f"the gateway refused the configuration: {exc}") from None
    client = open_client(settings, url)
    try:
        ctx.run.redis_load = await _write_logs(settings, client, ctx.opts.redis_seconds)
    except redis.exceptions.RedisError as exc:
        raise BenchError(f"Redis failed: {exc!r}") from None
    finally:
        await client.aclose()


class _Parts:
    """The gateway's store objects, built as gateway/services.py builds them."""

    def __init__(self, settings: Settings, client: StoreClient) -> None:
        keys = Keys(settings.redis_prefix)
        self.log = GenerationLog(
            client,
            keys,
            ended_ttl=settings.generation_ttl,
            max_events=settings.max_log_events,
            lease_ttl=settings.lease_ttl,
            instance=f"{OWNER}:{secrets.token_hex(3)}",
        )
        self.writer = LogWriter(self.log, settings.log_flush_ms)
        self.conversations = ConversationStore(
            client,
            keys,
            settings.conversation_ttl,
            settings.max_stored_turns,
            generation_retention=self.log.retention,
        )


async def _write_logs(settings: Settings, client: StoreClient, seconds: float) -> RedisLoad:
    parts = _Parts(settings, client)
    tag = secrets.token_hex(4)
    ids = [f"gen_{tag}{i:04d}" for i in range(GENERATIONS)]
    await _create(parts.log, client, ids)
    chunks = max(1, round(seconds / INTERVAL_S))
    writer = parts.writer
    writer.start()
    try:
        cpu, wall = time.process_time(), time.monotonic()
        await _drive(writer, ids, chunks)
        await writer.flush()  # what the window still holds, so each finish stands alone
        trips = [await _finish(parts, g, chunks) for g in ids]
        cpu, wall = time.process_time() - cpu, time.monotonic() - wall
    finally:
        await writer.close()
    expected = GENERATIONS * (chunks + 3)  # start, chunks, a last chunk, done
    if writer.events_written != expected:
        raise BenchError(f"{writer.events_written} log events written of {expected}")
    return RedisLoad(
        GENERATIONS,
        INTERVAL_S * 1000,
        settings.log_flush_ms,
        wall,
        cpu,
        writer.events_written,
        writer.round_trips,
        tuple(trips),
    )


async def _create(log: GenerationLog, client: StoreClient, ids: Sequence[str]) -> None:
    """The records a turn's admission writes before the first event."""
    async with client.pipeline(transaction=False) as pipe:
        for gid in ids:
            meta = GenerationMeta(
                generation_id=gid,
                owner=OWNER,
                conversation_id=f"conv_{gid}",
                request_id=None,
                model="bench",
                agent="chat",
            )
            log.queue_create(pipe, meta)
        await pipe.execute()


async def _drive(writer: LogWriter, ids: Sequence[str], chunks: int) -> None:
    """Each generation's start, then a chunk every interval: the i-th generation's k-th at
    (k + i / len(ids)) intervals, so that streams started apart do not tick together. One
    task adds whatever is due and sleeps at least `TICK_S`: a task per generation would add
    a wake-up per event (on a virtual machine, up to about 150 µs of CPU after a sleep),
    a cost of pacing (of the upstream's reads, in the gateway), not of Redis."""
    loop = asyncio.get_running_loop()
    step, first = INTERVAL_S / len(ids), loop.time()
    for gid in ids:
        writer.add(gid, Start(1, "bench", "chat"))
    done, total = 0, len(ids) * chunks
    while done < total:
        # Pacing, not synchronisation: the next event is due at a fixed time.
        await asyncio.sleep(max(TICK_S, first + (done + len(ids)) * step - loop.time()))
        now = loop.time()
        while done < total and first + (done + len(ids)) * step <= now:
            chunk, generation = divmod(done, len(ids))
            seq = chunk + 2
            writer.add(ids[generation], Chunk(seq, f" t{seq}"))
            done += 1


async def _finish(parts: _Parts, gid: str, chunks: int) -> int:
    """The generation's last chunk, then its end with the answer; the round trips it took."""
    writer, before = parts.writer, parts.writer.round_trips
    last = chunks + 2
    writer.add(gid, Chunk(last, " end"))
    answer = StoredMessage(
        role="assistant",
        content="".join(f" t{seq}" for seq in range(2, last)) + " end",
        created_at=int(time.time() * 1000),
        model="bench",
        agent="chat",
        generation_id=gid,
        usage=Usage(prompt_tokens=5, completion_tokens=chunks + 1),
    )
    done = Done(last + 1, "stop", Usage(prompt_tokens=5, completion_tokens=chunks + 1))
    stored = await writer.finish(
        gid,
        done,
        "complete",
        lambda pipe: parts.conversations.queue_answer(pipe, OWNER, f"conv_{gid}", answer),
    )
    if stored != "stored":
        raise BenchError(f"generation {gid}'s end was {stored}, not stored")
    return writer.round_trips - before

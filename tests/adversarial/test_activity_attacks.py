"""Attacks on the activity fan-out (docs/activity.md): a signed-in user whose token's `sub` is
built to hurt the process's one activity reader, or who opens and drops listeners in a loop.
Every other user of the instance must get their activity as before, and the reader must hold
nothing of a listener once it is gone."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable
from dataclasses import replace

import httpx2
import pytest
from redis.asyncio import Redis

from gateway.config import Settings
from gateway.protocol.activity import conversation_updated
from gateway.store.activity import ActivityLog
from gateway.store.keys import Keys
from tests.conftest import GatewayFactory
from tests.support.raw_ws import RawSocket

Mint = Callable[..., str]
ATTEMPTS = 60


def activity_store(settings: Settings) -> tuple[Redis, ActivityLog]:
    assert settings.redis_url is not None
    redis = Redis.from_url(settings.redis_url, decode_responses=True)
    return redis, ActivityLog(redis, Keys(settings.redis_prefix), settings.activity_ttl)


async def test_a_sub_no_store_key_can_hold_is_refused_before_it_reaches_the_reader(
    start_gateway: GatewayFactory,
    settings: Settings,
    token: Mint,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """JSON lets a token's `sub` hold a lone surrogate ("\\udc80"), which cannot be encoded
    into a Redis key. Let in, an `/activity` stream resumed with `Last-Event-ID` (with no
    connection limit, nothing touches the store before it listens) put that user into the
    reader's next read of many users, which then failed as a whole: every user of the
    instance lost their activity for as long as the attack went on."""
    redis, store = activity_store(settings)
    mallory = token("mallory-\udc80")
    with (
        caplog.at_level(logging.WARNING, logger="gateway.store"),
        start_gateway(limits=replace(settings.limits, connections=0)) as url,
    ):
        victim = f"victim-{uuid.uuid4().hex[:8]}"
        socket = await RawSocket.connect(url, token(victim), activity=True)
        await socket.ready()
        statuses: list[int] = []
        async with httpx2.AsyncClient(base_url=url, timeout=10) as client:

            async def attack() -> None:
                headers = {"Authorization": f"Bearer {mallory}", "Last-Event-ID": "1-0"}
                try:
                    statuses.append((await client.get("/activity", headers=headers)).status_code)
                except httpx2.HTTPError:
                    statuses.append(0)  # the stream broke mid-response

            for n in range(ATTEMPTS):
                attacks = [asyncio.create_task(attack()) for _ in range(3)]
                await store.publish(victim, [conversation_updated(f"c{n}", "t", 1)])
                frame = await socket.read_json(within=10)
                assert (frame["event"], frame["conversation_id"]) == (
                    "conversation.updated",
                    f"c{n}",
                )
                await asyncio.gather(*attacks)
        await socket.aclose()
    await redis.aclose()
    assert set(statuses) == {401}, f"mallory's streams ended with {sorted(set(statuses))}"
    failed = [r.getMessage() for r in caplog.records if "reading activity failed" in r.getMessage()]
    assert not failed, f"the activity reader failed for everyone: {failed}"

"""Per-user limits, enforced across instances in Redis: floods beyond them are refused with
rate_limited and a retry_after, nothing is taken by a refused turn, other users are unaffected."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import httpx2
import jwt
from redis.asyncio import Redis

from gateway.config import Limits, Settings
from gateway.store.keys import Keys
from tests.conftest import GatewayFactory
from tests.support.tokens import TEST_SECRET
from tests.support.ws import close_code, connected, open_socket, receive, send, until_done

Mint = Callable[..., str]
LONG = "fake-i20-n200"  # 200 tokens, 20 ms apart: runs until cancelled


def tier_token(sub: str, tier: str) -> str:
    claims = {"sub": sub, "tier": tier, "exp": int(time.time()) + 600}
    return jwt.encode(claims, TEST_SECRET, "HS256")


async def post(url: str, token: str, body: dict[str, Any]) -> httpx2.Response:
    async with httpx2.AsyncClient(timeout=20) as client:
        headers = {"Authorization": f"Bearer {token}"}
        return await client.post(f"{url}/completion", json=body, headers=headers)


async def test_requests_per_minute_across_two_instances(
    start_gateway: GatewayFactory, token: Mint
) -> None:
    limits = Limits(requests_per_minute=4, concurrent_generations=0, connections=0)
    with start_gateway(limits=limits) as one, start_gateway(limits=limits) as two:
        answers = [await post(url, token(), {"message": "hi"}) for url in (one, two, one, two)]
        assert [r.status_code for r in answers] == [200] * 4
        refused = await post(two, token(), {"message": "hi"})
        assert refused.status_code == 429
        body = refused.json()
        assert body["error"] == "rate_limited" and "4 per minute" in body["detail"]
        assert 0 < body["retry_after"] <= 15  # one request's interval: 60 s / 4
        assert int(refused.headers["Retry-After"]) == max(1, -(-body["retry_after"] // 1))
        # Another user is unaffected; on a socket the refusal is an error frame.
        assert (await post(one, token("bob"), {"message": "hi"})).status_code == 200
        ws = await connected(one, token())
        await send(ws, type="completion", id="r", message="hi")
        (error,) = await until_done(ws, "r")
        assert error["code"] == "rate_limited" and error["retry_after"] > 0
        assert error["retryable"] is True


async def test_concurrent_generations_across_instances_and_released_at_the_end(
    start_gateway: GatewayFactory, token: Mint
) -> None:
    limits = Limits(requests_per_minute=0, concurrent_generations=1, connections=0)
    with start_gateway(limits=limits) as one, start_gateway(limits=limits) as two:
        first = await connected(one, token())
        await send(first, type="completion", id="a", message="long", model=LONG)
        assert (await receive(first))["type"] == "start"
        second = await connected(two, token())
        await send(second, type="completion", id="b", message="hi")
        (error,) = await until_done(second, "b")
        assert error["code"] == "rate_limited" and "at once" in error["message"]
        # The refused turn stored nothing: the user has only the running turn's conversation.
        async with httpx2.AsyncClient(timeout=20) as client:
            listed = await client.get(
                f"{two}/conversations", headers={"Authorization": f"Bearer {token()}"}
            )
        assert len(listed.json()["data"]) == 1, listed.json()
        assert (await post(two, token("bob"), {"message": "hi"})).status_code == 200
        await send(first, type="cancel", id="a")
        assert (await until_done(first, "a"))[-1]["finish_reason"] == "cancelled"
        await send(second, type="completion", id="c", message="hi")
        assert (await until_done(second, "c"))[-1]["type"] == "done"


async def test_a_slot_held_by_a_generation_that_ended_elsewhere_is_swept(
    start_gateway: GatewayFactory, settings: Settings, token: Mint
) -> None:
    """An instance that died leaves its user's slot behind; at the limit it is checked and
    freed instead of refusing the user until it lapses."""
    assert settings.redis_url is not None
    redis = Redis.from_url(settings.redis_url, decode_responses=True)
    key = Keys(settings.redis_prefix).user_generations("alice")
    await redis.zadd(key, {"gen_gone": time.time() * 1000 + 3_600_000})
    await redis.aclose()
    limits = Limits(requests_per_minute=0, concurrent_generations=1, connections=0)
    with start_gateway(limits=limits) as url:
        assert (await post(url, token(), {"message": "hi"})).status_code == 200


async def test_connections_beyond_the_limit_close_4429(
    start_gateway: GatewayFactory, token: Mint
) -> None:
    limits = Limits(connections=2)
    with start_gateway(limits=limits) as one, start_gateway(limits=limits) as two:
        first = await connected(one, token())
        await connected(two, token())
        refused = await open_socket(one, token())
        error = json.loads(await refused.recv())
        assert error["type"] == "error" and error["code"] == "rate_limited"
        assert error["retry_after"] > 0
        assert await close_code(refused) == 4429
        await connected(one, token("bob"))  # another user is unaffected
        await first.close()
        # The closed socket's place is free again (its release is awaited before close ends).
        third = await _connect_when_free(two, token())
        assert third is not None


async def _connect_when_free(url: str, token: str) -> Any:
    """The server releases a closed socket's slot after the close handshake; retry within a
    deadline rather than guess how long that takes."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        ws = await open_socket(url, token)
        frame = json.loads(await ws.recv())
        if frame["type"] == "ready":
            return ws
        await close_code(ws)
    return None


async def test_tokens_per_day_are_reserved_then_reconciled_from_usage(
    start_gateway: GatewayFactory, settings: Settings, token: Mint
) -> None:
    limits = Limits(requests_per_minute=0, concurrent_generations=0, tokens_per_day=60)
    with start_gateway(limits=limits) as url:
        answer = await post(url, token(), {"message": "one two three", "model": "echo"})
        assert answer.status_code == 200
        usage = answer.json()["usage"]
        assert settings.redis_url is not None
        redis = Redis.from_url(settings.redis_url, decode_responses=True)
        keys = await redis.keys(f"{settings.redis_prefix}user:{{alice}}:tokens:*")
        spent = int(str(await redis.get(keys[0])))
        assert spent == usage["prompt_tokens"] + usage["completion_tokens"]
        await redis.set(keys[0], 60)  # the day's budget is used up
        await redis.aclose()
        refused = await post(url, token(), {"message": "more"})
        assert refused.status_code == 429
        assert "00:00 UTC" in refused.json()["detail"]
        assert 0 < int(refused.headers["Retry-After"]) <= 86_400


async def test_a_tier_claim_picks_higher_limits(start_gateway: GatewayFactory) -> None:
    free = Limits(requests_per_minute=1, concurrent_generations=0, connections=0)
    pro = Limits(requests_per_minute=100, concurrent_generations=0, connections=0)
    with start_gateway(limits=free, limit_tiers={"pro": pro}) as url:
        for _ in range(3):
            assert (
                await post(url, tier_token("carol", "pro"), {"message": "hi"})
            ).status_code == 200
        assert (await post(url, tier_token("dave", "free"), {"message": "hi"})).status_code == 200
        assert (await post(url, tier_token("dave", "free"), {"message": "hi"})).status_code == 429


async def test_a_retry_with_its_idempotency_key_reattaches_even_at_the_limit(
    start_gateway: GatewayFactory, token: Mint
) -> None:
    """A client retrying after a dropped connection is not a new turn: it re-attaches to the
    generation its key started without counting against the limits."""
    limits = Limits(requests_per_minute=1, concurrent_generations=1, connections=0)
    with start_gateway(limits=limits) as url:
        first = await connected(url, token())
        await send(first, type="completion", id="a", message="x", model=LONG, idempotency_key="k1")
        started = await receive(first)
        again = await connected(url, token())
        await send(again, type="completion", id="b", message="x", model=LONG, idempotency_key="k1")
        attached = await receive(again)
        assert attached["type"] == "start"
        assert attached["generation_id"] == started["generation_id"]
        await send(again, type="completion", id="c", message="new turn", model=LONG)
        (refused,) = await until_done(again, "c")
        assert refused["code"] == "rate_limited"
        await send(first, type="cancel", id="a")
        assert (await until_done(first, "a"))[-1]["finish_reason"] == "cancelled"

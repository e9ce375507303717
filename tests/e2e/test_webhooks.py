"""Webhooks when nobody is watching: two real gateway processes on one Redis, a receiver that
checks Standard Webhooks signatures on its own."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest

from gateway.config import ConfigError, Settings
from gateway.config.rules import webhook_key
from gateway.protocol.webhooks import RETRY_SCHEDULE, ended_type, retry_after, signature
from tests.support.exposition import parse
from tests.support.polling import settle
from tests.support.processes import (
    GatewayProcess,
    config_file,
    gateway_environment,
    start_pair,
    start_process,
)
from tests.support.redis import RedisServer
from tests.support.upstream import FakeUpstream
from tests.support.webhook_receiver import SECRET, Receiver, webhook_receiver
from tests.support.ws import connected, receive, send, until_done

Mint = Callable[..., str]
HELD = "fake-i5-n20-hold10"  # ten chunks, then waits for `release`


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    with webhook_receiver() as found:
        yield found


@pytest.fixture(scope="module")
def environment(
    redis_server: RedisServer,
    upstream: tuple[FakeUpstream, str],
    receiver: Receiver,
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("webhooks")
    return gateway_environment(
        redis_server.url,
        config_file(folder, upstream[1]),
        WEBHOOK_URL=receiver.url,
        WEBHOOK_SECRET=SECRET,
        WEBHOOK_TIMEOUT="2",
    )


@pytest.fixture(scope="module")
def pair(
    environment: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[GatewayProcess, GatewayProcess]]:
    a, b = start_pair(tmp_path_factory.mktemp("webhook-pair"), environment)
    yield a, b
    a.stop()
    b.stop()


def user() -> str:
    return f"w-{uuid.uuid4().hex[:8]}"


async def ask_and_leave(url: str, token: str) -> str:
    """Start a held completion, read its start, close the socket and wait until the gateway
    has let it go (it has no socket open): nobody follows the generation any more."""
    ws = await connected(url, token)
    await send(ws, type="completion", id="q", message="hello", model=HELD)
    start = await receive(ws)
    assert start["type"] == "start", start
    open_before = await sockets_open(url)
    await ws.close()
    gone = await settle(lambda: sockets_open(url, open_before - 1))
    assert gone, "the socket was not let go"
    return str(start["generation_id"])


async def sockets_open(url: str, expected: float | None = None) -> Any:
    """The gateway's open sockets; with `expected`, whether that is how many are open."""
    async with httpx2.AsyncClient(timeout=5) as client:
        text = (await client.get(f"{url}/metrics")).text
    count = parse(text).value("gateway_connections", transport="ws")
    return count if expected is None else count == expected


def of(receiver: Receiver, generation_id: str) -> list[dict[str, object]]:
    return [d.json for d in receiver.answered() if d.json["data"]["generation_id"] == generation_id]


async def test_an_unwatched_end_is_posted_once_signed_and_a_watched_one_is_not(
    pair: tuple[GatewayProcess, GatewayProcess],
    token: Mint,
    receiver: Receiver,
    fake_upstream: FakeUpstream,
) -> None:
    a, b = pair
    alice = user()
    # Watched on the instance that runs it: its socket stays to the end.
    here = await connected(a.url, token(alice))
    await send(here, type="completion", id="w", message="hi", model="fake")
    watched_here = (await until_done(here, "w"))[0]["generation_id"]
    # Watched from the other instance: the asking socket leaves, a resume there follows.
    watched_there = await ask_and_leave(a.url, token(alice))
    follower = await connected(b.url, token(alice))
    await send(follower, type="resume", generation_id=watched_there, after=0, id="r")
    fake_upstream.release(HELD)
    await until_done(follower, "r")
    # Unwatched: the asking socket leaves and nobody resumes.
    await here.close()
    await follower.close()
    unwatched = await ask_and_leave(a.url, token(alice))
    fake_upstream.release(HELD)
    assert await settle(lambda: len(of(receiver, unwatched)) == 1), receiver.received
    (sent,) = [d for d in receiver.answered() if d.json["data"]["generation_id"] == unwatched]
    assert sent.signed()
    assert sent.headers["webhook-id"].startswith("msg_")
    body = sent.json
    assert body["type"] == "generation.completed"
    assert body["data"]["user"] == alice and body["data"]["status"] == "complete"
    assert body["data"]["finish_reason"] == "stop" and body["data"]["usage"]["total_tokens"] > 0
    assert "text" not in body["data"]  # WEBHOOK_INCLUDE_TEXT is off
    # The watched ends were decided before (here) or at the first claim (there): never sent.
    assert of(receiver, watched_here) == [] and of(receiver, watched_there) == []


async def test_a_delivery_survives_a_failing_receiver_and_a_restart_with_one_id(
    environment: dict[str, str],
    pair: tuple[GatewayProcess, GatewayProcess],
    token: Mint,
    receiver: Receiver,
    fake_upstream: FakeUpstream,
    tmp_path: Path,
) -> None:
    a, b = pair
    receiver.status = 503
    try:
        generation_id = await ask_and_leave(a.url, token(user()))
        fake_upstream.release(HELD)

        def attempts() -> list[str]:
            return [
                d.headers["webhook-id"]
                for d in receiver.received
                if d.json["data"]["generation_id"] == generation_id
            ]

        assert await settle(lambda: len(attempts()) >= 1), "no first attempt"
        # Every gateway of the deployment goes down between the end and its delivery.
        a.stop()
        b.stop()
        count = len(attempts())
    finally:
        receiver.status = 200
    fresh = start_process(tmp_path, environment)
    try:
        assert await settle(lambda: len(of(receiver, generation_id)) == 1, within=15)
        ids = attempts()
        assert len(ids) > count and len(set(ids)) == 1  # retried, always under one webhook-id
    finally:
        fresh.stop()


# Pure parts.


def test_the_signature_is_the_standard_webhooks_reference_one() -> None:
    # The example of the Standard Webhooks specification.
    key = webhook_key("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
    found = signature(key, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, '{"test": 2432232314}')
    assert found == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_retries_start_within_a_minute_and_end() -> None:
    waits = [retry_after(n) for n in range(1, len(RETRY_SCHEDULE) + 2)]
    assert waits[0] is not None and waits[0] <= 60
    assert waits[-1] is None and all(w is not None for w in waits[:-1])
    assert ended_type("cancelled") is None
    assert (ended_type("complete"), ended_type("interrupted")) == (
        "generation.completed",
        "generation.failed",
    )


@pytest.mark.parametrize(
    ("env", "fragment"),
    [
        ({"WEBHOOK_URL": "https://example.com/hook"}, "needs WEBHOOK_SECRET"),
        ({"WEBHOOK_URL": "https://example.com/hook", "WEBHOOK_SECRET": "plain"}, "whsec_"),
        ({"WEBHOOK_URL": "https://example.com/hook", "WEBHOOK_SECRET": "whsec_c2hvcnQ="}, "24"),
        ({"WEBHOOK_URL": "ftp://example.com/hook", "WEBHOOK_SECRET": SECRET}, "http"),
        ({"WEBHOOK_URL": "https://example.com/hook", "WEBHOOK_WHEN": "never"}, "WEBHOOK_WHEN"),
    ],
)
def test_bad_webhook_settings_are_refused(env: dict[str, str], fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        Settings.from_env({"JWT_SECRET": "x" * 32, **env})

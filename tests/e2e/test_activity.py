"""A user's activity across sockets, devices and instances: two real gateway processes on one
Redis (docs/activity.md)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import replace
from typing import Any

import httpx2
import pytest

from gateway.config import Settings
from tests.conftest import GatewayFactory
from tests.support.bystander import fresh_request_seconds
from tests.support.polling import settle
from tests.support.processes import GatewayProcess, config_file, gateway_environment, start_pair
from tests.support.redis import RedisServer
from tests.support.redis_cluster import Cluster, running_cluster
from tests.support.sse import SseEvent, stream_events
from tests.support.upstream import FakeUpstream
from tests.support.ws import (
    connected,
    connected_ready,
    next_activity,
    receive,
    send,
    text_of,
    through_seq,
    until_done,
)

Mint = Callable[..., str]
SLOW = "fake-i5-n20"  # 22 events: start, 20 chunks, done
SLOW_TEXT = "".join(f" t{i}" for i in range(20))
HELD = "fake-i5-n20-hold10"  # ten chunks, then waits for `release`


@pytest.fixture(scope="module", params=["server", "cluster"])
def pair(
    request: pytest.FixtureRequest,
    redis_server: RedisServer,
    upstream: tuple[FakeUpstream, str],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[GatewayProcess, GatewayProcess]]:
    """Two instances on one Redis server, then on a Redis Cluster of three primaries (where
    each user's activity is polled, not read by a blocked XREAD)."""
    folder = tmp_path_factory.mktemp("activity")
    config = config_file(folder, upstream[1])
    if request.param == "server":
        environment = gateway_environment(redis_server.url, config)
    else:
        cluster: Cluster = request.getfixturevalue("cluster")
        environment = gateway_environment(cluster.url, config, REDIS_CLUSTER="1")
    a, b = start_pair(folder, environment)
    yield a, b
    a.stop()
    b.stop()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with running_cluster(tmp_path_factory.mktemp("cluster"), primaries=3) as found:
        yield found


def user() -> str:
    return f"u-{uuid.uuid4().hex[:8]}"


def order(activity_id: str) -> tuple[int, int]:
    ms, n = activity_id.split("-")
    return int(ms), int(n)


def conversation() -> str:
    return f"act-{uuid.uuid4().hex[:8]}"


async def both_ends(ws: Any, request_id: str, generation_id: str) -> list[dict[str, Any]]:
    """Every frame until both the final event of `request_id` and the `generation.ended` of
    `generation_id` came (in either order: one is the log's, the other the activity's)."""
    frames: list[dict[str, Any]] = []
    done = ended = False
    async with asyncio.timeout(10):
        while not (done and ended):
            frame = await receive(ws, activity=True)
            frames.append(frame)
            done = done or (frame.get("id") == request_id and bool(frame.get("done")))
            ended = ended or (
                frame["type"] == "activity"
                and frame["event"] == "generation.ended"
                and frame["generation_id"] == generation_id
            )
    return frames


async def nothing_but_pong(ws: Any) -> bool:
    """True when the socket's next frame, asked for now, is the pong: no activity came."""
    await send(ws, type="ping")
    frame = await receive(ws, activity=True)
    return bool(frame["type"] == "pong")


async def test_a_question_on_one_instance_streams_on_the_users_socket_on_the_other(
    pair: tuple[GatewayProcess, GatewayProcess], token: Mint
) -> None:
    a, b = pair
    alice = user()
    phone = await connected(a.url, token(alice))
    laptop = await connected(b.url, token(alice))
    stranger = await connected(b.url, token(user()))
    conversation_id = conversation()
    await send(
        phone, type="completion", id="q", message="Where?", model=SLOW,
        conversation_id=conversation_id,
    )  # fmt: skip
    started = await next_activity(laptop, "generation.started")
    assert started["conversation_id"] == conversation_id
    message = started["message"]
    assert message["id"].startswith("msg_")  # the stored message's id, as the tree names it
    assert (message["content"], message["truncated"]) == ("Where?", False)
    assert started["model"] == SLOW and started["agent"] == "chat"
    updated = await next_activity(laptop, "conversation.updated")
    assert updated["conversation_id"] == conversation_id and updated["title"] == "Where?"
    # The laptop shows the answer with the existing resume frame.
    generation_id = started["generation_id"]
    await send(laptop, type="resume", generation_id=generation_id, after=0, id="l")
    assert (await receive(laptop))["type"] == "resumed"
    frames = await both_ends(laptop, "l", generation_id)
    assert text_of([f for f in frames if f.get("id") == "l"]) == SLOW_TEXT
    (ended,) = [f for f in frames if f["type"] == "activity"]
    assert (ended["status"], ended["finish_reason"]) == ("complete", "stop")
    assert order(started["activity_id"]) < order(ended["activity_id"])
    # The socket that asked gets the same events (it knows its own by generation_id).
    mine = await next_activity(phone, "generation.ended", generation_id=generation_id)
    assert mine["activity_id"] == ended["activity_id"]
    assert await nothing_but_pong(stranger)  # another user sees nothing


async def test_a_socket_opened_mid_answer_attaches_from_ready_running(
    pair: tuple[GatewayProcess, GatewayProcess], token: Mint, fake_upstream: FakeUpstream
) -> None:
    a, b = pair
    alice = user()
    phone = await connected(a.url, token(alice))
    await send(
        phone, type="completion", id="p", message="x", model=HELD,
        conversation_id=conversation(),
    )  # fmt: skip
    first = await until_done(phone, "p", through_seq(11))  # start and ten chunks: held now
    generation_id = first[0]["generation_id"]
    tab, ready = await connected_ready(b.url, token(alice))
    (running,) = ready["running"]
    assert running["generation_id"] == generation_id
    assert running["conversation_id"] == first[0]["conversation_id"]
    assert 0 <= running["last_seq"] <= 11  # what the log holds (written every LOG_FLUSH_MS)
    async with httpx2.AsyncClient(timeout=10) as client:
        listed = await client.get(
            f"{a.url}/generations",
            params={"status": "running"},
            headers={"Authorization": f"Bearer {token(alice)}"},
        )
    assert [g["generation_id"] for g in listed.json()["data"]] == [generation_id]
    await send(tab, type="resume", generation_id=generation_id, after=0, id="t")
    assert (await receive(tab))["type"] == "resumed"
    fake_upstream.release(HELD)
    phone_frames = [*first, *await until_done(phone, "p")]
    tab_frames = await both_ends(tab, "t", generation_id)
    assert text_of([f for f in tab_frames if f.get("id") == "t"]) == text_of(phone_frames)
    assert [f["status"] for f in tab_frames if f["type"] == "activity"] == ["complete"]
    _, later = await connected_ready(a.url, token(alice))
    assert later["running"] == []


async def test_activity_off_for_one_socket(
    pair: tuple[GatewayProcess, GatewayProcess], token: Mint
) -> None:
    a, b = pair
    alice = user()
    quiet, ready = await connected_ready(b.url, token(alice), activity=False)
    assert ready["running"] is None and ready["activity_id"] is None
    listening = await connected(b.url, token(alice))
    asker = await connected(a.url, token(alice))
    await send(asker, type="completion", id="q", message="hi", model="fake")
    frames = await until_done(asker, "q")
    await next_activity(listening, "generation.ended", generation_id=frames[0]["generation_id"])
    assert await nothing_but_pong(quiet)


async def test_rename_and_delete_reach_every_socket_of_the_user(
    pair: tuple[GatewayProcess, GatewayProcess], token: Mint
) -> None:
    a, b = pair
    alice = user()
    conversation_id = conversation()
    laptop = await connected(b.url, token(alice))
    phone = await connected(a.url, token(alice))
    await send(phone, type="completion", id="q", message="hi", conversation_id=conversation_id)
    await until_done(phone, "q")
    headers = {"Authorization": f"Bearer {token(alice)}"}
    async with httpx2.AsyncClient(base_url=a.url, headers=headers, timeout=10) as client:
        path = f"/conversations/{conversation_id}"
        assert (await client.patch(path, json={"title": "Trip"})).status_code == 200
        renamed = await next_activity(laptop, "conversation.updated", title="Trip")
        assert renamed["conversation_id"] == conversation_id
        assert (await client.delete(path)).status_code == 204
    deleted = await next_activity(laptop, "conversation.deleted")
    assert deleted["conversation_id"] == conversation_id


async def test_branch_changes_reach_every_socket_of_the_user(
    pair: tuple[GatewayProcess, GatewayProcess], token: Mint
) -> None:
    """Switching the active branch and deleting a message move what the conversation shows:
    the user's other devices hear `conversation.updated` and read the path again."""
    a, b = pair
    alice = user()
    conversation_id = conversation()
    laptop = await connected(b.url, token(alice))
    phone = await connected(a.url, token(alice))
    await send(phone, type="completion", id="q", message="hi", conversation_id=conversation_id)
    await until_done(phone, "q")
    headers = {"Authorization": f"Bearer {token(alice)}"}
    async with httpx2.AsyncClient(base_url=a.url, headers=headers, timeout=10) as client:
        path = f"/conversations/{conversation_id}"
        first = (await client.get(path)).json()["messages"][-1]["id"]
        await send(
            phone, type="completion", id="r", regenerate=first, conversation_id=conversation_id
        )
        regenerated = await until_done(phone, "r")
        await next_activity(
            laptop, "generation.ended", generation_id=regenerated[0]["generation_id"]
        )
        second = (await client.get(path)).json()["messages"][-1]["id"]
        assert second != first
        assert (await client.patch(path, json={"active_message_id": first})).status_code == 200
        switched = await next_activity(laptop, "conversation.updated")
        assert switched["conversation_id"] == conversation_id
        assert (await client.delete(f"{path}/messages/{second}")).status_code == 204
        pruned = await next_activity(laptop, "conversation.updated")
        assert pruned["conversation_id"] == conversation_id


async def activity_stream(
    url: str, token: str, last_id: str | None = None
) -> AsyncIterator[SseEvent]:
    headers = {"Authorization": f"Bearer {token}"}
    if last_id is not None:
        headers["Last-Event-ID"] = last_id
    async with (
        httpx2.AsyncClient(timeout=30) as client,
        client.stream("GET", f"{url}/activity", headers=headers) as response,
    ):
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        async for event in stream_events(response.aiter_lines()):
            yield event


async def test_the_activity_stream_resumes_with_last_event_id_on_the_other_instance(
    pair: tuple[GatewayProcess, GatewayProcess], token: Mint
) -> None:
    a, b = pair
    alice = user()
    asker, ready = await connected_ready(a.url, token(alice))
    # From the socket's start: what comes before the stream connects is not missed.
    events = activity_stream(a.url, token(alice), ready["activity_id"])
    await send(asker, type="completion", id="1", message="one", model="fake")
    first = await asyncio.wait_for(anext(events), 10)
    assert first.event == "generation.started" and first.json()["message"]["content"] == "one"
    await events.aclose()  # type: ignore[attr-defined]  # the client drops here
    await until_done(asker, "1")
    await send(asker, type="completion", id="2", message="two", model="fake")
    await until_done(asker, "2")
    # Reconnected to the other instance with the last id seen: what it missed, in order.
    assert first.raw_id is not None
    seen: list[SseEvent] = []
    async with asyncio.timeout(10):
        async for event in activity_stream(b.url, token(alice), first.raw_id):
            seen.append(event)
            if (
                event.event == "generation.ended"
                and event.json()["generation_id"] != (first.json()["generation_id"])
            ):
                break
    names = [e.event for e in seen]
    assert names == [
        "conversation.updated",
        "generation.ended",
        "generation.started",
        "conversation.updated",
        "generation.ended",
    ]
    assert [e.json()["activity_id"] for e in seen] == [e.raw_id for e in seen]
    assert seen[2].json()["message"]["content"] == "two"


async def test_a_bad_last_event_id_and_a_bad_status_are_refused(
    pair: tuple[GatewayProcess, GatewayProcess], token: Mint
) -> None:
    a, _ = pair
    headers = {"Authorization": f"Bearer {token()}"}
    async with httpx2.AsyncClient(base_url=a.url, headers=headers, timeout=10) as client:
        bad_id = await client.get("/activity", headers={"Last-Event-ID": "x"})
        assert bad_id.status_code == 400 and "Last-Event-ID" in bad_id.json()["detail"]
        bad_status = await client.get("/generations", params={"status": "complete"})
        assert bad_status.status_code == 400
        assert (await client.get("/activity", headers={"Authorization": ""})).status_code == 401


async def test_an_activity_stream_holds_a_connection_slot(
    start_gateway: GatewayFactory, settings: Settings, token: Mint
) -> None:
    alice = user()
    with start_gateway(limits=replace(settings.limits, connections=1)) as url:
        headers = {"Authorization": f"Bearer {token(alice)}"}
        async with httpx2.AsyncClient(base_url=url, headers=headers, timeout=10) as client:
            async with client.stream("GET", "/activity") as first:
                assert first.status_code == 200
                refused = await client.get("/activity")
                assert refused.status_code == 429 and "retry-after" in refused.headers
                # Another user is served meanwhile.
                assert await fresh_request_seconds(url, token(user())) < 1.0
            # Given back when the stream ends: a socket gets in.
            ws = await settle_connected(url, token(alice))
            await ws.close()


async def settle_connected(url: str, token: str) -> Any:
    """A socket, once the stream's slot is given back (its release follows the response)."""
    opened: list[Any] = []

    async def admitted() -> bool:
        try:
            opened.append(await connected(url, token))
        except AssertionError:  # refused (4429): the slot is not back yet
            return False
        return True

    assert await settle(admitted), "the stream's slot was not given back"
    return opened[0]

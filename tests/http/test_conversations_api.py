"""The Conversations API end to end: listing with cursors, rename, delete, models and agents."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx2
import pytest
from redis.asyncio import Redis

from gateway.config import Settings
from gateway.store.conversations import ConversationStore
from gateway.store.keys import Keys
from gateway.store.messages import StoredMessage
from tests.conftest import GatewayFactory
from tests.support.sse import stream_json
from tests.support.upstream import FakeUpstream

Mint = Callable[..., str]
SLOW = "fake-i20-n200"  # 200 chunks, 20 ms apart: still running when the test acts
SUMMARY_FIELDS = {"id", "title", "project_id", "created_at", "updated_at", "generation"}


@pytest.fixture
async def redis(settings: Settings) -> AsyncIterator[Redis]:
    assert settings.redis_url is not None
    client = Redis.from_url(settings.redis_url, decode_responses=True)
    yield client
    await client.aclose()


async def call(method: str, url: str, token: str | None = None, **kwargs: Any) -> httpx2.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with httpx2.AsyncClient(timeout=30) as client:
        return await client.request(method, url, headers=headers, **kwargs)


async def say(base: str, token: str, message: str, **fields: Any) -> dict[str, Any]:
    """One finished turn; its JSON answer."""
    response = await call(
        "POST", f"{base}/completion", token, json={"message": message, "model": "fake", **fields}
    )
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


async def listing(base: str, token: str, **params: Any) -> dict[str, Any]:
    response = await call("GET", f"{base}/conversations", token, params=params)
    assert response.status_code == 200, response.text
    page: dict[str, Any] = response.json()
    return page


async def walk(base: str, token: str, limit: int) -> list[list[str]]:
    """Every page's ids, following next_cursor to the end."""
    pages: list[list[str]] = []
    params: dict[str, Any] = {"limit": limit}
    while True:
        page = await listing(base, token, **params)
        pages.append([item["id"] for item in page["data"]])
        if page["next_cursor"] is None:
            return pages
        params["cursor"] = page["next_cursor"]


def without_timestamp(response: httpx2.Response) -> tuple[int, dict[str, Any], str | None]:
    body = response.json()
    del body["timestamp"]
    return response.status_code, body, response.headers.get("content-type")


async def keys_of(redis: Redis, settings: Settings, *names: str) -> list[str]:
    """Every key under the test's prefix that mentions one of `names`."""
    found = [key async for key in redis.scan_iter(match=f"{settings.redis_prefix}*", count=1000)]
    return sorted(key for key in found if any(name in key for name in names))


@asynccontextmanager
async def running_turn(
    base: str, token: str, conversation_id: str, message: str, **fields: Any
) -> AsyncIterator[tuple[str, AsyncIterator[dict[str, Any]]]]:
    """A streamed turn whose first chunk has arrived: its generation id and the rest of its
    events."""
    body = {
        "message": message,
        "model": SLOW,
        "stream": True,
        "conversation_id": conversation_id,
        **fields,
    }
    headers = {"Authorization": f"Bearer {token}"}
    async with (
        httpx2.AsyncClient(timeout=30) as client,
        client.stream("POST", f"{base}/completion", json=body, headers=headers) as response,
    ):
        stream = stream_json(response.aiter_lines())
        start = await anext(stream)
        assert start["type"] == "start", start
        assert (await anext(stream))["type"] == "chunk"
        yield start["generation_id"], stream


def upstream_request(fake: FakeUpstream, message: str) -> Any:
    return next(r for r in fake.requests if r.messages and r.messages[-1]["content"] == message)


# Listing


async def test_pages_list_every_conversation_once_newest_first(gateway: str, token: Mint) -> None:
    created = [(await say(gateway, token(), f"topic {n}"))["conversation_id"] for n in range(7)]
    await say(gateway, token(), "filed", project_id="p-7")
    whole = (await listing(gateway, token(), limit=100))["data"]
    assert len(whole) == 8 and {item["id"] for item in whole} >= set(created)
    assert [(i["updated_at"], i["id"]) for i in whole] == sorted(
        ((i["updated_at"], i["id"]) for i in whole), reverse=True
    )
    pages = await walk(gateway, token(), limit=3)
    assert [len(page) for page in pages] == [3, 3, 2]
    assert [cid for page in pages for cid in page] == [item["id"] for item in whole]
    item = next(i for i in whole if i["id"] == created[0])
    assert set(item) == SUMMARY_FIELDS
    assert item["title"] == "topic 0" and item["project_id"] is None
    assert item["generation"]["id"].startswith("gen_")
    assert item["generation"]["status"] == "complete"
    assert next(i for i in whole if i["title"] == "filed")["project_id"] == "p-7"
    assert (await listing(gateway, token(), limit=20))["next_cursor"] is None


async def test_conversations_updated_in_one_millisecond_page_without_gaps(
    gateway: str, token: Mint, conversations: ConversationStore
) -> None:
    for conversation_id, at in [("older", 999), ("newer", 1001)] + [
        (f"tie-{c}", 1000) for c in "cadeb"
    ]:
        await conversations.open_turn("alice", conversation_id, StoredMessage("user", "x", at), 0)
    pages = await walk(gateway, token(), limit=2)
    expected = ["newer", "tie-e", "tie-d", "tie-c", "tie-b", "tie-a", "older"]
    assert [cid for page in pages for cid in page] == expected
    assert [len(page) for page in pages] == [2, 2, 2, 1]


async def test_a_new_turn_moves_a_conversation_to_the_front(gateway: str, token: Mint) -> None:
    ids = [(await say(gateway, token(), f"q{n}"))["conversation_id"] for n in range(3)]
    before = {i["id"]: i for i in (await listing(gateway, token()))["data"]}
    answer = await say(gateway, token(), "again", conversation_id=ids[0])
    first = (await listing(gateway, token()))["data"][0]
    assert first["id"] == ids[0]
    assert first["updated_at"] > before[ids[0]]["updated_at"]
    assert first["created_at"] == before[ids[0]]["created_at"]
    assert first["generation"] == {"id": answer["generation_id"], "status": "complete"}
    assert first["title"] == "q0"  # the first message names it, not the latest


async def test_a_walk_never_repeats_and_keeps_what_was_not_touched(
    gateway: str, token: Mint
) -> None:
    """The cursor guarantee: conversations updated, deleted or started during a walk shift
    nothing; one updated after it was shown is not shown again, one updated before it was
    reached moves to the front (where a fresh first page shows it)."""
    for n in range(6):
        await say(gateway, token(), f"c{n}")
    whole = [i["id"] for i in (await listing(gateway, token()))["data"]]
    first = await listing(gateway, token(), limit=2)
    assert [i["id"] for i in first["data"]] == whole[:2]
    seen, unseen = whole[:2], whole[2:]
    await say(gateway, token(), "seen, then updated", conversation_id=seen[0])
    await say(gateway, token(), "updated before it was reached", conversation_id=unseen[1])
    deleted = await call("DELETE", f"{gateway}/conversations/{unseen[2]}", token())
    assert deleted.status_code == 204
    started = (await say(gateway, token(), "started during the walk"))["conversation_id"]
    rest: list[str] = []
    cursor = first["next_cursor"]
    while cursor is not None:
        page = await listing(gateway, token(), limit=2, cursor=cursor)
        rest += [i["id"] for i in page["data"]]
        cursor = page["next_cursor"]
    assert rest == [unseen[0], unseen[3]]
    fresh = [i["id"] for i in (await listing(gateway, token()))["data"]]
    assert set(fresh[:3]) == {started, unseen[1], seen[0]}  # everything touched, at the front
    assert fresh[3:] == [seen[1], unseen[0], unseen[3]]


async def test_entries_of_expired_conversations_are_skipped_and_dropped(
    gateway: str, token: Mint, redis: Redis, settings: Settings
) -> None:
    for n in range(3):
        await say(gateway, token(), f"e{n}")
    ids = [i["id"] for i in (await listing(gateway, token()))["data"]]
    keys = Keys(settings.redis_prefix)
    await redis.delete(
        keys.conversation("alice", ids[1]), keys.messages("alice", ids[1])
    )  # as if it expired
    pages = await walk(gateway, token(), limit=1)
    assert [cid for page in pages for cid in page] == [ids[0], ids[2]]
    assert await redis.zscore(keys.user_conversations("alice"), ids[1]) is None


@pytest.mark.parametrize(
    ("params", "detail"),
    [
        ({"limit": "0"}, "'limit' must be an integer from 1 to 100."),
        ({"limit": "101"}, "'limit' must be an integer from 1 to 100."),
        ({"limit": "ten"}, "'limit' must be an integer from 1 to 100."),
        ({"limit": "-1"}, "'limit' must be an integer from 1 to 100."),
        ({"cursor": "not a cursor"}, "'cursor' must be a 'next_cursor' value"),
        ({"cursor": base64.urlsafe_b64encode(b'{"a":1}').decode()}, "'cursor' must be"),
        ({"cursor": base64.urlsafe_b64encode(b'[1,"bad id!"]').decode()}, "'cursor' must be"),
    ],
)
async def test_a_bad_limit_or_cursor_is_400(
    gateway: str, token: Mint, params: dict[str, str], detail: str
) -> None:
    response = await call("GET", f"{gateway}/conversations", token(), params=params)
    assert response.status_code == 400
    assert response.json()["error"] == "bad_request"
    assert response.json()["detail"].startswith(detail)


async def test_a_first_message_makes_a_one_line_title(gateway: str, token: Mint) -> None:
    words = " ".join(f"word{n}" for n in range(40))
    await say(gateway, token(), f"  Plan a\n\ttrip   to Rome: {words}")
    title = (await listing(gateway, token()))["data"][0]["title"]
    assert title.startswith("Plan a trip to Rome: word0 word1")
    assert len(title) <= 80 and title.endswith("\u2026") and "\n" not in title
    assert title[:-1].split(" ")[-1] in words.split(" ")  # cut after a whole word


# Reading a conversation, a page at a time


async def read(base: str, token: str, conversation_id: str, **params: Any) -> dict[str, Any]:
    response = await call("GET", f"{base}/conversations/{conversation_id}", token, params=params)
    assert response.status_code == 200, response.text
    view: dict[str, Any] = response.json()
    return view


async def read_back(base: str, token: str, conversation_id: str, **params: Any) -> list[list[str]]:
    """Each page's message contents, newest page first, following next_cursor to the end."""
    pages: list[list[str]] = []
    while True:
        view = await read(base, token, conversation_id, **params)
        pages.append([m["content"] for m in view["messages"]])
        if view["next_cursor"] is None:
            return pages
        params["cursor"] = view["next_cursor"]


async def test_messages_come_newest_page_first_each_page_oldest_first(
    gateway: str, token: Mint
) -> None:
    conversation_id = "paged"
    for n in range(5):
        await say(gateway, token(), f"q{n}", conversation_id=conversation_id)
    every = [text for n in range(5) for text in (f"q{n}", f"You said: q{n}")]
    view = await read(gateway, token(), conversation_id)
    assert [m["content"] for m in view["messages"]] == every and view["next_cursor"] is None
    assert set(view) == {*SUMMARY_FIELDS, "messages", "next_cursor"}
    pages = await read_back(gateway, token(), conversation_id, limit=4)
    assert pages == [every[6:], every[2:6], every[:2]]


async def test_a_page_holds_at_most_page_bytes_of_messages_and_one_at_least(
    start_gateway: GatewayFactory, token: Mint
) -> None:
    with start_gateway(conversation_page_bytes=1) as url:
        await say(url, token(), "q0", conversation_id="tiny-pages")
        await say(url, token(), "q1", conversation_id="tiny-pages")
        pages = await read_back(url, token(), "tiny-pages")
    assert pages == [["You said: q1"], ["q1"], ["You said: q0"], ["q0"]]


async def test_a_cursor_stays_put_while_messages_are_added_and_trimmed(
    start_gateway: GatewayFactory, token: Mint
) -> None:
    with start_gateway(max_stored_turns=3) as url:
        for n in range(3):
            await say(url, token(), f"q{n}", conversation_id="moving")
        first = await read(url, token(), "moving", limit=2)
        assert [m["content"] for m in first["messages"]] == ["q2", "You said: q2"]
        await say(url, token(), "q3", conversation_id="moving")  # q0 and its answer drop out
        params = {"limit": 2, "cursor": first["next_cursor"]}
        assert await read_back(url, token(), "moving", **params) == [["q1", "You said: q1"]]


async def test_a_page_of_an_empty_or_exhausted_cursor_is_empty(gateway: str, token: Mint) -> None:
    await say(gateway, token(), "only", conversation_id="short")
    view = await read(gateway, token(), "short", limit=1)
    view = await read(gateway, token(), "short", limit=1, cursor=view["next_cursor"])
    assert [m["content"] for m in view["messages"]] == ["only"] and view["next_cursor"] is None
    gone = base64.urlsafe_b64encode(b"[0]").decode().rstrip("=")
    view = await read(gateway, token(), "short", cursor=gone)
    assert view["messages"] == [] and view["next_cursor"] is None


@pytest.mark.parametrize(
    ("params", "detail"),
    [
        ({"limit": "0"}, "'limit' must be an integer from 1 to 1000."),
        ({"limit": "1001"}, "'limit' must be an integer from 1 to 1000."),
        ({"limit": "all"}, "'limit' must be an integer from 1 to 1000."),
        ({"cursor": "not a cursor"}, "'cursor' must be a 'next_cursor' value"),
        ({"cursor": base64.urlsafe_b64encode(b"[-1]").decode()}, "'cursor' must be"),
        ({"cursor": base64.urlsafe_b64encode(b'[1,"a-list-cursor"]').decode()}, "'cursor'"),
    ],
)
async def test_a_bad_limit_or_cursor_of_a_conversation_is_400(
    gateway: str, token: Mint, params: dict[str, str], detail: str
) -> None:
    await say(gateway, token(), "hi", conversation_id="kept")
    response = await call("GET", f"{gateway}/conversations/kept", token(), params=params)
    assert response.status_code == 400
    assert response.json()["detail"].startswith(detail)


# Rename


async def test_rename_changes_the_title_and_nothing_else(gateway: str, token: Mint) -> None:
    first = (await say(gateway, token(), "first"))["conversation_id"]
    await say(gateway, token(), "second")
    before = (await listing(gateway, token()))["data"]
    response = await call(
        "PATCH", f"{gateway}/conversations/{first}", token(), json={"title": "  Trip \n to  Rome "}
    )
    assert response.status_code == 200
    summary = response.json()
    assert summary == {**next(i for i in before if i["id"] == first), "title": "Trip to Rome"}
    after = (await listing(gateway, token()))["data"]
    assert [i["id"] for i in after] == [i["id"] for i in before]  # renaming is not activity
    shown = (await call("GET", f"{gateway}/conversations/{first}", token())).json()
    assert shown["title"] == "Trip to Rome" and len(shown["messages"]) == 2
    longest = await call(
        "PATCH", f"{gateway}/conversations/{first}", token(), json={"title": "x" * 200}
    )
    assert longest.status_code == 200 and longest.json()["title"] == "x" * 200


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        ({}, "'title' must be a string of 1-200 characters."),
        ({"title": ""}, "'title' must be a string of 1-200 characters."),
        ({"title": " \n\t "}, "'title' must be a string of 1-200 characters."),
        ({"title": "x" * 201}, "'title' must be a string of 1-200 characters."),
        ({"title": 7}, "'title' must be a string of 1-200 characters."),
        ({"title": None}, "'title' must be a string of 1-200 characters."),
        (
            {"title": "ok", "pinned": True},
            "Unknown field 'pinned'; only 'title' and 'active_message_id' can be changed.",
        ),
        ("{broken", "The body is not valid JSON."),
        ("[1]", "Expected a JSON object."),
    ],
)
async def test_a_bad_title_is_400(gateway: str, token: Mint, body: Any, detail: str) -> None:
    conversation_id = (await say(gateway, token(), "hello"))["conversation_id"]
    content = body if isinstance(body, str) else json.dumps(body)
    response = await call(
        "PATCH", f"{gateway}/conversations/{conversation_id}", token(), content=content
    )
    assert response.status_code == 400
    assert response.json()["error"] == "bad_request" and response.json()["detail"] == detail
    shown = (await call("GET", f"{gateway}/conversations/{conversation_id}", token())).json()
    assert shown["title"] == "hello"


# Delete


async def test_delete_removes_every_key_and_cancels_the_running_answer(
    gateway: str,
    token: Mint,
    redis: Redis,
    settings: Settings,
    fake_upstream: FakeUpstream,
) -> None:
    kept = (await say(gateway, token(), "keep me"))["conversation_id"]
    turns = [await say(gateway, token(), "one", conversation_id="doomed")]
    turns.append(await say(gateway, token(), "two", conversation_id="doomed"))
    generation_ids = [t["generation_id"] for t in turns]
    async with running_turn(gateway, token(), "doomed", "three, cut short") as (running, rest):
        generation_ids.append(running)
        page = (await listing(gateway, token()))["data"]
        assert page[0]["generation"] == {"id": running, "status": "running"}
        assert await keys_of(redis, settings, "doomed", *generation_ids)
        response = await call("DELETE", f"{gateway}/conversations/doomed", token())
        assert response.status_code == 204 and response.content == b""
        last = [event async for event in rest][-1]
    assert last["type"] == "done" and last["finish_reason"] == "cancelled"
    upstream = upstream_request(fake_upstream, "three, cut short")
    assert await asyncio.to_thread(upstream.client_left.wait, 10)
    assert not upstream.finished.is_set()
    assert await keys_of(redis, settings, "doomed", *generation_ids) == []
    assert await keys_of(redis, settings, kept)  # another conversation is untouched
    assert [i["id"] for i in (await listing(gateway, token()))["data"]] == [kept]
    gone = await call("GET", f"{gateway}/conversations/doomed", token())
    assert gone.status_code == 404 and gone.json()["error"] == "not_found"
    again = await call("DELETE", f"{gateway}/conversations/doomed", token())
    assert again.status_code == 404
    # The id is free: it starts a new conversation with nothing of the old one.
    await say(gateway, token(), "a fresh start", conversation_id="doomed")
    shown = (await call("GET", f"{gateway}/conversations/doomed", token())).json()
    assert [m["content"] for m in shown["messages"]] == ["a fresh start", "You said: a fresh start"]
    assert shown["title"] == "a fresh start"


async def test_delete_cancels_an_answer_running_on_another_instance(
    start_gateway: GatewayFactory,
    token: Mint,
    redis: Redis,
    settings: Settings,
    fake_upstream: FakeUpstream,
) -> None:
    with start_gateway(lease_ttl=1) as a, start_gateway(lease_ttl=1) as b:
        async with running_turn(a, token(), "elsewhere", "running on a") as (running, rest):
            response = await call("DELETE", f"{b}/conversations/elsewhere", token())
            assert response.status_code == 204
            last = [event async for event in rest][-1]
        assert last["type"] == "done" and last["finish_reason"] == "cancelled"
        upstream = upstream_request(fake_upstream, "running on a")
        assert await asyncio.to_thread(upstream.client_left.wait, 10)
        assert await keys_of(redis, settings, "elsewhere", running) == []
        for url in (a, b):
            gone = await call("GET", f"{url}/conversations/elsewhere", token())
            assert gone.status_code == 404


# Ownership and authentication


async def test_another_users_conversation_is_exactly_an_unknown_one(
    gateway: str, token: Mint
) -> None:
    url = f"{gateway}/conversations/alices-plans"
    attempts: list[tuple[str, dict[str, Any]]] = [
        ("GET", {}),
        ("PATCH", {"json": {"title": "mine now"}}),
        ("DELETE", {}),
    ]
    unknown = [await call(method, url, token("bob"), **kw) for method, kw in attempts]
    await say(gateway, token("alice"), "secret plans", conversation_id="alices-plans")
    foreign = [await call(method, url, token("bob"), **kw) for method, kw in attempts]
    for before, after in zip(unknown, foreign, strict=True):
        assert before.status_code == after.status_code == 404
        assert without_timestamp(before) == without_timestamp(after)
        assert after.json()["detail"] == "Conversation 'alices-plans' was not found."
    # Ids are per user: bob's turn with the id makes a conversation of his own.
    await say(gateway, token("bob"), "bob's own", conversation_id="alices-plans")
    his = (await call("GET", url, token("bob"))).json()
    assert his["title"] == "bob's own" and len(his["messages"]) == 2
    mine = (await call("GET", url, token("alice"))).json()
    assert mine["title"] == "secret plans" and len(mine["messages"]) == 2
    assert [i["id"] for i in (await listing(gateway, token("alice")))["data"]] == ["alices-plans"]
    assert [i["id"] for i in (await listing(gateway, token("bob")))["data"]] == ["alices-plans"]


async def test_a_malformed_id_is_not_found_like_any_unknown_id(gateway: str, token: Mint) -> None:
    for method in ("GET", "PATCH", "DELETE"):
        response = await call(
            method, f"{gateway}/conversations/bad.id", token(), json={"title": "t"}
        )
        assert response.status_code == 404 and response.json()["error"] == "not_found"


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/conversations"),
        ("GET", "/conversations/some-id"),
        ("PATCH", "/conversations/some-id"),
        ("DELETE", "/conversations/some-id"),
        ("GET", "/models"),
        ("GET", "/agents"),
    ],
)
async def test_every_route_needs_a_token(gateway: str, method: str, path: str) -> None:
    response = await call(method, f"{gateway}{path}", None, json={"title": "t"})
    assert response.status_code == 401
    assert response.json()["error"] == "unauthorized"
    assert response.headers["www-authenticate"] == "Bearer"
    refused = await call(method, f"{gateway}{path}", "not-a-jwt", json={"title": "t"})
    assert refused.status_code == 401


# Models and agents


async def test_models_lists_names_and_streaming_only(
    gateway: str, token: Mint, settings: Settings
) -> None:
    response = await call("GET", f"{gateway}/models", token())
    assert response.status_code == 200
    body = response.json()
    assert [m["id"] for m in body["data"]] == list(settings.models)
    assert all(set(m) == {"id", "streaming", "default"} for m in body["data"])
    assert [m["id"] for m in body["data"] if m["default"]] == ["fake"] == [body["default"]]
    streaming = {m["id"]: m["streaming"] for m in body["data"]}
    assert streaming["fake-whole"] is False and streaming["fake"] is True
    base_url = settings.models["fake"].base_url
    assert base_url is not None
    for secret in ("sk-test", base_url, "127.0.0.1", "fake-n50"):
        assert secret not in response.text


async def test_agents_lists_names_and_their_models(
    gateway: str, token: Mint, settings: Settings
) -> None:
    response = await call("GET", f"{gateway}/agents", token())
    assert response.status_code == 200
    body = response.json()
    agents = {a["id"]: a for a in body["data"]}
    assert list(agents) == list(settings.agents)
    assert [a["id"] for a in body["data"] if a["default"]] == ["chat"] == [body["default"]]
    assert agents["chat"] == {
        "id": "chat",
        "model": "fake",
        "models": list(settings.models),
        "default": True,
    }
    assert agents["calc-only"]["models"] == ["fake"] and agents["calc-only"]["model"] == "fake"
    assert agents["pirate"]["model"] == "fake"
    assert "Talk like a pirate" not in response.text  # no system prompts
    assert "plugin_agent" not in response.text

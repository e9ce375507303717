"""Conversations as trees, end to end: every message has an id and a parent, edits and
regenerations become siblings, the active path is what a conversation shows and exactly what
the model is sent, and conversations stored as a list before the tree still read."""

from __future__ import annotations

import base64
import json
import uuid
from typing import Any

from redis.asyncio import Redis

from gateway.config import Limits, Settings
from gateway.store.keys import Keys
from gateway.store.messages import StoredMessage
from tests.conftest import GatewayFactory
from tests.http.test_ai_sdk import read_parts_until
from tests.http.test_conversations_api import Mint, call, redis, running_turn, say, upstream_request
from tests.support.upstream import FakeUpstream

__all__ = ["redis"]  # the fixture, used by name


def tagged(text: str) -> str:
    """A message no other test sends, to find its request at the shared fake upstream."""
    return f"{text} {uuid.uuid4().hex[:8]}"


async def view(base: str, token: str, conversation_id: str, **params: Any) -> dict[str, Any]:
    response = await call("GET", f"{base}/conversations/{conversation_id}", token, params=params)
    assert response.status_code == 200, response.text
    found: dict[str, Any] = response.json()
    return found


async def path_of(base: str, token: str, conversation_id: str) -> list[str]:
    return [m["content"] for m in (await view(base, token, conversation_id))["messages"]]


def sent(fake: FakeUpstream, message: str) -> list[str]:
    """What the model was sent with `message` last, system prompts aside."""
    request = upstream_request(fake, message)
    return [m["content"] for m in request.messages if m["role"] != "system"]


async def test_edit_and_regenerate_make_siblings_and_the_model_sees_one_path(
    gateway: str, token: Mint, fake_upstream: FakeUpstream
) -> None:
    q1, q2, q2b = tagged("q1"), tagged("q2"), tagged("q2 edited")
    conversation_id = (await say(gateway, token(), q1))["conversation_id"]
    await say(gateway, token(), q2, conversation_id=conversation_id)
    first = (await view(gateway, token(), conversation_id))["messages"]
    assert [m["role"] for m in first] == ["user", "assistant", "user", "assistant"]
    assert first[0]["parent_id"] is None
    assert [m["parent_id"] for m in first[1:]] == [m["id"] for m in first[:-1]]
    assert all(m["id"].startswith("msg_") and "branch" not in m for m in first)

    # Edit q2: a new user message beside it, answered with the path up to it alone.
    await say(gateway, token(), q2b, conversation_id=conversation_id, parent_id=first[1]["id"])
    assert sent(fake_upstream, q2b) == [q1, f"You said: {q1}", q2b]
    edited = (await view(gateway, token(), conversation_id))["messages"]
    assert [m["content"] for m in edited] == [q1, f"You said: {q1}", q2b, f"You said: {q2b}"]
    assert edited[2]["branch"] == {"index": 1, "count": 2, "ids": [first[2]["id"], edited[2]["id"]]}

    # Regenerate the new answer: the same path is sent again, and the answers are siblings.
    before = fake_upstream.count("fake")
    regenerated = await call(
        "POST",
        f"{gateway}/completion",
        token(),
        json={"regenerate": edited[3]["id"], "conversation_id": conversation_id},
    )
    assert regenerated.status_code == 200, regenerated.text
    assert fake_upstream.count("fake") == before + 1
    again = [m["content"] for m in fake_upstream.requests[-1].messages if m["role"] != "system"]
    assert again == [q1, f"You said: {q1}", q2b]
    now = (await view(gateway, token(), conversation_id))["messages"]
    assert [m["id"] for m in now[:3]] == [m["id"] for m in edited[:3]]
    assert now[3]["branch"]["ids"] == [edited[3]["id"], now[3]["id"]]
    assert now[3]["branch"]["index"] == 1

    # Edit the first message: a new first message, sent with no history at all.
    q1b = tagged("q1 edited")
    await say(gateway, token(), q1b, conversation_id=conversation_id, parent_id="")
    assert sent(fake_upstream, q1b) == [q1b]
    root = (await view(gateway, token(), conversation_id))["messages"]
    assert [m["content"] for m in root] == [q1b, f"You said: {q1b}"]
    assert root[0]["branch"]["count"] == 2 and root[0]["parent_id"] is None


async def test_a_later_turn_continues_the_active_path_only(
    gateway: str, token: Mint, fake_upstream: FakeUpstream
) -> None:
    q1, q2, q2b, q3 = tagged("q1"), tagged("q2"), tagged("q2b"), tagged("q3")
    conversation_id = (await say(gateway, token(), q1))["conversation_id"]
    await say(gateway, token(), q2, conversation_id=conversation_id)
    messages = (await view(gateway, token(), conversation_id))["messages"]
    await say(gateway, token(), q2b, conversation_id=conversation_id, parent_id=messages[1]["id"])
    await say(gateway, token(), q3, conversation_id=conversation_id)
    assert sent(fake_upstream, q3) == [q1, f"You said: {q1}", q2b, f"You said: {q2b}", q3]


async def test_a_path_is_read_a_page_at_a_time(gateway: str, token: Mint) -> None:
    conversation_id = (await say(gateway, token(), "p0"))["conversation_id"]
    for n in range(1, 4):
        await say(gateway, token(), f"p{n}", conversation_id=conversation_id)
    messages = (await view(gateway, token(), conversation_id))["messages"]
    await say(gateway, token(), "p2b", conversation_id=conversation_id, parent_id=messages[3]["id"])
    pages, params = [], {"limit": 3}
    while True:
        page = await view(gateway, token(), conversation_id, **params)
        pages.append([m["content"] for m in page["messages"]])
        if page["next_cursor"] is None:
            break
        params["cursor"] = page["next_cursor"]
    assert pages == [["You said: p1", "p2b", "You said: p2b"], ["p0", "You said: p0", "p1"]]


async def test_bad_and_foreign_message_ids_are_refused(gateway: str, token: Mint) -> None:
    conversation_id = (await say(gateway, token(), "mine"))["conversation_id"]
    messages = (await view(gateway, token(), conversation_id))["messages"]
    bobs = (await say(gateway, token("bob"), "his"))["conversation_id"]
    for body, status, words in [
        ({"message": "x", "parent_id": "msg_nope"}, 404, "msg_nope"),
        ({"message": "x", "parent_id": "nope"}, 400, "parent_id"),
        ({"regenerate": messages[0]["id"]}, 400, "regenerate"),
        ({"regenerate": messages[1]["id"], "message": "x"}, 400, "regenerate"),
        ({}, 400, "'message'"),
    ]:
        response = await call(
            "POST",
            f"{gateway}/completion",
            token(),
            json={"conversation_id": conversation_id, **body},
        )
        assert response.status_code == status, (body, response.text)
        assert words in response.json()["detail"]
    # Alice's message ids name nothing in Bob's conversation, or in a conversation she lacks.
    for conversation in (bobs, "never-made"):
        response = await call(
            "POST",
            f"{gateway}/completion",
            token("bob"),
            json={"conversation_id": conversation, "regenerate": messages[1]["id"]},
        )
        assert response.status_code == 404, response.text


async def test_siblings_and_stored_messages_are_bounded(
    start_gateway: GatewayFactory, token: Mint
) -> None:
    with start_gateway(max_siblings=2, max_stored_messages=6, max_stored_turns=3) as url:
        conversation_id = (await say(url, token(), "q"))["conversation_id"]
        answer = (await view(url, token(), conversation_id))["messages"][1]["id"]
        body = {"conversation_id": conversation_id, "regenerate": answer}
        assert (await call("POST", f"{url}/completion", token(), json=body)).status_code == 200
        refused = await call("POST", f"{url}/completion", token(), json=body)
        assert refused.status_code == 409, refused.text
        assert refused.json()["error"] == "conversation_full"
        assert "MAX_SIBLINGS is 2" in refused.json()["detail"]
        # Another user is served meanwhile.
        assert (await say(url, token("bob"), "meanwhile"))["content"]
        # Three answers and a question: the branches keep the first turn, so nothing is
        # trimmed; a second turn fits (6), a third does not.
        await say(url, token(), "q2", conversation_id=conversation_id)
        full = await call(
            "POST",
            f"{url}/completion",
            token(),
            json={"conversation_id": conversation_id, "message": "q3", "model": "fake"},
        )
        assert full.status_code == 409 and "MAX_STORED_MESSAGES is 6" in full.json()["detail"]
        assert len((await view(url, token(), conversation_id))["messages"]) == 4


async def test_a_conversation_stored_as_a_list_still_reads_and_continues(
    gateway: str, token: Mint, settings: Settings, redis: Redis, fake_upstream: FakeUpstream
) -> None:
    """As stored before the tree: a list of messages, two of them trimmed long ago."""
    keys = Keys(settings.redis_prefix)
    old = [StoredMessage("user", "old q", 1), StoredMessage("assistant", "old a", 2)]
    await redis.rpush(keys.messages("alice", "legacy"), *(m.to_json() for m in old))
    await redis.hset(
        keys.conversation("alice", "legacy"),
        mapping={
            "owner": "alice",
            "title": "old q",
            "created_at": 1,
            "updated_at": 2,
            "trimmed": 2,
        },
    )
    await redis.expire(keys.conversation("alice", "legacy"), 600)
    # A cursor given before the tree: the page below message number 3 (the answer).
    cursor = base64.urlsafe_b64encode(json.dumps([3]).encode()).decode().rstrip("=")
    below = (await view(gateway, token(), "legacy", cursor=cursor))["messages"]
    assert [(m["id"], m["content"], m["parent_id"]) for m in below] == [("msg_2", "old q", None)]
    read = (await view(gateway, token(), "legacy"))["messages"]
    assert [(m["id"], m["parent_id"]) for m in read] == [("msg_2", None), ("msg_3", "msg_2")]
    assert await redis.exists(keys.messages("alice", "legacy")) == 0
    assert await redis.ttl(keys.nodes("alice", "legacy")) > 0
    new = tagged("new q")
    await say(gateway, token(), new, conversation_id="legacy")
    assert sent(fake_upstream, new) == ["old q", "old a", new]
    regenerated = await call(
        "POST",
        f"{gateway}/completion",
        token(),
        json={"conversation_id": "legacy", "regenerate": "msg_3"},
    )
    assert regenerated.status_code == 200, regenerated.text
    assert await path_of(gateway, token(), "legacy") == ["old q", "You said: old q"]


async def patch(base: str, token: str, conversation_id: str, **body: Any) -> Any:
    return await call("PATCH", f"{base}/conversations/{conversation_id}", token, json=body)


async def two_turns_and_an_edit(base: str, token: str) -> tuple[str, list[dict[str, Any]]]:
    """q1 a1 q2 a2, then q2b a2b beside q2: the conversation and its messages in that order."""
    conversation_id = (await say(base, token, "q1"))["conversation_id"]
    await say(base, token, "q2", conversation_id=conversation_id)
    first = (await view(base, token, conversation_id))["messages"]
    await say(base, token, "q2b", conversation_id=conversation_id, parent_id=first[1]["id"])
    edited = (await view(base, token, conversation_id))["messages"]
    return conversation_id, first + edited[2:]


async def test_a_switch_follows_the_newest_children_down(gateway: str, token: Mint) -> None:
    conversation_id, (_q1, a1, q2, a2, _q2b, a2b) = await two_turns_and_an_edit(gateway, token())
    switched = await patch(gateway, token(), conversation_id, active_message_id=q2["id"])
    assert switched.status_code == 200, switched.text
    assert switched.json()["active_message_id"] == a2["id"]
    assert switched.json()["title"] == "q1"
    assert await path_of(gateway, token(), conversation_id) == [
        "q1",
        "You said: q1",
        "q2",
        "You said: q2",
    ]
    # From a1, the newest child is q2b: its branch, down to its answer.
    back = await patch(gateway, token(), conversation_id, active_message_id=a1["id"], title="T")
    assert back.json()["active_message_id"] == a2b["id"] and back.json()["title"] == "T"
    assert (await path_of(gateway, token(), conversation_id))[2] == "q2b"
    for who, body, status in [
        (token(), {"active_message_id": "m1"}, 400),
        (token(), {"active_message_id": "msg_unknown"}, 404),
        (token("bob"), {"active_message_id": q2["id"]}, 404),
        (token(), {}, 400),
    ]:
        assert (await patch(gateway, who, conversation_id, **body)).status_code == status, body


async def test_a_switch_leaves_an_answer_streaming_on_another_branch_alone(
    gateway: str, token: Mint
) -> None:
    conversation_id, (_q1, a1, q2, _a2, *_) = await two_turns_and_an_edit(gateway, token())
    async with running_turn(gateway, token(), conversation_id, "q2c", parent_id=a1["id"]) as (
        _,
        events,
    ):
        streaming = (await view(gateway, token(), conversation_id))["messages"]
        assert [m["content"] for m in streaming][-1] == "q2c"
        await patch(gateway, token(), conversation_id, active_message_id=q2["id"])
        assert await path_of(gateway, token(), conversation_id) == [
            "q1",
            "You said: q1",
            "q2",
            "You said: q2",
        ]
        last = [event async for event in events][-1]
    assert last["type"] == "done" and last["finish_reason"] == "stop"
    # The answer went below its own question and moved nothing.
    assert (await path_of(gateway, token(), conversation_id))[-1] == "You said: q2"
    await patch(gateway, token(), conversation_id, active_message_id=streaming[-1]["id"])
    answer = (await view(gateway, token(), conversation_id))["messages"][-1]
    assert answer["parent_id"] == streaming[-1]["id"] and answer["status"] == "complete"


async def test_deleting_a_branch_stops_its_answer_and_moves_the_leaf(
    gateway: str, token: Mint
) -> None:
    conversation_id, (q1, a1, q2, a2, q2b, a2b) = await two_turns_and_an_edit(gateway, token())
    async with running_turn(gateway, token(), conversation_id, "q3") as (_, events):
        q3 = (await view(gateway, token(), conversation_id))["messages"][-1]
        gone = await call(
            "DELETE", f"{gateway}/conversations/{conversation_id}/messages/{q2b['id']}", token()
        )
        assert gone.status_code == 204, gone.text
        last = [event async for event in events][-1]
    assert last["type"] == "done" and last["finish_reason"] == "cancelled"
    # The leaf moved to the remaining sibling's branch; nothing of the deleted one is left.
    messages = (await view(gateway, token(), conversation_id))["messages"]
    assert [m["id"] for m in messages] == [q1["id"], a1["id"], q2["id"], a2["id"]]
    assert "branch" not in messages[2]
    for deleted in (q2b, a2b, q3):
        url = f"{gateway}/conversations/{conversation_id}/messages/{deleted['id']}"
        assert (await call("DELETE", url, token())).status_code == 404
        assert (
            await patch(gateway, token(), conversation_id, active_message_id=deleted["id"])
        ).status_code == 404
    bobs = await call(
        "DELETE", f"{gateway}/conversations/{conversation_id}/messages/{q2['id']}", token("bob")
    )
    assert bobs.status_code == 404
    # The first message gone, nothing is left, and the conversation goes on from nothing.
    await call("DELETE", f"{gateway}/conversations/{conversation_id}/messages/{q1['id']}", token())
    assert await path_of(gateway, token(), conversation_id) == []
    await say(gateway, token(), "again", conversation_id=conversation_id)
    assert await path_of(gateway, token(), conversation_id) == ["again", "You said: again"]


async def test_a_fork_holds_the_path_and_goes_its_own_way(
    gateway: str, token: Mint, fake_upstream: FakeUpstream
) -> None:
    conversation_id, (q1, a1, q2, a2, _q2b, _a2b) = await two_turns_and_an_edit(gateway, token())
    forked = await call(
        "POST",
        f"{gateway}/conversations/{conversation_id}/fork",
        token(),
        json={"message_id": a2["id"]},
    )
    assert forked.status_code == 201, forked.text
    fork = forked.json()
    assert fork["id"] != conversation_id and fork["title"] == "q1"
    assert fork["active_message_id"] == a2["id"]
    copied = (await view(gateway, token(), fork["id"]))["messages"]
    assert [m["id"] for m in copied] == [q1["id"], a1["id"], q2["id"], a2["id"]]
    assert all("branch" not in m for m in copied)
    onward = tagged("onward")
    await say(gateway, token(), onward, conversation_id=fork["id"])
    assert sent(fake_upstream, onward) == ["q1", "You said: q1", "q2", "You said: q2", onward]
    assert (await path_of(gateway, token(), conversation_id))[2] == "q2b"  # untouched
    for who, body, status in [
        (token("bob"), {"message_id": a2["id"]}, 404),
        (token(), {"message_id": "msg_unknown"}, 404),
        (token(), {"message_id": "x"}, 400),
        (token(), {"message_id": a2["id"], "title": "x"}, 400),
    ]:
        response = await call(
            "POST", f"{gateway}/conversations/{conversation_id}/fork", who, json=body
        )
        assert response.status_code == status, (body, response.text)


async def test_the_ai_sdk_regenerate_makes_a_sibling_answer(
    gateway: str, token: Mint, fake_upstream: FakeUpstream
) -> None:
    question = tagged("sdk q")
    first = await say(gateway, token(), question, conversation_id="sdk-chat")
    before = fake_upstream.count("fake")
    user = {"id": "u1", "role": "user", "parts": [{"type": "text", "text": question}]}
    # `useChat` names the answer by the id `start` gave it, the generation's; or none (the
    # last answer).
    for named in ({"messageId": first["generation_id"]}, {}):
        body = {"id": "sdk-chat", "messages": [user], "trigger": "regenerate-message", **named}
        parts = await read_parts_until(gateway, token(), body, lambda p: p[-1]["type"] == "finish")
        assert parts[0]["type"] == "start"
    assert fake_upstream.count("fake") == before + 2
    for request in fake_upstream.requests[-2:]:
        assert [m["content"] for m in request.messages if m["role"] != "system"] == [question]
    messages = (await view(gateway, token(), "sdk-chat"))["messages"]
    assert [m["content"] for m in messages] == [question, f"You said: {question}"]
    assert messages[1]["branch"]["count"] == 3 and messages[1]["branch"]["index"] == 2


async def test_a_fork_past_the_storage_quota_is_refused(
    start_gateway: GatewayFactory, token: Mint
) -> None:
    with start_gateway(limits=Limits(storage_bytes=1000)) as url:
        conversation_id = (await say(url, token(), "q"))["conversation_id"]
        answer = (await view(url, token(), conversation_id))["messages"][-1]["id"]
        fork = f"{url}/conversations/{conversation_id}/fork"
        statuses = []
        for _ in range(3):  # 286 bytes each: the third fork would take it past 1000
            response = await call("POST", fork, token(), json={"message_id": answer})
            statuses.append(response.status_code)
        assert statuses == [201, 201, 429], response.text
        refused = response.json()
        assert refused["error"] == "rate_limited" and "retry_after" not in refused
        assert "the fork needs 286 bytes more" in refused["detail"]
        assert (await say(url, token("bob"), "meanwhile"))["content"]  # another user is served
        listed = await call("GET", f"{url}/conversations", token())
        assert len(listed.json()["data"]) == 3  # the refused copy is gone

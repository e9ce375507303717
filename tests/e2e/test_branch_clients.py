"""The clients and the terminal chat on a conversation's branches: edit, regenerate, switch,
fork and delete, against a real gateway (over the WebSocket, the client's transport)."""

from __future__ import annotations

import re
import uuid
from pathlib import Path

import pytest

from gateway_client import Done, GatewayClient, GatewayError
from tests.e2e.test_chat_cli import chat, clean_env
from tests.http.test_branches import path_of, sent, tagged, view
from tests.http.test_conversations_api import Mint, call
from tests.support.upstream import FakeUpstream


async def test_the_python_client_edits_regenerates_switches_forks_and_deletes(
    gateway: str, token: Mint, fake_upstream: FakeUpstream
) -> None:
    """Over the WebSocket, the client's transport."""
    q2b = tagged("q2b")
    async with GatewayClient(gateway, token=token()) as client:
        for question in ("q1", "q2"):
            await client.complete(question, model="fake", conversation_id="py-tree").collect()
        q1, a1, q2, a2 = await client.messages("py-tree")
        edit = client.complete(q2b, model="fake", conversation_id="py-tree", parent_id=a1["id"])
        assert isinstance((await edit.collect())[-1], Done)
        assert sent(fake_upstream, q2b) == ["q1", "You said: q1", q2b]
        answer = (await client.messages("py-tree"))[-1]
        again = await client.regenerate(answer["id"], conversation_id="py-tree").collect()
        assert isinstance(again[-1], Done)
        assert (await client.messages("py-tree"))[-1]["branch"]["count"] == 2
        assert await client.http.switch_branch("py-tree", q2["id"]) == a2["id"]
        assert [m["content"] for m in await client.messages("py-tree")][2] == "q2"
        forked = await client.http.fork("py-tree", a1["id"])
        assert [m["id"] for m in await client.messages(forked)] == [q1["id"], a1["id"]]
        await client.http.delete_message("py-tree", q2["id"])
        assert (await client.messages("py-tree"))[2]["content"] == q2b
        with pytest.raises(GatewayError) as caught:
            await client.http.delete_message("py-tree", q2["id"])
        assert caught.value.code == "not_found"


async def test_the_terminal_chat_regenerates_switches_edits_and_forks(
    gateway: str, token: Mint, tmp_path: Path
) -> None:
    conversation = f"cli-tree-{uuid.uuid4().hex[:8]}"
    flags = ["--token", token(), "--model", "fake", "--conversation", conversation]
    async with chat("--url", gateway, *flags, cwd=tmp_path, env=clean_env()) as session:
        await session.say("q1")
        await session.out.expect("You said: q1\n")
        await session.say("/regenerate")
        await session.out.expect("You said: q1\n")
        await session.say("/versions")
        listed = await session.err.expect("(/switch <id> shows another version)")
        first, second = re.findall(r"version 2/2 of (msg_\S+), (msg_[^)\s]+)\)", listed)[0]
        await session.say(f"/switch {first}")
        await session.out.expect("you> q1\nYou said: q1\n")
        await session.say("/edit q1b")
        await session.out.expect("You said: q1b\n")
        await session.say("/fork")
        forked = await session.err.expect("; it goes on from here)")
        await session.say("onward")
        await session.out.expect("You said: onward\n")
        assert await session.leave() == 0
    assert "Traceback" not in session.err.text
    shown = (await view(gateway, token(), conversation))["messages"]
    assert [m["content"] for m in shown] == ["q1b", "You said: q1b"]
    assert shown[0]["branch"]["count"] == 2
    await call(
        "PATCH",
        f"{gateway}/conversations/{conversation}",
        token(),
        json={"active_message_id": shown[0]["branch"]["ids"][0]},
    )
    answer = (await view(gateway, token(), conversation))["messages"][1]
    # The newest child of the old question: the regenerated answer, whatever was shown last.
    assert answer["branch"]["ids"] == [first, second] and answer["id"] == second
    fork_id = re.findall(r"conversation (conv_\S+);", forked)[0]
    assert await path_of(gateway, token(), fork_id) == [
        "q1b",
        "You said: q1b",
        "onward",
        "You said: onward",
    ]

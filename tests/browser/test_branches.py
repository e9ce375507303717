"""Versions of a conversation on the page, in a real browser: regenerate keeps the old
answer, `< i/n >` switches, an edit goes beside the question it replaces, a reload shows the
same branch, and a fork opens a conversation of its own."""

from __future__ import annotations

import asyncio

from playwright.async_api import expect

from tests.browser.conftest import ChatPage, unique, upstream_request
from tests.support.upstream import FakeUpstream


def asked(fake: FakeUpstream, message: str) -> int:
    return sum(1 for r in fake.requests if r.messages and r.messages[-1]["content"] == message)


async def test_regenerate_switch_edit_reload_and_fork(
    chat: ChatPage, fake_upstream: FakeUpstream
) -> None:
    first, second, edited = unique("first"), unique("second"), unique("edited")
    for message in (first, second):
        await chat.send(message)
        await chat.until_answered()
    places = chat.log.locator(".branch-place")

    await chat.page.get_by_role("button", name="Regenerate").click()
    await chat.until_answered()
    await expect(places).to_have_text(["2/2"])  # the new answer, beside the old one
    assert asked(fake_upstream, second) == 2
    await chat.page.get_by_role("button", name="Previous version").click()
    await expect(places).to_have_text(["1/2"])

    await chat.log.get_by_role("button", name="Edit").nth(1).click()
    await expect(chat.message_box).to_have_value(second)
    await chat.message_box.fill(edited)
    await chat.send_button.click()
    await chat.until_answered()
    await expect(chat.log.locator(".msg.user .branch-place")).to_have_text(["2/2"])
    await expect(chat.log).not_to_contain_text(second)
    sent = [m["content"] for m in upstream_request(fake_upstream, edited).messages]
    assert sent[-3:] == [first, f"You said: {first}", edited]
    assert second not in " ".join(str(content) for content in sent)

    await chat.page.reload()
    await expect(chat.log).to_contain_text(f"You said: {edited}")
    await expect(chat.log.locator(".msg.user .branch-place")).to_have_text(["2/2"])
    await expect(chat.log.get_by_role("button", name="Next version")).to_be_disabled()
    await chat.log.get_by_role("button", name="Previous version").click()
    await expect(chat.log).to_contain_text(second)
    await expect(chat.log).not_to_contain_text(edited)

    await chat.log.get_by_role("button", name="Fork").first.click()
    await expect(chat.log.locator(".msg")).to_have_count(2)
    await expect(chat.log).to_contain_text(f"You said: {first}")
    await expect(chat.log.locator(".branch-place")).to_have_count(0)


async def test_switching_while_an_answer_streams_on_another_branch(
    chat: ChatPage, fake_upstream: FakeUpstream
) -> None:
    first = unique("first")
    long = unique(" ".join(f"w{i}" for i in range(80)))  # about 2.4 s of answer
    await chat.send(first)
    await chat.until_answered()
    await chat.page.get_by_role("button", name="Regenerate").click()
    await chat.until_answered()
    await expect(chat.log.locator(".branch-place")).to_have_text(["2/2"])

    await chat.send(long)
    await expect(chat.log).to_contain_text("You said: w0 w1")
    await chat.log.get_by_role("button", name="Previous version").click()
    await expect(chat.log.locator(".branch-place")).to_have_text(["1/2"])
    streaming = upstream_request(fake_upstream, long)
    assert await asyncio.to_thread(streaming.finished.wait, 15)
    await expect(chat.log.locator(".msg")).to_have_count(2)  # the other branch's answer: not here
    assert not streaming.client_left.is_set()  # the switch did not stop it

    await chat.log.get_by_role("button", name="Next version").click()
    await expect(chat.log).to_contain_text("w78 w79")
    await expect(chat.log.locator(".msg")).to_have_count(4)


async def test_deleting_an_answer_leaves_the_other_version(
    chat: ChatPage, fake_upstream: FakeUpstream
) -> None:
    """Delete on an answer removes it and what follows it, after asking; the page shows the
    version left, and a reload agrees."""
    question = unique("question")
    await chat.send(question)
    await chat.until_answered()
    await chat.page.get_by_role("button", name="Regenerate").click()
    await chat.until_answered()
    places = chat.log.locator(".branch-place")
    await expect(places).to_have_text(["2/2"])
    asked_once = chat.page.wait_for_event("dialog")
    clicked = asyncio.ensure_future(chat.log.get_by_role("button", name="Delete").click())
    dialog = await asked_once
    assert "Delete this answer" in dialog.message
    await dialog.accept()
    await clicked
    await expect(places).to_have_count(0)  # one version left: no switcher
    await expect(chat.log.locator(".msg")).to_have_count(2)
    await chat.page.reload()
    await expect(chat.log.locator(".msg")).to_have_count(2)
    await expect(chat.log.locator(".branch-place")).to_have_count(0)

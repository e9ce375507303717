"""Chatting on the page in a real browser: answers stream in, text stays text, Stop stops."""

from __future__ import annotations

import asyncio
import re
import uuid

import httpx2
from playwright.async_api import BrowserContext, expect

from tests.browser.conftest import ChatPage, Mint, unique, upstream_request
from tests.support.processes import GatewayProcess
from tests.support.upstream import FakeUpstream

# Every change to the log's text, as the page makes it, kept in the page for the test to read.
RECORD_LOG_TEXT = """(log) => {
  window.__logTexts = [];
  new MutationObserver(() => window.__logTexts.push(log.textContent)).observe(
    log, { subtree: true, childList: true, characterData: true });
}"""


async def test_the_answer_streams_in_word_by_word(chat: ChatPage) -> None:
    words = " ".join(f"w{i}" for i in range(1, 31))
    message = unique(words)
    answer = f"You said: {message}"
    await chat.log.evaluate(RECORD_LOG_TEXT)

    await chat.send(message)
    # While it streams: the beginning is shown and Stop is offered instead of Send.
    await expect(chat.log).to_contain_text("You said: w1 w2")
    await expect(chat.message_box).to_have_value("")
    await chat.until_answered()
    await expect(chat.log).to_contain_text(message)
    await expect(chat.log).to_contain_text(answer)

    texts: list[str] = await chat.evaluate("() => window.__logTexts")
    # The answer's text as each change left it, from the first word on.
    shown = [t[t.index("You said:") :] for t in texts if "You said:" in t]
    assert shown[-1].startswith(answer)
    partial = [s for s in dict.fromkeys(shown) if len(s) < len(answer)]
    assert len(partial) >= 10, f"the answer arrived in {len(partial) + 1} steps: {partial}"
    assert all(answer.startswith(s) for s in partial), "a step was not a prefix of the answer"
    assert [len(s) for s in partial] == sorted(len(s) for s in partial)


async def test_markup_in_a_message_is_shown_as_text_and_never_runs(
    chat: ChatPage, fake_upstream: FakeUpstream
) -> None:
    payload = "<img src=x onerror=window.__pwned=1> and <script>window.__pwned=1</script>"
    message = unique(payload)

    await chat.send(message)
    await chat.until_answered()

    # The fake upstream echoes it, so it is in the question and in the answer, as typed.
    await expect(chat.log).to_contain_text(message)
    await expect(chat.log).to_contain_text(f"You said: {message}")
    text = await chat.log.text_content()
    assert text is not None and text.count(payload) == 2
    # It reached the model exactly as typed, and the model's answer ran to its end.
    assert await asyncio.to_thread(upstream_request(fake_upstream, message).finished.wait, 10)
    await expect(chat.log.locator("img, script, iframe, object, embed")).to_have_count(0)
    assert await chat.evaluate("() => typeof window.__pwned") == "undefined"
    assert not [url for url in chat.requests if url.rstrip("/").endswith("/x")]


async def test_stop_ends_the_answer_and_closes_the_upstream_request(
    chat: ChatPage, fake_upstream: FakeUpstream
) -> None:
    words = " ".join(f"w{i}" for i in range(1, 101))
    message = unique(words)

    await chat.send(message)
    await expect(chat.log).to_contain_text("You said: w1 w2 w3")
    await chat.stop_button.click()
    await chat.until_answered()

    request = upstream_request(fake_upstream, message)
    assert await asyncio.to_thread(request.client_left.wait, 10), "upstream never saw it close"
    assert not request.finished.is_set()
    text = await chat.log.text_content()
    assert text is not None
    answer = text[text.index("You said:") :]
    assert answer.startswith("You said: w1 w2 w3")
    assert " w100 " not in answer, "the answer ran to its end"

    # The page is ready for the next question at once.
    follow_up = unique("again")
    await chat.send(follow_up)
    await chat.until_answered()
    await expect(chat.log).to_contain_text(f"You said: {follow_up}")


async def test_a_long_conversation_opens_at_its_newest_page_and_shows_older_ones_on_request(
    context: BrowserContext, page_gateway: GatewayProcess, token: Mint
) -> None:
    user = token(f"pager-{uuid.uuid4().hex[:8]}")  # its own requests-per-minute budget
    first = unique("the very first question")
    conversation_id = f"long-{uuid.uuid4().hex[:8]}"
    # 51 turns: 102 messages, two more than a page holds by default.
    async with httpx2.AsyncClient(timeout=30) as client:
        for message in [first, *(f"question {n}" for n in range(1, 51))]:
            response = await client.post(
                f"{page_gateway.url}/completion",
                json={"message": message, "model": "fake", "conversation_id": conversation_id},
                headers={"Authorization": f"Bearer {user}"},
            )
            assert response.status_code == 200, response.text
    chat = ChatPage(await context.new_page())
    await chat.open(page_gateway.url, user)
    await chat.page.get_by_role("button", name=re.compile(re.escape(first))).click()

    await expect(chat.log).to_contain_text("You said: question 50")
    await expect(chat.log).not_to_contain_text(first)
    earlier = chat.page.get_by_role("button", name="Show earlier messages")
    await earlier.click()
    await expect(earlier).to_have_count(0)  # nothing older is left
    text = await chat.log.text_content()
    assert text is not None and text.removeprefix("You").startswith(first)  # "You": a label
    assert text.index(f"You said: {first}") < text.index("question 1") < text.index("question 50")
    assert not chat.errors, f"the page raised: {chat.errors}"

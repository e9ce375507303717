"""Behind a proxy that refuses WebSocket upgrades (tests/support/refusing_proxy.py: a real
`403` to the handshake, everything else relayed byte for byte), nothing the person types is
lost: a message sent while the page still tries its socket is shown at once and answered over
HTTP within seconds, exactly once; the page moves back to the socket when one gets through; and
a message that cannot be sent at all is reported, its text kept in the box."""

from __future__ import annotations

import re
import time

import httpx2
from playwright.async_api import BrowserContext, expect

from tests.browser.conftest import (
    SLOW,
    ChatPage,
    Mint,
    connection_status,
    the_answer,
    unique,
    upstream_request,
)
from tests.support.processes import GatewayProcess
from tests.support.refusing_proxy import refusing_proxy
from tests.support.upstream import FakeUpstream

WORDS = " ".join(f"w{i}" for i in range(1, 31))  # about 1 s of answer
CONNECTING = re.compile(r"^\s*Connecting…\s*$")
OVER_HTTP = re.compile(r"^\s*Connected over HTTP\s*$")
CONNECTED = re.compile(r"^\s*Connected\s*$")


async def stored_questions(gateway: GatewayProcess, token: str, chat: ChatPage) -> list[str]:
    """What the gateway stored as the person's messages in the page's open conversation."""
    conversation = await chat.evaluate("() => sessionStorage.getItem('chat-gateway.conversation')")
    assert conversation, "the page has no conversation open"
    async with httpx2.AsyncClient(timeout=10) as http:
        response = await http.get(
            f"{gateway.url}/conversations/{conversation}",
            headers={"Authorization": f"Bearer {token}"},
        )
    assert response.status_code == 200, response.text
    return [m["content"] for m in response.json()["messages"] if m["role"] == "user"]


async def test_a_message_sent_while_the_socket_is_refused_is_answered_over_http_once(
    context: BrowserContext,
    page_gateway: GatewayProcess,
    token: Mint,
    fake_upstream: FakeUpstream,
) -> None:
    jwt = token()
    async with refusing_proxy(page_gateway.url) as proxy:
        # The proxy takes its time to refuse: the page is still trying its socket.
        proxy.hold()
        chat = ChatPage(await context.new_page())
        await chat.open(proxy.url, jwt)
        await proxy.until_upgrades(1)
        status = connection_status(chat)
        await expect(status).to_have_text(CONNECTING)

        message = unique(WORDS)
        await chat.message_box.fill(message)
        await chat.message_box.press("Enter")
        # Shown at once, the box emptied; it waits in the client's queue meanwhile.
        await expect(chat.log).to_contain_text(message, timeout=2_000)
        await expect(chat.message_box).to_have_value("")
        await expect(chat.stop_button).to_be_visible()
        await expect(status).to_have_text(CONNECTING)
        assert "POST /completion" not in proxy.requests

        proxy.release()  # the upgrade is refused: 403
        released = time.monotonic()
        await expect(chat.log).to_contain_text("You said: w1 w2", timeout=5_000)
        assert time.monotonic() - released < 5
        await chat.until_answered()
        await the_answer(chat, f"You said: {message}")
        await expect(status).to_have_text(OVER_HTTP)

        # Sent once: one request through the proxy, one question to the model, one stored.
        assert proxy.refused >= 1
        assert proxy.requests.count("POST /completion") == 1, proxy.requests
        upstream_request(fake_upstream, message)
        assert await stored_questions(page_gateway, jwt, chat) == [message]
    assert not chat.errors, f"the page raised: {chat.errors}"


async def test_once_a_socket_gets_through_the_next_message_goes_over_it(
    context: BrowserContext,
    page_gateway: GatewayProcess,
    token: Mint,
    fake_upstream: FakeUpstream,
) -> None:
    jwt = token()
    async with refusing_proxy(page_gateway.url) as proxy:
        chat = ChatPage(await context.new_page())
        await chat.open(proxy.url, jwt)
        status = connection_status(chat)
        await expect(status).to_have_text(OVER_HTTP)
        first = unique(WORDS)
        await chat.send(first)
        await expect(chat.log).to_contain_text("You said: w1")
        # The proxy lets sockets through from now on; the page keeps probing for one.
        proxy.refusing = False
        await chat.until_answered()
        await expect(status).to_have_text(CONNECTED, timeout=SLOW)

        second = unique("and again")
        await chat.send(second)
        await expect(chat.log).to_contain_text(f"You said: {second}")
        await chat.until_answered()

        # The first went over HTTP once; the second over the socket, not over HTTP.
        assert proxy.requests.count("POST /completion") == 1, proxy.requests
        assert "GET /ws" in proxy.requests
        upstream_request(fake_upstream, first)
        upstream_request(fake_upstream, second)
        assert await stored_questions(page_gateway, jwt, chat) == [first, second]
    assert not chat.errors, f"the page raised: {chat.errors}"


async def test_a_message_that_cannot_be_sent_is_reported_and_its_text_kept(
    context: BrowserContext,
    page_gateway: GatewayProcess,
    token: Mint,
    fake_upstream: FakeUpstream,
) -> None:
    # The page's clock, so that the client's queueTimeout (30 s) passes without waiting it.
    await context.clock.install()
    async with refusing_proxy(page_gateway.url) as proxy:
        proxy.hold()
        chat = ChatPage(await context.new_page())
        await chat.open(proxy.url, token())
        await proxy.until_upgrades(1)
        message = unique("will this arrive?")
        await chat.send(message)
        await expect(chat.log).to_contain_text(message)
        await expect(chat.message_box).to_have_value("")

        # Nothing gets through any more: the socket is refused, and HTTP answers 502.
        proxy.bad_gateway = True
        proxy.release()
        status = connection_status(chat)
        await expect(status).to_contain_text("Reconnecting")
        await context.clock.fast_forward("00:31")

        await expect(chat.log).to_contain_text("The message was not sent.")
        await expect(chat.message_box).to_have_value(message)
        await expect(chat.send_button).to_be_enabled()
        assert "POST /completion" not in proxy.requests
        assert not [r for r in fake_upstream.requests if r.messages[-1]["content"] == message]
    assert not chat.errors, f"the page raised: {chat.errors}"

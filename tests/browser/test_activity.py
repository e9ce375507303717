"""One conversation on two devices of one user, each on its own gateway instance: a question
asked on one shows, with its streaming answer, on the other."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, expect

from tests.browser.conftest import DESKTOP, ChatPage, Mint, page_config, unique
from tests.support.processes import GatewayProcess, start_pair
from tests.support.redis import RedisServer
from tests.support.upstream import FakeUpstream


@pytest.fixture(scope="module")
def two_gateways(
    redis_server: RedisServer,
    upstream: tuple[FakeUpstream, str],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[GatewayProcess, GatewayProcess]]:
    folder: Path = tmp_path_factory.mktemp("browser-activity")
    environment = {
        "REDIS_URL": redis_server.url,
        "REDIS_PREFIX": f"ba{uuid.uuid4().hex[:8]}:",
        "GATEWAY_CONFIG": str(page_config(folder, upstream[1])),
        "UPSTREAM_READ_TIMEOUT": "10",
    }
    a, b = start_pair(folder, environment)
    yield a, b
    a.stop()
    b.stop()


async def test_a_question_on_one_device_streams_on_the_other_in_the_same_conversation(
    browser: Browser, two_gateways: tuple[GatewayProcess, GatewayProcess], token: Mint
) -> None:
    a, b = two_gateways
    user = f"two-{uuid.uuid4().hex[:6]}"
    contexts = [await browser.new_context(viewport=DESKTOP) for _ in range(2)]
    try:
        laptop = ChatPage(await contexts[0].new_page())
        phone = ChatPage(await contexts[1].new_page())
        await laptop.open(a.url, token(user))
        await phone.open(b.url, token(user))
        first = unique("first question")
        await laptop.send(first)
        await laptop.until_answered()
        # The laptop's new conversation is in the phone's list at once, with no reload.
        entry = phone.page.get_by_role("button", name=re.compile(re.escape(first)))
        await entry.click()
        await expect(phone.log).to_contain_text(f"You said: {first}")
        # The laptop asks again there: the phone shows the question, then the answer streaming.
        second = unique(" ".join(f"w{i}" for i in range(1, 21)))
        await laptop.send(second)
        await expect(phone.log).to_contain_text(second)
        await expect(phone.log).to_contain_text("You said: w1 w2")
        await expect(phone.log).to_contain_text(f"You said: {second}")
        await laptop.until_answered()
        assert not laptop.errors and not phone.errors
    finally:
        for context in contexts:
            await context.close()

"""The chat page in a real browser: Debian's Chromium, driven by Playwright, against a gateway
process (`python -m gateway serve`) on the test Redis and the fake upstream.

One browser for the session and a fresh context (cookies, storage, viewport) for each test.
Every browser test runs on the session's event loop, the loop the browser was started on.
The page is reached only through what a person sees: labels, roles and accessible names.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from playwright.async_api import (
    Browser,
    BrowserContext,
    Error,
    Locator,
    Page,
    Request,
    ViewportSize,
    async_playwright,
    expect,
)

from tests.support.processes import GatewayProcess, config_file, start_process
from tests.support.redis import RedisServer
from tests.support.upstream import FakeUpstream, Recorded

CHROMIUM = Path("/usr/bin/chromium")
# The machine reaches nothing but package registries: Chromium's own background requests
# (updates, sync, field trials) are refused and only slow it down, so they are switched off.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# The page sends no model, so the gateway's default model answers. This one echoes
# "You said: <message>" a word every 30 ms: slow enough to watch, fast enough for a test.
PAGE_MODEL = "fake-i30"
DESKTOP = ViewportSize(width=1280, height=800)
PHONE = ViewportSize(width=390, height=844)
BROWSER_DIR = Path(__file__).resolve().parent

# Given to waits that span a reconnect: its backoff may add a few seconds.
SLOW = 30_000

expect.set_options(timeout=10_000)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    session_loop = pytest.mark.asyncio(loop_scope="session")
    for item in items:
        if item.path.is_relative_to(BROWSER_DIR) and pytest_asyncio.is_async_test(item):
            item.add_marker(session_loop, append=False)


def page_config(folder: Path, upstream_url: str) -> Path:
    """tests/support/processes.py's gateway.toml, with PAGE_MODEL added and made the default."""
    path = config_file(folder, upstream_url)
    text = path.read_text()
    default = 'default_model = "fake"\n'
    assert text.startswith(default), "config_file's layout changed: " + text[:80]
    table = (
        f'[models.{PAGE_MODEL}]\nprovider = "openai"\nbase_url = "{upstream_url}"\n'
        f'api_key_env = "FAKE_KEY"\n'
    )
    path.write_text(f'default_model = "{PAGE_MODEL}"\n{text.removeprefix(default)}{table}')
    return path


@pytest.fixture(scope="session")
def page_gateway(
    redis_server: RedisServer,
    upstream: tuple[FakeUpstream, str],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[GatewayProcess]:
    folder = tmp_path_factory.mktemp("browser-gateway")
    environment = {
        "REDIS_URL": redis_server.url,
        "REDIS_PREFIX": f"b{uuid.uuid4().hex[:8]}:",
        "GATEWAY_CONFIG": str(page_config(folder, upstream[1])),
        "UPSTREAM_READ_TIMEOUT": "10",
    }
    gateway = start_process(folder, environment)
    yield gateway
    gateway.stop()


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def browser() -> AsyncIterator[Browser]:
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(
            f"The browser tests need Debian's Chromium at {CHROMIUM}, and it is not there. "
            "Run `scripts/install dev` as root (it installs it), or "
            "`apt-get install --no-install-recommends chromium`.",
            pytrace=False,
        )
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_ARGS, timeout=30_000
        )
        yield browser
        await browser.close()


@dataclass
class ChatPage:
    """The chat page, by its labels and roles."""

    page: Page
    errors: list[Error] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)

    @property
    def message_box(self) -> Locator:
        return self.page.get_by_label("Message", exact=True)

    @property
    def send_button(self) -> Locator:
        return self.page.get_by_role("button", name="Send", exact=True)

    @property
    def stop_button(self) -> Locator:
        return self.page.get_by_role("button", name="Stop", exact=True)

    @property
    def log(self) -> Locator:
        return self.page.get_by_role("log")

    async def open(self, base_url: str, token: str) -> None:
        """Load the page signed in, and wait until it can send (it is connected)."""
        self.page.on("pageerror", self._record_error)
        self.page.on("request", self._record_request)
        await self.page.goto(f"{base_url}/#token={token}")
        await expect(self.send_button).to_be_enabled()

    def _record_error(self, error: Error) -> None:
        self.errors.append(error)

    def _record_request(self, request: Request) -> None:
        self.requests.append(request.url)

    async def send(self, message: str) -> None:
        await self.message_box.fill(message)
        await self.send_button.click()

    async def until_answered(self) -> None:
        """Wait until no answer is running: Stop has gone and Send is back."""
        await expect(self.stop_button).to_be_hidden()
        await expect(self.send_button).to_be_visible()

    async def evaluate(self, script: str, arg: Any = None) -> Any:
        return await self.page.evaluate(script, arg)


Mint = Callable[..., str]


@pytest_asyncio.fixture(loop_scope="session")
async def context(browser: Browser) -> AsyncIterator[BrowserContext]:
    context = await browser.new_context(viewport=DESKTOP)
    context.set_default_timeout(10_000)
    yield context
    await context.close()


@pytest_asyncio.fixture(loop_scope="session")
async def chat(
    context: BrowserContext, page_gateway: GatewayProcess, token: Mint
) -> AsyncIterator[ChatPage]:
    """The chat page at desktop size, signed in and connected; it must raise no error."""
    chat = ChatPage(await context.new_page())
    await chat.open(page_gateway.url, token())
    yield chat
    assert not chat.errors, f"the page raised: {chat.errors}"


def upstream_request(fake: FakeUpstream, message: str) -> Recorded:
    """The upstream request whose last message is `message` (messages are made unique)."""
    found = [r for r in fake.requests if r.messages and r.messages[-1]["content"] == message]
    assert len(found) == 1, f"{len(found)} upstream requests for {message!r}"
    return found[0]


def unique(words: str) -> str:
    """`words` with a short random tag, so the upstream request can be found again."""
    return f"{words} [{uuid.uuid4().hex[:6]}]"


def connection_status(chat: ChatPage) -> Locator:
    """The status that says how the page is connected (the conversation list has one too)."""
    return chat.page.get_by_role("status").filter(has_text=re.compile("Connect|Reconnect"))


async def the_answer(chat: ChatPage, answer: str) -> None:
    """The log holds `answer` once, whole: no word missing, none repeated, nothing after it."""
    await expect(chat.log).to_contain_text(answer, timeout=SLOW)
    text = await chat.log.text_content()
    assert text is not None
    assert text.count("You said:") == 1, f"the answer is shown more than once: {text!r}"
    shown = text[text.index("You said:") :]
    assert shown.startswith(answer), f"not the answer: {shown!r}"
    rest = shown.removeprefix(answer)
    assert not re.search(r"\bw\d+\b", rest), f"words after the answer's end: {rest!r}"

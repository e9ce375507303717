"""The page keeps an answer going through what goes wrong around it: a reload in the middle of
the answer, the gateway process restarting under it, and a network that blocks WebSockets."""

from __future__ import annotations

import asyncio
import re
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.async_api import BrowserContext, expect

from tests.browser.conftest import (
    SLOW,
    ChatPage,
    Mint,
    connection_status,
    page_config,
    the_answer,
    unique,
)
from tests.support.processes import GatewayProcess, gateway_environment, spawn
from tests.support.redis import RedisServer
from tests.support.serving import free_port
from tests.support.upstream import FakeUpstream

# Long enough (a word every 30 ms: about 4.5 s) that what the test does in the middle of the
# answer happens while it is still being written.
WORDS = " ".join(f"w{i}" for i in range(1, 151))

# A WebSocket that never gets through, as behind a proxy that refuses the upgrade: it reports
# an error and then a close (1006) without ever opening. Installed before the page's scripts.
BLOCK_WEBSOCKETS = """(() => {
  class BlockedWebSocket extends EventTarget {
    static CONNECTING = 0;
    static OPEN = 1;
    static CLOSING = 2;
    static CLOSED = 3;
    constructor(url, protocols) {
      super();
      this.url = String(url);
      this.protocol = "";
      this.readyState = 0;
      this.bufferedAmount = 0;
      this.extensions = "";
      this.binaryType = "blob";
      this.onopen = this.onmessage = this.onerror = this.onclose = null;
      window.__blockedSockets = (window.__blockedSockets || 0) + 1;
      setTimeout(() => {
        this.readyState = 3;
        const error = new Event("error");
        this.onerror?.(error);
        this.dispatchEvent(error);
        const close = new CloseEvent("close", { code: 1006, reason: "", wasClean: false });
        this.onclose?.(close);
        this.dispatchEvent(close);
      }, 0);
    }
    send() {
      throw new DOMException("The socket is not open.", "InvalidStateError");
    }
    close() {}
  }
  window.WebSocket = BlockedWebSocket;
})();"""


async def test_a_reload_mid_answer_picks_the_same_answer_up_to_its_end(
    chat: ChatPage, fake_upstream: FakeUpstream
) -> None:
    message = unique(WORDS)
    answer = f"You said: {message}"

    await chat.send(message)
    await expect(chat.log).to_contain_text("You said: w1 w2 w3")
    await chat.page.reload()

    # The reloaded page reopens the conversation and follows the answer still being written.
    await expect(chat.stop_button).to_be_visible()
    await expect(chat.log).to_contain_text(message)
    await chat.until_answered()
    await the_answer(chat, answer)
    # One question to the model: the reload re-attached, it did not ask again.
    asked = [
        r for r in fake_upstream.requests if r.messages and r.messages[-1]["content"] == message
    ]
    assert len(asked) == 1, f"the model was asked {len(asked)} times"


# The gateway restart.


def start_on_port(folder: Path, env: dict[str, str], port: int, within: float) -> GatewayProcess:
    """A gateway listening on `port`, retried while the port is still held (by a gateway that
    is shutting down); gives up after `within` seconds."""
    deadline = time.monotonic() + within
    while True:
        gateway = spawn(folder, env, port)
        process = gateway.process
        assert process.stdout is not None
        # uvicorn says so once its socket is bound and listening.
        for line in process.stdout:
            gateway.output.append(line)
            if "Uvicorn running on" in line:
                gateway.reader = threading.Thread(
                    target=_read_on, args=(process, gateway.output), daemon=True
                )
                gateway.reader.start()
                return gateway
        gateway.stop()
        if time.monotonic() > deadline:
            raise RuntimeError(f"no gateway on port {port}:\n" + "".join(gateway.output))
        time.sleep(0.1)


def _read_on(process: subprocess.Popen[str], lines: list[str]) -> None:
    assert process.stdout is not None
    for line in process.stdout:
        lines.append(line)


@pytest.fixture
def restart_environment(
    redis_server: RedisServer, upstream: tuple[FakeUpstream, str], tmp_path: Path
) -> dict[str, str]:
    """Settings for gateways of the test's own, which it stops and replaces."""
    # A drain far longer than the answer: a stopping gateway writes it to its end, into Redis.
    return gateway_environment(
        redis_server.url, page_config(tmp_path, upstream[1]), SHUTDOWN_DRAIN_SECONDS="30"
    )


@pytest.fixture
def gateways() -> Iterator[list[GatewayProcess]]:
    """Gateway processes the test starts; all stopped at its end."""
    started: list[GatewayProcess] = []
    yield started
    for gateway in started:
        gateway.stop()


async def test_the_answer_continues_when_the_gateway_restarts(
    context: BrowserContext,
    token: Mint,
    tmp_path: Path,
    restart_environment: dict[str, str],
    gateways: list[GatewayProcess],
) -> None:
    port = free_port()
    first = await asyncio.to_thread(start_on_port, tmp_path, restart_environment, port, 10)
    gateways.append(first)
    chat = ChatPage(await context.new_page())
    await chat.open(first.url, token())
    message = unique(WORDS)
    answer = f"You said: {message}"

    await chat.send(message)
    await expect(chat.log).to_contain_text("You said: w1 w2 w3")
    first.signal(signal.SIGTERM)
    # Its socket closes (1012, "restarting") and the page says it is reconnecting.
    await expect(connection_status(chat)).to_contain_text("Reconnecting")
    second = await asyncio.to_thread(start_on_port, tmp_path, restart_environment, port, 20)
    gateways.append(second)

    await expect(connection_status(chat)).to_have_text(
        re.compile(r"^\s*Connected\s*$"), timeout=SLOW
    )
    await expect(chat.stop_button).to_be_hidden(timeout=SLOW)
    await chat.until_answered()
    await the_answer(chat, answer)
    assert await asyncio.to_thread(first.wait, 30) in (0, -signal.SIGTERM)
    assert not chat.errors, f"the page raised: {chat.errors}"

    # What the replacement stored is that same answer, shown once when the page is reloaded.
    await chat.page.reload()
    await expect(chat.send_button).to_be_enabled()
    await the_answer(chat, answer)


async def test_without_websockets_the_page_answers_over_http(
    context: BrowserContext, page_gateway: GatewayProcess, token: Mint
) -> None:
    await context.add_init_script(BLOCK_WEBSOCKETS)
    chat = ChatPage(await context.new_page())
    await chat.open(page_gateway.url, token())
    status = connection_status(chat)
    await expect(status).to_have_text(re.compile(r"^\s*Connected over HTTP\s*$"))
    # One socket that did not open, while HTTP reached the gateway, is enough to fall back.
    assert await chat.evaluate("() => window.__blockedSockets") >= 1

    message = unique(" ".join(f"w{i}" for i in range(1, 31)))
    await chat.send(message)
    await expect(chat.log).to_contain_text("You said: w1 w2")
    await expect(chat.stop_button).to_be_visible()
    await chat.until_answered()
    await the_answer(chat, f"You said: {message}")
    await expect(status).to_have_text(re.compile(r"^\s*Connected over HTTP\s*$"))
    assert any(url.endswith("/completion") for url in chat.requests), chat.requests
    assert not chat.errors, f"the page raised: {chat.errors}"

"""The official OpenAI JavaScript SDK (the `openai` npm package, pinned in tests/js), loaded
as ES modules by a page in Chromium, calls the gateway's /v1 from another origin: with that
origin in ALLOWED_ORIGINS its preflights pass (x-stainless-* headers and all) and the answers
arrive, streamed or not, with the headers the SDK reads; a page on an origin not in the list
is refused by the browser and the gateway never sees its request."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import BrowserContext, Page
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from tests.browser.conftest import Mint, unique, upstream_request
from tests.support.processes import GatewayProcess, config_file, gateway_environment, start_process
from tests.support.redis import RedisServer
from tests.support.serving import serve_in_thread
from tests.support.upstream import FakeUpstream

OPENAI_PACKAGE = Path(__file__).resolve().parents[1] / "js" / "node_modules" / "openai"
# The page only loads the SDK; each test says in page.evaluate what it asks.
PAGE = """<!doctype html>
<html lang="en"><meta charset="utf-8"><title>OpenAI SDK page</title>
<script type="module">
import OpenAI from "/openai/index.mjs";
window.OpenAI = OpenAI;
</script></html>
"""
# Runs in the page: one chat completion through the SDK, or the error it ended with.
ASK = """async ({ baseURL, apiKey, message, stream }) => {
  const client = new window.OpenAI({ baseURL, apiKey, dangerouslyAllowBrowser: true,
                                     maxRetries: 0 });
  const request = { model: "fake", messages: [{ role: "user", content: message }] };
  try {
    if (stream) {
      const chunks = await client.chat.completions.create({ ...request, stream: true });
      let text = "";
      for await (const chunk of chunks) text += chunk.choices[0]?.delta?.content ?? "";
      return { text };
    }
    const { data, response } = await client.chat.completions.create(request).withResponse();
    return { text: data.choices[0].message.content,
             generationId: response.headers.get("x-generation-id") };
  } catch (error) {
    return { error: error.constructor.name, status: error.status ?? null,
             shouldRetry: error.headers?.get("x-should-retry") ?? null };
  }
}"""


def page_server() -> Starlette:
    """A site of its own origin: the page, and the SDK's files under /openai/."""
    if not (OPENAI_PACKAGE / "index.mjs").is_file():
        pytest.fail(
            f"The `openai` npm package is not installed at {OPENAI_PACKAGE}. "
            "Run `scripts/install dev` (it runs `npm ci --prefix tests/js`).",
            pytrace=False,
        )

    async def page(_: Request) -> HTMLResponse:
        return HTMLResponse(PAGE)

    return Starlette(
        routes=[Route("/", page), Mount("/openai", StaticFiles(directory=OPENAI_PACKAGE))]
    )


@pytest.fixture(scope="module")
def allowed_site() -> Iterator[str]:
    with serve_in_thread(page_server()) as url:
        yield url


@pytest.fixture(scope="module")
def other_site() -> Iterator[str]:
    with serve_in_thread(page_server()) as url:
        yield url


@pytest.fixture(scope="module")
def cors_gateway(
    allowed_site: str,
    redis_server: RedisServer,
    upstream: tuple[FakeUpstream, str],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[GatewayProcess]:
    """A gateway process that allows the allowed site's origin only."""
    folder = tmp_path_factory.mktemp("cors-gateway")
    config = config_file(folder, upstream[1])
    environment = gateway_environment(redis_server.url, config, ALLOWED_ORIGINS=allowed_site)
    gateway = start_process(folder, environment)
    yield gateway
    gateway.stop()


async def sdk_page(context: BrowserContext, site: str, console: list[str]) -> Page:
    """The site's page with the SDK loaded; what Chromium logs goes to `console`."""
    page = await context.new_page()
    page.on("console", lambda message: console.append(message.text))
    await page.goto(site)
    await page.wait_for_function("() => window.OpenAI !== undefined")
    return page


async def ask(page: Page, gateway: GatewayProcess, key: str, message: str, stream: bool) -> Any:
    arg = {"baseURL": f"{gateway.url}/v1", "apiKey": key, "message": message, "stream": stream}
    return await page.evaluate(ASK, arg)


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
async def test_the_openai_sdk_on_an_allowed_origin_gets_its_answer(
    context: BrowserContext,
    allowed_site: str,
    cors_gateway: GatewayProcess,
    token: Mint,
    fake_upstream: FakeUpstream,
    stream: bool,
) -> None:
    console: list[str] = []
    page = await sdk_page(context, allowed_site, console)
    message = unique("hello from another origin")
    completions = f"{cors_gateway.url}/v1/chat/completions"
    async with page.expect_request(lambda r: r.method == "POST" and r.url == completions) as sent:
        result = await ask(page, cors_gateway, token(), message, stream)
    assert result.get("text") == f"You said: {message}", (result, console)
    # The headers that used to fail the preflight were sent, and let through.
    headers = await (await sent.value).all_headers()
    assert headers["x-stainless-lang"] == "js" and "x-stainless-retry-count" in headers
    if not stream:
        # Exposed, so the browser lets the SDK read it.
        assert str(result["generationId"]).startswith("gen_"), result
    upstream_request(fake_upstream, message)  # asked once: no retry hid a refusal
    assert not [line for line in console if "CORS" in line], console


async def test_the_openai_sdk_reads_the_retry_hint_of_a_refusal(
    context: BrowserContext, allowed_site: str, cors_gateway: GatewayProcess
) -> None:
    page = await sdk_page(context, allowed_site, [])
    result = await ask(page, cors_gateway, "not-a-token", "hello", stream=False)
    assert result == {"error": "AuthenticationError", "status": 401, "shouldRetry": "false"}


async def test_a_page_on_another_origin_is_refused_by_the_browser(
    context: BrowserContext,
    other_site: str,
    cors_gateway: GatewayProcess,
    token: Mint,
    fake_upstream: FakeUpstream,
) -> None:
    console: list[str] = []
    page = await sdk_page(context, other_site, console)
    message = unique("hello from a stranger")
    for stream in (False, True):
        result = await ask(page, cors_gateway, token(), message, stream)
        assert result == {"error": "APIConnectionError", "status": None, "shouldRetry": None}
    assert [line for line in console if "blocked by CORS policy" in line], console
    assert not [r for r in fake_upstream.requests if r.messages and message in str(r.messages)]

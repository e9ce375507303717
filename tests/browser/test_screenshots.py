"""The page at desktop and phone sizes, light and dark: it fits, and it is photographed.

Each run saves the pictures under the test's tmp_path; with SCREENSHOTS_DIR set (as
`scripts/screenshots` sets it to docs/screenshots) they are saved there too.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import pytest
from playwright.async_api import Browser, Locator, ViewportSize, expect

from tests.browser.conftest import DESKTOP, PHONE, ChatPage
from tests.support.processes import GatewayProcess

Mint = Callable[..., str]
QUESTIONS = [
    "Hello! What can you do?",
    "Can you keep an answer going if my connection drops for a moment?",
]


def save(png: bytes, name: str, tmp_path: Path) -> None:
    (tmp_path / name).write_bytes(png)
    folder = os.environ.get("SCREENSHOTS_DIR")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        (Path(folder) / name).write_bytes(png)


async def inside(box: Locator, viewport: ViewportSize) -> bool:
    bounds = await box.bounding_box()
    assert bounds is not None
    return (
        bounds["x"] >= 0
        and bounds["y"] >= 0
        and bounds["x"] + bounds["width"] <= viewport["width"]
        and bounds["y"] + bounds["height"] <= viewport["height"]
    )


@pytest.mark.parametrize("scheme", ["light", "dark"])
@pytest.mark.parametrize("size", ["desktop", "phone"])
async def test_the_page_fits_and_is_photographed(
    browser: Browser,
    page_gateway: GatewayProcess,
    token: Mint,
    tmp_path: Path,
    size: str,
    scheme: Literal["light", "dark"],
) -> None:
    phone = size == "phone"
    viewport = PHONE if phone else DESKTOP
    context = await browser.new_context(
        viewport=viewport, color_scheme=scheme, is_mobile=phone, has_touch=phone
    )
    context.set_default_timeout(10_000)
    try:
        chat = ChatPage(await context.new_page())
        await chat.open(page_gateway.url, token())
        for question in QUESTIONS:
            await chat.send(question)
            await chat.until_answered()
            await expect(chat.log).to_contain_text(f"You said: {question}")
        assert not chat.errors, f"the page raised: {chat.errors}"

        # Nothing sideways to scroll, and the composer is on screen.
        overflow = await chat.evaluate(
            "() => document.scrollingElement.scrollWidth - window.innerWidth"
        )
        assert overflow <= 0, f"the page is {overflow}px wider than the {size} screen"
        assert await inside(chat.message_box, viewport)
        assert await inside(chat.send_button, viewport)

        png = await chat.page.screenshot(animations="disabled", caret="hide")
        save(png, f"chat-{size}-{scheme}.png", tmp_path)
    finally:
        await context.close()

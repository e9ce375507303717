"""CORS with ALLOWED_ORIGINS set, over plain HTTP: an allowed origin's preflight passes with
whatever headers the official SDKs send, reflected; another origin gets no grant; the headers
the SDKs read from a response are exposed. tests/browser/test_cors_sdk.py runs the OpenAI
JavaScript SDK itself in Chromium against the same rules."""

from __future__ import annotations

import httpx2
import pytest

from tests.conftest import GatewayFactory

ALLOWED = "https://chat.example"
OTHER = "https://evil.example"
# As Chromium lists them in a preflight (lowercase, sorted, safelisted ones left out): what the
# OpenAI JavaScript SDK sends from a browser, with an organization, a project and a helper.
OPENAI_SDK = (
    "authorization,content-type,idempotency-key,openai-organization,openai-project,"
    "x-stainless-arch,x-stainless-helper-method,x-stainless-lang,x-stainless-os,"
    "x-stainless-package-version,x-stainless-retry-count,x-stainless-runtime,"
    "x-stainless-runtime-version,x-stainless-timeout"
)
# The AI SDK's useChat sends its own headers next to the app's.
AI_SDK = "authorization,content-type,x-agent,x-conversation-id"
# Our own clients' fallback and resume.
OURS = "authorization,content-type,idempotency-key,last-event-id"


async def preflight(url: str, origin: str, requested: str) -> httpx2.Response:
    """The preflight a browser on `origin` sends before POSTing to `url` with `requested`."""
    headers = {
        "Origin": origin,
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": requested,
    }
    async with httpx2.AsyncClient(timeout=10) as http:
        return await http.options(url, headers=headers)


@pytest.mark.parametrize(
    ("path", "requested"),
    [
        ("/v1/chat/completions", OPENAI_SDK),
        ("/api/chat", AI_SDK),
        ("/completion", OURS),
    ],
)
async def test_an_allowed_origins_preflight_passes_with_the_headers_it_asks_for(
    start_gateway: GatewayFactory, path: str, requested: str
) -> None:
    with start_gateway(allowed_origins=(ALLOWED,)) as url:
        response = await preflight(url + path, ALLOWED, requested)
    assert response.status_code == 200, response.text
    assert response.headers["access-control-allow-origin"] == ALLOWED
    assert response.headers["access-control-allow-headers"] == requested
    assert "POST" in response.headers["access-control-allow-methods"]
    # The SDKs send a token, never cookies: credentials stay off.
    assert "access-control-allow-credentials" not in response.headers


async def test_another_origins_preflight_is_refused_without_a_grant(
    start_gateway: GatewayFactory,
) -> None:
    with start_gateway(allowed_origins=(ALLOWED,)) as url:
        response = await preflight(f"{url}/v1/chat/completions", OTHER, OPENAI_SDK)
    # The browser reads Access-Control-Allow-Origin: without it, the request is never sent.
    assert response.status_code == 400
    assert response.text == "Disallowed CORS origin"
    assert "access-control-allow-origin" not in response.headers
    assert "access-control-allow-credentials" not in response.headers


async def test_the_headers_the_sdks_read_are_exposed_to_allowed_origins_only(
    start_gateway: GatewayFactory,
) -> None:
    with start_gateway(allowed_origins=(ALLOWED,)) as url:
        async with httpx2.AsyncClient(timeout=10) as http:
            # No token: OpenAI's error shape, with x-should-retry for the SDK's retries.
            allowed = await http.get(f"{url}/v1/models", headers={"Origin": ALLOWED})
            other = await http.get(f"{url}/v1/models", headers={"Origin": OTHER})
    assert allowed.status_code == other.status_code == 401
    assert allowed.headers["x-should-retry"] == "false"
    assert allowed.headers["access-control-allow-origin"] == ALLOWED
    exposed = {
        h.strip().lower() for h in allowed.headers["access-control-expose-headers"].split(",")
    }
    assert exposed == {
        "x-conversation-id",
        "x-generation-id",
        "x-gateway-overhead-ms",
        "retry-after",
        "x-should-retry",
    }
    assert "access-control-allow-origin" not in other.headers


async def test_without_allowed_origins_no_cors_headers_are_sent(
    start_gateway: GatewayFactory,
) -> None:
    with start_gateway() as url:
        response = await preflight(f"{url}/v1/chat/completions", ALLOWED, OPENAI_SDK)
    assert not [h for h in response.headers if h.lower().startswith("access-control-")]

"""The gateway's HTTP API with the client's token: renewed, and the request sent again, when
the gateway answers 401."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx2

from gateway_client.errors import GatewayError
from gateway_client.tokens import Tokens

# SSE streams send a keep-alive comment every 15 s: silence for much longer means a dead link.
TIMEOUT = httpx2.Timeout(10.0, read=45.0)


class HttpApi:
    def __init__(self, base_url: str, tokens: Tokens) -> None:
        self.base_url = base_url.rstrip("/")
        self._tokens = tokens
        self._client: httpx2.AsyncClient | None = None

    @property
    def client(self) -> httpx2.AsyncClient:
        if self._client is None:
            self._client = httpx2.AsyncClient(timeout=TIMEOUT)
        return self._client

    async def request(self, method: str, path: str, **options: Any) -> httpx2.Response:
        """One request; a 401 renews the token (through the callback) and sends it again."""
        extra = options.pop("headers", {})
        while True:
            token = await self._tokens.current()
            response = await self.client.request(
                method, self.base_url + path, headers=_headers(token, extra), **options
            )
            if response.status_code != 401:
                return response
            await self._tokens.renew(token, refusal_detail(response))

    @asynccontextmanager
    async def stream(
        self, method: str, path: str, **options: Any
    ) -> AsyncIterator[httpx2.Response]:
        """A streamed response, after renewing the token as `request` does."""
        extra = options.pop("headers", {})
        while True:
            token = await self._tokens.current()
            async with self.client.stream(
                method, self.base_url + path, headers=_headers(token, extra), **options
            ) as response:
                if response.status_code != 401:
                    yield response
                    return
                await response.aread()
                reason = refusal_detail(response)
            await self._tokens.renew(token, reason)

    async def reachable(self) -> bool:
        """Whether the gateway answers plain HTTP (its liveness probe needs no token)."""
        try:
            response = await self.client.get(self.base_url + "/healthz", timeout=5.0)
        except httpx2.HTTPError:
            return False
        return response.status_code == 200

    async def conversation(
        self, conversation_id: str, *, cursor: str | None = None, limit: int | None = None
    ) -> dict[str, Any] | None:
        """`GET /conversations/{id}`: its latest generation and a page of its messages, the
        newest without `cursor`, else those before the page whose `next_cursor` it is; None
        if unknown. A page is bounded (`limit` messages, CONVERSATION_PAGE_BYTES)."""
        params = {"cursor": cursor, "limit": limit}
        response = await self.request(
            "GET",
            f"/conversations/{conversation_id}",
            params={name: value for name, value in params.items() if value is not None},
        )
        if response.status_code == 404:
            return None
        check_status(response)
        view: dict[str, Any] = response.json()
        return view

    async def messages(self, conversation_id: str) -> list[dict[str, Any]]:
        """Every message of a conversation's active path, oldest first, read page by page
        (empty if unknown). It holds the whole history in memory: read pages with
        `conversation` to show only the latest."""
        pages: list[list[dict[str, Any]]] = []
        cursor = None
        while (view := await self.conversation(conversation_id, cursor=cursor)) is not None:
            pages.append(view["messages"])
            cursor = view["next_cursor"]
            if cursor is None:
                break
        return [message for page in reversed(pages) for message in page]

    async def switch_branch(self, conversation_id: str, message_id: str) -> str:
        """Make the newest descendant of a message the conversation's active leaf (the path
        `conversation` shows and the next turn continues); returns that leaf's id."""
        response = await self.request(
            "PATCH",
            f"/conversations/{conversation_id}",
            json={"active_message_id": message_id},
        )
        check_status(response)
        return str(response.json()["active_message_id"])

    async def fork(self, conversation_id: str, message_id: str) -> str:
        """A new conversation holding the path down to a message; returns its id."""
        response = await self.request(
            "POST", f"/conversations/{conversation_id}/fork", json={"message_id": message_id}
        )
        check_status(response)
        return str(response.json()["id"])

    async def delete_message(self, conversation_id: str, message_id: str) -> None:
        """Delete a message and everything below it (an answer running there is stopped)."""
        response = await self.request(
            "DELETE", f"/conversations/{conversation_id}/messages/{message_id}"
        )
        check_status(response)

    async def cancel(self, generation_id: str) -> str:
        """`POST /generations/{id}/cancel`: its status (`running` while the cancel is on its
        way, else its final status)."""
        response = await self.request("POST", f"/generations/{generation_id}/cancel")
        check_status(response)
        return str(response.json()["status"])

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None


def _headers(token: str, extra: dict[str, str]) -> dict[str, str]:
    return {**extra, "Authorization": f"Bearer {token}"}


def refusal_detail(response: httpx2.Response) -> str:
    """The gateway's own words from an error body, else the status."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("detail"), str):
        return str(body["detail"])
    return f"HTTP {response.status_code}"


def check_status(response: httpx2.Response) -> None:
    """Raise a `GatewayError` named after the gateway's error code for a failed answer."""
    if response.status_code < 400:
        return
    try:
        body = response.json()
    except ValueError:
        body = {}
    code = body.get("error") if isinstance(body, dict) else None
    retry_after = body.get("retry_after") if isinstance(body, dict) else None
    raise GatewayError(
        refusal_detail(response),
        code=str(code or "internal"),
        retry_after=float(retry_after) if isinstance(retry_after, int | float) else None,
    )

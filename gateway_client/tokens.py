"""The client's token: the current one, when it expires, and getting a new one."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable

from gateway_client.errors import GatewayError

TokenRefresh = Callable[[], Awaitable[str] | str]
"""Returns a fresh token (a coroutine function or a plain one)."""

MAX_RENEWALS = 3  # refused tokens in a row before renewing is hopeless
RENEW_MARGIN = 5.0  # seconds before `exp` at which a token no longer opens a socket


class Tokens:
    def __init__(self, token: str | None, refresh: TokenRefresh | None) -> None:
        if not token and refresh is None:
            raise ValueError("GatewayClient needs a token or a token_refresh callback.")
        self.token = token
        self.expires_at: float | None = None  # Unix seconds, from `ready` / `authenticated`
        self.refresh_calls = 0
        self._refresh = refresh
        self._renewals = 0  # refused tokens since the gateway last accepted one
        self._lock = asyncio.Lock()

    @property
    def can_refresh(self) -> bool:
        return self._refresh is not None

    def accepted(self, expires_at: float | None) -> None:
        """The gateway took the current token (`ready`, `authenticated`, an HTTP answer)."""
        self._renewals = 0
        if expires_at is not None:
            self.expires_at = expires_at

    async def current(self) -> str:
        """The token to connect with, renewed first when missing or about to expire."""
        expiring = self.expires_at is not None and time.time() >= self.expires_at - RENEW_MARGIN
        if self._refresh is not None and (not self.token or expiring):
            await self.renew(self.token)
        if not self.token:
            raise GatewayError("There is no token to connect with.", code="unauthorized")
        return self.token

    async def renew(self, rejected: str | None, reason: str | None = None) -> None:
        """Get a new token from the callback. With `reason`, the gateway refused `rejected`:
        if the callback gives it back, or several in a row are refused, renewing is hopeless.
        Concurrent callers share one call; one whose token was replaced meanwhile returns."""
        async with self._lock:
            if rejected != self.token:
                return
            refused = f"The gateway refused the token: {reason or 'unauthorized'}"
            if self._refresh is None:
                raise GatewayError(refused, code="unauthorized")
            if reason is not None:
                self._renewals += 1
                if self._renewals > MAX_RENEWALS:
                    also = f" It also refused the last {MAX_RENEWALS} refreshed tokens."
                    raise GatewayError(refused + also, code="unauthorized")
            token = await self._call()
            if reason is not None and token == rejected:
                raise GatewayError(
                    f"{refused} The token_refresh callback returned the same token.",
                    code="unauthorized",
                )
            self.token = token
            self.expires_at = None

    async def _call(self) -> str:
        assert self._refresh is not None
        self.refresh_calls += 1
        try:
            value = self._refresh()
            token = await value if inspect.isawaitable(value) else value
        except Exception as exc:
            raise GatewayError(
                f"The token_refresh callback failed: {exc}", code="unauthorized"
            ) from exc
        if not isinstance(token, str) or not token:
            raise GatewayError("The token_refresh callback returned no token.", code="unauthorized")
        return token

"""The cookie jar of every HTTP client the gateway opens (model APIs, the JWKS endpoint,
webhook receivers): one that keeps nothing.

httpx's own jar has no bound: every cookie a server set would be kept for the process's life
and sent back with every later request to it, whichever user's it was. The gateway is
stateless towards the servers it calls, so it keeps none.
"""

from __future__ import annotations

from http.cookiejar import CookieJar, DefaultCookiePolicy


def no_cookies() -> CookieJar:
    """A jar that stores and sends no cookie: no domain is allowed."""
    return CookieJar(DefaultCookiePolicy(allowed_domains=[]))

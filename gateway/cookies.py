"""The cookie jar of every HTTP client the gateway opens (model APIs, the JWKS endpoint,
webhook receivers, a trace collector): one that keeps nothing.

httpx's and requests' own jars have no bound: every cookie a server set would be kept for the
process's life and sent back with every later request to it, whichever user's it was. The
gateway is stateless towards the servers it calls, so it keeps none.
"""

from __future__ import annotations

from http.cookiejar import CookieJar, DefaultCookiePolicy


def no_cookie_policy() -> DefaultCookiePolicy:
    """A policy that allows no domain, so a jar under it stores and sends no cookie."""
    return DefaultCookiePolicy(allowed_domains=[])


def no_cookies() -> CookieJar:
    """A jar that stores and sends no cookie."""
    return CookieJar(no_cookie_policy())

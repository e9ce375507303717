"""The gateway's HTTP clients keep no cookie (gateway/cookies.py)."""

from __future__ import annotations

import httpx2

from gateway.cookies import no_cookies


def test_a_cookie_set_by_a_server_is_not_kept() -> None:
    cookies = httpx2.Cookies(no_cookies())
    request = httpx2.Request("GET", "https://api.example.com/v1/models")
    set_cookie = [("set-cookie", f"c{n}=v; Domain=example.com; Path=/") for n in range(3)]
    cookies.extract_cookies(httpx2.Response(200, headers=set_cookie, request=request))
    assert len(cookies) == 0

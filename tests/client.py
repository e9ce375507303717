"""Moved to tests/support/ws.py; kept until every test module imports it from there."""

from tests.support.ws import (
    close_code,
    connected,
    open_socket,
    receive,
    send,
    text_of,
    until_done,
    ws_url,
)

__all__ = [
    "close_code",
    "connected",
    "open_socket",
    "receive",
    "send",
    "text_of",
    "until_done",
    "ws_url",
]

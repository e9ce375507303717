"""Tokens never reach a log line."""

from __future__ import annotations

import logging

import pytest

from gateway.logs import RedactTokens, redact

JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhIn0.c2lnbmF0dXJl"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (f"GET /ws?token={JWT} HTTP/1.1", "GET /ws?token=[redacted] HTTP/1.1"),
        (f"/ws?a=1&token={JWT}&b=2", "/ws?a=1&token=[redacted]&b=2"),
        (f"/x?access_token={JWT}", "/x?access_token=[redacted]"),
        (f"Authorization: Bearer {JWT}", "Authorization: Bearer [redacted]"),
        (f"subprotocol bearer.{JWT}", "subprotocol bearer.[redacted]"),
        ("/ws?tokens_used=3", "/ws?tokens_used=3"),
        ("nothing here", "nothing here"),
    ],
)
def test_redact(text: str, expected: str) -> None:
    assert redact(text) == expected


def test_filter_rewrites_formatted_records() -> None:
    record = logging.LogRecord(
        "uvicorn.access",
        logging.INFO,
        __file__,
        1,
        '%s - "%s %s"',
        ("127.0.0.1", "GET", f"/ws?token={JWT}"),
        None,
    )
    assert RedactTokens().filter(record)
    assert JWT not in record.getMessage()
    assert "token=[redacted]" in record.getMessage()

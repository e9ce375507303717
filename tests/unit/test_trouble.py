"""A reader's loop on a failing Redis says so once when it starts failing and once when it
works again, however many retries come between."""

from __future__ import annotations

import logging

import pytest

from gateway.store.trouble import Trouble


def test_an_outage_is_logged_once_when_it_starts_and_once_when_it_ends(
    caplog: pytest.LogCaptureFixture,
) -> None:
    trouble = Trouble("reading something")
    with caplog.at_level(logging.WARNING, logger="gateway.store"):
        trouble.over()  # nothing failed yet: nothing to say
        for _ in range(5):
            trouble.met(ConnectionError("refused"))
        trouble.over()
        trouble.over()
    assert [r.getMessage() for r in caplog.records] == [
        "reading something failed: ConnectionError",
        "reading something works again",
    ]

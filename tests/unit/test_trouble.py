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


def test_each_retry_waits_longer_up_to_a_second_and_a_success_starts_again() -> None:
    trouble = Trouble("reading something")
    waits = [trouble.step() for _ in range(7)]
    assert waits == [0.05, 0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    trouble.over()
    assert trouble.step() == 0.05

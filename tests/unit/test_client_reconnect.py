"""What the client does after each lost socket (`gateway_client.reconnect`), by close code."""

from __future__ import annotations

import random
from dataclasses import replace
from typing import Any

from gateway_client.connection import Lost, Transport
from gateway_client.events import ErrorEvent
from gateway_client.reconnect import Idle, Reconnects, Renew, Stop, Wait


class Ceiling(random.Random):
    """Jitter that always draws the top of the range, so delays are exact."""

    def random(self) -> float:
        return 1.0


def policy(transport: Transport = "auto") -> Reconnects:
    return Reconnects(0.5, 4.0, 3, transport, rng=Ceiling())


def dropped(code: int | None = 1006, **fields: Any) -> Lost:
    """A socket that opened, got its `ready`, and then went away."""
    return Lost(
        **{"opened": True, "ready": True, "code": code, "reason": "", "token": "t", **fields}
    )


def unopened(blocked: bool = True) -> Lost:
    return Lost(opened=False, code=None, reason="No answer in time.", token="t", blocked=blocked)


def test_delays_double_up_to_the_ceiling_while_sockets_fail() -> None:
    reconnects = policy()
    delays = [reconnects.after(dropped(ready=False), busy=True) for _ in range(6)]
    assert delays == [Wait(d) for d in (0.5, 1.0, 2.0, 4.0, 4.0, 4.0)]


def test_a_socket_that_was_accepted_starts_the_backoff_again() -> None:
    reconnects = policy()
    for _ in range(3):
        reconnects.after(dropped(ready=False), busy=True)
    assert reconnects.after(dropped(), busy=True) == Wait(0.5)


def test_jitter_keeps_a_delay_between_half_and_all_of_it() -> None:
    reconnects = Reconnects(0.5, 30.0, 3, rng=random.Random(7))
    for attempt in range(8):
        step = reconnects.after(dropped(ready=False), busy=True)
        top = min(30.0, 0.5 * 2**attempt)
        assert isinstance(step, Wait) and top / 2 <= step.delay <= top


def test_a_refused_token_is_renewed_without_counting_an_attempt() -> None:
    reconnects = policy()
    reconnects.after(dropped(ready=False), busy=True)
    assert reconnects.after(dropped(4401, ready=False), busy=True) == Renew()
    assert reconnects.after(dropped(ready=False), busy=True) == Wait(1.0)


def test_a_refused_origin_ends_the_client() -> None:
    step = policy().after(dropped(4403, reason="Origin refused."), busy=True)
    assert isinstance(step, Stop)
    assert (step.error.code, step.error.message) == ("forbidden", "Origin refused.")
    step = policy().after(dropped(4403), busy=False)
    assert isinstance(step, Stop) and step.error.message == "This origin may not connect."


def test_an_idle_close_waits_for_a_run_unless_one_is_waiting() -> None:
    reconnects = policy()
    reconnects.after(dropped(ready=False), busy=True)
    assert reconnects.after(dropped(1000, ready=False), busy=False) == Idle()
    assert reconnects.after(dropped(1000, ready=False), busy=True) == Wait(0.5)


def test_too_many_sockets_waits_as_long_as_the_gateway_asks() -> None:
    refusal = ErrorEvent(id=None, code="rate_limited", message="Too many.", retryable=True)
    longer = dropped(4429, refusal=replace(refusal, retry_after=9.0))
    step = policy().after(longer, busy=True)
    assert isinstance(step, Wait) and step.delay == 9.0
    assert step.error is not None
    assert (step.error.code, step.error.message, step.error.retry_after) == (
        "rate_limited",
        "Too many.",
        9.0,
    )
    shorter = dropped(4429, refusal=replace(refusal, retry_after=0.1))
    step = policy().after(shorter, busy=True)
    assert isinstance(step, Wait) and step.delay == 0.5


def test_http_is_tried_after_enough_sockets_in_a_row_fail_to_open() -> None:
    reconnects = policy()
    steps = [reconnects.after(unopened(), busy=True) for _ in range(4)]
    assert [isinstance(s, Wait) and s.try_http for s in steps] == [False, False, True, True]


def test_refused_connections_and_opened_sockets_do_not_lead_to_http() -> None:
    reconnects = policy()
    reconnects.after(unopened(), busy=True)
    reconnects.after(unopened(), busy=True)
    step = reconnects.after(unopened(blocked=False), busy=True)  # nothing listens: a restart
    assert isinstance(step, Wait) and not step.try_http
    reconnects.after(dropped(ready=False), busy=True)  # a handshake got through
    reconnects.after(unopened(), busy=True)
    step = reconnects.after(unopened(), busy=True)
    assert isinstance(step, Wait) and not step.try_http


def test_websocket_only_never_tries_http() -> None:
    reconnects = policy("websocket")
    steps = [reconnects.after(unopened(), busy=True) for _ in range(5)]
    assert not any(isinstance(s, Wait) and s.try_http for s in steps)

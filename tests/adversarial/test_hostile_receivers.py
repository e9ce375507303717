"""A hostile webhook receiver (tests/support/hostile_receiver.py): one whose answer never ends
costs the gateway one attempt's time at most and none of its memory, while another user
streams (`survives`)."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import pytest

from gateway.config.fields import Secret
from tests.adversarial.conftest import Survives
from tests.conftest import GatewayFactory
from tests.support.bystander import fresh_request_seconds
from tests.support.hostile_receiver import HostileReceiver
from tests.support.polling import settle
from tests.support.webhook_receiver import SECRET

Mint = Callable[..., str]


@pytest.mark.parametrize("behaviour", ["endless", "drip"])
async def test_a_receiver_whose_answer_never_ends_costs_one_attempt(
    start_gateway: GatewayFactory, survives: Survives, token: Mint, behaviour: str
) -> None:
    """`endless`: a 200 whose body never ends; only its status counts, so the gateway closes
    the connection at once (before: it read the body into memory for as long as it came).
    `drip`: a head a byte every 100 ms, which resets a timer on each read; the attempt ends
    at WEBHOOK_TIMEOUT as a whole (before: never)."""
    receiver = HostileReceiver(behaviour)
    hook = await receiver.start()
    try:
        with start_gateway(
            webhook_url=hook,
            webhook_secret=Secret(SECRET),
            webhook_when="always",
            webhook_timeout=1.0,
        ) as url:
            async with survives(url):
                await fresh_request_seconds(url, token(f"w-{uuid.uuid4().hex[:8]}"))
                assert await settle(lambda: receiver.requests >= 1, within=10)
                closed = await settle(lambda: receiver.closed >= 1, within=10)
                assert closed, "the gateway still holds the receiver's connection after 10 s"
    finally:
        await receiver.stop()

"""What every adversarial test shares: the checks that prove a gateway came through an attack
unharmed. The helpers behind them live in tests/support (raw_ws, gateways, bystander,
log_capture, polling).

Fixtures (all opt-in except `tokens_stay_out_of_logs`):

- `start_gateway` (overrides tests/conftest.py, same contract): also records each in-thread
  gateway's app and event loop in `running_gateways`, so checks can count its asyncio tasks.
- `token` (overrides tests/conftest.py, same contract): also remembers every minted token.
- `tokens_stay_out_of_logs` (autouse): captures every log record emitted during the test and
  fails the test if a minted token, the JWT secret or an upstream key appears in one.
- `survives`: `async with survives(url): <attack>` starts a bystander (another user streaming
  a long answer) before the attack; afterwards it checks the gateway answers `/healthz`, the
  bystander's stream arrived whole and in order, a fresh request is fast, and (for gateways
  started with `start_gateway`) the gateway's asyncio tasks and the memory the process holds
  (collected, free pages given back: not its high-water mark) return to about where they were.
- `start_probe`: a gateway with a model of the test's own ("probe") and its own retries on.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import (
    AbstractAsyncContextManager,
    AbstractContextManager,
    asynccontextmanager,
    contextmanager,
)
from dataclasses import replace
from typing import Any

import pytest

from gateway.app import create_app
from gateway.config import Settings
from gateway.server.options import uvicorn_options
from tests.conftest import GatewayFactory
from tests.support.bystander import Bystander, fresh_request_seconds, healthy
from tests.support.gateways import (
    LoopProbe,
    RunningGateway,
    gateway_task_names,
    gateway_with,
    held_bytes,
    new_tasks,
)
from tests.support.log_capture import Recorder, watch_uvicorn
from tests.support.polling import settle
from tests.support.serving import serve_in_thread
from tests.support.tokens import TEST_SECRET, mint

# ---------------------------------------------------------------------------------------------
# Gateways whose loop and app a test can inspect


@pytest.fixture
def running_gateways() -> list[RunningGateway]:
    """Every gateway `start_gateway` started in this test, newest last."""
    return []


@pytest.fixture
def start_gateway(
    settings: Settings, running_gateways: list[RunningGateway], tokens_stay_out_of_logs: Recorder
) -> GatewayFactory:
    """As in tests/conftest.py, and each gateway is recorded in `running_gateways`. uvicorn
    sets up its loggers as the server starts, so they are watched for secrets from then on,
    request lines included."""

    @contextmanager
    def start(**changes: Any) -> Iterator[str]:
        configured = replace(settings, **changes)
        running = RunningGateway("", configured)
        running.app = create_app(configured, upstream_retries=0)
        app = LoopProbe(running.app, running)
        with serve_in_thread(app, **uvicorn_options(configured)) as url:
            running.url = url
            running_gateways.append(running)
            restore = watch_uvicorn(tokens_stay_out_of_logs)
            try:
                yield url
            finally:
                restore()
                running_gateways.remove(running)

    return start


# ---------------------------------------------------------------------------------------------
# Tokens, and logs that must never show them

MINTED: list[str] = []


@pytest.fixture
def token() -> Callable[..., str]:
    """As in tests/conftest.py; every token is also checked against the logs."""

    def minted(sub: str = "alice", ttl: int = 600) -> str:
        value = mint(sub, ttl)
        MINTED.append(value)
        return value

    return minted


# uvicorn's loggers do not propagate to the root logger, so each is watched on its own.
WATCHED_LOGGERS = ("", "uvicorn", "uvicorn.access")


@pytest.fixture(autouse=True)
def tokens_stay_out_of_logs() -> Iterator[Recorder]:
    """Fail the test if a minted token, the JWT secret or the upstream key reached a log."""
    recorder = Recorder()
    for name in WATCHED_LOGGERS:
        logging.getLogger(name).addHandler(recorder)
    MINTED.clear()
    yield recorder
    for name in WATCHED_LOGGERS:
        logging.getLogger(name).removeHandler(recorder)
    secrets = [*MINTED, TEST_SECRET, "sk-test"]
    for line in recorder.lines:
        leaked = [s for s in secrets if s in line]
        assert not leaked, f"a secret reached the logs: {line[:200]!r}"


def secrets_in(lines: list[str]) -> list[str]:
    """Lines of a gateway process's output that show a minted token or a secret."""
    secrets = [*MINTED, TEST_SECRET, "sk-test"]
    return [line for line in lines if any(s in line for s in secrets)]


# ---------------------------------------------------------------------------------------------
# A bystander, and the checks after an attack

Survives = Callable[..., AbstractAsyncContextManager[Bystander]]
# How much more the process may hold after one attack (`held_bytes`: collected, free pages
# given back): generous, since the test runner and the gateway share the process, but far
# below what an unbounded buffer of the attack would take.
MEMORY_SLACK_BYTES = 64 * 1024 * 1024
FRESH_REQUEST_SECONDS = 2.0


@pytest.fixture
def survives(token: Callable[..., str], running_gateways: list[RunningGateway]) -> Survives:
    """`async with survives(url) as bystander: <attack>`; see the module docstring.

    Options: `memory_slack` (bytes the process may grow), `tasks` (check the gateway's task
    count returns to its baseline; only for gateways from `start_gateway`)."""

    @asynccontextmanager
    async def watch(
        url: str, *, memory_slack: int = MEMORY_SLACK_BYTES, tasks: bool = True
    ) -> AsyncIterator[Bystander]:
        running = next((g for g in running_gateways if g.url == url), None)
        assert await healthy(url), "the gateway was not healthy before the attack"
        baseline_tasks = gateway_task_names(running) if running is not None and tasks else None
        baseline_rss = held_bytes()
        bystander = await Bystander.start(url, token(f"bystander-{uuid.uuid4().hex[:8]}"))
        yield bystander
        assert await healthy(url), "the gateway stopped answering /healthz"
        await bystander.check()
        seconds = await fresh_request_seconds(url, token(f"probe-{uuid.uuid4().hex[:8]}"))
        assert seconds < FRESH_REQUEST_SECONDS, f"a fresh request took {seconds:.2f} s"
        if running is not None and baseline_tasks is not None:
            settled = await settle(lambda: not new_tasks(running, baseline_tasks))
            assert settled, f"tasks left over: {new_tasks(running, baseline_tasks)}"
        grown = held_bytes() - baseline_rss
        assert grown < memory_slack, f"memory grew by {grown / 2**20:.0f} MiB"

    return watch


# ---------------------------------------------------------------------------------------------
# A gateway with a model of the test's own ("probe"), and the gateway's own retry policy

StartProbe = Callable[..., AbstractContextManager[str]]


@pytest.fixture
def start_probe(settings: Settings, running_gateways: list[RunningGateway]) -> StartProbe:
    """`with start_probe(upstream_model, **settings_changes) as url`; `model=` sets fields
    of the probe model (max_concurrent, streaming, base_url)."""
    fake = settings.models["fake"]

    def start(upstream_model: str, model: dict[str, Any] | None = None, **changes: Any) -> Any:
        probe = replace(fake, name="probe", upstream_model=upstream_model, **(model or {}))
        return gateway_with(settings, running_gateways, probe, **changes)

    return start

"""The JavaScript client (static/chat-gateway.js): its Node tests (tests/js/client) run against
real gateway processes on the fake upstream: one with the default settings, and a strict one
with a Redis of its own (which the tests stop, for notices), a short WS_IDLE_TIMEOUT, and a
`tight` tier of one connection and one request a minute per user."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.processes import GatewayProcess, config_file, start_process
from tests.support.redis import RedisServer, running_redis
from tests.support.tokens import TEST_SECRET
from tests.support.upstream import FakeUpstream

NODE_TESTS = Path(__file__).resolve().parents[1] / "js" / "client"
NODE_MAJOR = 20
STRICT_IDLE_SECONDS = 1
# What the strict gateway adds to the usual configuration: a model long enough to stop Redis
# in the middle of, and the tier the limit tests' tokens name.
STRICT_TABLES = """
[models.fake-i20-n300]
provider = "openai"
base_url = "{upstream}"
api_key_env = "FAKE_KEY"

[limits.tiers.tight]
connections = 1
requests_per_minute = 1
"""


def node_command() -> list[str]:
    """`node --test` for tests/js/client, with the flag Node 20 needs for a global WebSocket."""
    node = shutil.which("node")
    if node is None:
        pytest.fail(
            f"Node.js is not on PATH: the JavaScript client's tests need Node.js {NODE_MAJOR} "
            "or newer."
        )
    version = subprocess.run(
        [node, "--version"], capture_output=True, text=True, timeout=30, check=True
    ).stdout.strip()
    major = re.match(r"v(\d+)\.", version)
    if major is None or int(major.group(1)) < NODE_MAJOR:
        pytest.fail(f"Node.js {version} is too old: the client's tests need {NODE_MAJOR}+.")
    probe = subprocess.run(
        [node, "-e", "process.stdout.write(typeof WebSocket)"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    flags = [] if probe.stdout == "function" else ["--experimental-websocket"]
    return [node, *flags, "--test", "--test-reporter=tap", str(NODE_TESTS)]


@pytest.fixture(scope="module")
def gateway_process(
    redis_server: RedisServer,
    upstream: tuple[FakeUpstream, str],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[GatewayProcess]:
    folder = tmp_path_factory.mktemp("client-js")
    gateway = start_process(
        folder,
        {
            "REDIS_URL": redis_server.url,
            "REDIS_PREFIX": f"js{uuid.uuid4().hex[:8]}:",
            "GATEWAY_CONFIG": str(config_file(folder, upstream[1])),
        },
    )
    yield gateway
    gateway.stop()


@pytest.fixture(scope="module")
def strict_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A Redis of the strict gateway's own: the tests stop and continue it."""
    with running_redis(tmp_path_factory.mktemp("client-js-redis")) as server:
        yield server


@pytest.fixture(scope="module")
def strict_gateway(
    strict_redis: RedisServer,
    upstream: tuple[FakeUpstream, str],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[GatewayProcess]:
    folder = tmp_path_factory.mktemp("client-js-strict")
    config = config_file(folder, upstream[1])
    config.write_text(config.read_text() + STRICT_TABLES.format(upstream=upstream[1]))
    gateway = start_process(
        folder,
        {
            "REDIS_URL": strict_redis.url,
            "REDIS_PREFIX": f"jss{uuid.uuid4().hex[:8]}:",
            "GATEWAY_CONFIG": str(config),
            "WS_IDLE_TIMEOUT": str(STRICT_IDLE_SECONDS),
            "REDIS_SOCKET_TIMEOUT": "1.5",  # the least allowed: a stopped Redis shows soon
        },
    )
    yield gateway
    gateway.stop()


@pytest.mark.timeout(180)
def test_the_javascript_client_against_a_real_gateway(
    gateway_process: GatewayProcess,
    strict_gateway: GatewayProcess,
    strict_redis: RedisServer,
    token: Callable[..., str],
) -> None:
    command = node_command()
    result = subprocess.run(
        command,
        env={
            **{k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG")},
            "CHAT_GATEWAY_URL": gateway_process.url,
            "CHAT_GATEWAY_TOKEN": token(),
            "CHAT_GATEWAY_SECRET": TEST_SECRET,
            "CHAT_GATEWAY_STRICT_URL": strict_gateway.url,
            "CHAT_GATEWAY_STRICT_REDIS_PID": str(strict_redis.process.pid),
            "CHAT_GATEWAY_STRICT_IDLE_SECONDS": str(STRICT_IDLE_SECONDS),
        },
        capture_output=True,
        text=True,
        timeout=150,
        check=False,
    )
    report = result.stdout + result.stderr
    assert result.returncode == 0, report
    passed = re.search(r"^# pass (\d+)$", result.stdout, re.MULTILINE)
    assert passed is not None and int(passed.group(1)) > 0, report
    assert re.search(r"^# fail 0$", result.stdout, re.MULTILINE), report

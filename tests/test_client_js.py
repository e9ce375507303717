"""The JavaScript client (static/chat-gateway.js): its Node tests (tests/js/client) run against a
real gateway process on the fake upstream."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import TEST_SECRET, RedisServer
from tests.processes import GatewayProcess, config_file, start_process
from tests.upstream import FakeUpstream

NODE_TESTS = Path(__file__).resolve().parent / "js" / "client"
NODE_MAJOR = 20


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


@pytest.mark.timeout(180)
def test_the_javascript_client_against_a_real_gateway(
    gateway_process: GatewayProcess, token: Callable[..., str]
) -> None:
    command = node_command()
    result = subprocess.run(
        command,
        env={
            **{k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG")},
            "CHAT_GATEWAY_URL": gateway_process.url,
            "CHAT_GATEWAY_TOKEN": token(),
            "CHAT_GATEWAY_SECRET": TEST_SECRET,
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

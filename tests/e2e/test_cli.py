"""The `chat-gateway` command as a user runs it: dev mode, embedded Redis, tokens."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx2
import jwt
import pytest

from tests.support.serving import free_port
from tests.support.tokens import TEST_SECRET
from tests.support.ws import connected, send, text_of, until_done

URL_LINE = re.compile(r"^  (http://127\.0\.0\.1:(\d+)/#token=(\S+))$")


def clean_env(**extra: str) -> dict[str, str]:
    keep = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "TMPDIR")}
    return {**keep, **extra}


def test_token_command_mints_a_verifiable_token(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "token", "--sub", "alice", "--ttl", "120"],
        env=clean_env(JWT_SECRET=TEST_SECRET),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    )
    claims = jwt.decode(result.stdout.strip(), TEST_SECRET, algorithms=["HS256"])
    assert claims["sub"] == "alice" and claims["exp"] - claims["iat"] == 120


def test_bad_configuration_exits_2_with_a_message(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "token", "--sub", "a"],
        env=clean_env(JWT_SECRET="short"),
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert "JWT_SECRET must be at least 32 bytes" in result.stderr
    assert "Traceback" not in result.stderr


def _mint_in(folder: Path) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "token", "--sub", "ops"],
        env=clean_env(),
        cwd=folder,
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout.strip()


@pytest.fixture
async def dev_gateway(tmp_path: Path) -> AsyncIterator[tuple[str, str, asyncio.subprocess.Process]]:
    """`chat-gateway serve` in an empty folder with no configuration at all."""
    port = free_port()
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gateway",
        "serve",
        "--port",
        str(port),
        env=clean_env(),
        cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    assert process.stdout is not None
    output: list[str] = []
    try:
        while (
            line := (await process.stdout.readline()).decode()
        ) and "Uvicorn running" not in line:
            output.append(line)
        match = next(m for m in map(URL_LINE.match, (line.rstrip("\n") for line in output)) if m)
        assert int(match.group(2)) == port
        yield f"http://127.0.0.1:{port}", match.group(3), process
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGINT)
            await asyncio.wait_for(process.wait(), 20)


async def test_serve_in_dev_mode_prints_a_working_page_url(
    dev_gateway: tuple[str, str, asyncio.subprocess.Process], tmp_path: Path
) -> None:
    url, token, process = dev_gateway
    ws = await connected(url, token)
    await send(ws, type="completion", id="r", message="works out of the box")
    frames = await until_done(ws, "r")
    assert frames[0]["model"] == "echo" and text_of(frames) == "works out of the box"
    async with httpx2.AsyncClient() as client:
        assert (await client.get(f"{url}/readyz")).json()["redis"] == "ok"
        answer = await client.post(
            f"{url}/completion",
            json={"message": "plain http"},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert answer.json()["content"] == "plain http"
        await client.get(f"{url}/healthz?token={token}")
    socket_path = tmp_path / ".chat-gateway" / "redis.sock"
    assert socket_path.exists()
    process.send_signal(signal.SIGINT)
    assert await asyncio.wait_for(process.wait(), 20) == 0
    assert process.stdout is not None
    rest = (await process.stdout.read()).decode()
    assert "token=[redacted]" in rest  # the access log line was written, without the token
    assert token not in rest
    assert not socket_path.exists()  # the embedded Redis stopped with the gateway


async def test_dev_tokens_survive_a_restart_and_the_token_command_knows_them(
    dev_gateway: tuple[str, str, asyncio.subprocess.Process], tmp_path: Path
) -> None:
    url, _, _ = dev_gateway
    minted = await asyncio.to_thread(_mint_in, tmp_path)
    ws = await connected(url, minted)
    await send(ws, type="ping")
    assert (await ws.recv()) == '{"type":"pong"}'
    assert (tmp_path / ".chat-gateway" / "dev-secret").stat().st_mode & 0o777 == 0o600

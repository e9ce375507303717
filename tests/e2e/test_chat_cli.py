"""`chat-gateway chat` as a user runs it: a subprocess with piped stdin and stdout, against
real gateways (in-thread, and a dev-mode process found from the current folder)."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractContextManager, asynccontextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest

from gateway.config import ModelConfig, Secret, Settings
from tests.conftest import GatewayFactory
from tests.e2e.test_client_python import listening
from tests.support.processes import GatewayProcess, config_file, spawn
from tests.support.redis import RedisServer
from tests.support.serving import free_port
from tests.support.upstream import FakeUpstream

Mint = Callable[..., str]
HELD = "fake-n12-hold3-cli"  # three chunks, then waits for `release`, then nine more
HELD_TEXT = "".join(f" t{i}" for i in range(12))


def clean_env(**extra: str) -> dict[str, str]:
    keep = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "TMPDIR")}
    return {**keep, **extra}


@dataclass
class Output:
    """Everything a stream has printed so far, with a way to wait for a piece of it."""

    stream: asyncio.StreamReader
    text: str = ""
    seen: int = 0  # where the next `expect` starts looking
    lines: list[str] = field(default_factory=list)

    async def expect(self, piece: str, within: float = 15.0) -> str:
        """Read until `piece` appears after what earlier calls matched; the text up to it."""
        async with asyncio.timeout(within):
            while (at := self.text.find(piece, self.seen)) < 0:
                data = await self.stream.read(4096)
                if not data:
                    raise AssertionError(f"ended before {piece!r}:\n{self.text}")
                self.text += data.decode()
        start, self.seen = self.seen, at + len(piece)
        return self.text[start : self.seen]


@dataclass
class Chat:
    process: asyncio.subprocess.Process
    out: Output
    err: Output

    async def say(self, line: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(line.encode() + b"\n")
        await self.process.stdin.drain()

    async def leave(self) -> int:
        """End the input (Ctrl-D) and return the exit status."""
        assert self.process.stdin is not None
        self.process.stdin.close()
        return await asyncio.wait_for(self.process.wait(), 15)


@asynccontextmanager
async def chat(*args: str, cwd: Path, env: dict[str, str]) -> AsyncIterator[Chat]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gateway",
        "chat",
        *args,
        cwd=cwd,
        env=env,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None and process.stderr is not None
    try:
        yield Chat(process, Output(process.stdout), Output(process.stderr))
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


@pytest.fixture
def held_gateway(
    start_gateway: GatewayFactory, settings: Settings, upstream: tuple[FakeUpstream, str]
) -> Callable[[], AbstractContextManager[str]]:
    held = ModelConfig(
        name=HELD, provider="openai", base_url=upstream[1], api_key=Secret("sk-test")
    )
    models = {**settings.models, HELD: replace(held, upstream_model=HELD)}

    def start() -> AbstractContextManager[str]:
        return start_gateway(models=models)

    return start


async def test_chat_streams_stops_on_ctrl_c_keeps_going_and_shows_history(
    held_gateway: Callable[[], AbstractContextManager[str]],
    fake_upstream: FakeUpstream,
    token: Mint,
    tmp_path: Path,
) -> None:
    conversation = f"cli-{uuid.uuid4().hex[:8]}"
    flags = ["--token", token(), "--model", HELD, "--conversation", conversation]
    with held_gateway() as url:
        async with chat("--url", url, *flags, cwd=tmp_path, env=clean_env()) as session:
            await session.err.expect(f"(connected to {url} as alice;")
            await session.err.expect(f"(new conversation {conversation})")
            await session.say("first question")
            assert await session.out.expect(" t2") == " t0 t1 t2"
            session.process.send_signal(signal.SIGINT)  # mid-answer: stop it, not the chat
            assert (await session.out.expect("(stopped)\n")).strip() == "(stopped)"
            await session.say("second question")
            await session.out.expect(" t2")
            fake_upstream.release(HELD)
            assert (await session.out.expect(" t11\n")).startswith(" t3 t4")
            assert await session.leave() == 0
        async with chat("--url", url, *flags, cwd=tmp_path, env=clean_env()) as again:
            history = await again.out.expect(HELD_TEXT + "\n")
            assert await again.leave() == 0
    assert history == (
        "you> first question\n t0 t1 t2 (stopped)\nyou> second question\n" + HELD_TEXT + "\n"
    )
    assert "Traceback" not in session.err.text + again.err.text


async def test_history_shows_the_newest_page_and_says_when_earlier_messages_are_left(
    start_gateway: GatewayFactory, token: Mint, tmp_path: Path
) -> None:
    conversation = f"cli-pages-{uuid.uuid4().hex[:8]}"
    flags = ["--token", token(), "--model", "fake", "--conversation", conversation]
    with start_gateway(conversation_page_bytes=1) as url:  # a page holds one message
        async with chat("--url", url, *flags, cwd=tmp_path, env=clean_env()) as session:
            await session.say("first question")
            await session.out.expect("You said: first question\n")
            assert await session.leave() == 0
        async with chat("--url", url, *flags, cwd=tmp_path, env=clean_env()) as again:
            await again.err.expect("(earlier messages are not shown)")
            shown = await again.out.expect("You said: first question\n")
            assert await again.leave() == 0
    assert shown == "You said: first question\n"  # the newest message only


async def test_a_refused_token_is_said_plainly(gateway: str, tmp_path: Path) -> None:
    async with chat("--url", gateway, "--token", "not-a-jwt", cwd=tmp_path, env=clean_env()) as c:
        status = await asyncio.wait_for(c.process.wait(), 15)
        assert c.process.stderr is not None
        message = (await c.process.stderr.read()).decode()
    assert status == 1
    assert message == (
        "chat-gateway chat: The gateway refused the token: The token is malformed or wrongly "
        "signed. Get a new token (--token) and start again.\n"
    )


async def test_no_token_outside_a_dev_gateway_folder_says_what_to_do(tmp_path: Path) -> None:
    async with chat(cwd=tmp_path, env=clean_env()) as c:
        status = await asyncio.wait_for(c.process.wait(), 15)
        assert c.process.stderr is not None
        message = (await c.process.stderr.read()).decode()
    assert status == 2
    assert "Pass --token, or run this in the folder of a dev-mode gateway" in message
    assert not (tmp_path / ".chat-gateway").exists()  # no secret made up on the way


@pytest.fixture
def dev_process(
    redis_server: RedisServer, upstream: tuple[FakeUpstream, str], tmp_path: Path
) -> Iterator[GatewayProcess]:
    """`chat-gateway serve` in dev mode (no JWT key at all) in a fresh folder."""
    env = {
        "JWT_SECRET": "",  # unset: dev mode
        "REDIS_URL": redis_server.url,
        "REDIS_PREFIX": f"dev{uuid.uuid4().hex[:8]}:",
        "GATEWAY_CONFIG": str(config_file(tmp_path, upstream[1])),
    }
    gateway = spawn(tmp_path, env, free_port())
    assert gateway.process.stdout is not None
    for line in gateway.process.stdout:
        gateway.output.append(line)
        if "Uvicorn running on" in line:
            break
    yield gateway
    gateway.stop()


async def test_dev_mode_needs_no_flags(dev_process: GatewayProcess, tmp_path: Path) -> None:
    env = clean_env(CHAT_GATEWAY_URL=dev_process.url)
    async with chat(cwd=tmp_path, env=env) as session:
        await session.err.expect(f"(connected to {dev_process.url} as dev;")
        await session.say("hello dev")
        answer = await session.out.expect("You said: hello dev\n")
        conversation = await session.err.expect("; continue it with --conversation)")
        assert await session.leave() == 0
    assert answer == "You said: hello dev\n"
    assert "(conversation conv_" in conversation


async def test_the_chat_survives_a_gateway_restart_mid_answer(
    redis_server: RedisServer,
    upstream: tuple[FakeUpstream, str],
    fake_upstream: FakeUpstream,
    token: Mint,
    tmp_path: Path,
) -> None:
    held = "fake-n12-hold3-restart"
    (tmp_path / "gateway.toml").write_text(
        f'[models.{held}]\nprovider = "openai"\nbase_url = "{upstream[1]}"\n'
        'api_key_env = "FAKE_KEY"\n'
    )
    env = {
        "REDIS_URL": redis_server.url,
        "REDIS_PREFIX": f"cr{uuid.uuid4().hex[:8]}:",
        "GATEWAY_CONFIG": str(tmp_path / "gateway.toml"),
        "SHUTDOWN_DRAIN_SECONDS": "20",
    }
    port = free_port()
    gateways = [await asyncio.to_thread(listening, tmp_path, env, port)]
    flags = ["--url", gateways[0].url, "--token", token(), "--model", held]
    try:
        async with chat(*flags, cwd=tmp_path, env=clean_env()) as session:
            await session.say("keep going")
            assert await session.out.expect(" t2") == " t0 t1 t2"
            gateways[0].signal(signal.SIGTERM)
            await session.err.expect("(The gateway is restarting. Reconnecting in")
            gateways.append(await asyncio.to_thread(listening, tmp_path, env, port))
            await session.err.expect("(reconnected)")
            fake_upstream.release(held)
            assert await session.out.expect("\n") == HELD_TEXT.removeprefix(" t0 t1 t2") + "\n"
            assert await session.leave() == 0
    finally:
        for gateway in gateways:
            gateway.stop()

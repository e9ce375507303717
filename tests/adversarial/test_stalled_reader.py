"""A client that stops reading entirely is reset after WS_SEND_TIMEOUT: its handler and tasks
end, its generation runs on and can be resumed whole. A client that reads slowly, pausing for
less than the timeout, is served to the end."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pytest

from gateway.config import ModelConfig, Secret, Settings
from tests.adversarial.conftest import Survives
from tests.conftest import GatewayFactory
from tests.support.gateways import RunningGateway, gateway_task_names
from tests.support.log_capture import Recorder
from tests.support.polling import settle
from tests.support.raw_ws import RawSocket
from tests.support.upstream import FakeUpstream
from tests.support.ws import connected, receive, send, text_of, until_done

Mint = Callable[..., str]
SEND_TIMEOUT = 1.0
# Words of 4 KiB: 1500 of them (6 MiB) are more than the loopback socket buffers of both ends
# hold (about 3 MiB here), so the server's writes pause while its client does not read.
WORD = 4096
BURST = 1500
TAIL = 50  # words the upstream sends only once released, after the stalled client is gone
# Room for the burst's frames (an upstream read, so a chunk, holds at most 16 KiB of it): the
# outbox must not overflow (4008) before the socket's buffers fill and the send times out.
QUEUED = 2 * BURST
TCP_ESTABLISHED = 1
RESET_LOG = "reset the WebSocket connection from"


def long_message(words: int) -> str:
    return " ".join(f"{i:05d}" + "x" * (WORD - 5) for i in range(words))


def upstream_model(name: str, base_url: str) -> ModelConfig:
    return ModelConfig(name=name, provider="openai", base_url=base_url, api_key=Secret("sk-test"))


def tcp_state(sock: RawSocket) -> int:
    """The kernel's TCP state of the client's end (1: established), read without reading
    any data, so a client that never reads can still tell it was reset."""
    raw = sock.writer.get_extra_info("socket")
    return int(raw.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)[0])


def connection_tasks(running: RunningGateway, connection_id: str) -> list[str]:
    return [name for name in gateway_task_names(running) if connection_id in name]


def asgi_tasks(running: RunningGateway) -> int:
    """uvicorn's task per WebSocket connection, which runs the handler."""
    return sum("run_asgi" in name for name in gateway_task_names(running))


@dataclass
class Stalled:
    """A client that asked for a long answer and then read nothing more."""

    sock: RawSocket
    connection_id: str
    generation_id: str
    reset_after: float  # seconds from the answer's start to the reset reaching the client


async def stall(url: str, token: str, model: str, message: str) -> Stalled:
    """Ask for `message` echoed back, read the `start` event, then nothing: wait for the
    server to reset the connection (the client's kernel sees it without a read)."""
    sock = await RawSocket.connect(url, token, receive_buffer=4096)
    connection_id = (await sock.ready())["connection_id"]
    await sock.send_json(type="completion", id="a", message=message, model=model)
    start = await sock.read_json()
    assert start["type"] == "start", start
    began = time.monotonic()
    reset = await settle(lambda: tcp_state(sock) != TCP_ESTABLISHED, within=15)
    assert reset, "the stalled connection was never reset"
    return Stalled(sock, connection_id, start["generation_id"], time.monotonic() - began)


@pytest.fixture
def held_model(
    settings: Settings, upstream: tuple[FakeUpstream, str]
) -> tuple[str, dict[str, ModelConfig]]:
    """A model whose upstream sends BURST words at once, then holds the rest until released,
    so its generation is still running when the stalled client is reset; and the models
    setting that adds it."""
    base_url = upstream[1]
    model = f"fake-hold{BURST + 2}-{uuid.uuid4().hex[:8]}"  # "You said:" is two words
    return model, {**settings.models, model: upstream_model(model, base_url)}


async def test_a_client_that_reads_nothing_is_reset_and_its_generation_runs_on(
    start_gateway: GatewayFactory,
    held_model: tuple[str, dict[str, ModelConfig]],
    fake_upstream: FakeUpstream,
    running_gateways: list[RunningGateway],
    token: Mint,
    survives: Survives,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="gateway.ws")
    model, models = held_model
    message = long_message(BURST + TAIL)
    with (
        start_gateway(
            models=models,
            max_queued_frames=QUEUED,
            max_frame_bytes=2 * len(message),
            max_answer_chars=2 * len(message),
            ws_send_timeout=SEND_TIMEOUT,
            echo_delay_ms=10,  # the bystander streams for about 4 s, across the reset
        ) as url,
        watching_uvicorn() as uvicorn_log,
    ):
        running = running_gateways[-1]
        async with survives(url):
            handlers_before = asgi_tasks(running)
            stalled = await stall(url, token(), model, message)
            # Writes pause once the buffers fill (a fraction of a second into the answer),
            # and WS_SEND_TIMEOUT later the connection is reset.
            waited = stalled.reset_after
            assert SEND_TIMEOUT <= waited < SEND_TIMEOUT + 4, f"reset after {waited:.2f} s"
            assert any(RESET_LOG in line for line in caplog.messages)

            # The handler and its tasks end at once, while the generation still runs.
            gone = await settle(
                lambda: (
                    not connection_tasks(running, stalled.connection_id)
                    and asgi_tasks(running) == handlers_before
                ),
                within=5,
            )
            assert gone, f"left over: {connection_tasks(running, stalled.connection_id)}"
            # Reading now, the client gets what its kernel had received, then the reset.
            assert await read_to_the_end(stalled.sock) == "reset"

            follower = await connected(url, token())
            await send(follower, type="resume", generation_id=stalled.generation_id, id="r")
            resumed = await asyncio.wait_for(receive(follower), 10)
            assert resumed["type"] == "resumed" and resumed["status"] == "running", resumed
            fake_upstream.release(model)
            events = await asyncio.wait_for(until_done(follower, "r"), 30)
            await follower.close()
            assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
            assert events[-1]["type"] == "done", events[-1]
            assert text_of(events) == f"You said: {message}"
            assert any("[accepted]" in line for line in uvicorn_log.lines)  # it is watched
            assert not any("Exception in ASGI" in line for line in uvicorn_log.lines)


async def test_a_reset_client_with_on_disconnect_cancel_cancels_its_generation_quietly(
    start_gateway: GatewayFactory,
    held_model: tuple[str, dict[str, ModelConfig]],
    running_gateways: list[RunningGateway],
    token: Mint,
) -> None:
    """With ON_DISCONNECT=cancel the handler awaits the cancel before stopping its writer,
    so the writer's waiting send fails first: it must end quietly, as the socket gone."""
    model, models = held_model
    message = long_message(BURST + TAIL)
    with (
        start_gateway(
            models=models,
            on_disconnect="cancel",
            max_queued_frames=QUEUED,
            max_frame_bytes=2 * len(message),
            max_answer_chars=2 * len(message),
            ws_send_timeout=SEND_TIMEOUT,
        ) as url,
        watching_uvicorn() as uvicorn_log,
    ):
        running = running_gateways[-1]
        stalled = await stall(url, token(), model, message)
        # The handler itself has ended: its cancel was sent on the way out.
        gone = await settle(
            lambda: not connection_tasks(running, stalled.connection_id) and not asgi_tasks(running)
        )
        assert gone, f"left over: {connection_tasks(running, stalled.connection_id)}"
        await stalled.sock.aclose()

        follower = await connected(url, token())
        await send(follower, type="resume", generation_id=stalled.generation_id, id="r")
        events = await asyncio.wait_for(until_done(follower, "r"), 10)
        await follower.close()
        # The generation was cancelled, not left running for the held upstream to release.
        assert events[-1]["type"] == "done" and events[-1]["finish_reason"] == "cancelled"
        assert any("[accepted]" in line for line in uvicorn_log.lines)  # it is watched
        assert not any("Exception in ASGI" in line for line in uvicorn_log.lines)


@contextmanager
def watching_uvicorn() -> Iterator[Recorder]:
    """What uvicorn logs about connections (the app's exceptions included). Attached after
    the gateway starts: uvicorn's logging set-up replaces the handlers of its loggers."""
    recorder = Recorder()
    logger = logging.getLogger("uvicorn.error")
    level = logger.level
    logger.setLevel(logging.INFO)  # its accepted connections show that it is watched
    logger.addHandler(recorder)
    try:
        yield recorder
    finally:
        logger.removeHandler(recorder)
        logger.setLevel(level)


async def read_to_the_end(sock: RawSocket) -> str:
    """Read until the stream ends: "reset" or "eof"."""
    try:
        async with asyncio.timeout(10):
            while await sock.reader.read(65536):
                pass
    except ConnectionResetError:
        return "reset"
    finally:
        await sock.aclose()
    return "eof"


async def test_a_client_that_reads_slowly_is_not_reset(
    start_gateway: GatewayFactory,
    token: Mint,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="gateway.ws")
    message = long_message(BURST)
    pause = 0.6 * SEND_TIMEOUT
    with start_gateway(
        # Room for the whole answer: this client is slow, not gone, and must not hit 4008.
        max_queued_frames=2 * BURST,
        max_frame_bytes=2 * len(message),
        max_answer_chars=2 * len(message),
        ws_send_timeout=SEND_TIMEOUT,
        echo_delay_ms=0,
        echo_max_words=BURST,
    ) as url:
        reader = await RawSocket.connect(url, token(), receive_buffer=4096)
        await reader.ready()
        await reader.send_json(type="completion", id="a", message=message, model="echo")
        began = time.monotonic()
        events, pauses = await read_in_spurts(reader, 1024 * 1024, pause)
        took = time.monotonic() - began
        await reader.aclose()
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert events[-1]["type"] == "done" and text_of(events) == message
    # The answer took several timeouts to read, with stops shorter than one.
    assert pauses >= 3 and took > 3 * SEND_TIMEOUT
    assert not any(RESET_LOG in line for line in caplog.messages)


async def read_in_spurts(
    sock: RawSocket, spurt: int, pause: float
) -> tuple[list[dict[str, Any]], int]:
    """Read the answer `spurt` bytes at a time, stopping `pause` seconds after each spurt:
    a client on a slow link. The pauses are the behaviour under test, not synchronisation."""
    events: list[dict[str, Any]] = []
    pauses = 0
    read = 0
    while not (events and events[-1].get("done")):
        frame = await sock.read_json()
        events.append(frame)
        read += len(frame.get("content", ""))
        if read >= spurt:
            read = 0
            pauses += 1
            await asyncio.sleep(pause)
    return events, pauses

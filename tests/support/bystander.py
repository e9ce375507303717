"""A bystander during an attack: another user streaming a long answer, and the checks that
the gateway still serves everyone afterwards."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

import httpx2
import pytest
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from tests.support.ws import connected, receive, send, until_done

BYSTANDER_WORDS = 400


@dataclass
class Bystander:
    """Another user streaming a long answer on their own socket while the attack runs."""

    ws: ClientConnection
    message: str
    frames: list[dict[str, Any]] = field(default_factory=list)
    reader: asyncio.Task[None] | None = None

    @classmethod
    async def start(cls, url: str, token: str) -> Bystander:
        ws = await connected(url, token)
        message = " ".join(f"w{i}" for i in range(BYSTANDER_WORDS))
        bystander = cls(ws, message)
        await send(ws, type="completion", id="bystander", message=message, model="echo")
        bystander.reader = asyncio.create_task(bystander._read())
        return bystander

    async def _read(self) -> None:
        self.frames = await until_done(self.ws, "bystander")

    async def check(self, within: float = 30.0) -> None:
        """The whole answer arrived, in order, without gaps, and the socket still works."""
        assert self.reader is not None
        try:
            await asyncio.wait_for(self.reader, within)
        except ConnectionClosed as closed:
            pytest.fail(f"the bystander's socket was closed: {closed}")
        seqs = [f["seq"] for f in self.frames]
        assert seqs == list(range(1, len(seqs) + 1)), "the bystander's events have a gap"
        assert self.frames[-1]["type"] == "done", self.frames[-1]
        text = "".join(f["content"] for f in self.frames if f["type"] == "chunk")
        assert text == self.message
        await send(self.ws, type="ping")
        assert await asyncio.wait_for(receive(self.ws), 5) == {"type": "pong"}
        await self.ws.close()


async def fresh_request_seconds(url: str, token: str) -> float:
    """Time for a new user's short completion, from connect to `done`."""
    began = time.perf_counter()
    ws = await connected(url, token)
    await send(ws, type="completion", id="probe", message="are you there", model="echo")
    *answer, end = await until_done(ws, "probe", within=10)
    assert all(frame["type"] in ("start", "chunk") for frame in answer), answer
    assert end["type"] == "done", end
    await ws.close()
    return time.perf_counter() - began


async def healthy(url: str) -> bool:
    async with httpx2.AsyncClient(timeout=5) as client:
        return (await client.get(f"{url}/healthz")).status_code == 200

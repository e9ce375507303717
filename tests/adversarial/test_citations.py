"""An answer written to be expensive to read: the `grounded` agent reads its citations in
time proportional to the answer, whatever markers it holds, and another user is served
meanwhile. With the `echo` model the user writes the answer."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from tests.adversarial.conftest import Survives
from tests.conftest import GatewayFactory
from tests.support.ws import connected, send, text_of, until_done

Mint = Callable[..., str]


def hostile_answer() -> str:
    """About 100 000 `[1]` markers, 20 000 distinct numbers (a list of cited numbers grew with
    each, and was searched for each marker) and a marker of 5 000 digits (int() refuses it);
    source 3 is never cited, so all of it is read. Words of many markers keep the echo answer
    to a few hundred chunks."""
    repeated = ["[1]" * 200] * 500
    distinct = ["".join(f"[{n}]" for n in range(at, at + 200)) for at in range(4, 20_004, 200)]
    return " ".join([*repeated, *distinct, "[" + "9" * 5000 + "]", "end [2]"])


async def test_an_answer_full_of_citations_is_read_in_linear_time(
    start_gateway: GatewayFactory, token: Mint, survives: Survives
) -> None:
    message = hostile_answer()
    sources = ["The first source.", "The second source.", "The third source."]
    with start_gateway() as url:
        async with survives(url):
            ws = await connected(url, token("mallory"))
            await send(
                ws,
                type="completion",
                id="r",
                message=message,
                model="echo",
                agent="grounded",
                sources=sources,
            )
            frames = await asyncio.wait_for(until_done(ws, "r"), 60)
            await ws.close()
    done = frames[-1]
    assert done["type"] == "done" and done["finish_reason"] == "stop", done
    assert text_of(frames) == message
    assert [c["n"] for c in done["metadata"]["citations"]] == [1, 2]

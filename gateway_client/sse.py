"""Runs over plain HTTP, for networks that let no WebSocket through: `POST /completion` as
Server-Sent Events until the generation id is known, then `GET /generations/{id}/events`
from the last seq seen after any cut (protocol §9.3, §9.4)."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

import httpx2

from gateway_client.events import ErrorEvent, Item, parse_frame
from gateway_client.http import HttpApi, refusal_detail
from gateway_client.run import Run


class SseParser:
    """Server-Sent Events, one line at a time. The `id:` lines repeat each event's seq and
    `:` lines are keep-alives, so only `data:` matters; a `notice` carries its own type."""

    def __init__(self) -> None:
        self._data: list[str] = []

    def feed(self, line: str) -> dict[str, Any] | None:
        """The JSON object an event ends with at this (blank) line, else None."""
        if line == "":
            data, self._data = self._data, []
            if not data:
                return None
            try:
                frame = json.loads("\n".join(data))
            except ValueError:
                return None
            return frame if isinstance(frame, dict) else None
        if line.startswith("data:"):
            self._data.append(line[6:] if line.startswith("data: ") else line[5:])
        return None


async def follow(
    api: HttpApi,
    run: Run,
    deliver: Callable[[Run, Item], None],
    pause: Callable[[int], Awaitable[None]],
) -> None:
    """Stream `run` until its final event, resuming after every cut. `pause(attempt)` waits
    before attempt number `attempt` after a failure (a network error, a draining instance)."""
    attempt = 0
    while not run.ended:
        try:
            async with _open(api, run) as response:
                if response.status_code == 204:
                    run.end()  # it has ended, and the run has every event
                    return
                if response.status_code == 200:
                    async for item in _items(response, run.id):
                        attempt = 0
                        deliver(run, item)
                        if run.ended:
                            return
                elif response.status_code != 503:  # 503: an instance draining; retry
                    await response.aread()
                    deliver(run, error_event(response, run.id))
                    return
        except httpx2.TransportError:
            pass  # the network failed, or the stream was cut: resume below
        await pause(attempt)
        attempt += 1


def _open(api: HttpApi, run: Run) -> Any:
    if run.generation_id is not None:
        return api.stream(
            "GET",
            f"/generations/{run.generation_id}/events",
            headers={"Last-Event-ID": str(run.last_seq)},
        )
    return api.stream(
        "POST", "/completion", json={**(run.body or {}), "id": run.id, "stream": True}
    )


async def _items(response: httpx2.Response, run_id: str) -> Any:
    parser = SseParser()
    async for line in response.aiter_lines():
        frame = parser.feed(line)
        if frame is None:
            continue
        frame["id"] = run_id  # as over the socket (a resume here carries the starter's id)
        item = parse_frame(frame)
        if item is not None:
            yield item


def error_event(response: httpx2.Response, run_id: str) -> ErrorEvent:
    """A refused request as the run's final event, in the shape of a refused frame (§6.1)."""
    try:
        body = response.json()
    except ValueError:
        body = {}
    body = body if isinstance(body, dict) else {}
    status = response.status_code
    retry_after = body.get("retry_after")
    return ErrorEvent(
        id=run_id,
        code=str(body.get("error") or ("internal" if status >= 500 else "bad_request")),
        message=refusal_detail(response),
        retryable=status >= 500 or status == 429,
        retry_after=float(retry_after) if isinstance(retry_after, int | float) else None,
    )

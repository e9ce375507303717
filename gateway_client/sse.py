"""Runs over plain HTTP, for networks that let no WebSocket through: `POST /completion` as
Server-Sent Events until the generation id is known, then `GET /generations/{id}/events`
from the last seq seen after any cut (protocol §9.3, §9.4)."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import httpx2

from gateway_client.errors import GatewayError
from gateway_client.events import ErrorEvent, Item, parse_frame
from gateway_client.http import HttpApi, refusal_detail
from gateway_client.run import Run
from gateway_client.runs import Runs


class HttpRuns:
    """The runs' transport once the client fell back to HTTP: each run followed by a task of
    its own until its final event, and a cancel posted as soon as its generation id is known.
    A refusal nothing can help (the token) ends the client through `on_fatal`."""

    def __init__(
        self,
        api: HttpApi,
        runs: Runs,
        spawn: Callable[[Coroutine[Any, Any, None]], None],
        pause: Callable[[int], Awaitable[None]],
        on_fatal: Callable[[GatewayError], None],
    ) -> None:
        self.api = api
        self.runs = runs
        self._spawn = spawn
        self._pause = pause
        self._on_fatal = on_fatal

    def send(self, run: Run) -> None:
        self._spawn(self._follow(run))

    def cancel(self, run: Run) -> None:
        if run.cancel_requested and not run.cancel_sent and run.generation_id is not None:
            run.cancel_sent = True
            self._spawn(self._post_cancel(run))

    async def close(self) -> None:
        """Nothing to close: its streams are tasks of the client, cancelled with the others."""

    async def _follow(self, run: Run) -> None:
        run.socket = self.api
        try:
            await follow(self.api, run, self._deliver, self._pause)
        except GatewayError as error:
            self._on_fatal(error)
        finally:
            self.runs.forget(run)

    def _deliver(self, run: Run, item: Item) -> None:
        if not self.runs.deliver(run, item):
            self.cancel(run)  # a cancel asked for waits for the generation id

    async def _post_cancel(self, run: Run) -> None:
        assert run.generation_id is not None
        try:
            await self.api.cancel(run.generation_id)
        except Exception:
            run.cancel_sent = False  # sent again with the run's next event


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
    """The run's items out of an event stream, parsed by httpx2's `EventSource` (an event is
    bounded at 1 MiB). `id:` fields repeat each event's seq and comments are keep-alives, so
    only the data matters; a `notice` carries its own type."""
    async for event in httpx2.EventSource(response):
        try:
            frame = json.loads(event.data)
        except ValueError:
            continue
        if not isinstance(frame, dict):
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

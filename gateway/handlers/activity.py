"""A user's activity over HTTP (docs/activity.md): `GET /activity`, the events as server-sent
events with resume by `Last-Event-ID` within ACTIVITY_TTL, and `GET /generations?status=running`.

An `/activity` stream holds one of the user's connection slots, like any stream that follows.
It reads the user's latest id, listens, and reads what the store holds after the client's last
id, so nothing published in between is lost; what both bring is sent once (ids only grow).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from gateway.core.activity import ActivityService
from gateway.core.outbox import Outbox
from gateway.errors import BadRequest
from gateway.handlers.common import authenticate, services_of
from gateway.handlers.slots import Slot, SlotStream
from gateway.handlers.stream import HEARTBEAT_SECONDS
from gateway.protocol.activity import ActivityEntry, stream_id
from gateway.protocol.sse import KEEP_ALIVE, SSE_HEADERS

BAD_LAST_ID = "'Last-Event-ID' must be an activity_id the gateway sent (digits-digits)."
BAD_STATUS = "'status' must be 'running': only running generations are listed."


async def running_generations(request: Request) -> JSONResponse:
    """The caller's generations still running on any instance."""
    principal = await authenticate(request)
    if request.query_params.get("status") != "running":
        raise BadRequest(BAD_STATUS)
    snapshot = await services_of(request).activity.snapshot(principal.sub)
    return JSONResponse({"data": snapshot.running or []})


async def activity_events(request: Request) -> Response:
    principal = await authenticate(request, query_token=True)
    services = services_of(request)
    last = request.headers.get("last-event-id") or request.query_params.get("after") or None
    if last is not None and stream_id(last) is None:
        raise BadRequest(BAD_LAST_ID)
    activity = services.activity
    latest = (await activity.snapshot(principal.sub)).last_id
    start = last or latest
    slot = await Slot.take(services, principal)  # 429 when the user has too many open
    outbox: Outbox[ActivityEntry] = Outbox(services.settings.max_queued_frames)
    # The reader keeps one cursor for all the user's listeners here, set by the first: a
    # client's id past the store's latest would silence the user's sockets here until the
    # store's ids caught up with it. What the client already has is filtered in `_stream`.
    activity.listen(principal.sub, outbox.put, min(start, latest, key=_order))
    # Draining ends the stream: its client reconnects, to another instance, with its last id.
    remove_hook = services.generations.on_drain(outbox.close)

    def closed() -> None:  # also when the body never started (the client left first)
        activity.unlisten(principal.sub, outbox.put)
        outbox.close()
        remove_hook()

    body = _stream(activity, principal.sub, start, outbox)
    return SlotStream(body, SSE_HEADERS, slot, on_close=closed)


async def _stream(
    activity: ActivityService, sub: str, start: str, outbox: Outbox[ActivityEntry]
) -> AsyncIterator[str]:
    sent = _order(start)
    yield ": activity\n\n"  # the response starts at once, before anything happens
    backlog = await activity.after(sub, start)
    while True:
        parts: list[str] = []
        for entry in backlog:
            if (at := stream_id(entry.id)) is not None and at > sent:
                parts.append(entry.sse())
                sent = at
        if parts:
            yield "".join(parts)
        item = await _next(outbox)
        if item is None:
            return  # the outbox closed: drained, or the client fell too far behind
        if isinstance(item, str):
            yield KEEP_ALIVE  # a heartbeat: proxies drop streams that stay silent
            backlog = []
            continue
        backlog = [item]
        while (more := outbox.take()) is not None:
            backlog.append(more)


def _order(activity_id: str) -> tuple[int, int]:
    return stream_id(activity_id) or (0, 0)


async def _next(outbox: Outbox[ActivityEntry]) -> ActivityEntry | str | None:
    """The next entry, None once the outbox closed, or "heartbeat" after HEARTBEAT_SECONDS."""
    if len(outbox):
        return await outbox.get()
    try:
        async with asyncio.timeout(HEARTBEAT_SECONDS):
            return await outbox.get()
    except TimeoutError:
        return "heartbeat"

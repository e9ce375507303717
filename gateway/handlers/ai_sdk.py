"""The Vercel AI SDK's UI message stream: `POST /api/chat` (what `useChat` with
`DefaultChatTransport` sends) and `GET /api/chat/{id}/stream` (what its `resume` calls).

The chat id the SDK sends is the conversation id; the assistant message's id is the
generation id, so `POST /generations/{messageId}/cancel` stops it. Only the I/O is here: the
request's translation and the stream's parts are `protocol/ai_sdk.py`, the loop `stream.py`.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from gateway.core.generations import Follow
from gateway.errors import BadRequest, NotFound
from gateway.handlers.common import authenticate, read_body, services_of
from gateway.handlers.runtime import Runtime
from gateway.handlers.slots import Slot
from gateway.handlers.stream import (
    EventStream,
    Left,
    Listener,
    frames_sent,
    on_leave,
    stream_response,
)
from gateway.protocol.ai_sdk import BAD_CHAT_ID, UI_STREAM_HEADERS, UiParts, chat_request
from gateway.protocol.requests import parse_json_object
from gateway.protocol.wire import CONVERSATION_ID_RE


async def chat(request: Request) -> Response:
    """Start a turn in the conversation named by the chat id; stream the answer."""
    principal = await authenticate(request)
    services = services_of(request)
    body = parse_json_object(await read_body(request, services.settings.max_frame_bytes))
    completion_request = chat_request(body, request.headers.get("idempotency-key"))
    listener = Listener(services.settings.max_queued_frames)
    # A model that cannot stream sends its whole answer as one text delta.
    follow = await services.chat.start(principal, completion_request, listener)
    return ui_message_stream(services, follow, listener, on_leave(services, principal, follow))


async def resume(request: Request) -> Response:
    """Replay the chat's running generation from its start and follow it to its end;
    204 when nothing runs (unknown and foreign chats included: nobody learns of them)."""
    principal = await authenticate(request)
    services = services_of(request)
    chat_id = request.path_params["chat_id"]
    if not CONVERSATION_ID_RE.fullmatch(chat_id):
        raise BadRequest(BAD_CHAT_ID)
    try:
        generation = await services.conversations.latest_generation(principal, chat_id)
        if generation is None or generation["status"] != "running":
            return Response(status_code=204)
        meta = await services.chat.locate(principal, generation["id"])
    except NotFound:
        return Response(status_code=204)
    slot = await Slot.take(services, principal)  # 429 when the user has too many open
    listener = Listener(services.settings.max_queued_frames)
    # Even if it ended meanwhile: the replay then holds the whole answer and its end.
    follow = services.chat.attach(meta, 0, listener)
    return ui_message_stream(services, follow, listener, slot=slot)


def ui_message_stream(
    services: Runtime,
    follow: Follow,
    listener: Listener,
    left: Left | None = None,
    slot: Slot | None = None,
) -> StreamingResponse:
    """The UI message stream; a stream that only follows holds `slot` until it ends."""
    # No drain hook: the stream follows its generation through a drain (ended or
    # interrupted, it ends with `finish`), since a UI stream that stops short looks complete.
    stream = EventStream(follow, listener, UiParts(), frames_sent(services), left=left)
    return stream_response(stream, UI_STREAM_HEADERS, slot)

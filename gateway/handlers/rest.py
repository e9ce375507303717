"""JSON resources: conversations, and the models and agents a UI may offer."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from gateway.core import catalog
from gateway.core.conversations import parse_change, parse_fork, parse_limit, parse_message_limit
from gateway.errors import NotFound
from gateway.handlers.common import authenticate, read_body, services_of
from gateway.protocol.frames import CONVERSATION_ID_RE, parse_json_object
from gateway.protocol.wire import MESSAGE_ID_RE


def _conversation_id(request: Request) -> str:
    conversation_id: str = request.path_params["conversation_id"]
    if not CONVERSATION_ID_RE.fullmatch(conversation_id):
        # The same answer as for an id nobody uses: an invalid id is simply not found.
        raise NotFound(f"Conversation '{conversation_id}' was not found.")
    return conversation_id


def _message_id(request: Request) -> str:
    message_id: str = request.path_params["message_id"]
    if not MESSAGE_ID_RE.fullmatch(message_id):
        raise NotFound(f"Message '{message_id}' was not found.")
    return message_id


async def _body(request: Request) -> dict[str, object]:
    limit = services_of(request).settings.max_frame_bytes
    return parse_json_object(await read_body(request, limit))


async def conversations(request: Request) -> JSONResponse:
    """The caller's conversations, most recently updated first, a page at a time."""
    principal = await authenticate(request)
    limit = parse_limit(request.query_params.get("limit"))
    cursor = request.query_params.get("cursor") or None
    page = await services_of(request).conversations.page(principal, limit, cursor)
    return JSONResponse(page)


async def conversation(request: Request) -> JSONResponse:
    """A page of a conversation's messages and the id and status of its latest generation."""
    principal = await authenticate(request)
    conversation_id = _conversation_id(request)
    limit = parse_message_limit(request.query_params.get("limit"))
    cursor = request.query_params.get("cursor") or None
    view = await services_of(request).conversations.view(principal, conversation_id, limit, cursor)
    return JSONResponse(view)


async def change_conversation(request: Request) -> JSONResponse:
    """Rename, or switch the active branch."""
    principal = await authenticate(request)
    conversation_id = _conversation_id(request)
    change = parse_change(await _body(request))
    summary = await services_of(request).conversations.change(principal, conversation_id, change)
    return JSONResponse(summary)


async def fork_conversation(request: Request) -> JSONResponse:
    """A new conversation holding the path down to a message."""
    principal = await authenticate(request)
    conversation_id = _conversation_id(request)
    message_id = parse_fork(await _body(request))
    forked = await services_of(request).conversations.fork(principal, conversation_id, message_id)
    return JSONResponse(forked, status_code=201)


async def delete_message(request: Request) -> Response:
    """A message and everything below it."""
    principal = await authenticate(request)
    conversation_id = _conversation_id(request)
    message_id = _message_id(request)
    await services_of(request).conversations.delete_message(principal, conversation_id, message_id)
    return Response(status_code=204)


async def delete_conversation(request: Request) -> Response:
    principal = await authenticate(request)
    conversation_id = _conversation_id(request)
    await services_of(request).conversations.delete(principal, conversation_id)
    return Response(status_code=204)


async def conversation_resource(request: Request) -> Response:
    """One path, three methods, so a 405 names them all in its Allow header."""
    if request.method == "PATCH":
        return await change_conversation(request)
    if request.method == "DELETE":
        return await delete_conversation(request)
    return await conversation(request)


async def models(request: Request) -> JSONResponse:
    await authenticate(request)
    return JSONResponse(catalog.models(services_of(request).settings))


async def agents(request: Request) -> JSONResponse:
    await authenticate(request)
    return JSONResponse(catalog.agents(services_of(request).settings))

"""JSON resources: conversations, and the models and agents a UI may offer."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from gateway.core import catalog
from gateway.core.conversations import parse_limit, parse_message_limit, parse_title
from gateway.errors import NotFound
from gateway.handlers.common import authenticate, read_body, services_of
from gateway.protocol.frames import CONVERSATION_ID_RE, parse_json_object


def _conversation_id(request: Request) -> str:
    conversation_id: str = request.path_params["conversation_id"]
    if not CONVERSATION_ID_RE.fullmatch(conversation_id):
        # The same answer as for an id nobody uses: an invalid id is simply not found.
        raise NotFound(f"Conversation '{conversation_id}' was not found.")
    return conversation_id


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


async def rename_conversation(request: Request) -> JSONResponse:
    principal = await authenticate(request)
    conversation_id = _conversation_id(request)
    services = services_of(request)
    body = parse_json_object(await read_body(request, services.settings.max_frame_bytes))
    summary = await services.conversations.rename(principal, conversation_id, parse_title(body))
    return JSONResponse(summary)


async def delete_conversation(request: Request) -> Response:
    principal = await authenticate(request)
    conversation_id = _conversation_id(request)
    await services_of(request).conversations.delete(principal, conversation_id)
    return Response(status_code=204)


async def conversation_resource(request: Request) -> Response:
    """One path, three methods, so a 405 names them all in its Allow header."""
    if request.method == "PATCH":
        return await rename_conversation(request)
    if request.method == "DELETE":
        return await delete_conversation(request)
    return await conversation(request)


async def models(request: Request) -> JSONResponse:
    await authenticate(request)
    return JSONResponse(catalog.models(services_of(request).settings))


async def agents(request: Request) -> JSONResponse:
    await authenticate(request)
    return JSONResponse(catalog.agents(services_of(request).settings))

"""JSON resources: conversations."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse

from gateway.errors import NotFound
from gateway.handlers.common import authenticate, services_of
from gateway.protocol import CONVERSATION_ID_RE


async def conversation(request: Request) -> JSONResponse:
    """A conversation's messages and the id and status of its latest generation."""
    principal = authenticate(request)
    conversation_id = request.path_params["conversation_id"]
    if not CONVERSATION_ID_RE.match(conversation_id):
        raise NotFound(f"Conversation '{conversation_id}' was not found.")
    view = await services_of(request).chat.conversation(principal, conversation_id)
    return JSONResponse(view)

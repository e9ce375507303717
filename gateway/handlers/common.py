"""What the HTTP handlers share: services, authentication, bodies and error rendering."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import HTTPConnection, Request
from starlette.responses import JSONResponse

from gateway.auth import Principal, bearer_token
from gateway.errors import InternalError, PayloadTooLarge, RequestError, Unauthorized
from gateway.services import Services
from gateway.store.errors import store_error

log = logging.getLogger("gateway.http")


def services_of(conn: HTTPConnection) -> Services:
    services: Services = conn.app.state.services
    return services


def authenticate(request: Request, *, query_token: bool = False) -> Principal:
    """The request's user. `query_token` also accepts `?token=` for clients that cannot set
    headers (a browser EventSource); access logs redact it."""
    token = bearer_token(request.headers.get("authorization"))
    if token is None and query_token:
        token = request.query_params.get("token") or None
    if token is None:
        raise Unauthorized("Send a token as 'Authorization: Bearer <jwt>'.")
    return services_of(request).verifier.verify(token)


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refusing more than `limit` bytes before reading them all."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"The body is larger than {limit} bytes.")
    body = bytearray()
    async for part in request.stream():
        body += part
        if len(body) > limit:
            raise PayloadTooLarge(f"The body is larger than {limit} bytes.")
    return bytes(body)


def error_body(code: str, detail: str) -> dict[str, Any]:
    timestamp = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return {"error": code, "detail": detail, "timestamp": timestamp}


def error_response(error: RequestError) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if isinstance(error, Unauthorized) else None
    return JSONResponse(error_body(error.code, error.message), error.http_status, headers)


async def on_request_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestError)  # registered for RequestError only
    return error_response(exc)


async def on_http_exception(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)  # registered for HTTPException only
    codes = {401: "unauthorized", 403: "forbidden", 404: "not_found", 429: "rate_limited"}
    code = codes.get(exc.status_code, "bad_request" if exc.status_code < 500 else "internal")
    return JSONResponse(error_body(code, str(exc.detail)), exc.status_code, exc.headers)


async def on_unexpected(request: Request, exc: Exception) -> JSONResponse:
    translated = store_error(exc)
    if translated is not None:
        log.warning("store unreachable on %s %s", request.method, request.url.path)
        return error_response(translated)
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return error_response(InternalError())

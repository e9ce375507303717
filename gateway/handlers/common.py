"""What the HTTP handlers share: services, authentication, bodies and error rendering."""

from __future__ import annotations

import logging
import re
import secrets

from starlette.exceptions import HTTPException
from starlette.requests import HTTPConnection, Request
from starlette.responses import JSONResponse

from gateway.auth.tokens import bearer_token
from gateway.errors import (
    InternalError,
    PayloadTooLarge,
    RequestError,
    Unauthorized,
    retry_after_seconds,
)
from gateway.handlers.runtime import Runtime
from gateway.obs.logs import bind
from gateway.principal import Principal
from gateway.protocol.http_errors import error_body
from gateway.store.unreachable import store_error

log = logging.getLogger("gateway.http")
REQUEST_ID_RE = re.compile(r"[A-Za-z0-9._:-]{1,64}")


def services_of(conn: HTTPConnection) -> Runtime:
    services: Runtime = conn.app.state.services
    return services


async def authenticate(request: Request, *, query_token: bool = False) -> Principal:
    """The request's user. `query_token` also accepts `?token=` for clients that cannot set
    headers (a browser EventSource); access logs redact it."""
    token = bearer_token(request.headers.get("authorization"))
    if token is None and query_token:
        token = request.query_params.get("token") or None
    if token is None:
        raise Unauthorized("Send a token as 'Authorization: Bearer <jwt>'.")
    principal = await services_of(request).verifier.verify(token)
    # On every later log line of this request and of the generations it starts.
    bind(user=principal.sub, request_id=request_id(request))
    return principal


def request_id(request: Request) -> str:
    """The caller's `X-Request-Id` when it is a plain short id, else a new one."""
    given = request.headers.get("x-request-id", "")
    return given if REQUEST_ID_RE.fullmatch(given) else f"req_{secrets.token_urlsafe(9)}"


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


def json_error(
    code: str,
    detail: str,
    status: int,
    retry_after: float | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    """The native error shape; with a known wait, `retry_after` in the body and a
    `Retry-After` header."""
    body = error_body(code, detail)
    headers = dict(headers or {})
    if retry_after is not None:
        body["retry_after"] = retry_after
        headers["Retry-After"] = str(retry_after_seconds(retry_after))
    return JSONResponse(body, status, headers or None)


def error_response(error: RequestError) -> JSONResponse:
    bearer = {"WWW-Authenticate": "Bearer"} if isinstance(error, Unauthorized) else None
    return json_error(error.code, error.message, error.http_status, error.retry_after, bearer)


def counted(request: HTTPConnection, error: RequestError) -> RequestError:
    """Count an error a client is about to get, by code, on /metrics."""
    services_of(request).metrics.errors.labels(error.code).inc()
    return error


def translate_unexpected(request: Request, exc: Exception) -> RequestError:
    """A store outage becomes `unavailable`; anything else is logged and becomes `internal`."""
    translated = store_error(exc)
    if translated is not None:
        services_of(request).metrics.redis_errors.inc()
        log.warning("store unreachable on %s %s", request.method, request.url.path)
        return counted(request, translated)
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return counted(request, InternalError())


async def on_request_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestError)  # registered for RequestError only
    return error_response(counted(request, exc))


async def on_http_exception(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)  # registered for HTTPException only
    codes = {401: "unauthorized", 403: "forbidden", 404: "not_found", 429: "rate_limited"}
    code = codes.get(exc.status_code, "bad_request" if exc.status_code < 500 else "internal")
    return JSONResponse(error_body(code, str(exc.detail)), exc.status_code, exc.headers)


async def on_unexpected(request: Request, exc: Exception) -> JSONResponse:
    return error_response(translate_unexpected(request, exc))

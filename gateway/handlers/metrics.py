"""`GET /metrics`: the gateway's metrics for Prometheus; under `serve --workers N` whichever
worker answers reads every worker's (see gateway/obs/metrics.py).

Open when METRICS_TOKEN is unset (keep the port on an internal network then); with it set,
a scrape must send `Authorization: Bearer <METRICS_TOKEN>`. Not user traffic: no user token,
no per-user limits, no X-Gateway-Overhead-Ms.
"""

from __future__ import annotations

import hmac

from starlette.requests import Request
from starlette.responses import Response

from gateway.auth.tokens import bearer_token
from gateway.config import Secret
from gateway.errors import Unauthorized
from gateway.handlers.common import services_of
from gateway.obs.metrics import CONTENT_TYPE


async def metrics(request: Request) -> Response:
    services = services_of(request)
    check_metrics_token(request.headers.get("authorization"), services.settings.metrics_token)
    return Response(services.metrics.expose(), media_type=CONTENT_TYPE)


def check_metrics_token(authorization: str | None, expected: Secret | None) -> None:
    """Raise Unauthorized unless no token is configured or the header carries it; the
    comparison takes the same time wherever the first difference is."""
    if expected is None:
        return
    sent = bearer_token(authorization) or ""
    if not hmac.compare_digest(sent.encode(), expected.reveal().encode()):
        raise Unauthorized("Send the metrics token as 'Authorization: Bearer <token>'.")

"""A webhook receiver for the tests: records each POST (headers and body) and answers with
the status the test sets, checking signatures by the Standard Webhooks rule on its own
(apart from the gateway's code)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tests.support.serving import serve_in_thread

SECRET = "whsec_" + base64.b64encode(b"the tests' webhook signing key!!").decode()


@dataclass(frozen=True)
class Delivery:
    headers: dict[str, str]
    body: str

    @property
    def json(self) -> Any:
        return json.loads(self.body)

    def signed(self, secret: str = SECRET) -> bool:
        key = base64.b64decode(secret.removeprefix("whsec_"))
        signed = f"{self.headers['webhook-id']}.{self.headers['webhook-timestamp']}.{self.body}"
        mac = hmac.new(key, signed.encode(), hashlib.sha256).digest()
        expected = "v1," + base64.b64encode(mac).decode()
        return expected in self.headers["webhook-signature"].split(" ")


@dataclass
class Receiver:
    url: str = ""
    status: int = 200
    received: list[Delivery] = field(default_factory=list)  # every attempt, answered or not

    def answered(self) -> list[Delivery]:
        """The attempts answered with a 2xx: the deliveries."""
        return [d for d in self.received if d.headers.get("x-answered") == "yes"]


@contextmanager
def webhook_receiver() -> Iterator[Receiver]:
    receiver = Receiver()

    async def hook(request: Request) -> Response:
        status = receiver.status
        headers = {k.lower(): v for k, v in request.headers.items()}
        headers["x-answered"] = "yes" if 200 <= status < 300 else "no"
        receiver.received.append(Delivery(headers, (await request.body()).decode()))
        return Response(status_code=status)

    app = Starlette(routes=[Route("/hook", hook, methods=["POST"])])
    with serve_in_thread(app) as url:
        receiver.url = f"{url}/hook"
        yield receiver

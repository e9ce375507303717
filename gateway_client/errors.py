"""The client's own failure: one that ends the client or a run, rather than one answer."""

from __future__ import annotations


class GatewayError(Exception):
    """Raised by a run's iterator and by `connect()` when nothing the client can do will help:
    `code` is `unauthorized` (the token is refused for good), `forbidden` (this origin may not
    connect), or `closed` (the client was closed). Also describes, with `retry_after`, why a
    reconnect waits (`rate_limited`) in a `ConnectionState`."""

    def __init__(self, message: str, *, code: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.retry_after = retry_after

"""The native HTTP error body, `{"error": <code>, "detail": <text>, "timestamp": <ISO 8601>}`:
one shape for the handlers and for the server layer's own refusals (a request head too large
or too slow), which answer before any handler runs."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any


def error_body(code: str, detail: str) -> dict[str, Any]:
    timestamp = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return {"error": code, "detail": detail, "timestamp": timestamp}

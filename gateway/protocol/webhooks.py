"""Webhooks in the Standard Webhooks format (https://www.standardwebhooks.com), pure: the
body, the signature, the headers, and when a failed delivery is tried again (the secret is
read with the settings, `config.rules.webhook_key`).

A message is signed as `<webhook-id>.<webhook-timestamp>.<body>` with HMAC-SHA256 under the
secret's bytes (`whsec_` + base64); `webhook-signature` is `v1,<base64 of the MAC>`. Every
attempt of one delivery carries the same `webhook-id` (receivers deduplicate by it) and a
timestamp of its own, signed anew.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from typing import Any

from gateway.protocol.server_frames import dumps

# Seconds from a failed attempt to the next: the first retry after a second, the last about
# 16 hours after the end; then the delivery is given up (counted as failed).
RETRY_SCHEDULE = (1, 5, 30, 120, 600, 1800, 3600, 7200, 14400, 28800)


def signature(key: bytes, message_id: str, timestamp: int, body: str) -> str:
    signed = f"{message_id}.{timestamp}.{body}".encode()
    mac = hmac.new(key, signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


def headers(key: bytes, message_id: str, timestamp: int, body: str) -> dict[str, str]:
    return {
        "content-type": "application/json",
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature(key, message_id, timestamp, body),
    }


def ended_type(status: str) -> str | None:
    """The webhook of a generation's end: none for a cancel (its client asked for it)."""
    if status == "complete":
        return "generation.completed"
    if status in ("failed", "interrupted"):
        return "generation.failed"
    return None


def body(kind: str, timestamp: str, data: dict[str, Any]) -> str:
    return dumps({"type": kind, "timestamp": timestamp, "data": data})


def retry_after(attempts: int) -> int | None:
    """Seconds until the next attempt after `attempts` failed ones; None: give up."""
    if attempts > len(RETRY_SCHEDULE):
        return None
    return RETRY_SCHEDULE[attempts - 1]

"""Dev mode: no key configured, so the gateway signs its own tokens with a local secret.

The secret is made once per data directory (file mode 0600) so tokens, and the page's
session, survive a restart, and so `chat-gateway token` works against a dev gateway.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

SECRET_FILE = "dev-secret"


def dev_secret(data_dir: Path) -> str:
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / SECRET_FILE
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text().strip()
    secret = secrets.token_urlsafe(32)
    with os.fdopen(fd, "w") as fh:
        fh.write(secret)
    return secret


def banner(url: str) -> str:
    line = "=" * 72
    return (
        f"\n{line}\n  DEV MODE: no JWT_SECRET, JWT_PUBLIC_KEY or JWT_JWKS_URL is set. Tokens are\n"
        f"  signed with a local secret in .chat-gateway/; do not expose this gateway to others.\n"
        f"  Open the chat page:\n\n  {url}\n{line}\n"
    )

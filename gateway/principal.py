"""Who a request acts for, once its token checked out: a leaf, so that limits and the core
know the user without loading the token machinery (PyJWT)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Principal:
    """The authenticated user: `sub` is the user id that owns conversations."""

    sub: str
    expires_at: int
    claims: Mapping[str, Any]

"""The tests' JWT secret and their tokens, signed with it."""

from __future__ import annotations

from gateway.auth.tokens import mint_token
from gateway.config import Secret, Settings

TEST_SECRET = "test-secret-that-is-long-enough-for-hs256!"


def mint(sub: str = "alice", ttl: int = 600) -> str:
    return mint_token(Settings(jwt_secret=Secret(TEST_SECRET)), sub, ttl)

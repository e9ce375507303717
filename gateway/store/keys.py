"""Every Redis key name, built from one prefix.

Keys that must be touched together (a conversation's record and its messages) share a hash
tag `{...}` so they land in one slot on Redis Cluster and one Lua script may use both.
"""

from __future__ import annotations


class Keys:
    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    def conversation(self, conversation_id: str) -> str:
        """Hash: owner, title, created_at, updated_at."""
        return f"{self.prefix}conv:{{{conversation_id}}}"

    def messages(self, conversation_id: str) -> str:
        """List of JSON messages, oldest first, capped at MAX_STORED_TURNS turns."""
        return f"{self.prefix}conv:{{{conversation_id}}}:messages"

    def user_conversations(self, sub: str) -> str:
        """Sorted set of a user's conversation ids, scored by last update (ms)."""
        return f"{self.prefix}user:{{{sub}}}:conversations"

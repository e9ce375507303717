"""Every Redis key name, built from one prefix.

Keys that must be touched together (a conversation's record and its messages) share a hash
tag `{...}` so they land in one slot on Redis Cluster and one Lua script may use both.
"""

from __future__ import annotations


class Keys:
    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    def conversation(self, conversation_id: str) -> str:
        """Hash: owner, title, created_at, updated_at, generation (the latest), project_id."""
        return f"{self.prefix}conv:{{{conversation_id}}}"

    def messages(self, conversation_id: str) -> str:
        """List of JSON messages, oldest first, capped at MAX_STORED_TURNS turns."""
        return f"{self.prefix}conv:{{{conversation_id}}}:messages"

    def conversation_generations(self, conversation_id: str) -> str:
        """Sorted set of the ids of the conversation's generations, scored by start (ms), so
        that deleting the conversation finds their records."""
        return f"{self.prefix}conv:{{{conversation_id}}}:generations"

    def generation(self, generation_id: str) -> str:
        """Hash: owner, conversation_id, request_id, model, agent, status, last_seq, cancel."""
        return f"{self.prefix}gen:{{{generation_id}}}"

    def events(self, generation_id: str) -> str:
        """Stream: the generation's events, entry id `<seq>-0`, field `e` = event JSON."""
        return f"{self.prefix}gen:{{{generation_id}}}:events"

    def lease(self, generation_id: str) -> str:
        """String with a TTL, renewed by the process running the generation."""
        return f"{self.prefix}gen:{{{generation_id}}}:lease"

    def idempotency(self, sub: str, key: str) -> str:
        """String: the generation a user's idempotency key started."""
        return f"{self.prefix}idem:{{{sub}}}:{key}"

    def cancel_channel(self) -> str:
        """Pub/sub channel carrying ids of generations to cancel, to whichever process runs them."""
        return f"{self.prefix}cancel"

    def user_conversations(self, sub: str) -> str:
        """Sorted set of a user's conversation ids, scored by last update (ms)."""
        return f"{self.prefix}user:{{{sub}}}:conversations"

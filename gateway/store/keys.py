"""Every Redis key name, built from one prefix.

Keys that must be touched together share a hash tag `{...}`, so they land in one slot on a
Redis Cluster and one Lua script may use them all: a conversation's
(`conv:{<owner>/<id>}`), a generation's (`gen:{id}`), a user's (`user:{sub}`, `idem:{sub}`).
No script names keys of two tags; pipelines that do are not transactions, and a cluster client
splits them by node. The cancel and activity channels have no tag: PUBLISH on a cluster reaches the
subscribers of every node.

A conversation's keys carry its owner: conversation ids are chosen by clients, so each user
has ids of their own, and one user's id never names, reveals or blocks another's.

A user's `sub` and an idempotency key come from outside. A `sub` goes into a hash tag escaped
(`tag`): with `%`, `{`, `}` and `/` escaped no `sub` can end a tag early or scatter a user's
keys over slots (a `sub` of `}x` would make an empty tag), and no two users' keys can meet (a
`sub` of `a}:k` with the idempotency key `z` would otherwise name the key of `sub` `a` with the
idempotency key `k}:z`). Ids the gateway issues or validates (`gen_…`, conversation ids) hold
none of these characters.
"""

from __future__ import annotations

_ESCAPES = str.maketrans({"%": "%25", "{": "%7B", "}": "%7D", "/": "%2F"})


def tag(value: str) -> str:
    """`value` as it may stand inside a hash tag: one-to-one, and with no brace or slash."""
    return value.translate(_ESCAPES)


class Keys:
    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    def conversation(self, owner: str, conversation_id: str) -> str:
        """Hash: owner, title, created_at, updated_at, generation (the latest), project_id."""
        return f"{self.prefix}conv:{{{tag(owner)}/{conversation_id}}}"

    def messages(self, owner: str, conversation_id: str) -> str:
        """List of JSON messages, oldest first, as stored before conversations were trees:
        moved into the tree (`nodes`, `links`) by the first script that touches it."""
        return f"{self.conversation(owner, conversation_id)}:messages"

    def nodes(self, owner: str, conversation_id: str) -> str:
        """Hash: message id → the message's stored JSON, every branch's."""
        return f"{self.conversation(owner, conversation_id)}:nodes"

    def links(self, owner: str, conversation_id: str) -> str:
        """Hash: the tree's shape (`p:<id>` parent, `c:<id>` children, `g:<generation>` the
        message a running generation answers; see store/tree_scripts.py)."""
        return f"{self.conversation(owner, conversation_id)}:links"

    def conversation_keys(self, owner: str, conversation_id: str) -> list[str]:
        """The keys every conversation script takes, in their order."""
        return [
            self.conversation(owner, conversation_id),
            self.messages(owner, conversation_id),
            self.conversation_generations(owner, conversation_id),
            self.nodes(owner, conversation_id),
            self.links(owner, conversation_id),
        ]

    def conversation_generations(self, owner: str, conversation_id: str) -> str:
        """Sorted set of the ids of the conversation's generations, scored by start (ms), so
        that deleting the conversation finds their records."""
        return f"{self.conversation(owner, conversation_id)}:generations"

    def generation(self, generation_id: str) -> str:
        """Hash: owner, conversation_id, request_id, model, agent, status, last_seq, cancel."""
        return f"{self.prefix}gen:{{{generation_id}}}"

    def events(self, generation_id: str) -> str:
        """Stream: the generation's events, entry id `<seq>-0`, field `e` = event JSON."""
        return f"{self.prefix}gen:{{{generation_id}}}:events"

    def lease(self, generation_id: str) -> str:
        """String with a TTL, renewed by the process running the generation."""
        return f"{self.prefix}gen:{{{generation_id}}}:lease"

    def user_activity(self, sub: str) -> str:
        """Stream: the user's activity (generations started and ended, conversations changed),
        entry id = the event's `activity_id`, field `a` = its JSON; capped in length and
        trimmed to ACTIVITY_TTL."""
        return f"{self.prefix}user:{{{tag(sub)}}}:activity"

    def user_activity_channel(self, sub: str) -> str:
        """Pub/sub channel naming, for each event of the user published, its id and the user
        (`<id> <sub>`): heard by the processes where the user listens, and only those."""
        return f"{self.prefix}activity:{sub}"

    def activity_wake(self, reader: str) -> str:
        """Pub/sub channel of one process's activity reader, told there that the users'
        channels it hears are to change."""
        return f"{self.prefix}activity-wake:{reader}"

    def activity_channel(self) -> str:
        """The pub/sub channel every process hears, whoever listens there: it keeps a reader's
        connection subscribed while no user listens (and so checked), and it carries the news
        of processes that published every user's events on it (before per-user channels)."""
        return f"{self.prefix}activity"

    def generation_watchers(self, generation_id: str) -> str:
        """Sorted set of the follows of the generation from other instances (kept only with
        WEBHOOK_URL): one that saw the end stays, so the end's webhook knows it was watched."""
        return f"{self.prefix}gen:{{{generation_id}}}:watchers"

    def webhooks_due(self) -> str:
        """Sorted set of webhook deliveries by when they are due (ms); one being sent is due
        again after its lease, so another instance takes it over if its sender died."""
        return f"{self.prefix}webhooks:{{q}}:due"

    def webhooks(self) -> str:
        """Hash: each pending webhook delivery's record (JSON), by its `webhook-id`."""
        return f"{self.prefix}webhooks:{{q}}:records"

    def log_wake(self, instance: str) -> str:
        """Stream of at most one entry: added to, it ends the process's blocked read of the
        followed generation logs (`BlockingReads`), so that the next read covers a new one."""
        return f"{self.prefix}wake:{{{instance}}}"

    def idempotency(self, sub: str, key: str) -> str:
        """String: the generation a user's idempotency key started."""
        return f"{self.prefix}idem:{{{tag(sub)}}}:{key}"

    def cancel_channel(self) -> str:
        """Pub/sub channel carrying ids of generations to cancel, to whichever process runs them."""
        return f"{self.prefix}cancel"

    def user_conversations(self, sub: str) -> str:
        """Sorted set of a user's conversation ids, scored by last update (ms)."""
        return f"{self.prefix}user:{{{tag(sub)}}}:conversations"

    def user_rate(self, sub: str) -> str:
        """String: the user's theoretical arrival time (ms) for the requests-per-minute limit."""
        return f"{self.prefix}user:{{{tag(sub)}}}:rate"

    def user_generations(self, sub: str) -> str:
        """Sorted set of the user's running generation ids, scored by when the entry lapses."""
        return f"{self.prefix}user:{{{tag(sub)}}}:running"

    def user_connections(self, sub: str) -> str:
        """Sorted set of the user's open connection ids, scored by when the entry lapses."""
        return f"{self.prefix}user:{{{tag(sub)}}}:connections"

    def user_tokens(self, sub: str, day: str) -> str:
        """Counter: tokens the user spent (or reserved) on a UTC day, `YYYYMMDD`."""
        return f"{self.prefix}user:{{{tag(sub)}}}:tokens:{day}"

    def user_storage(self, sub: str) -> str:
        """Hash: bytes of stored messages per conversation id of the user, as last counted."""
        return f"{self.prefix}user:{{{tag(sub)}}}:storage"

    def user_storage_lapses(self, sub: str) -> str:
        """Sorted set of the same conversation ids, scored by when their count lapses (ms):
        when the conversation expires unless a turn comes first."""
        return f"{self.prefix}user:{{{tag(sub)}}}:storage:lapses"

    def user_storage_total(self, sub: str) -> str:
        """Counter: the sum of the user's storage hash, kept with it."""
        return f"{self.prefix}user:{{{tag(sub)}}}:storage:total"

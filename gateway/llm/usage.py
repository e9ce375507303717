"""Token counts when a model gives none: whitespace-separated words, a coarse estimate that
needs no tokenizer (the echo model's count, and the fallback for an upstream that sends no
usage)."""

from __future__ import annotations

from collections.abc import Sequence

from gateway.events import Message, Usage


def estimate_tokens(text: str) -> int:
    return len(text.split())


def estimate_usage(messages: Sequence[Message], completion_tokens: int) -> Usage:
    prompt = sum(estimate_tokens(m.content) for m in messages)
    return Usage(prompt_tokens=prompt, completion_tokens=completion_tokens)

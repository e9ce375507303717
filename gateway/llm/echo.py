"""The built-in `echo` model: the user's message back, word by word, no API key needed."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Sequence

from gateway.events import Finish, FinishReason, Message, TextDelta, ToolCall, Usage
from gateway.llm.base import ModelParams
from gateway.llm.gate import ConcurrencyGate

_WORD = re.compile(r"\s*\S+")


def estimate_tokens(text: str) -> int:
    """Whitespace-separated words: the echo model's (and a fallback) token count."""
    return len(text.split())


class EchoModel:
    streaming = True

    def __init__(self, name: str, delay_ms: int, gate: ConcurrencyGate) -> None:
        self.name = name
        self._delay = delay_ms / 1000
        self._gate = gate

    async def stream(
        self, messages: Sequence[Message], params: ModelParams
    ) -> AsyncIterator[TextDelta | ToolCall | Finish]:
        last_user = next((m.content for m in reversed(messages) if m.role == "user"), "")
        words = _WORD.findall(last_user)
        limit = params.max_tokens if params.max_tokens is not None else len(words)
        prompt = sum(estimate_tokens(m.content) for m in messages)
        async with self._gate.slot():  # the same per-model cap as an upstream model
            for word in words[:limit]:
                if self._delay:
                    await asyncio.sleep(self._delay)
                yield TextDelta(word)
        reason: FinishReason = "length" if limit < len(words) else "stop"
        yield Finish(reason, Usage(prompt_tokens=prompt, completion_tokens=min(limit, len(words))))

    async def aclose(self) -> None:
        return None

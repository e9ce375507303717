"""The built-in `echo` model: the user's message back, word by word, no API key needed; asked
for JSON, a JSON object holding it (`echo_json.py`)."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Sequence

from gateway.config import ModelConfig
from gateway.events import Finish, FinishReason, Message, TextDelta, ToolCall
from gateway.llm.base import ModelParams
from gateway.llm.echo_json import echo_json
from gateway.llm.gate import ConcurrencyGate
from gateway.llm.providers import ProviderContext
from gateway.llm.usage import estimate_usage

_WORD = re.compile(r"\s*\S+")


class EchoModel:
    streaming = True

    def __init__(
        self, name: str, delay_ms: int, gate: ConcurrencyGate, max_words: int | None = None
    ) -> None:
        """`max_words` (ECHO_MAX_WORDS) caps every answer, whatever `max_tokens` asks: a
        message of a million words must not keep an echo answer running for hours."""
        self.name = name
        self._delay = delay_ms / 1000
        self._gate = gate
        self._max_words = max_words

    async def stream(
        self, messages: Sequence[Message], params: ModelParams
    ) -> AsyncIterator[TextDelta | ToolCall | Finish]:
        text = next((m.content for m in reversed(messages) if m.role == "user"), "")
        output = params.output_format
        if output is not None and output.needs_structured_outputs:
            text = echo_json(text, output)
        caps = [cap for cap in (params.max_tokens, self._max_words) if cap is not None]
        limit = min(caps) if caps else None
        # Words are found one at a time: a long message is never split into a list at once.
        sent, cut = 0, False
        async with self._gate.slot():  # the same per-model cap as an upstream model
            for word in _WORD.finditer(text):
                if sent == limit:
                    cut = True
                    break
                if self._delay:
                    await asyncio.sleep(self._delay)
                yield TextDelta(word.group())
                sent += 1
        reason: FinishReason = "length" if cut else "stop"
        yield Finish(reason, estimate_usage(messages, sent))

    async def aclose(self) -> None:
        return None


class EchoProvider:
    """The `echo` provider: nothing shared, nothing to close."""

    def __init__(self, context: ProviderContext) -> None:
        self._context = context

    def model(self, config: ModelConfig) -> EchoModel:
        settings = self._context.settings
        gate = self._context.gate(config)
        return EchoModel(config.name, settings.echo_delay_ms, gate, settings.echo_max_words)

    async def aclose(self) -> None:
        return None

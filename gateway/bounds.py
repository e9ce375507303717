"""What one generation may cost, whatever its agent and model do: the characters of its answer,
the events of its log, its time, and the events its process keeps in memory for resumes.

Pure: `Generation.run` applies these to every agent's output, so no agent or upstream can
grow an answer, a log or a wait without end.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.config import Settings


@dataclass(frozen=True, slots=True)
class GenerationBounds:
    answer_chars: int  # MAX_ANSWER_CHARS: then finish reason "length"
    log_events: int  # MAX_LOG_EVENTS, the final event included: then "length"
    seconds: float  # GENERATION_TIMEOUT, tool calls included: then upstream_error
    memory_events: int  # GENERATION_MEMORY_EVENTS kept for resumes on this process

    @staticmethod
    def of(settings: Settings) -> GenerationBounds:
        return GenerationBounds(
            answer_chars=settings.max_answer_chars,
            log_events=settings.max_log_events,
            seconds=settings.generation_timeout,
            memory_events=settings.generation_memory_events,
        )


def timed_out(seconds: float) -> str:
    """The message of a generation stopped by GENERATION_TIMEOUT."""
    return f"The answer was stopped after {seconds:g} s, the longest one answer may take."


class AnswerText:
    """An answer's text as it grows, never longer than `limit` characters.

    Only text that does not fit cuts the answer: one of exactly `limit` characters whose
    model then stops is complete with its own finish reason."""

    def __init__(self, limit: int) -> None:
        self._parts: list[str] = []
        self._room = limit
        self.cut = False

    def take(self, text: str) -> str:
        """The part of `text` that fits, now part of the answer; `cut` is set when some of
        it did not fit."""
        fits = text[: self._room]
        if len(fits) < len(text):
            self.cut = True
        self._room -= len(fits)
        if fits:
            self._parts.append(fits)
        return fits

    @property
    def text(self) -> str:
        return "".join(self._parts)

"""The built-in echo model: its words, and the bounds on how many it answers."""

from __future__ import annotations

from gateway.events import Finish, Message, TextDelta
from gateway.llm.base import ModelParams
from gateway.llm.echo import EchoModel
from gateway.llm.gate import ConcurrencyGate


async def answer(
    message: str, max_words: int | None, max_tokens: int | None = None
) -> list[object]:
    model = EchoModel("echo", 0, ConcurrencyGate("echo", 4, 1.0), max_words)
    params = ModelParams(max_tokens=max_tokens)
    return [event async for event in model.stream([Message("user", message)], params)]


def text_and_finish(events: list[object]) -> tuple[str, Finish]:
    *deltas, finish = events
    assert all(isinstance(d, TextDelta) for d in deltas) and isinstance(finish, Finish)
    return "".join(d.text for d in deltas if isinstance(d, TextDelta)), finish


async def test_an_answer_longer_than_max_words_is_cut_with_length() -> None:
    text, finish = text_and_finish(await answer("one two  three four", max_words=2))
    assert text == "one two"
    assert finish.reason == "length" and finish.usage.completion_tokens == 2


async def test_an_answer_of_exactly_max_words_ends_with_stop() -> None:
    text, finish = text_and_finish(await answer(" one\ntwo ", max_words=2))
    assert text == " one\ntwo"
    assert finish.reason == "stop" and finish.usage.completion_tokens == 2


async def test_the_smaller_of_max_tokens_and_max_words_applies() -> None:
    text, finish = text_and_finish(await answer("a b c d", max_words=3, max_tokens=1))
    assert (text, finish.reason) == ("a", "length")
    text, finish = text_and_finish(await answer("a b c d", max_words=3, max_tokens=10))
    assert (text, finish.reason) == ("a b c", "length")


async def test_without_a_cap_every_word_is_echoed() -> None:
    text, finish = text_and_finish(await answer("a b c", max_words=None))
    assert (text, finish.reason) == ("a b c", "stop")

"""What a setting is: one declaration of its environment variable, type, default, bound and
meaning, from which reading the environment and checking the value both follow.

A dataclass field is declared with `setting(...)`; its annotation is its type and chooses how
the variable's text is parsed. `read(cls, env)` parses the variables that are set, and
`check(obj)` holds every field to its bound, so neither repeats a name or a default.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, NamedTuple, get_args, get_origin, get_type_hints

Parse = Callable[[str, str], Any]  # (variable, its text) -> the field's value

SPEC = "setting"  # the key of a declared field's `Spec` in its metadata


class ConfigError(ValueError):
    """The configuration cannot be used; the message says which setting and why."""


class Secret:
    """A string that never shows itself in a repr, a log line or a traceback."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('**********')"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


@dataclass(frozen=True, slots=True)
class Spec:
    """One environment variable: its name, default, meaning and bound.

    `refusal` replaces the usual message when the bound fails (`{env}` names the variable);
    `parse` replaces the parser the field's type chooses.
    """

    env: str
    default: Any
    meaning: str
    gt: float | None = None
    ge: float | None = None
    refusal: str | None = None
    parse: Parse | None = None

    def allows(self, value: Any) -> bool:
        return (self.gt is None or value > self.gt) and (self.ge is None or value >= self.ge)

    def refused(self) -> str:
        if self.refusal is not None:
            return self.refusal.format(env=self.env)
        if self.gt == 0:
            return f"{self.env} must be greater than zero."
        if self.gt is not None:
            return f"{self.env} must be more than {self.gt:g}."
        if self.ge == 0:
            return f"{self.env} may not be negative."
        return f"{self.env} must be at least {self.ge:g}."


def setting(
    env: str,
    default: Any,
    meaning: str,
    *,
    gt: float | None = None,
    ge: float | None = None,
    refusal: str | None = None,
    parse: Parse | None = None,
) -> Any:
    """A dataclass field read from `env`, `default` when unset, held to `gt`/`ge`."""
    spec = Spec(env, default, meaning, gt, ge, refusal, parse)
    return dataclasses.field(default=default, metadata={SPEC: spec})


class Declared(NamedTuple):
    name: str  # the field's
    spec: Spec
    parse: Parse


_declared: dict[type[Any], tuple[Declared, ...]] = {}


def declared(cls: type[Any]) -> tuple[Declared, ...]:
    """The fields of `cls` declared with `setting`, in order, each with its parser."""
    if cls not in _declared:
        hints = get_type_hints(cls)  # once per class: it evaluates every annotation
        _declared[cls] = tuple(
            Declared(f.name, spec, spec.parse or parser(hints[f.name]))
            for f in dataclasses.fields(cls)
            if (spec := f.metadata.get(SPEC)) is not None
        )
    return _declared[cls]


def read(cls: type[Any], env: Mapping[str, str]) -> dict[str, Any]:
    """The declared fields of `cls` whose variables `env` sets, parsed by field name."""
    return {
        d.name: d.parse(d.spec.env, env[d.spec.env]) for d in declared(cls) if d.spec.env in env
    }


def check(obj: Any) -> None:
    """ConfigError naming the first declared field of `obj` outside its bound."""
    for d in declared(type(obj)):
        if not d.spec.allows(getattr(obj, d.name)):
            raise ConfigError(d.spec.refused())


def parser(hint: Any) -> Parse:
    if get_origin(hint) is Literal:
        return _choice(tuple(get_args(hint)))
    try:
        return PARSERS[hint]
    except KeyError:
        raise TypeError(f"no parser for a setting of type {hint}") from None


def number(name: str, raw: str) -> float:
    try:
        return float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number, not '{raw}'.") from None


def whole(name: str, raw: str) -> int:
    # Through float, so "1e6" and "2.0" are read as they always were.
    return int(number(name, raw))


def flag(_name: str, raw: str) -> bool:
    return raw.lower() in {"1", "true", "yes", "on"}


def text(_name: str, raw: str) -> str:
    return raw


def lowered(_name: str, raw: str) -> str:
    return raw.lower()


def csv(raw: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in raw.split(",") if part.strip())


def secret(value: str | None) -> Secret | None:
    return None if value is None else Secret(value)


def _choice(choices: tuple[str, ...]) -> Parse:
    def parse(name: str, raw: str) -> str:
        value = raw.lower()
        if value not in choices:
            raise ConfigError(f"{name} must be one of {', '.join(choices)}, not '{value}'.")
        return value

    return parse


PARSERS: dict[Any, Parse] = {
    bool: flag,
    int: whole,
    float: number,
    str: text,
    str | None: text,
    Path: lambda _name, raw: Path(raw),
    Secret | None: lambda _name, raw: Secret(raw),
    tuple[str, ...]: lambda _name, raw: csv(raw),
}

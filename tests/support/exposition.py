"""A parser for the Prometheus text format, independent of the code under test: the samples,
types and help texts of one scrape."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$")
_PAIR = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"(,|$)')
_UNESCAPE = {"\\\\": "\\", '\\"': '"', "\\n": "\n"}

Labels = frozenset[tuple[str, str]]


@dataclass
class Exposition:
    types: dict[str, str] = field(default_factory=dict)
    helps: dict[str, str] = field(default_factory=dict)
    samples: dict[tuple[str, Labels], float] = field(default_factory=dict)

    def value(self, name: str, **labels: str) -> float:
        return self.samples[(name, frozenset(labels.items()))]

    def series(self, name: str) -> dict[Labels, float]:
        return {labels: v for (n, labels), v in self.samples.items() if n == name}


def _unescape(text: str) -> str:
    return re.sub(r"\\[\\\"n]", lambda m: _UNESCAPE[m.group(0)], text)


def _labels(text: str) -> Labels:
    pairs, position = [], 0
    while position < len(text):
        match = _PAIR.match(text, position)
        assert match is not None, f"bad labels: {text!r}"
        pairs.append((match.group(1), _unescape(match.group(2))))
        position = match.end()
    return frozenset(pairs)


def parse(text: str) -> Exposition:
    assert text.endswith("\n")
    found = Exposition()
    for line in text.splitlines():
        if line.startswith("# HELP "):
            name, _, help_text = line[7:].partition(" ")
            found.helps[name] = help_text.replace("\\n", "\n").replace("\\\\", "\\")
        elif line.startswith("# TYPE "):
            name, _, kind = line[7:].partition(" ")
            assert kind in ("counter", "gauge", "histogram")
            found.types[name] = kind
        else:
            match = _SAMPLE.match(line)
            assert match is not None, f"bad sample line: {line!r}"
            key = (match.group(1), _labels(match.group(3) or ""))
            assert key not in found.samples, f"duplicate series: {line!r}"
            found.samples[key] = float(match.group(4))
    return found

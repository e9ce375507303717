"""The import rules of docs/architecture.md, checked on the source."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

GATEWAY = Path(__file__).resolve().parent.parent / "gateway"


def imported(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize(
    ("folder", "forbidden"),
    [
        ("handlers", {"redis", "openai"}),  # transports only translate
        ("agents", {"redis", "openai", "starlette"}),
        ("tools", {"redis", "openai", "starlette"}),
    ],
)
def test_layers_import_only_what_they_may(folder: str, forbidden: set[str]) -> None:
    offenders = {
        path.name: sorted(imported(path) & forbidden)
        for path in (GATEWAY / folder).glob("*.py")
        if imported(path) & forbidden
    }
    assert offenders == {}


def test_only_llm_imports_openai() -> None:
    users = {
        str(path.relative_to(GATEWAY))
        for path in GATEWAY.rglob("*.py")
        if "openai" in imported(path)
    }
    assert users and all(user.startswith("llm/") for user in users)


@pytest.mark.parametrize("module", ["protocol.py", "events.py", "errors.py", "config.py"])
def test_pure_leaves_do_no_io(module: str) -> None:
    assert imported(GATEWAY / module) & {"asyncio", "redis", "openai", "starlette"} == set()

"""Import rules that the import contract (pyproject's [tool.importlinter], run by
`scripts/check`) does not state: which file within llm/ may name an upstream's SDK."""

from __future__ import annotations

import ast
from pathlib import Path

GATEWAY = Path(__file__).resolve().parents[2] / "gateway"
LLM = GATEWAY / "llm"
TRANSPORT = LLM / "transport.py"


def imported(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_only_dialects_and_their_transport_import_an_sdk() -> None:
    """An upstream's SDK is named only in a dialect package (one folder per upstream API) and
    in the bounded transport they share."""
    users = {path for path in GATEWAY.rglob("*.py") if imported(path) & {"openai", "aiohttp"}}
    assert users and all(path == TRANSPORT or path.parent.parent == LLM for path in users)


def test_the_import_contract_covers_every_package() -> None:
    """Every package of gateway/ is named by a layer or a contract, so a new one cannot slip
    past the rules unnoticed."""
    import tomllib

    config = tomllib.loads((GATEWAY.parent / "pyproject.toml").read_text())
    named = str(config["tool"]["importlinter"]["contracts"])
    packages = {p.parent.name for p in GATEWAY.glob("*/__init__.py")}
    assert packages and {p for p in packages if f"gateway.{p}" not in named} == set()

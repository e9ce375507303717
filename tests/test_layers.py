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


# The upstream's wire: its SDKs and HTTP clients. Within llm/, only a dialect package (one per
# upstream API, a folder of its own) and the bounded transport they share may import them.
WIRE = {"openai", "aiohttp", "httpx2"}
LLM = GATEWAY / "llm"
TRANSPORT = LLM / "transport.py"


def test_only_dialects_and_their_transport_import_an_sdk() -> None:
    users = {path for path in GATEWAY.rglob("*.py") if imported(path) & {"openai", "aiohttp"}}
    assert users and all(path == TRANSPORT or path.parent.parent == LLM for path in users)


def test_the_upstream_policy_knows_no_wire_format() -> None:
    neutral = [path for path in LLM.glob("*.py") if path != TRANSPORT]
    offenders = {
        path.name: sorted(imported(path) & WIRE) for path in neutral if imported(path) & WIRE
    }
    assert neutral and offenders == {}


@pytest.mark.parametrize(
    "module", ["protocol/frames.py", "events.py", "errors.py", "config.py", "principal.py"]
)
def test_pure_leaves_do_no_io(module: str) -> None:
    assert imported(GATEWAY / module) & {"asyncio", "redis", "openai", "starlette"} == set()

"""Objects named by a `module:attribute` path, imported only when asked for.

The registries of providers and agent kinds, agent plugins and tools all name what they use
this way (uvicorn's `importer.py` does the same for its implementations): nothing is imported
until a configuration uses it, so a gateway serving only the echo model never loads the openai
SDK. The attribute may be dotted (`module:Class.attribute`).
"""

from __future__ import annotations

import importlib
from typing import Any


def import_from_string(path: str) -> Any:
    """The object `path` names: ImportError or AttributeError when it names none, ValueError
    when it is not a `module:attribute` path."""
    module_name, _, qualname = path.partition(":")
    if not module_name or not qualname:
        raise ValueError(f"'{path}' is not a 'module:attribute' path.")
    found: Any = importlib.import_module(module_name)
    for part in qualname.split("."):
        found = getattr(found, part)
    return found

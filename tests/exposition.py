"""Moved to tests/support/exposition.py; kept until every test module imports it from there."""

from tests.support.exposition import Exposition, parse

__all__ = ["Exposition", "parse"]

"""Moved to tests/support (upstream.py, serving.py); kept until every test module imports it
from there."""

from tests.support.serving import serve_in_thread
from tests.support.upstream import FakeUpstream, Recorded

__all__ = ["FakeUpstream", "Recorded", "serve_in_thread"]

"""Benchmarks for the gateway: `python -m bench.ws_load` (see docs/performance.md)."""

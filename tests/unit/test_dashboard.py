"""The Grafana dashboard (docs/grafana/chat-gateway.json) queries only metrics the gateway
exports, under the names and kinds it exports them, and shows every gateway metric."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from gateway.obs.metrics import GatewayMetrics

DASHBOARD = Path(__file__).resolve().parents[2] / "docs" / "grafana" / "chat-gateway.json"
METRIC = re.compile(r"\b((?:gateway|process)_[a-z_]+)\b")
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}


def exported() -> dict[str, str]:
    """Every sample name a single-process gateway exports, with its family's kind."""
    names: dict[str, str] = {}
    for family in GatewayMetrics().registry.collect():
        for suffix in SUFFIXES.get(family.type, ("",)):
            names[family.name + suffix] = family.type
    return names


def queries() -> list[str]:
    board: dict[str, Any] = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in board["panels"] for t in p.get("targets", [])]
    exprs += [v["query"] for v in board["templating"]["list"] if v["type"] == "query"]
    return exprs


def test_every_query_names_an_exported_metric() -> None:
    names = exported()
    used = {name for expr in queries() for name in METRIC.findall(expr)}
    assert used and sorted(used - names.keys()) == []


def test_rates_read_counters_and_quantiles_read_buckets() -> None:
    names = exported()
    for expr in queries():
        for name in re.findall(r"rate\(((?:gateway|process)_[a-z_]+)", expr):
            assert name.endswith(("_total", "_bucket")), expr
        if "histogram_quantile" in expr:
            assert all(names[n] == "histogram" for n in METRIC.findall(expr)), expr
            assert all(n.endswith("_bucket") for n in METRIC.findall(expr)), expr


def test_every_gateway_metric_is_on_the_dashboard() -> None:
    families = {
        name.removesuffix(suffix)
        for name, kind in exported().items()
        for suffix in SUFFIXES[kind]
        if name.startswith("gateway_") and name.endswith(suffix)
    }
    names = exported()
    shown = {
        name.removesuffix(suffix)
        for expr in queries()
        for name in METRIC.findall(expr)
        for suffix in SUFFIXES[names[name]]
        if name.endswith(suffix)
    }
    assert families and sorted(families - shown) == []

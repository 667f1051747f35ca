"""The chart's alerting rules and Grafana dashboard: rendered when enabled, every
expression parses as PromQL, and every metric it names is one a service exports."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import promql_parser
import pytest
import yaml

from tests.charts.helmtools import CHART, of_kind, render

pytestmark = pytest.mark.helm

ENABLED = ("metrics.prometheusRule.enabled=true", "metrics.grafanaDashboards.enabled=true")
# Series Prometheus itself adds (not exported by anything).
SYNTHETIC = {"up", "scrape_duration_seconds", "ALERTS"}


def exported_metrics() -> set[str]:
    """Every series name the services' processes export: the metrics registered when
    their modules load, the gRPC layer's and the run gauges."""
    import importlib

    from rlhf.runtime import metrics
    from rlhf.runtime.grpc.interceptors import MetricsLayer

    for service in ("dataprep", "trainer", "reward", "adversary", "inference"):
        importlib.import_module(f"rlhf.services.{service}.server")
    importlib.import_module("rlhf.serving.engine")
    MetricsLayer()
    names = set()
    for family in metrics.REGISTRY.collect():
        names.add(family.name)
        suffixes = {
            "counter": ("_total", "_created"),
            "histogram": ("_bucket", "_sum", "_count", "_created"),
        }.get(family.type, ())
        names.update(family.name + suffix for suffix in suffixes)
    return names


def metric_names(expr: Any) -> Iterator[str]:
    """Names of the vector selectors in a parsed PromQL expression."""
    if type(expr).__name__ == "VectorSelector":
        yield expr.name
        return
    for attr in ("lhs", "rhs", "expr", "vector_selector", "param"):
        child = getattr(expr, attr, None)
        if child is not None and not isinstance(child, str | int | float):
            yield from metric_names(child)
    for child in getattr(expr, "args", None) or ():
        yield from metric_names(child)


def rendered_expressions() -> dict[str, str]:
    objs = render(sets=ENABLED)
    (rule,) = of_kind(objs, "PrometheusRule")
    expressions = {
        r["alert"]: str(r["expr"]) for group in rule["spec"]["groups"] for r in group["rules"]
    }
    (configmap,) = [
        o for o in of_kind(objs, "ConfigMap") if "dashboard-rlhf.json" in (o.get("data") or {})
    ]
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    dashboard = json.loads(configmap["data"]["dashboard-rlhf.json"])
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            expressions[f"panel {panel['title']!r} {target['refId']}"] = target["expr"]
    return expressions


def test_off_by_default():
    objs = render()
    assert of_kind(objs, "PrometheusRule") == []
    assert not [
        o for o in of_kind(objs, "ConfigMap") if "dashboard-rlhf.json" in (o.get("data") or {})
    ]


def test_rules_cover_what_a_platform_team_pages_on():
    rules = yaml.safe_load((CHART / "files" / "monitoring" / "rules.yaml").read_text())
    alerts = {r["alert"] for group in rules["groups"] for r in group["rules"]}
    assert {
        "RLHFDeadLettersGrowing",
        "RLHFConsumerLagHigh",
        "RLHFPromotionGateFailed",
        "RLHFTritonErrors",
        "RLHFServiceNotServing",
    } <= alerts


def test_every_expression_parses_and_names_exported_metrics():
    exported = exported_metrics()
    expressions = rendered_expressions()
    assert len(expressions) > 20
    named = set()
    for where, expr in expressions.items():
        try:
            parsed = promql_parser.parse(expr)
        except Exception as exc:  # the parser raises its own error types
            pytest.fail(f"{where}: {expr!r} does not parse: {exc}")
        names = set(metric_names(parsed))
        assert names, f"{where}: no metric in {expr!r}"
        unknown = names - exported - SYNTHETIC
        assert not unknown, f"{where}: {sorted(unknown)} exported by no service"
        named |= names
    # The families the issue asks for are all watched somewhere.
    for name in (
        "rlhf_runs",
        "rlhf_run_step",
        "rlhf_run_reward",
        "rlhf_run_kl_per_sequence",
        "rlhf_feedback_recorded_total",
        "rlhf_feedback_windows_total",
        "rlhf_promotions_total",
        "rlhf_gate_evaluations_total",
        "rlhf_bus_dead_letters_total",
        "rlhf_bus_consumer_lag",
    ):
        assert name in named, name


def test_the_metric_check_catches_a_typo():
    parsed = promql_parser.parse('sum(rate(rlhf_bus_dead_leters_total{topic="x"}[5m])) > 0')
    assert set(metric_names(parsed)) == {"rlhf_bus_dead_leters_total"}
    assert "rlhf_bus_dead_leters_total" not in exported_metrics()

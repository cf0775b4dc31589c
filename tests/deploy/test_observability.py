"""The Grafana dashboard and the Prometheus alert rules in deploy/: every expression parses as
PromQL, and every metric it reads is one the oms processes export — taken from the code's own
registry (oms_platform/metrics.py), not from a list that could drift from it."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import promql_parser
import pytest
import yaml
from prometheus_client import REGISTRY
from prometheus_client.metrics import MetricWrapperBase

from oms_platform import metrics
from tests.deploy.files import DEPLOY, compose

DASHBOARD = DEPLOY / "grafana" / "dashboards" / "oms.json"
RULES = DEPLOY / "prometheus" / "rules" / "oms.yml"

# Series Prometheus makes itself for every target it scrapes.
PROMETHEUS_OWN = {"up", "scrape_duration_seconds", "scrape_samples_scraped"}
SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "gauge": ("",),
}


def exported() -> set[str]:
    """Every series name an oms process exports: oms' own metrics, as the registry describes
    them, and the Temporal SDK runtime's series the worker folds into its endpoint."""
    names: set[str] = set()
    for family in REGISTRY.collect():
        if family.name.startswith("oms_"):
            names |= {family.name + s for s in SUFFIXES[family.type]}
    for name, kind in metrics.TEMPORAL_SDK_SERIES.items():
        names |= {name + s for s in SUFFIXES[kind]}
    return names


# Labels Prometheus attaches to every series it scrapes (deploy/prometheus/prometheus.yml adds
# `process`), beside the ones a metric is exported with.
TARGET_LABELS = {"job", "instance", "process"}


def exported_labels() -> dict[str, set[str]]:
    """Series name → the labels it carries, for the metrics oms_platform/metrics.py declares
    (the collectors read at scrape time and the SDK's series are not described up front)."""
    labels: dict[str, set[str]] = {}
    for declared in vars(metrics).values():
        if isinstance(declared, MetricWrapperBase):
            kind = declared._type
            names = set(declared._labelnames)
            for suffix in SUFFIXES[kind]:
                extra = {"le"} if suffix == "_bucket" else set()
                labels[declared._name + suffix] = names | extra
    return labels


def selectors(node: Any) -> Iterator[promql_parser.VectorSelector]:
    """The series selectors of a parsed PromQL expression."""
    if isinstance(node, promql_parser.VectorSelector):
        yield node
        return
    for attribute in ("lhs", "rhs", "expr", "vector_selector", "param"):
        child = getattr(node, attribute, None)
        if child is not None:
            yield from selectors(child)
    for arg in getattr(node, "args", None) or ():
        yield from selectors(arg)


def metric_names(node: Any) -> Iterator[str]:
    """The metric names a parsed PromQL expression selects."""
    for selector in selectors(node):
        yield selector.name


def dashboard_exprs() -> list[tuple[str, str]]:
    board = json.loads(DASHBOARD.read_text())
    return [(panel["title"], t["expr"]) for panel in board["panels"] for t in panel["targets"]]


def rules() -> list[dict[str, Any]]:
    loaded: dict[str, Any] = yaml.safe_load(RULES.read_text())
    return [rule for group in loaded["groups"] for rule in group["rules"]]


def test_every_dashboard_and_rule_expression_reads_only_exported_metrics() -> None:
    known = exported() | PROMETHEUS_OWN
    exprs = dashboard_exprs() + [(rule["alert"], rule["expr"]) for rule in rules()]
    assert len(exprs) >= 20
    for where, expr in exprs:
        names = set(metric_names(promql_parser.parse(expr)))
        assert names, f"{where}: {expr} reads no metric"
        assert names <= known, f"{where}: {sorted(names - known)} is exported by no oms process"


def test_every_label_an_expression_matches_on_is_one_its_metric_carries() -> None:
    carried = exported_labels()
    assert carried["oms_rpc_duration_seconds_bucket"] >= {"grpc_service", "grpc_type", "le"}
    exprs = dashboard_exprs() + [(rule["alert"], rule["expr"]) for rule in rules()]
    for where, expr in exprs:
        for selector in selectors(promql_parser.parse(expr)):
            if selector.name not in carried:
                continue  # read at scrape time or the SDK's: its labels are not declared
            matched = {m.name for m in selector.matchers.matchers} - {"__name__"}
            unknown = matched - carried[selector.name] - TARGET_LABELS
            assert not unknown, f"{where}: {selector.name} has no label {sorted(unknown)}"
    typo = promql_parser.parse('rate(oms_rpc_duration_seconds_count{grpc_kind="unary"}[5m])')
    (selector,) = selectors(typo)
    assert {m.name for m in selector.matchers.matchers} - carried[selector.name] == {"grpc_kind"}


def test_the_check_catches_a_metric_nobody_exports() -> None:
    known = exported()
    expr = "sum(rate(oms_orders_submitted_total[5m])) / sum(oms_outbox_rows)"
    assert set(metric_names(promql_parser.parse(expr))) - known == {"oms_orders_submitted_total"}
    assert "oms_rpc_duration_seconds_bucket" in known  # a histogram's series
    assert "oms_gateway_calls_total" in known  # a counter's
    assert "oms_db_pool_waiting" in known  # a collector's, read at scrape time


def test_the_dashboard_shows_what_operators_asked_for() -> None:
    board = json.loads(DASHBOARD.read_text())
    titles = " | ".join(panel["title"] for panel in board["panels"]).lower()
    for wanted in (
        "orders per minute by channel and status",
        "submit to fulfilled",
        "rpc p99 by service",
        "outbox lag",
        "exceptions open",
        "gateway failures",
        "worker task latency",
    ):
        assert wanted in titles
    # Streams last as long as their callers listen: the latency panel reads unary calls only.
    (p99,) = [t for (title, t) in dashboard_exprs() if title == "RPC p99 by service"]
    assert 'grpc_type="unary"' in p99
    ids = [panel["id"] for panel in board["panels"]]
    assert len(ids) == len(set(ids))
    # Every panel reads the data source the compose stack provisions.
    assert {p["datasource"]["uid"] for p in board["panels"]} == {"prometheus"}


DURATION = re.compile(r"^\d+[smhd]$")


@pytest.mark.parametrize("rule", rules(), ids=lambda r: r["alert"])
def test_each_alert_rule_is_well_formed(rule: dict[str, Any]) -> None:
    assert set(rule) <= {"alert", "expr", "for", "labels", "annotations", "keep_firing_for"}
    assert re.fullmatch(r"Oms[A-Za-z]+", rule["alert"])
    assert DURATION.match(rule["for"])
    assert rule["labels"]["severity"] in {"warning", "critical"}
    assert rule["annotations"]["summary"] and rule["annotations"]["description"]


def test_the_alert_rules_cover_what_operators_asked_for() -> None:
    exprs = {rule["alert"]: rule["expr"] for rule in rules()}
    assert any("oms_outbox_oldest_age_seconds" in e for e in exprs.values())  # outbox lag
    assert any("oms_process_exceptions_open" in e for e in exprs.values())  # piling up
    assert any("grpc_code" in e for e in exprs.values())  # error rate
    assert any("workflow_task_execution_failed" in e for e in exprs.values())
    groups = [g["name"] for g in yaml.safe_load(RULES.read_text())["groups"]]
    assert len(groups) == len(set(groups))


def test_prometheus_loads_the_rules_and_grafana_the_dashboard() -> None:
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    assert "/etc/prometheus/rules/*.yml" in config["rule_files"]
    services = compose()["services"]
    assert "./prometheus:/etc/prometheus:ro" in services["prometheus"]["volumes"]
    assert "./grafana/dashboards:/var/lib/grafana/dashboards:ro" in services["grafana"]["volumes"]

"""The Grafana dashboard and the Prometheus alert rules name only what the operator exports:
every expression is parsed as PromQL (promql-parser) and each metric it selects, and each
label it matches on, is looked up in the operator's own registry (``streamherd.metrics``), so
renaming a metric or a label fails here. Every alert has a summary and a runbook in the README."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import promql_parser
import pytest
import yaml
from prometheus_client import Counter, Gauge, Histogram

from streamherd.metrics import LabelledMetric, Metrics

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "dashboards" / "streamherd.json"
ALERTS = ROOT / "dashboards" / "alerts.yaml"
README = ROOT / "README.md"


def exported() -> dict[str, set[str]]:
    """Every series name the operator can export, with the labels it carries."""
    out: dict[str, set[str]] = {}
    for metric in vars(Metrics()).values():
        if isinstance(metric, LabelledMetric):  # the operator's own labelled families
            name, labels, kind = metric.name, set(metric.labelnames), metric.kind
        elif isinstance(metric, Counter | Gauge | Histogram):
            (family,) = metric.describe()
            name, labels, kind = family.name, set(metric._labelnames), family.type
        else:
            continue
        name = name.removesuffix("_total") if kind == "counter" else name
        if kind == "counter":
            out[name + "_total"] = labels
        elif kind == "histogram":
            out[name + "_bucket"] = labels | {"le"}
            out[name + "_count"] = labels
            out[name + "_sum"] = labels
        else:
            out[name] = labels
    return out


EXPORTED = exported()


def selectors(expr: str) -> list[tuple[str, set[str]]]:
    """(metric name, labels matched) of every selector in a PromQL expression; Grafana's
    interval variables are replaced by a duration first (they are not PromQL)."""
    text = re.sub(r"\$__(rate_interval|interval|range)", "5m", expr)
    found: list[tuple[str, set[str]]] = []

    def visit(node: Any) -> bool:
        if isinstance(node, promql_parser.VectorSelector):
            matchers = {m.name: m.value for m in node.matchers.matchers}
            name = node.name or matchers.pop("__name__", "")
            found.append((name, set(matchers)))
        return True

    promql_parser.walk(promql_parser.parse(text), visit)
    assert found, f"{expr!r} selects no metric"
    return found


def unknown_names(expr: str) -> list[str]:
    problems = []
    for name, labels in selectors(expr):
        if name not in EXPORTED:
            problems.append(f"{name} is not exported by streamherd")
        elif labels - EXPORTED[name]:
            problems.append(f"{name} has no label {sorted(labels - EXPORTED[name])}")
    return problems


def dashboard_queries() -> list[tuple[str, str]]:
    board = json.loads(DASHBOARD.read_text())
    out = []
    for panel in board["panels"]:
        for target in panel.get("targets") or []:
            out.append((panel["title"], target["expr"]))
    for variable in board["templating"]["list"]:
        query = variable.get("query")
        if isinstance(query, dict):
            match = re.fullmatch(r"label_values\((.*),\s*(\w+)\)", query["query"])
            assert match, f"variable {variable['name']}: {query['query']!r}"
            out.append((f"${variable['name']}", match.group(1)))
    return out


def alert_rules() -> list[dict[str, Any]]:
    return [
        rule for group in yaml.safe_load(ALERTS.read_text())["groups"] for rule in group["rules"]
    ]


def test_the_check_catches_a_renamed_metric_or_label() -> None:
    assert unknown_names("rate(streamherd_group_backlogg[5m])") == [
        "streamherd_group_backlogg is not exported by streamherd"
    ]
    assert unknown_names('streamherd_group_backlog{consumer_group="x"}') == [
        "streamherd_group_backlog has no label ['consumer_group']"
    ]
    assert unknown_names('sum(rate(streamherd_polls_total{outcome="ok"}[5m]))') == []
    with pytest.raises(ValueError, match="unclosed left parenthesis"):
        selectors("sum(rate(streamherd_polls_total[5m])")  # not PromQL


@pytest.mark.parametrize(("title", "expr"), dashboard_queries(), ids=lambda x: str(x)[:60])
def test_every_dashboard_query_names_exported_metrics(title: str, expr: str) -> None:
    assert unknown_names(expr) == [], title


def test_the_dashboard_has_each_view_asked_for() -> None:
    board = json.loads(DASHBOARD.read_text())
    exprs = " ".join(expr for _, expr in dashboard_queries())
    for metric in (
        "streamherd_group_backlog",
        "streamherd_group_pending",
        "streamherd_group_lag",
        "streamherd_group_lag_seconds",
        "streamherd_group_oldest_pending_age_seconds",
        "streamherd_group_replicas",
        "streamherd_group_desired_replicas",
        "streamherd_janitor_recovered_total",
        "streamherd_janitor_dead_lettered_total",
        "streamherd_group_health",
        "streamherd_poll_duration_seconds_bucket",
        "streamherd_redis_roundtrip_seconds_count",
        "streamherd_api_requests_total",
    ):
        assert metric in exprs, metric
    lag_seconds = next(p for p in board["panels"] if p["title"] == "Lag in seconds")
    assert (
        lag_seconds["type"] == "timeseries"
        and lag_seconds["fieldConfig"]["defaults"]["unit"] == "s"
    )
    assert len(set(p["id"] for p in board["panels"])) == len(board["panels"])
    for panel in board["panels"]:
        if panel["type"] not in ("row", "text"):
            assert panel["targets"], panel["title"]


@pytest.mark.parametrize("rule", alert_rules(), ids=lambda r: r["alert"])
def test_every_alert_names_exported_metrics_and_has_a_summary_and_runbook(
    rule: dict[str, Any],
) -> None:
    assert unknown_names(rule["expr"]) == []
    assert rule["annotations"]["summary"].strip()
    assert rule["labels"]["severity"] in ("critical", "warning", "info")
    assert rule["annotations"]["runbook_url"] == "README.md#alerts-and-runbooks"
    readme = README.read_text()
    section = readme.split("### Alerts and runbooks", 1)[1].split("\n## ", 1)[0]
    items = [item for item in section.split("\n- ") if item.startswith(f"**{rule['alert']}**")]
    assert len(items) == 1, f"{rule['alert']}: one item in README's Alerts and runbooks"
    assert "Runbook:" in items[0] and len(items[0].split("Runbook:")[1].strip()) > 20


def test_every_alert_the_issue_asks_for_is_there() -> None:
    names = {r["alert"] for r in alert_rules()}
    assert {
        "StreamherdGroupStalled",
        "StreamherdGroupStopped",
        "StreamherdGroupFarBehind",
        "StreamherdDeadLetterGrowth",
        "StreamherdJanitorErrors",
        "StreamherdMetricsUnknown",
        "StreamherdOperatorAbsent",
    } <= names

"""Ops artefacts: Prometheus rules (promtool), the Grafana dashboard as a model, metric names."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry

from monitor.metrics import Metrics

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "configs" / "prometheus" / "vqmon-rules.yml"
RULE_TESTS = ROOT / "configs" / "prometheus" / "vqmon-rules.test.yml"
DASHBOARD = ROOT / "configs" / "grafana" / "vqmon.json"
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None,
    reason="promtool not installed (Debian package 'prometheus': apt-get install prometheus)",
)
# Grafana's template variables, replaced by what they expand to so PromQL can be checked.
GRAFANA_VARS = {
    "$__rate_interval": "5m",
    "$__interval": "1m",
    "$__range": "1h",
    "$stream": ".*",
    "$rendition": ".*",
}


def exported_names() -> set[str]:
    """Every series name the daemon's Metrics can export."""
    names = {"up"}
    for family in Metrics(CollectorRegistry()).registry.collect():
        if family.type == "counter":
            names.add(f"{family.name}_total")
        elif family.type == "histogram":
            names |= {f"{family.name}_{s}" for s in ("bucket", "sum", "count")}
        else:
            names.add(family.name)
    return names


def metric_names(expr: str) -> set[str]:
    return set(re.findall(r"\b(vqmon_[a-z_]+|up)\b(?=\s*[{\[)\s]|$)", expr))


def promtool(*args: str | Path) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run(
        [PROMTOOL, *map(str, args)], capture_output=True, text=True, timeout=60, check=False
    )


def dashboard_exprs() -> list[tuple[str, str]]:
    dash = json.loads(DASHBOARD.read_text())
    out = []
    for panel in dash["panels"]:
        for target in panel.get("targets", []):
            expr = target["expr"]
            for var, value in GRAFANA_VARS.items():
                expr = expr.replace(var, value)
            out.append((panel["title"], expr))
    return out


def rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(RULES.read_text())
    return [r for g in doc["groups"] for r in g["rules"]]


@needs_promtool
def test_promtool_checks_the_rules() -> None:
    res = promtool("check", "rules", RULES)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "SUCCESS" in res.stdout


@needs_promtool
def test_promtool_unit_tests_of_the_rules() -> None:
    res = promtool("test", "rules", RULE_TESTS)
    assert res.returncode == 0, res.stdout + res.stderr


def test_rules_have_for_keep_firing_severity_and_runbook() -> None:
    names = exported_names()
    for rule in rules():
        assert "for" in rule and "keep_firing_for" in rule, rule["alert"]
        assert rule["labels"]["severity"] in ("critical", "warning"), rule["alert"]
        ann = rule["annotations"]
        assert ann["summary"] and ann["description"], rule["alert"]
        assert ann["runbook_url"].endswith("#" + rule["alert"].lower()), rule["alert"]
        used = metric_names(rule["expr"])
        assert used and used <= names, (rule["alert"], used - names)


def test_runbook_has_every_alert() -> None:
    runbook = (ROOT / "docs" / "runbook.md").read_text().lower()
    for rule in rules():
        assert f"## {rule['alert'].lower()}" in runbook, rule["alert"]


def test_dashboard_is_a_grafana_model() -> None:
    dash = json.loads(DASHBOARD.read_text())
    assert dash["uid"] and dash["title"] and isinstance(dash["schemaVersion"], int)
    variables = {v["name"] for v in dash["templating"]["list"]}
    assert {"datasource", "stream", "rendition"} <= variables
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    titles = " ".join(p["title"].lower() for p in dash["panels"])
    for topic in ("mos", "incidents", "escalation", "decisions", "lag", "throughput"):
        assert topic in titles, topic
    for panel in dash["panels"]:
        pos = panel["gridPos"]
        assert {"h", "w", "x", "y"} <= set(pos) and pos["x"] + pos["w"] <= 24
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["type"] == "prometheus", panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["expr"] and target["refId"], panel["title"]
            assert target["datasource"]["type"] == "prometheus"


def test_dashboard_queries_use_exported_metrics() -> None:
    names = exported_names()
    for title, expr in dashboard_exprs():
        used = metric_names(expr)
        assert used and used <= names, (title, used - names)


@needs_promtool
def test_dashboard_queries_parse_as_promql(tmp_path: Path) -> None:
    """promtool parses every query (as a recording rule), with Grafana's variables expanded."""
    records = [
        {"record": f"vqmon:dashboard:q{i}", "expr": expr}
        for i, (_, expr) in enumerate(dashboard_exprs())
    ]
    path = tmp_path / "dashboard-rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": records}]}))
    res = promtool("check", "rules", path)
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"SUCCESS: {len(records)} rules found" in res.stdout

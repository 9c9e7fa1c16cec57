"""Metric naming rules: vqmon_ prefix, base units, bounded labels, a fresh registry each."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from monitor.metrics import Metrics

ALLOWED_LABELS = {"stream", "rendition", "reason", "stage", "partition"}
# One series per configured scorer: bounded by the config, not by traffic.
INFO_LABELS = {"scorer", "version", "provider"}


def test_names_units_and_labels() -> None:
    registry = CollectorRegistry()
    m = Metrics(registry)
    m.labels("s", "r")
    m.mos.labels("s", "r").set(3.0)
    m.lag.labels("0").set(1)
    m.scorer_info.labels("distilled", "1.0", "CPUExecutionProvider").set(1)
    for family in registry.collect():
        assert family.name.startswith("vqmon_"), family.name
        assert "milli" not in family.name and "_ms" not in family.name
        if family.type == "histogram":
            assert family.name.endswith("_seconds")
        for sample in family.samples:
            allowed = INFO_LABELS if family.name == "vqmon_scorer_info" else ALLOWED_LABELS
            assert set(sample.labels) - {"le"} <= allowed, (family.name, sample.labels)


def test_stream_labels_are_capped() -> None:
    m = Metrics(CollectorRegistry(), max_series=2)
    assert m.labels("a", "1") == ("a", "1")
    assert m.labels("b", "1") == ("b", "1")
    assert m.labels("c", "1") == ("other", "other")
    assert m.labels("a", "1") == ("a", "1")

"""Metric naming rules: vqmon_ prefix, base units, bounded labels, a fresh registry each."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from monitor.metrics import Metrics

ALLOWED_LABELS = {"stream", "rendition", "reason", "stage", "partition"}
# Bounded enums of the judge and the encoding policy (monitor.types).
ALLOWED_LABELS |= {"kind", "localisation", "action", "mode"}
# The daemon's roles (screen, judge, diagnose), each with its own producer.
ALLOWED_LABELS |= {"role"}
# One series per configured scorer: bounded by the config, not by traffic.
INFO_LABELS = {"scorer", "version", "provider"}


def test_names_units_and_labels() -> None:
    registry = CollectorRegistry()
    m = Metrics(registry)
    m.labels("s", "r")
    m.mos.labels("s", "r").set(3.0)
    m.lag.labels("0").set(1)
    m.scorer_info.labels("distilled", "1.0", "CPUExecutionProvider").set(1)
    m.incidents_open.labels("s", "black", "source").set(1)
    m.decisions.labels("s", "r", "raise_bitrate", "applied").inc()
    m.oldest_unacked.labels("judge").set(1)
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


def test_incident_and_decision_metrics() -> None:
    from monitor.types import Incident

    registry = CollectorRegistry()
    m = Metrics(registry)
    inc = Incident("s/*/black/3", "s", "*", "black", "open", 1.0, "source", 3, 0.0, 0.0)
    m.observe_incidents([inc, inc.evolve(state="update")])
    m.set_open_incidents([inc])
    labels = {"stream": "s", "kind": "black", "localisation": "source"}
    assert registry.get_sample_value("vqmon_incidents_total", labels) == 1
    assert registry.get_sample_value("vqmon_incidents_open", labels) == 1
    m.set_open_incidents([])
    assert registry.get_sample_value("vqmon_incidents_open", labels) == 0
    m.on_bytes_saved("s", "720p", 1000.0)
    saved = {"stream": "s", "rendition": "720p"}
    assert registry.get_sample_value("vqmon_encoder_saved_bytes_total", saved) == 1000.0


def test_each_role_reports_its_own_oldest_unacknowledged_output() -> None:
    # VqmonOutputsUnacknowledged reads it per role: in `--role all` one process runs
    # three producers, and the judge and diagnose roles used to drop the value
    from monitor.config import Config
    from monitor.health import HealthState
    from monitor.judge_role import JudgeDaemon
    from monitor.pipeline import runtime_observer

    registry = CollectorRegistry()
    m = Metrics(registry)
    runtime_observer(m)("oldest_unacked_seconds", 1.0)
    runtime_observer(m, stages=False, role="diagnose")("oldest_unacked_seconds", 2.0)
    JudgeDaemon(Config(), [], m, HealthState(60.0)).observer()("oldest_unacked_seconds", 3.0)
    name = "vqmon_oldest_unacknowledged_output_seconds"
    got = {r: registry.get_sample_value(name, {"role": r}) for r in ("screen", "diagnose", "judge")}
    assert got == {"screen": 1.0, "diagnose": 2.0, "judge": 3.0}

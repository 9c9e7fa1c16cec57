"""Hostile values in every topic a role reads: refused with a clear error, and what
parses cannot break the step that takes it next (the judge, its rebuild, the encoding
policy, Alertmanager's pusher, the diagnose role, the closed-loop feed, the report)."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from pydantic import ValidationError

from monitor.alertmanager import AlertmanagerClient
from monitor.config import AlertmanagerConfig
from monitor.encoding import EncodingConfig, EncodingPolicy
from monitor.escalate import warm_start
from monitor.escalation import EscalationConfig, EscalationPolicy
from monitor.feed import Feed
from monitor.judge import Judge
from monitor.judge_role import AlertPusher, summarize_diagnosis
from monitor.report import Collected
from monitor.sections import FeedConfig
from monitor.types import EncoderDecision, Incident, MessageError, Observation
from scorers.vlm.rules import SEVERITIES, rules_diagnosis, severity_label
from scorers.vlm.types import EscalationRequest, RequestError
from tests.unit.test_judge import cfg, verdict
from tests.unit.vlm_samples import request

HUGE = 10**400  # JSON allows it; float() overflows
SURROGATE = "\ud800"  # JSON may escape it; no UTF-8 output can carry it


def incident(**changes: Any) -> dict[str, Any]:
    inc = Incident(
        "news/720p/starvation/3@1006000",
        "news",
        "720p",
        "starvation",
        "open",
        0.6,
        "rendition",
        3,
        opened_at=1010.0,
        updated_at=1010.0,
        renditions=("720p",),
        evidence={"renditions": {"720p": {"baseline_mos": 4.3, "bitrate": 2_500_000}}},
    )
    return {**inc.to_json(), **changes}


def decision(**parameters: Any) -> dict[str, Any]:
    return {
        "schema": "vqmon.encoder-decision/1",
        "id": "news/64x36/raise_bitrate/3",
        "stream": "news",
        "rendition": "64x36",
        "action": "raise_bitrate",
        "parameters": parameters or {"from_bitrate": 100_000, "to_bitrate": 120_000},
        "settings": {"bitrate": 120_000, "preset": None, "filters": [], "enabled": True},
        "dry_run": False,
        "made_at": 1000.0,
        "seq": 3,
        "reason": "starvation incident",
        "incident_id": None,
        "evidence": {},
    }


@pytest.mark.parametrize(
    "change",
    [
        {"screened_at": 1e308},  # an incident id's stamp of it overflowed in the judge
        {"screened_at": HUGE},
        {"stream": SURROGATE},  # publishing the incident raised UnicodeEncodeError
        {"extra": {"judged_at": SURROGATE}},
    ],
)
def test_a_verdict_with_a_value_no_segment_has_is_refused(change: dict[str, Any]) -> None:
    with pytest.raises(MessageError):
        Observation.from_verdict_json({**verdict("720p", 1, 4.3), **change})


@pytest.mark.parametrize("stamp", [HUGE, -1, 1e17, "x"])
def test_a_segment_records_odd_timestamp_is_no_stamp_not_a_lost_verdict(stamp: Any) -> None:
    # Kafka gives -1 for a record without one; a producer's clock may count microseconds.
    doc = verdict("720p", 1, 4.3)
    doc["source"] = {"topic": "vqmon.segments", "partition": 0, "offset": 1, "timestamp_ms": stamp}
    obs = Observation.from_verdict_json(doc)
    assert (obs.segment_time, obs.stamp) == (None, doc["screened_at"])


@pytest.mark.parametrize(
    "doc",
    [
        [],
        "x",
        incident(severity=HUGE),
        incident(opened_at=HUGE),
        incident(opened_at=1e20),  # Alertmanager's pusher could not format it
        incident(stream=SURROGATE),
        incident(renditions=[SURROGATE]),
        incident(evidence=json.loads("[" * 50 + "]" * 50)),
        incident(evidence={"a": json.loads('{"b":' * 40 + "1" + "}" * 40)}),
    ],
)
def test_an_incident_record_that_could_break_a_rebuild_is_refused(doc: Any) -> None:
    with pytest.raises(MessageError):
        Incident.from_json(doc)


@pytest.mark.parametrize(
    "evidence",
    [{"bitrate": "x"}, {"bitrate": 1e300}, {"baseline_mos": [1]}, {"baseline_mos_low": ""}],
)
def test_a_restored_incident_with_odd_evidence_is_restored(evidence: dict[str, Any]) -> None:
    doc = incident(evidence={"renditions": {"720p": {"baseline_mos": 4.3, **evidence}}})
    judge = Judge(cfg())
    judge.restore([Incident.from_json(doc)])
    assert [i.id for i in judge.open_incidents()] == [doc["id"]]


@pytest.mark.parametrize(
    ("doc", "why"),
    [
        (decision(from_bitrate=100_000, to_bitrate=-1), "bitrate"),
        (decision(from_bitrate=100_000, to_bitrate=HUGE), "finite"),
        (decision(from_bitrate=100_000, to_bitrate=10**30), "bitrate"),
        (decision(from_bitrate=100_000), "without parameters.to_bitrate"),
        ({**decision(), "action": "set_preset", "parameters": {"to_preset": "a b"}}, "preset"),
        ({**decision(), "made_at": HUGE}, "finite"),
        ({**decision(), "stream": SURROGATE}, "Unicode"),
    ],
)
def test_an_encoder_decision_no_encoder_could_apply_is_refused(
    doc: dict[str, Any], why: str
) -> None:
    with pytest.raises(MessageError, match=why):
        EncoderDecision.from_json(doc)


def test_a_decision_without_a_schema_reads_as_the_current_one() -> None:
    doc = decision()
    del doc["schema"]
    assert EncoderDecision.from_json(doc).schema_version == "vqmon.encoder-decision/1"


def test_a_restored_decision_with_a_huge_baseline_is_restored() -> None:
    doc = {**decision(), "evidence": {"baseline_mos": HUGE}}
    policy = EncodingPolicy(EncodingConfig())
    policy.restore([EncoderDecision.from_json(doc)])
    assert policy.rungs[("news", "64x36")].settings.bitrate == 120_000


def test_a_diagnosis_keeps_only_short_text_and_numbers() -> None:
    deep: Any = 1
    for _ in range(600):
        deep = [deep]
    doc = {"segment_id": "news/720p/3", "model": deep, "prompt_version": SURROGATE}
    assert summarize_diagnosis({**doc, "tasks": True}) == {
        "segment_id": "news/720p/3",
        "model": None,
        "prompt_version": None,
    }
    tasks = [{"degradation": "x" * 1000, "score_mean": HUGE, "severity": "moderate"}]
    kept = summarize_diagnosis({**doc, "tasks": tasks})
    assert (len(kept["degradation"]), kept["severity"], "score_mean" in kept) == (
        200,
        "moderate",
        False,
    )


def test_the_alertmanager_pusher_outlives_an_unexpected_error() -> None:
    calls: list[int] = []

    def post(url: str, body: bytes, timeout: float) -> int:
        calls.append(len(body))
        if len(calls) == 1:
            raise RuntimeError("a bug in a batch")
        return 200

    client = AlertmanagerClient(AlertmanagerConfig(url="http://127.0.0.1:9"), post=post)
    pusher = AlertPusher(client)
    inc = Incident.from_json(incident())
    pusher.submit([inc], 1020.0)
    pusher.submit([inc], 1021.0)
    deadline = time.monotonic() + 5
    while pusher.sent == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    pusher.close()
    assert (pusher.failed, pusher.sent) == (1, 1)


@pytest.mark.parametrize(
    "change",
    [
        {"segment_id": SURROGATE},  # the diagnosis message could not be encoded
        {"seq": float("inf")},
        {"created_at": HUGE},
        {"verdict": {"flags": [{"kind": "blur", "severity": "high"}]}},  # the rules read it
        {"verdict": {"flags": [], "frame_mos": [1e308, -1e308]}},
        {"verdict": {"flags": [], "extra": {"hybrid": {"qp_mean": "x"}}}},
    ],
)
def test_an_escalation_the_diagnose_role_cannot_answer_is_refused(change: dict[str, Any]) -> None:
    with pytest.raises(RequestError):
        EscalationRequest.from_json({**request().to_json(), **change})


def test_the_rules_read_a_severity_as_the_0_to_1_it_is() -> None:
    assert (severity_label(1e308), severity_label(-1e308)) == ("catastrophic", SEVERITIES[0])
    doc = request().to_json()
    doc["verdict"] = {**doc["verdict"], "flags": [{"kind": "blockiness"}]}  # no severity
    d = rules_diagnosis(EscalationRequest.from_json(doc), ("degradation",))
    assert d.tasks[0].degradation is not None


def test_the_feed_puts_back_a_rungs_settings_its_encoder_refuses() -> None:
    class Producer:
        sent = 0

        def send(self, *args: Any, **kw: Any) -> None:
            Producer.sent += 1

    class Decisions:
        def __init__(self, d: EncoderDecision) -> None:
            self.d: list[EncoderDecision] = [d]

        def poll(self) -> list[EncoderDecision]:
            out, self.d = self.d, []
            return out

        def close(self) -> None:
            pass

    preset = {**decision(), "action": "set_preset", "parameters": {"to_preset": "x"}}
    preset["settings"] = {**preset["settings"], "preset": "x"}  # no x264 preset is named x
    config = FeedConfig.model_validate(
        {
            "stream_names": ["news", "sport"],
            "renditions": ["64x36", "128x72"],
            "segment_seconds": 0.2,
            "black_every": 0,
        }
    )
    feed = Feed(config, Producer(), "seg", decisions=Decisions(EncoderDecision.from_json(preset)))
    for _ in range(3):
        feed.step()
    assert Producer.sent == 11  # one segment of the rung lost, its settings back after it
    assert feed.ladder.get("news", "64x36").preset is None


def test_a_verdict_record_the_report_or_a_warm_start_cannot_read_is_skipped() -> None:
    good = verdict("720p", 1, 4.3)
    nested = "[" * 100_000 + "]" * 100_000
    records = [json.dumps(good), json.dumps({**good, "stream": None}), nested]
    report = Collected.of([r.encode() for r in records])
    assert (len(report.verdicts), report.unreadable) == (1, 2)

    class Record:
        def __init__(self, value: str) -> None:
            self.value = value.encode()

    odd = [
        {**good, "stream_info": {"width": None}},
        {**good, "stream_info": {"width": "wide"}},
        {"schema": "vqmon.diagnosis/1", "segment_id": "news/720p/1", "tasks": "x"},
    ]
    report = Collected.of([json.dumps(r).encode() for r in odd])  # a report, not a traceback
    assert (len(report.verdicts), len(report.diagnoses), report.unreadable) == (0, 0, 3)

    huge = json.dumps(good).replace('"screened_at": 1002.0', f'"screened_at": {HUGE}')
    policy = EscalationPolicy(EscalationConfig())
    # remembered, the second without an age (it raised OverflowError and lost the warm start)
    assert warm_start(policy, [Record(json.dumps(good)), Record(huge)], now=2000.0) == (2, 0)


@pytest.mark.parametrize("header", [-1, 0, 1.7e308, 10**13])
def test_a_bitrate_header_out_of_range_is_no_bitrate(header: Any) -> None:
    # A producer's "unknown" (-1) became the rung's nominal bitrate, and every decision of
    # the rung carried settings.bitrate -1, which the decisions' readers refuse; 1.7e308
    # overflowed the encoding policy's raise. Not known, the measured one stands in.
    doc = {**verdict("720p", 1, 4.3), "declared_bitrate": header}
    doc["stream_info"] = {**doc["stream_info"], "bitrate": 2_400_000}
    obs = Observation.from_verdict_json(doc)
    assert (obs.bitrate, obs.declared_bitrate) == (2_400_000, None)  # the measured one stands in


def test_presets_a_decision_could_not_carry_are_a_config_error() -> None:
    with pytest.raises(ValidationError, match="not preset names"):
        EncodingConfig.model_validate({"defaults": {"presets": ["slow preset", "x264/fast"]}})
    cfg = EncodingConfig.model_validate({"defaults": {"presets": ["-1", "0", "p4"]}})
    assert cfg.defaults.presets == ["-1", "0", "p4"]  # SVT-AV1's and NVENC's names
    doc = {**decision(), "action": "set_preset", "parameters": {"to_preset": "-1"}}
    assert EncoderDecision.from_json(doc).params.to_preset == "-1"

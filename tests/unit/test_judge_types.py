"""monitor.types: JSON round trips and reading the documented verdict / dead-letter shapes."""

from __future__ import annotations

import base64
import json

import pytest

from monitor.types import Incident, MessageError, Observation

VERDICT = {  # docs/topics.md's example, comments removed
    "schema": "vqmon.verdict/1",
    "segment_id": "news/720p/1042",
    "stream": "news", "rendition": "720p", "seq": 1042,
    "mos": 3.87, "mos_low": 3.41, "frame_mos": [3.9, 3.8],
    "flags": [{"kind": "black", "severity": 1.0, "start_s": 0.0, "duration_s": 2.0,
               "evidence": {"dark_fraction": 1.0}}],
    "scorers": ["artifacts@1.1", "distilled@2.1"],
    "stream_info": {"codec": "h264", "width": 1280, "height": 720, "fps": 25.0,
                    "duration_s": 2.0, "bitrate": 2480000.0},
    "declared_bitrate": 2500000,
    "decode": {"errors": 1, "corrupt_frames": 2, "seconds": 0.21, "messages": []},
    "source": {"topic": "vqmon.segments", "partition": 2, "offset": 81723},
    "screened_at": 1732400000.42,
}  # fmt: skip


def test_observation_from_the_documented_verdict() -> None:
    obs = Observation.from_verdict_json(json.loads(json.dumps(VERDICT)))
    assert (obs.stream, obs.rendition, obs.seq, obs.segment_id) == (
        "news",
        "720p",
        1042,
        "news/720p/1042",
    )
    assert obs.mos == 3.87 and obs.mos_low == 3.41 and obs.bitrate == 2_500_000
    assert obs.flags[0].kind == "black" and obs.flags[0].duration_s == 2.0
    assert (obs.decode_errors, obs.corrupt_frames, obs.duration_s) == (1, 2, 2.0)
    assert obs.time == 1732400000.42 and obs.transport_errors
    measured = Observation.from_verdict_json({**VERDICT, "declared_bitrate": None, "mos": None})
    assert measured.bitrate == 2_480_000 and measured.mos is None
    assert obs.declared_bitrate == 2_500_000 and measured.declared_bitrate is None


def test_the_measured_bitrate_is_read_from_the_verdict() -> None:
    doc = {
        "schema": "vqmon.verdict/1",
        "segment_id": "news/720p/1",
        "stream": "news",
        "rendition": "720p",
        "seq": 1,
        "mos": 4.0,
        "stream_info": {"duration_s": 2.0, "bitrate": 612_345.6},
        "declared_bitrate": 1_000_000,
    }
    o = Observation.from_verdict_json(doc)
    assert (o.bitrate, o.declared_bitrate, o.measured_bitrate) == (1_000_000, 1_000_000, 612_345)
    doc["stream_info"] = {"duration_s": 2.0, "bitrate": -5}
    assert Observation.from_verdict_json(doc).measured_bitrate is None


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"schema": "vqmon.verdict/2"}, "schema"),
        ({"seq": "1042"}, "'seq'"),
        ({"seq": True}, "'seq'"),
        ({"mos": "high"}, "'mos'"),
        ({"stream": None}, "'stream'"),
        # JSON parsers accept NaN and Infinity: a NaN MOS would poison a baseline, an
        # infinite bitrate raised OverflowError, which no step catches
        ({"mos": float("nan")}, "'mos'"),
        ({"stream_info": {**VERDICT["stream_info"], "bitrate": float("inf")}}, "'bitrate'"),
    ],
)
def test_malformed_verdicts_say_which_field(change: dict[str, object], message: str) -> None:
    with pytest.raises(MessageError, match=message):
        Observation.from_verdict_json({**VERDICT, **change})


def test_observation_from_a_dead_letter() -> None:
    def b64(s: str) -> str:
        return base64.b64encode(s.encode()).decode()

    doc = {
        "schema": "vqmon.dead-letter/1", "reason": "decode_error", "failed_at": 5.0,
        "headers": [["stream", b64("news")], ["rendition", b64("720p")], ["seq", b64("7")]],
    }  # fmt: skip
    obs = Observation.from_dead_letter_json(doc)
    assert obs is not None and obs.segment_id == "news/720p/7" and obs.transport_errors
    assert Observation.from_dead_letter_json({**doc, "reason": "limit_exceeded"}) is None
    assert Observation.from_dead_letter_json({**doc, "headers": []}) is None


def test_incident_round_trips() -> None:
    inc = Incident(
        id="news/*/black/3", stream="news", scope="*", kind="black", state="resolved",
        severity=0.9, localisation="source", opened_seq=3, opened_at=1.5, updated_at=9.0,
        resolved_at=9.0, renditions=("360p", "720p"), segments=("news/360p/3",),
        evidence={"renditions": {"360p": {"run_s": 2.2}}}, diagnosis={"degradation": "darken"},
        superseded_by=None,
    )  # fmt: skip
    doc = json.loads(json.dumps(inc.to_json()))
    assert doc["schema"] == "vqmon.incident/1" and doc["level"] == "critical"
    assert Incident.from_json(doc) == inc
    with pytest.raises(MessageError, match="localisation"):
        Incident.from_json({**doc, "localisation": "cdn"})

"""Diagnosis and EscalationRequest: JSON round trips, the size bound, the screen-side builder."""

from __future__ import annotations

import json

import pytest

from ingest.decode import decode
from ingest.types import Segment
from scorers.vlm import types
from scorers.vlm.request import FramesConfig, make_request
from scorers.vlm.types import Diagnosis, EscalationRequest, RequestError, TaskResult
from tests.unit.vlm_samples import request, verdict


def _diagnosis() -> Diagnosis:
    return Diagnosis(
        segment_id="news/720p/7",
        stream="news",
        rendition="720p",
        seq=7,
        model="VisualQuality-R1-7B",
        prompt_version="vqmon-prompts/1",
        asked_flags=("blockiness",),
        tasks=(
            TaskResult(
                "score",
                ("<answer>2.5</answer>", "x"),
                (None, "no number"),
                0.7,
                score_mean=2.5,
                score_spread=0.0,
                new_tokens=9,
            ),
            TaskResult(
                "degradation",
                ('<answer>{"distortion_class": "blocking", "severity": "serious"}</answer>',),
                (None,),
                0.4,
                degradation="blocking",
                severity="serious",
            ),
            TaskResult("compare", ("Image B",), (None,), 0.3, comparison="Image B"),
            TaskResult(
                "video",
                ("<answer>2.1\n3.3</answer>",),
                (None,),
                0.9,
                global_score=2.1,
                global_spread=0.0,
                local_score=3.3,
                local_spread=0.0,
            ),
        ),
        latency_s=1.25,
        samples=2,
        tokens_per_s=31.5,
        skipped={},
        escalation_reason="flag:blockiness",
        diagnosed_at=1732400001.25,
    )


def test_diagnosis_round_trips_through_json_text() -> None:
    d = _diagnosis()
    text = json.dumps(d.to_json())
    back = Diagnosis.from_json(json.loads(text))
    assert back == d
    assert back.to_json() == d.to_json()
    assert back.to_json()["schema"] == types.DIAGNOSIS_SCHEMA
    assert not back.parse_ok  # one score sample failed
    assert back.task("score") is not None and back.task("score").parse_error == "no number"  # type: ignore[union-attr]
    assert back.degradation == ("blocking", "serious")


def test_request_round_trips_with_frames_as_base64() -> None:
    r = request()
    data = json.loads(json.dumps(r.to_json()))
    assert isinstance(data["frames"][0], str)
    back = EscalationRequest.from_json(data)
    assert back == r
    assert back.flags == ("blockiness",)
    no_ref = request(reference=False)
    assert EscalationRequest.from_json(no_ref.to_json()) == no_ref


def test_request_bounds_and_contract() -> None:
    r = request()
    with pytest.raises(RequestError, match="at most"):
        EscalationRequest(r.segment_id, "news", "720p", 7, r.verdict, r.frames * 6)
    with pytest.raises(RequestError, match="not a JPEG"):
        EscalationRequest(r.segment_id, "news", "720p", 7, r.verdict, (b"PNG...",))
    with pytest.raises(RequestError, match="key_frame"):
        EscalationRequest(r.segment_id, "news", "720p", 7, r.verdict, r.frames, key_frame=5)
    big = b"\xff\xd8" + b"\0" * (types.MAX_REQUEST_BYTES // 2)
    with pytest.raises(RequestError, match="bound"):
        EscalationRequest(r.segment_id, "news", "720p", 7, r.verdict, (big, big, big))
    bad = r.to_json()
    del bad["seq"]
    with pytest.raises(RequestError, match="malformed"):
        EscalationRequest.from_json(bad)
    with pytest.raises(RequestError, match="schema"):
        EscalationRequest.from_json({**r.to_json(), "schema": "other/1"})


def test_make_request_from_a_real_decoded_segment(ts_h264: bytes) -> None:
    decoded = decode(Segment(ts_h264, stream="news", rendition="720p", seq=7))
    v = verdict(7)
    # the verdict's frame_mos has 3 entries, not one per frame: the middle frame is key
    assert len(decoded.frames) == 8
    r = make_request(decoded, v, "mos_low<2.5", FramesConfig(max_frames=4, max_side=160))
    assert len(r.frames) == 4 and r.image_bytes <= FramesConfig().max_bytes
    assert all(f.startswith(b"\xff\xd8") for f in r.frames)
    assert r.frame_pts_s[r.key_frame] == decoded.frames[len(decoded.frames) // 2].pts_s
    tight = make_request(decoded, v, "x", FramesConfig(max_frames=8, max_bytes=10_000))
    assert tight.image_bytes <= 10_000
    assert tight.frame_pts_s[tight.key_frame] == decoded.frames[4].pts_s
    assert EscalationRequest.from_json(json.loads(json.dumps(tight.to_json()))) == tight


def test_pick_frames_keeps_the_key_frame() -> None:
    from scorers.vlm.request import pick_frames

    assert pick_frames(8, 4, 3) == [0, 4, 7]
    assert pick_frames(8, 1, 3) == [1, 4, 7]
    assert pick_frames(8, 5, 1) == [5]
    assert pick_frames(3, 1, 8) == [0, 1, 2]
    assert len(pick_frames(8, 3, 4)) == 4

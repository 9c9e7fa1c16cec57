"""Adaptive screening: the planner's schedule and the cheap mode's promotion on real segments."""

from __future__ import annotations

import numpy as np
import pytest

from ingest import impair
from ingest.config import DecodeConfig
from ingest.contract import SegmentJob
from ingest.reference import ReferenceConfig
from ingest.synth import EncodeSettings, encode, pattern_frames
from ingest.types import Segment
from monitor.screen import AdaptivePlanner
from monitor.sections import ScreeningConfig, ScreeningPolicy
from monitor.workers import Screened, ScreenJob, WorkerSetup, screen_job
from scorers.artifacts import ArtifactsConfig
from scorers.types import Flag, Verdict

FPS = 25


def verdict(seq: int, *kinds: str, mode: str = "full") -> Verdict:
    flags = tuple(Flag(k, 0.9, 0.0, 1.0) for k in kinds)
    return Verdict(f"s/r/{seq}", "s", "r", seq, 4.0, 4.0, (), flags, ("x@1",), mode=mode)


def test_full_mode_always_screens_fully() -> None:
    p = AdaptivePlanner(ScreeningConfig())
    assert {p.plan("s", "r")[0] for _ in range(20)} == {"full"}


def test_adaptive_schedule_learns_then_screens_cheaply_with_every_kth_full() -> None:
    p = AdaptivePlanner(ScreeningConfig(mode="adaptive", full_every=4))
    modes = []
    for seq in range(12):
        mode, _ref = p.plan("s", "r")
        modes.append(mode)
        p.learn(verdict(seq, mode=mode), 1000.0)
    # Two full screens learn the frame sizes; then every 4th segment is full.
    assert modes == ["full", "full", "cheap", "full", "cheap", "cheap", "cheap", "full",
                     "cheap", "cheap", "cheap", "full"]  # fmt: skip


def test_an_event_keeps_the_rendition_on_full_screens_for_promote_for_segments() -> None:
    p = AdaptivePlanner(ScreeningConfig(mode="adaptive", full_every=100, promote_for=3))
    for seq in range(3):
        p.learn(verdict(seq, mode=p.plan("s", "r")[0]), 1000.0)
    assert p.plan("s", "r")[0] == "cheap"
    p.learn(verdict(3, "black", mode="promoted"), 10.0)
    assert [p.plan("s", "r")[0] for _ in range(4)] == ["full", "full", "full", "cheap"]


def test_a_persistent_picture_property_is_noted_not_chased() -> None:
    p = AdaptivePlanner(ScreeningConfig(mode="adaptive", full_every=100))
    for seq in range(6):
        mode, _ref = p.plan("s", "r")
        p.learn(verdict(seq, "banding", mode=mode), 1000.0)
    assert mode == "cheap"


def test_per_stream_policy() -> None:
    cfg = ScreeningConfig(mode="adaptive", streams={"vip": ScreeningPolicy(mode="full")})
    p = AdaptivePlanner(cfg)
    for seq in range(5):
        p.learn(verdict(seq), 1000.0)
        assert p.plan("vip", "r")[0] == "full"


def _segment(frames: list[np.ndarray]) -> bytes:
    return encode(frames, EncodeSettings(fps=FPS, gop=len(frames), crf=23))


@pytest.fixture(scope="module")
def setup() -> WorkerSetup:
    return WorkerSetup(DecodeConfig(threads=1), ReferenceConfig(), [ArtifactsConfig()])


@pytest.fixture(scope="module")
def moving() -> list[np.ndarray]:
    return list(pattern_frames("scene", 320, 180, 50, seed=3))


def _cheap(setup: WorkerSetup, data: bytes, ref: float | None) -> Screened:
    out = screen_job(1, ScreenJob(SegmentJob(Segment(data, "s", "r", 1)), "cheap", ref), setup)
    assert isinstance(out, Screened), out
    return out


def test_cheap_screen_of_a_clean_segment_stays_cheap(
    setup: WorkerSetup, moving: list[np.ndarray]
) -> None:
    clean = _cheap(setup, _segment(moving), None)
    ref = clean.predicted_bytes
    again = _cheap(setup, _segment(moving), ref)
    assert again.verdict.mode == "cheap" and again.suspicion == ()
    assert again.info.frame_count == 50  # the packets were all read, keyframes decoded


@pytest.mark.parametrize("event", ["freeze", "black", "loss"])
def test_cheap_screen_promotes_events_it_cannot_see_on_keyframes(
    setup: WorkerSetup, moving: list[np.ndarray], event: str
) -> None:
    ref = _cheap(setup, _segment(moving), None).predicted_bytes
    if event == "freeze":
        data = _segment(impair.freeze(moving, 10, 40))
    elif event == "black":
        data = _segment(impair.black(moving, 10, 40))
    else:
        data = impair.corrupt_packets(_segment(moving), 0.05, seed=2, mode="drop")
    out = _cheap(setup, data, ref)
    assert out.verdict.mode == "promoted", out.suspicion
    kinds = {f.kind for f in out.verdict.flags}
    want = {"freeze": "freeze", "black": "black", "loss": "corruption"}[event]
    assert want in kinds, (out.suspicion, kinds)

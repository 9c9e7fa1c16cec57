"""monitor.boundary: a picture that stops at a segment boundary, on real encodes screened by
the worker (decode, artifacts scorer, escalation request)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from ingest.config import DecodeConfig, SamplingConfig
from ingest.contract import SegmentJob
from ingest.decode import THUMB, decode
from ingest.reference import ReferenceConfig
from ingest.synth import EncodeSettings, encode, pattern_frames
from ingest.types import Segment
from monitor.boundary import Edge, edge_of, held_across
from monitor.escalation import STOPPED, EscalationConfig, Recent, triggers
from monitor.workers import Screened, ScreenJob, WorkerSetup, screen_job
from scorers.artifacts import EDGES_KEY, ArtifactsConfig
from scorers.types import Verdict

N = 50  # 2 s at 25 fps
MOVING = list(pattern_frames("scene", 320, 180, 2 * N, seed=3, speed=3.0))
STILL = [next(pattern_frames("texture", 320, 180, 1, seed=4))] * N
SETUP = WorkerSetup(
    DecodeConfig(sampling=SamplingConfig(mode="uniform", count=4)),
    ReferenceConfig(),
    [ArtifactsConfig()],
    escalation=EscalationConfig(audit_fraction=0.0),
)
STILLS_ARE_THE_HABIT = Recent(settled=(("flag_freeze", 1.0),))
"""A rendition whose still shots make freezes its habit: a freeze alone is no news."""


def _job(frames: list[np.ndarray], seq: int, crf: int = 23) -> SegmentJob:
    data = encode(frames, EncodeSettings(fps=25, gop=N, crf=crf))
    return SegmentJob(Segment(data, "news", "360p", seq))


def _screen(
    frames: list[np.ndarray], seq: int, prev: Edge | None = None, crf: int = 23
) -> Screened:
    job = ScreenJob(_job(frames, seq, crf), recent=STILLS_ARE_THE_HABIT, room="impaired")
    out = screen_job(seq, dataclasses.replace(job, prev_edge=prev), SETUP)
    assert isinstance(out, Screened)
    return out


def _freeze(v: Verdict) -> dict[str, float]:
    (f,) = [f for f in v.flags if f.kind == "freeze"]
    return f.evidence


@pytest.fixture(scope="module")
def before() -> Edge:
    """The moving segment the rendition showed before (seq 10)."""
    first = _screen(MOVING[:N], 10)
    edge = edge_of(first.verdict)
    assert edge is not None and edge.seq == 10 and edge.moving
    return edge


def test_a_picture_held_from_the_boundary_is_a_stop_and_gets_its_frames(before: Edge) -> None:
    held = [MOVING[N - 1]] * N  # the encoder held the last frame it had
    alone = _screen(held, 11)
    assert _freeze(alone.verdict)["early"] == 1.0
    assert _freeze(alone.verdict)["stopped"] == 0.0  # no motion in its own segment
    assert alone.escalation is None  # a freeze where stills are the habit: no frames
    stop = _screen(held, 11, before)
    assert _freeze(stop.verdict)["stopped"] == 1.0
    assert _freeze(stop.verdict)["held_across"] == 1.0
    assert STOPPED in triggers(stop.verdict, EscalationConfig(), STILLS_ARE_THE_HABIT)
    assert stop.escalation is not None  # news: the worker made its frames
    # the picture moves on for 3 frames, then holds: too early for its own segment to see
    late = MOVING[N : N + 3] + [MOVING[N + 2]] * (N - 3)
    assert _freeze(_screen(late, 11).verdict)["stopped"] == 0.0
    assert _freeze(_screen(late, 11, before).verdict)["held_across"] == 1.0


def test_a_cut_to_a_still_or_motion_going_on_is_no_stop(before: Edge) -> None:
    cut = _screen(STILL, 11, before)  # a still shot begins at the boundary
    assert _freeze(cut.verdict)["stopped"] == 0.0 and cut.escalation is None
    going = _screen(MOVING[N:], 11, before)
    assert not [f for f in going.verdict.flags if f.kind == "freeze"]
    assert edge_of(going.verdict) == Edge(11, going.verdict.extra[EDGES_KEY]["last"], True)


def test_only_the_segment_just_before_and_only_a_moving_one_say_stopped(before: Edge) -> None:
    held = _screen([MOVING[N - 1]] * N, 12).verdict  # one segment missing between
    assert held_across(held, before) is held
    still = _screen(STILL, 10)  # a still shot before: its next segment's hold is no stop
    assert edge_of(still.verdict) is not None and not edge_of(still.verdict).moving
    again = _screen(STILL, 11, edge_of(still.verdict))
    assert _freeze(again.verdict)["stopped"] == 0.0


def test_thumbnails_are_block_means_of_the_first_and_last_frames() -> None:
    frames = list(pattern_frames("scene", 320, 176, N, seed=3, speed=3.0))
    d = decode(Segment(encode(frames, EncodeSettings(fps=25, gop=N)), "s", "r", 1))
    assert d.stats.first_thumb is not None and d.stats.last_thumb is not None
    assert d.stats.first_thumb.shape == (THUMB, THUMB)

    def coded(frame: np.ndarray) -> np.ndarray:  # block means of the coded (limited) luma
        luma = frame.astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
        return 16 + luma.reshape(THUMB, 22, THUMB, 40).mean(axis=(1, 3)) * 219 / 255

    first, last = coded(frames[0]), coded(frames[-1])
    assert np.abs(first - last).mean() > 10  # the picture moved
    assert np.abs(d.stats.first_thumb - first).mean() < 3.0  # CRF 23, read on a 1-in-n grid
    assert np.abs(d.stats.last_thumb - last).mean() < 3.0
    keyframes = DecodeConfig(sampling=SamplingConfig(mode="keyframes", count=4))
    cheap = decode(Segment(encode(frames, EncodeSettings(fps=25, gop=N)), "s", "r", 1), keyframes)
    assert cheap.stats.first_thumb is not None and cheap.stats.last_thumb is None


@pytest.mark.parametrize(
    "edges",
    [
        None,
        5,
        "x",
        {"first": 5, "last": 5},
        {"first": "not base64!", "last": "AAAA"},
        {"first": "AAAA", "last": "AAAA", "moving": 1.0},  # 3 bytes, not a thumbnail
        {"first": "A" * 10**6, "last": "A" * 10**6, "moving": 1.0},
        {"first": ["A"], "last": {"x": 1}, "moving": "yes"},
    ],
)
def test_edges_off_the_topic_are_no_edges(before: Edge, edges: object) -> None:
    held = _screen([MOVING[N - 1]] * N, 11).verdict
    hostile = dataclasses.replace(held, extra={**held.extra, EDGES_KEY: edges})
    assert edge_of(hostile) is None
    assert held_across(hostile, before) is hostile
    assert held_across(held, Edge(10, "AAAA", True)) is held  # nor a previous edge's


def _fade(frame: np.ndarray, steps: int) -> list[np.ndarray]:
    """`frame` fading towards black over `steps` frames, then held."""
    out = [(frame * (1.0 - 0.04 * i)).astype(np.uint8) for i in range(steps)]
    return out + [out[-1]] * (N - steps)


def test_a_cut_or_a_fade_into_a_still_at_the_boundary_is_no_stop(before: Edge) -> None:
    # the segment before ends on a cut (or a fade) into a still: no motion up to its end,
    # so the still going on in the next segment is the shot, not a picture that stopped
    for ending in (
        MOVING[: N - 2] + [STILL[0]] * 2,
        MOVING[: N - 12] + _fade(MOVING[N - 12], 6)[:12],
    ):
        edge = edge_of(_screen(ending, 10).verdict)
        assert edge is not None and not edge.moving
        on = _screen([ending[-1]] * N, 11, edge)
        assert _freeze(on.verdict)["stopped"] == 0.0 and on.escalation is None
    # a picture that stopped 2 frames before the end did not move up to it
    edge = edge_of(_screen(MOVING[: N - 2] + [MOVING[N - 3]] * 2, 10).verdict)
    assert edge is not None and not edge.moving
    # coarser: the encoder refines the still over the frames after the cut (steps of 0.5-1.3
    # codes, above the still threshold), which is no motion either
    for k in (1, 2, 3, 4):
        edge = edge_of(_screen(MOVING[: N - k] + STILL[:k], 10, crf=30).verdict)
        assert edge is not None and not edge.moving, k


@pytest.mark.parametrize("moved", [1, 2])
def test_a_cut_to_a_still_in_a_segments_first_frames_is_no_stop(before: Edge, moved: int) -> None:
    # the segment begins on the picture going on, then cuts to a still: its first frame
    # alone would pass for the held picture
    cut = _screen(MOVING[N : N + moved] + STILL[: N - moved], 11, before)
    assert _freeze(cut.verdict)["early"] == 0.0
    assert _freeze(cut.verdict)["stopped"] == 0.0 and cut.escalation is None


def test_a_hold_its_own_segment_could_judge_is_not_judged_across(before: Edge) -> None:
    # a fade, then a hold from frame 8: early enough for nothing, and a fade is no motion
    faded = _screen(_fade(MOVING[N], 8), 11, before)
    assert _freeze(faded.verdict)["early"] == 0.0
    assert _freeze(faded.verdict)["stopped"] == 0.0
    assert "held_across" not in _freeze(faded.verdict)

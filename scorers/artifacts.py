"""Deterministic artifact detectors: no learned weights, evidence in every flag.

Each detector is a pure function of a DecodedSegment (its luma stats and sampled
frames) and its own config section, returning a Flag or None. ArtifactScorer is
the thin wrapper the registry builds.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar, Literal

import numpy as np
from pydantic import Field

from ingest.config import StrictModel
from ingest.types import DecodedSegment
from scorers.types import Flag, Verdict

VERSION = "1.0"


class BlackConfig(StrictModel):
    enabled: bool = True
    picture_threshold: float = Field(
        0.98,
        gt=0,
        le=1,
        description="A frame is black when this fraction of its pixels is dark (FFmpeg "
        "blackdetect pic_th). The dark pixel level is decode.dark_pixel_threshold (pix_th).",
    )
    min_duration_s: float = Field(
        0.5,
        ge=0,
        description="Shortest black run flagged within one segment. FFmpeg's blackdetect uses "
        "d=2 s on a continuous stream; segments are ~2 s, so the judge accumulates runs across "
        "segments and this catches a run that starts inside one.",
    )


class FreezeConfig(StrictModel):
    enabled: bool = True
    noise_db: float = Field(
        -60.0,
        le=0,
        description="Frames whose mean absolute difference to the previous frame is below "
        "10^(noise_db/20) of full scale count as frozen (FFmpeg freezedetect n=-60dB).",
    )
    min_duration_s: float = Field(
        0.5, ge=0, description="Shortest frozen run flagged within one segment (see black)."
    )


class ArtifactsConfig(StrictModel):
    type: Literal["artifacts"] = "artifacts"
    black: BlackConfig = Field(default_factory=BlackConfig)
    freeze: FreezeConfig = Field(default_factory=FreezeConfig)


def _frame_duration(decoded: DecodedSegment) -> float:
    fps = decoded.info.fps
    return 1.0 / fps if fps > 0 else 0.04


def _longest_run(mask: np.ndarray) -> tuple[int, int]:
    """(start index, length) of the longest run of True in a 1-D bool array."""
    if not mask.any():
        return 0, 0
    padded = np.concatenate([[False], mask, [False]]).astype(np.int8)
    edges = np.flatnonzero(np.diff(padded))
    starts, ends = edges[::2], edges[1::2]
    best = int(np.argmax(ends - starts))
    return int(starts[best]), int(ends[best] - starts[best])


def _run_flag(
    kind: str,
    mask: np.ndarray,
    decoded: DecodedSegment,
    min_duration_s: float,
    evidence: dict[str, float],
) -> Flag | None:
    start, length = _longest_run(mask)
    step = _frame_duration(decoded)
    duration = length * step
    if length == 0 or duration < min_duration_s:
        return None
    total = max(len(mask) * step, step)
    return Flag(
        kind,
        severity=min(1.0, duration / total),
        start_s=float(decoded.stats.pts_s[start]),
        duration_s=duration,
        evidence={**evidence, "run_frames": float(length), "frames": float(len(mask))},
    )


def detect_black(decoded: DecodedSegment, cfg: BlackConfig) -> Flag | None:
    stats = decoded.stats
    mask = stats.dark_fraction >= cfg.picture_threshold
    return _run_flag(
        "black",
        mask,
        decoded,
        cfg.min_duration_s,
        {"mean_luma": float(stats.luma_mean[mask].mean()) if mask.any() else 0.0},
    )


def detect_freeze(decoded: DecodedSegment, cfg: FreezeConfig) -> Flag | None:
    stats = decoded.stats
    threshold = 10 ** (cfg.noise_db / 20)
    # A frame is frozen when it repeats the previous one; the first frame of a run counts too.
    still = np.nan_to_num(stats.luma_diff, nan=np.inf) < threshold
    mask = still | np.concatenate([still[1:], [False]])
    return _run_flag(
        "freeze",
        mask,
        decoded,
        cfg.min_duration_s,
        {"threshold": threshold, "min_diff": float(np.nanmin(stats.luma_diff, initial=1.0))},
    )


class ArtifactScorer:
    name: ClassVar[str] = "artifacts"

    def __init__(self, config: ArtifactsConfig) -> None:
        self.config = config

    @classmethod
    def from_config(cls, config: ArtifactsConfig) -> ArtifactScorer:
        return cls(config)

    @property
    def version(self) -> str:
        return VERSION

    def score_one(self, decoded: DecodedSegment) -> Verdict:
        cfg = self.config
        found = [
            detect_black(decoded, cfg.black) if cfg.black.enabled else None,
            detect_freeze(decoded, cfg.freeze) if cfg.freeze.enabled else None,
        ]
        seg = decoded.segment
        return Verdict(
            seg.segment_id,
            seg.stream,
            seg.rendition,
            seg.seq,
            None,
            None,
            (),
            tuple(f for f in found if f is not None),
            (f"{self.name}@{self.version}",),
        )

    def score(self, segments: Sequence[DecodedSegment]) -> list[Verdict]:
        return [self.score_one(d) for d in segments]

    def close(self) -> None:
        pass

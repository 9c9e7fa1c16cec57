"""Deterministic artifact detectors: no learned weights, evidence in every flag.

Each detector is a pure function of a DecodedSegment (its luma stats and sampled
frames) and its own config section, returning a Flag or None. ArtifactScorer is
the thin wrapper the registry builds.

The picture detectors (blockiness, blur, noise, banding) read luma from full-length
16-pixel strips of the sampled RGB frames, at native resolution (block grids and
pixel noise do not survive downscaling) but only over a fixed pixel budget per
frame, so their cost does not grow with resolution. Strip positions rotate from
frame to frame, so a segment's sampled frames together cover most of the picture.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import ClassVar, Literal

import numpy as np
import numpy.typing as npt
from pydantic import Field

from ingest.config import StrictModel
from ingest.types import DecodedSegment
from scorers.types import Flag, Verdict

VERSION = "1.1"

F32 = npt.NDArray[np.float32]
STRIP = 16
"""Strip thickness; a multiple of every block size checked, so strips start on the grid."""
# BT.601: swscale converts untagged YUV to rgb24 with it, so this gray is the coded luma
# (expanded to full range).
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)
_GOLDEN = 0.6180339887


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
    ignore_dark_fraction: float | None = Field(
        0.98,
        gt=0,
        le=1,
        description="Frames with at least this fraction of dark pixels are not counted as "
        "frozen: a black run is reported once, by the black detector, not twice. Null counts "
        "them (FFmpeg freezedetect behaviour).",
    )


class AnalysisConfig(StrictModel):
    pixels_per_frame: int = Field(
        65536,
        ge=4096,
        description="Frame area (pixels) per sampled frame the picture detectors look at, "
        "two thirds in horizontal and one third in vertical full-length 16-pixel strips (of "
        "vertical strips every other column is read). 64 Ki is most of a 320x180 frame "
        "across and a third of it down, 7% of a 720p frame: the detectors then cost a fixed "
        "~1.6 ms per sampled frame whatever the resolution (9-18% of a 720p H.264 decode on "
        "2 cores), and the strips, rotating from frame to frame, still cover much of the "
        "picture over the 8 default sampled frames. Calibration held from 64 to 128 Ki.",
    )


class _PictureConfig(StrictModel):
    enabled: bool = True
    min_frame_fraction: float = Field(
        0.5,
        gt=0,
        le=1,
        description="Share of the scored sampled frames that must reach the threshold before "
        "the segment is flagged: these are properties of the encode that persist, so half "
        "the segment (4 of the default 8 frames) must show it. A lower share let single "
        "frames of very smooth clean content (a 720p gradient at CRF 23) through.",
    )


class BlockinessConfig(_PictureConfig):
    max_step: float = Field(
        24.0,
        gt=0,
        description="Luma steps larger than this (0-255 codes) are real edges and left out: "
        "blocking steps in flat areas stay below ~20 codes even at CRF 51.",
    )
    floor: float = Field(
        0.5,
        gt=0,
        description="Codes added to both sides of the ratio, so sub-code steps on very smooth "
        "content (a clean 720p gradient at CRF 23 has 0.3-code block steps) do not make a "
        "large ratio out of two invisible numbers.",
    )
    threshold: float = Field(
        1.45,
        gt=1,
        description="Flag when the typical luma step on the 8- or 16-pixel block grid is this "
        "many times the step inside blocks (FFmpeg blockdetect's idea). Clean CRF 18-23 "
        "encodes of the test patterns stay at or below 1.32 (median per frame, smooth "
        "gradient at 720p) and mostly near 1.0; H.264 at CRF 46 on a natural-looking scene "
        "reaches 1.55, CRF 51 1.85.",
    )
    full: float = Field(2.5, gt=1, description="Boundary/inside ratio at which severity reaches 1.")


class BlurConfig(_PictureConfig):
    edge_step: float = Field(
        6.0,
        gt=0,
        description="Only positions whose luma step is at least this many codes (0-255) are "
        "judged: edges show blur; smooth shading and coding noise say nothing about it, and "
        "counting them made smooth content look blurred.",
    )
    min_edge_fraction: float = Field(
        0.003,
        ge=0,
        le=1,
        description="A frame whose judged positions are fewer than this share has too few "
        "edges to tell sharp from blurred (a smooth gradient) and is not scored.",
    )
    threshold: float = Field(
        0.4,
        gt=0,
        lt=1,
        description="Flag when the Crété-Roffet blur effect on edges (share of the luma "
        "variation kept after a 9-tap re-blur, worse direction; 0 sharp, 1 fully blurred) "
        "reaches this. Clean encodes of the test patterns score 0.11-0.30 (the zone plate "
        "highest); a gaussian blur of sigma 1.5 px scores 0.47-0.63, sigma 3 0.56-0.82.",
    )
    full: float = Field(0.8, gt=0, le=1, description="Blur effect at which severity reaches 1.")


class NoiseConfig(_PictureConfig):
    percentile: float = Field(
        50.0,
        gt=0,
        le=100,
        description="Noise is read from the flattest blocks: those whose Immerkær estimate is "
        "at or below this percentile of all 14x14 blocks, so edges do not count as noise.",
    )
    clip_margin: float = Field(
        4.0,
        ge=0,
        description="Blocks whose mean luma is within this many codes of 0 or 255 are left "
        "out: noise is clipped away there (and letterbox bars are clean black).",
    )
    threshold: float = Field(
        2.0,
        gt=0,
        description="Flag when the estimated white-noise standard deviation reaches this many "
        "luma codes (0-255). Clean encodes estimate 0-0.3 (fine texture included); noise of "
        "sigma 8 added before a CRF 20 encode comes out at 4-6 (the encoder removes some).",
    )
    full: float = Field(
        12.0, gt=0, description="Noise standard deviation (codes) at which severity reaches 1."
    )


class BandingConfig(_PictureConfig):
    flat_tolerance: float = Field(
        0.75,
        gt=0,
        description="Neighbouring pixels closer than this (luma codes) are 'flat'; above half "
        "a code because the gray is rebuilt from rounded RGB.",
    )
    min_step: float = Field(
        1.5,
        gt=0,
        description="Smallest step counted as a band edge (codes): the 1-code steps of any "
        "8-bit gradient are not banding.",
    )
    max_step: float = Field(
        20.0,
        gt=0,
        description="Largest step counted as a band edge (codes); larger ones are real edges "
        "(colour bars step by 22-41 codes of luma). 16 luma levels (17-code steps) still count.",
    )
    run_px: int = Field(
        4,
        ge=1,
        description="A band edge needs this many flat steps on each side, beyond a transition "
        "of up to 5 pixels (deblocking and chroma upsampling smear a step).",
    )
    min_coverage: float = Field(
        0.01,
        ge=0,
        le=1,
        description="A frame counts only when band edges make up at least this share of its "
        "positions.",
    )
    threshold: float = Field(
        4.5,
        gt=0,
        description="Flag when the mean level change at band edges reaches this many luma "
        "codes (0-255). Clean CRF 18-23 encodes of smooth content already show 2-4 code "
        "plateaus (a 1/f scene at 640x360 reaches 4.0); luma quantised to 40 levels "
        "(6.5-code steps) scores 6.5, to 24 levels 9-10.",
    )
    full: float = Field(
        16.0, gt=0, description="Mean band step (codes) at which severity reaches 1."
    )


class CorruptionConfig(StrictModel):
    enabled: bool = True
    min_frames: int = Field(
        1,
        ge=1,
        description="Flag when at least this many frames are damaged: concealed (the decoder's "
        "corrupt flag), rejected packets, or missing from the timeline. One concealed frame "
        "is already a visible glitch.",
    )
    full_fraction: float = Field(
        0.5,
        gt=0,
        le=1,
        description="Share of damaged frames at which severity reaches 1.",
    )
    count_missing: bool = Field(
        True,
        description="Count frames missing from the timeline (presentation-time gaps longer "
        "than 1.5 frame durations, or packets that gave no frame). FFmpeg's HEVC decoder "
        "conceals without marking frames corrupt but drops those that lost references, so "
        "this is its main signal. Turn off for variable-frame-rate sources.",
    )


class ArtifactsConfig(StrictModel):
    type: Literal["artifacts"] = "artifacts"
    analysis: AnalysisConfig = Field(default_factory=AnalysisConfig)
    black: BlackConfig = Field(default_factory=BlackConfig)
    freeze: FreezeConfig = Field(default_factory=FreezeConfig)
    blockiness: BlockinessConfig = Field(default_factory=BlockinessConfig)
    blur: BlurConfig = Field(default_factory=BlurConfig)
    noise: NoiseConfig = Field(default_factory=NoiseConfig)
    banding: BandingConfig = Field(default_factory=BandingConfig)
    corruption: CorruptionConfig = Field(default_factory=CorruptionConfig)


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
    # still[i]: frame i repeats frame i-1. A run of k such repeats is k+1 identical frames.
    # Runs are taken on `still` itself: marking each still frame's predecessor first would
    # join alternating still/moving frames (slow motion seen on the 1-in-4 stats grid)
    # into one long false freeze.
    still = np.nan_to_num(stats.luma_diff, nan=np.inf) < threshold
    if cfg.ignore_dark_fraction is not None:
        still &= stats.dark_fraction < cfg.ignore_dark_fraction
    start, length = _longest_run(still)
    mask = np.zeros_like(still)
    if length:
        mask[max(start - 1, 0) : start + length] = True
    return _run_flag(
        "freeze",
        mask,
        decoded,
        cfg.min_duration_s,
        {"threshold": threshold, "min_diff": float(np.nanmin(stats.luma_diff, initial=1.0))},
    )


# --- picture detectors: luma strips of the sampled frames -------------------------------


@dataclass(frozen=True, slots=True)
class LumaStrips:
    """Luma (0-255, float32) of full-length strips of one sampled frame.

    `rows` is (n, 16, width): whole 16-line strips (the noise estimate needs 2-D blocks).
    `cols` is (m, 8, height): every other column of 16-column strips, transposed so that
    "along the strip" is the last axis; only the 1-D measures read them, and those use
    every other line anyway. Strips start on multiples of 16 pixels, so positions along
    a strip are frame coordinates and block grids line up.
    """

    index: int
    pts_s: float
    rows: F32
    cols: F32

    def lines(self) -> tuple[F32, F32]:
        """Every other line of both strip sets: what the 1-D measures along strips read."""
        return self.rows[:, ::2], self.cols


def _gray(rgb: npt.NDArray[np.uint8]) -> F32:
    return np.asarray(rgb.astype(np.float32) @ _LUMA, dtype=np.float32)


def _strip_starts(length: int, count: int, phase: float) -> list[int]:
    slots = length // STRIP
    count = min(count, slots)
    if count <= 0:
        return []
    return sorted({int((j + phase) * slots / count) * STRIP for j in range(count)})


def _stack(parts: list[F32], lines: int, length: int) -> F32:
    if not parts:
        return np.empty((0, lines, length), dtype=np.float32)
    return np.ascontiguousarray(np.stack(parts))


def luma_strips(decoded: DecodedSegment, cfg: AnalysisConfig | None = None) -> list[LumaStrips]:
    """The strips every picture detector reads; compute once per segment and pass them on."""
    budget = (cfg or AnalysisConfig()).pixels_per_frame
    # Two thirds to row strips: reading a column strip touches one cache line and one page
    # per row of the frame, which costs several times more per pixel than a row strip.
    row_budget, col_budget = budget * 2 // 3, budget // 3
    out = []
    for k, frame in enumerate(decoded.frames):
        rgb = frame.rgb
        h, w = rgb.shape[:2]
        # Golden-ratio phase: successive frames read strips that interleave, not repeat.
        phase = (k * _GOLDEN) % 1.0
        ys = _strip_starts(h, max(1, row_budget // (STRIP * w)), phase)
        xs = _strip_starts(w, max(1, col_budget // (STRIP * h)), phase)
        rows = _stack([_gray(rgb[y : y + STRIP]) for y in ys], STRIP, w)
        cols = _stack([_gray(rgb[:, x : x + STRIP : 2]).T for x in xs], STRIP // 2, h)
        out.append(LumaStrips(frame.index, frame.pts_s, rows, cols))
    return out


Scored = tuple[float, dict[str, float]] | None
"""A frame's score (higher is worse) and its evidence, or None when it cannot be judged."""


def blockiness_score(s: LumaStrips, cfg: BlockinessConfig) -> Scored:
    """Typical luma step on 8- and 16-pixel block boundaries over the typical step inside
    4x4 blocks, the worse grid.

    Steps are averaged down each column (along each row for vertical strips), then the
    median over boundary columns is compared with the median over inside columns: a few
    real edges that happen to sit on the grid move a median very little, blocking that
    covers the picture moves it a lot.
    """
    profiles = [_step_profile(arr, cfg.max_step) for arr in s.lines() if arr.shape[0]]
    profiles = [p for p in profiles if p.size >= 2 * STRIP]
    if not profiles:
        return None
    # profile[k] is the step between pixels k and k+1: on a B-grid when (k + 1) % B == 0.
    phase = np.concatenate([np.arange(1, p.size + 1) for p in profiles])
    steps = np.concatenate(profiles)
    inside = _quantile(steps[phase % 4 != 0], 0.5)
    evidence = {"inside_step": inside}
    for size in (8, 16):
        edge = _quantile(steps[phase % size == 0], 0.5)
        evidence[f"ratio_{size}"] = (edge + cfg.floor) / (inside + cfg.floor)
    return max(evidence["ratio_8"], evidence["ratio_16"]), evidence


def _quantile(x: F32, q: float) -> float:
    """The q-quantile by partial sort (np.median/percentile cost more than the data here)."""
    k = min(len(x) - 1, int(q * len(x)))
    return float(np.partition(x, k)[k])


def _step_profile(arr: F32, max_step: float) -> F32:
    """Mean absolute step between positions p and p+1, over rows, real edges left out."""
    g = np.abs(np.diff(arr, axis=-1))
    ok = g <= max_step
    total = np.where(ok, g, 0.0).sum(axis=(0, 1))
    return np.asarray(total / np.maximum(ok.sum(axis=(0, 1)), 1), dtype=np.float32)


def _box9(arr: F32) -> F32:
    """Mean of 9 neighbours along the last axis (valid part: length - 8)."""
    c = np.cumsum(arr, axis=-1, dtype=np.float32)
    c = np.concatenate([np.zeros((*arr.shape[:-1], 1), dtype=np.float32), c], axis=-1)
    return (c[..., 9:] - c[..., :-9]) * np.float32(1 / 9)


def blur_score(s: LumaStrips, cfg: BlurConfig) -> Scored:
    """Crété-Roffet blur effect on edge positions, the worse of the two directions."""
    effects = []
    edges = positions = 0
    for arr in s.lines():
        if arr.shape[0] == 0 or arr.shape[-1] < 32:
            continue
        d_full = np.abs(np.diff(arr[..., 4:-4], axis=-1))
        mask = d_full >= cfg.edge_step
        n = int(mask.sum())
        edges += n
        positions += mask.size
        if n == 0:
            continue
        d_blur = np.abs(np.diff(_box9(arr), axis=-1))
        total = float(d_full[mask].sum())
        lost = float(np.maximum(d_full - d_blur, 0.0)[mask].sum())
        effects.append(1.0 - lost / total)
    if not effects or edges < cfg.min_edge_fraction * positions:
        return None
    return max(effects), {"edge_fraction": edges / positions}


_IMMERKAER = math.sqrt(math.pi / 2) / 6
_NOISE_BLOCK = STRIP - 2


def _immerkaer(arr: F32) -> F32:
    """|I * M| for Immerkær's 3x3 mask (a separable second difference), valid part."""
    dx2 = arr[..., :-2] - 2 * arr[..., 1:-1] + arr[..., 2:]
    return np.abs(dx2[:, :-2] - 2 * dx2[:, 1:-1] + dx2[:, 2:])


def _block_means(x: F32, rows: int, width: int, blocks: int) -> F32:
    n = x.shape[0]
    return np.asarray(
        x[:, :rows, : blocks * width].reshape(n, rows, blocks, width).mean(axis=(1, 3))
    )


def noise_score(s: LumaStrips, cfg: NoiseConfig) -> Scored:
    """White-noise sigma in the flatter blocks, from Immerkær residuals at two scales.

    Per 14x14 block, r1 is Immerkær's sigma at full resolution and r2 the same after a
    2x2 average. White noise halves under that average (r2 = r1/2), while picture
    detail of a natural 1/f spectrum does not shrink (r2 >= r1), so
    n^2 = 4/3 (r1^2 - r2^2), pooled over the flattest `percentile` of blocks, counts
    the noise and not the texture.
    """
    r1s: list[F32] = []
    r2s: list[F32] = []
    # Every other row strip: noise has no direction and is the same all over the picture,
    # so 120+ blocks a frame are plenty and halve the cost.
    for arr in (s.rows[::2],):
        n, _, length = arr.shape
        blocks = (length - 4) // _NOISE_BLOCK
        if n == 0 or blocks == 0:
            continue
        luma = _block_means(arr[:, 1:-1, 1:], _NOISE_BLOCK, _NOISE_BLOCK, blocks)
        usable = ((luma > cfg.clip_margin) & (luma < 255 - cfg.clip_margin)).ravel()
        r1 = _block_means(_immerkaer(arr), _NOISE_BLOCK, _NOISE_BLOCK, blocks)
        half = 0.25 * (arr[:, 0::2, 0::2] + arr[:, 1::2, 0::2])[..., : length // 2]
        half = half + 0.25 * (arr[:, 0::2, 1::2] + arr[:, 1::2, 1::2])[..., : length // 2]
        r2 = _block_means(_immerkaer(half), STRIP // 2 - 2, _NOISE_BLOCK // 2, blocks)
        r1s.append(r1.ravel()[usable])
        r2s.append(r2.ravel()[usable])
    if sum(r.size for r in r1s) < 8:
        return None
    r1 = np.concatenate(r1s) * _IMMERKAER
    r2 = np.concatenate(r2s) * _IMMERKAER
    flat = r1 <= _quantile(r1, cfg.percentile / 100)
    white = 4 / 3 * float(np.mean(r1[flat] ** 2) - np.mean(r2[flat] ** 2))
    sigma = math.sqrt(max(white, 0.0))
    return sigma, {"flat_block_sigma": float(np.mean(r1[flat])), "blocks": float(r1.size)}


def banding_score(s: LumaStrips, cfg: BandingConfig) -> Scored:
    """Mean level change at band edges: plateaus in smooth areas, a small step between."""
    edges = 0
    step_total = 0.0
    positions = 0
    for arr in s.lines():
        if arr.shape[0] == 0 or arr.shape[-1] < 2 * (cfg.run_px + _BAND_ZONE) + 8:
            continue
        # Every 4th line: band edges run across the strip, so neighbouring lines repeat them.
        found, steps, n = _band_edges(np.diff(arr[:, ::2], axis=-1), cfg)
        edges += found
        step_total += steps
        positions += n
    if positions == 0:
        return None
    # Share of positions inside a band edge's footprint (its flat runs and transition).
    coverage = edges * (2 * (cfg.run_px + _BAND_ZONE) + 1) / positions
    evidence = {"coverage": coverage, "edges": float(edges)}
    if edges == 0 or coverage < cfg.min_coverage:
        return 0.0, evidence
    return step_total / edges, evidence


_BAND_ZONE = 2
"""Half-width of a band edge's transition: encoders' deblocking and the chroma upsampler
spread a step over up to 2 * 2 + 1 pixels."""


def _band_edges(d: F32, cfg: BandingConfig) -> tuple[int, float, int]:
    """(edge count, sum of their level changes, positions looked at) for signed steps `d`.

    The edge sits at the largest step q of its transition q-2..q+2; its size is the level
    change across that transition, and the `run_px` steps beyond it on each side must
    be flat (both sides are plateaus).
    """
    run, w = cfg.run_px, _BAND_ZONE
    a = np.abs(d)
    p = a.shape[-1]
    flat = a < cfg.flat_tolerance
    zero = np.zeros((*a.shape[:-1], 1), dtype=np.int32)
    c = np.concatenate([zero, np.cumsum(flat, axis=-1, dtype=np.int32)], axis=-1)
    lo, hi = run + w, p - run - w  # edge positions q in [lo, hi)
    n = hi - lo
    # c[k] counts flat steps before k: left run is [q-w-run, q-w), right run (q+w, q+w+run].
    left = c[..., lo - w : lo - w + n] - c[..., lo - w - run : lo - w - run + n]
    right = c[..., lo + w + 1 + run : lo + w + 1 + run + n] - c[..., lo + w + 1 : lo + w + 1 + n]
    here = a[..., lo:hi]
    peak = np.ones(here.shape, dtype=bool)
    change = d[..., lo:hi].copy()
    for k in range(1, w + 1):
        peak &= (here >= a[..., lo - k : hi - k]) & (here > a[..., lo + k : hi + k])
        change += d[..., lo - k : hi - k] + d[..., lo + k : hi + k]
    size = np.abs(change)
    edge = peak & (size >= cfg.min_step) & (size <= cfg.max_step) & (left == run) & (right == run)
    return int(edge.sum()), float(size[edge].sum()), int(edge.size)


def _severity(score: float, threshold: float, full: float) -> float:
    if full <= threshold:
        return 1.0
    return float(min(1.0, max(0.0, (score - threshold) / (full - threshold))))


def _picture_flag(
    kind: str,
    decoded: DecodedSegment,
    scored: list[tuple[LumaStrips, Scored]],
    threshold: float,
    full: float,
    min_frame_fraction: float,
) -> Flag | None:
    """One flag from per-frame scores: enough frames over the threshold, median severity."""
    judged = [(s, r) for s, r in scored if r is not None]
    hits = [(s, r) for s, r in judged if r[0] >= threshold]
    if not hits or len(hits) < min_frame_fraction * len(judged):
        return None
    score = float(np.median([r[0] for _, r in hits]))
    # Each sampled frame stands for the stretch of segment around it.
    span = decoded.info.duration_s / max(len(decoded.frames), 1)
    start = min(s.pts_s for s, _ in hits)
    end = max(s.pts_s for s, _ in hits) + span
    keys = hits[0][1][1].keys()
    evidence = {k: float(np.mean([r[1][k] for _, r in hits])) for k in keys}
    return Flag(
        kind,
        severity=_severity(score, threshold, full),
        start_s=start,
        duration_s=end - start,
        evidence={
            **evidence,
            "score": score,
            "threshold": threshold,
            "frames_flagged": float(len(hits)),
            "frames_scored": float(len(judged)),
        },
    )


def _scored(
    decoded: DecodedSegment,
    strips: Sequence[LumaStrips] | None,
    fn: Callable[[LumaStrips], Scored],
) -> list[tuple[LumaStrips, Scored]]:
    frames = luma_strips(decoded) if strips is None else strips
    return [(s, fn(s)) for s in frames]


def detect_blockiness(
    decoded: DecodedSegment, cfg: BlockinessConfig, strips: Sequence[LumaStrips] | None = None
) -> Flag | None:
    scored = _scored(decoded, strips, lambda s: blockiness_score(s, cfg))
    return _picture_flag(
        "blockiness", decoded, scored, cfg.threshold, cfg.full, cfg.min_frame_fraction
    )


def detect_blur(
    decoded: DecodedSegment, cfg: BlurConfig, strips: Sequence[LumaStrips] | None = None
) -> Flag | None:
    scored = _scored(decoded, strips, lambda s: blur_score(s, cfg))
    return _picture_flag("blur", decoded, scored, cfg.threshold, cfg.full, cfg.min_frame_fraction)


def detect_noise(
    decoded: DecodedSegment, cfg: NoiseConfig, strips: Sequence[LumaStrips] | None = None
) -> Flag | None:
    scored = _scored(decoded, strips, lambda s: noise_score(s, cfg))
    return _picture_flag("noise", decoded, scored, cfg.threshold, cfg.full, cfg.min_frame_fraction)


def detect_banding(
    decoded: DecodedSegment, cfg: BandingConfig, strips: Sequence[LumaStrips] | None = None
) -> Flag | None:
    scored = _scored(decoded, strips, lambda s: banding_score(s, cfg))
    return _picture_flag(
        "banding", decoded, scored, cfg.threshold, cfg.full, cfg.min_frame_fraction
    )


# --- decode corruption: what the decoder told us ------------------------------------------


def _missing_frames(decoded: DecodedSegment) -> tuple[int, list[float]]:
    """Frames absent from the timeline: (count, presentation times where gaps start).

    Two views, the larger wins: gaps in the presentation times (a lost packet that took
    a frame's timestamp with it), and video packets that produced no frame (a decoder
    that drops pictures whose references are gone, also after the last frame shown;
    ingest's duration is packets / fps).
    """
    pts = decoded.stats.pts_s
    # In keyframes-only decoding ingest reports the packet count, and GOP-long gaps are normal.
    if decoded.info.frame_count > len(pts) or len(pts) < 2:
        return 0, []
    step = _frame_duration(decoded)
    gaps = np.diff(pts) / step
    lost = np.where(gaps > 1.5, np.rint(gaps) - 1, 0).astype(np.int64)
    times = [float(t) for t in pts[:-1][lost > 0]]
    swallowed = round(decoded.info.duration_s * decoded.info.fps) - len(pts)
    if swallowed > lost.sum():
        times.append(float(pts[-1]))
    return max(int(lost.sum()), swallowed), times


def detect_corruption(decoded: DecodedSegment, cfg: CorruptionConfig) -> Flag | None:
    stats = decoded.stats
    missing, gap_times = _missing_frames(decoded) if cfg.count_missing else (0, [])
    corrupt = int(stats.corrupt.sum())
    damaged = corrupt + missing + decoded.decode_errors
    if damaged < cfg.min_frames:
        return None
    total = len(stats) + missing + decoded.decode_errors
    fraction = damaged / max(total, 1)
    step = _frame_duration(decoded)
    times = [*stats.pts_s[stats.corrupt].tolist(), *gap_times]
    if times and decoded.decode_errors == 0:
        start, end = min(times), max(times) + step
    else:  # rejected packets have no timestamp: blame the whole segment
        start, end = float(stats.pts_s[0]), float(stats.pts_s[-1]) + step
    return Flag(
        "corruption",
        severity=min(1.0, fraction / cfg.full_fraction),
        start_s=start,
        duration_s=end - start,
        evidence={
            "damaged_fraction": fraction,
            "corrupt_frames": float(corrupt),
            "missing_frames": float(missing),
            "decode_errors": float(decoded.decode_errors),
            "frames": float(total),
        },
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

    def detect(self, decoded: DecodedSegment) -> list[Flag]:
        """Every enabled detector; the luma strips are read once and shared."""
        cfg = self.config
        found: list[Flag | None] = [
            detect_black(decoded, cfg.black) if cfg.black.enabled else None,
            detect_freeze(decoded, cfg.freeze) if cfg.freeze.enabled else None,
            detect_corruption(decoded, cfg.corruption) if cfg.corruption.enabled else None,
        ]
        picture = (cfg.blockiness, cfg.blur, cfg.noise, cfg.banding)
        if any(c.enabled for c in picture) and decoded.frames:
            strips = luma_strips(decoded, cfg.analysis)
            if cfg.blockiness.enabled:
                found.append(detect_blockiness(decoded, cfg.blockiness, strips))
            if cfg.blur.enabled:
                found.append(detect_blur(decoded, cfg.blur, strips))
            if cfg.noise.enabled:
                found.append(detect_noise(decoded, cfg.noise, strips))
            if cfg.banding.enabled:
                found.append(detect_banding(decoded, cfg.banding, strips))
        return [f for f in found if f is not None]

    def score_one(self, decoded: DecodedSegment) -> Verdict:
        seg = decoded.segment
        return Verdict(
            seg.segment_id,
            seg.stream,
            seg.rendition,
            seg.seq,
            None,
            None,
            (),
            tuple(self.detect(decoded)),
            (f"{self.name}@{self.version}",),
        )

    def score(self, segments: Sequence[DecodedSegment]) -> list[Verdict]:
        return [self.score_one(d) for d in segments]

    def close(self) -> None:
        pass

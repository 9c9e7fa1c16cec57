"""Deterministic artifact detectors: no learned weights, evidence in every flag.

Each detector is a pure function of a DecodedSegment (its luma stats and sampled
frames) and its own config section, returning a Flag or None. ArtifactScorer is
the thin wrapper the registry builds.

The picture detectors (blockiness, blur, noise, banding) read luma from full-length
16-pixel strips of the sampled RGB frames, at native resolution (block grids and
pixel noise do not survive downscaling) but only over a fixed pixel budget per
frame, so their cost does not grow with resolution. Strip positions rotate from
frame to frame, so a segment's sampled frames together cover most of the picture.

They are calibrated to stay quiet on clean real content (issue 16; bench/calibrate.py):
soft, dim and grainy footage is not an impairment. Each judges the picture relative to
its own content: blocking against the same measure between grid lines (pooled over the
segment, in both directions), blur only where even the sharpest edges are soft, banding
only on steps of a gradient above near-black or on a posterised histogram (evenly spaced
peaks), noise only where the residual behaves like noise.
"""

from __future__ import annotations

import base64
import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numpy as np
import numpy.typing as npt
from pydantic import Field

from ingest.config import StrictModel
from ingest.types import DecodedSegment
from scorers.types import Flag, Verdict, finite_number

VERSION = "1.6"
EDGES_KEY = "edges"
"""Where a verdict's `extra` holds its segment's edges (see `edges`): its first and last
frames' thumbnails and whether the picture moved at its end, for monitor.boundary."""
TAIL_FRAMES = 3
"""The last frame differences that say a picture was moving at its segment's end."""
MEASURES_KEY = "artifacts"
"""Where a verdict's `extra` holds the detectors' raw measures (see `measure`)."""
MEASURES = ("blur_effect", "edge_loss", "comb_mass")
"""Raw measures the artifacts scorer reports on every segment it judges, flagged or not:
blur_effect, the median over the sampled frames of the Crété-Roffet blur effect on edges
(0 sharp to 1; absent when too few edges were found); edge_loss, -log2 of the median share
of positions along the luma strips with a step of at least blur.edge_step (0 when every
position is an edge, 13.3 when none is: EDGE_FLOOR), which a blur that wipes out the
edges the blur effect is judged on still raises. One more point of edge_loss is half the
edges. comb_mass, the median share of the pixels on the luma histogram's teeth (levels
the picture piles up on, evenly spaced or not: comb_score's evidence), which posterised
luma raises however few or irregular its surviving levels are."""
EDGE_FLOOR = 1e-4


def edges(decoded: DecodedSegment, cfg: FreezeConfig) -> dict[str, Any]:
    """The segment's first and last frames' thumbnails (base64 of THUMB x THUMB bytes),
    and `moving`: 1.0 when its last TAIL_FRAMES frame differences are all at or above the
    freeze detector's still threshold (the picture moved up to its end). Empty without
    thumbnails; no `last` when the decode read keyframes alone."""
    stats = decoded.stats
    out: dict[str, Any] = {}
    if stats.first_thumb is not None:
        out["first"] = base64.b64encode(stats.first_thumb.tobytes()).decode("ascii")
    if stats.last_thumb is not None:
        out["last"] = base64.b64encode(stats.last_thumb.tobytes()).decode("ascii")
        # judged as _moved_before judges motion: less each frame's change of mean luma (a
        # fade is no motion), and not when a cut (to a still shot) came in the last frames
        # (the encoder refines a still after a cut over a few frames)
        diff, n = stats.luma_diff, len(stats.luma_diff)
        tail = (diff[1:] - np.abs(np.diff(stats.luma_mean)))[-TAIL_FRAMES:]
        threshold = 10 ** (cfg.noise_db / 20)
        recent_cut = any(
            _after_cut(diff, n - j, cfg) for j in range(TAIL_FRAMES + cfg.settle_frames)
        )
        moving = len(tail) == TAIL_FRAMES and bool(np.all(tail >= threshold)) and not recent_cut
        out["moving"] = float(moving)
    return out


def measure(extra: dict[str, Any], name: str) -> float | None:
    """A raw detector measure from a verdict's `extra`, None when it was not taken."""
    got = extra.get(MEASURES_KEY)
    return finite_number(got.get(name)) if isinstance(got, dict) else None


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
    cut_ratio: float | None = Field(
        3.0,
        gt=1,
        description="A still run that begins at a cut is a still shot (a slate, a graphic, a "
        "filmed photograph), not a picture that stopped: when the frame held, or the one "
        "before it, differs from its predecessor by at least this many times the median "
        "frame difference earlier in the segment (and by cut_min_diff), the run is not "
        "flagged in this segment; if the shot stays still, the next segment flags it. A "
        "stuck picture holds a frame that came by ordinary motion: on bench/escalation.py's "
        "synthetic and real training libraries, injected freezes come at 0.4-1.7 times the "
        "earlier motion (one at 7.5 after sparse motion: see cut_min_diff), clean cuts to a "
        "still window at 4-130 times (13 of their 15 still runs on moving pictures). Such a "
        "shot does not hide a picture seen to stop elsewhere in the segment: the longest "
        "still run that follows motion, not a cut, is judged. With "
        "decode.skip_nonref, a cut inside a run of skipped frames is spread over them and "
        "may stay flagged. Null: every still run counts (FFmpeg freezedetect).",
    )
    cut_min_diff: float = Field(
        2.0,
        ge=0,
        description="A cut changes the picture by at least this mean absolute luma difference "
        "(8-bit codes) as well: sparse motion (a bar that moves every few frames) has a tiny "
        "median, which a stuck frame's last change would otherwise exceed by cut_ratio.",
    )
    settle_ratio: float | None = Field(
        0.5,
        gt=0,
        le=1,
        description="A picture that stops does not stop at once in the decoded frames: the "
        "encoder refines the held frame over the next few frames, so their differences decay "
        "towards zero (1.00, 0.79, 0.46, 0.46 codes after motion of about 1.6 on a filmed "
        "photograph frozen for 1 s at CRF 23, measured 0.44 of the segment instead of 0.5; "
        "0.42, 0.42 after a cut to a still, which then hid the cut). Up to settle_frames "
        "frames just before a still run, each no larger than the one before it and at most "
        "this share of the median frame difference earlier in the segment, count as still. "
        "The price: a camera that slows to under this share of its pace before it holds "
        "counts those frames too, so a clean hold after a deceleration measures up to "
        "settle_frames longer (a 9-12 frame hold, under min_duration_s, can then be "
        "flagged); motion that keeps more of its pace up to the stop is not counted. On "
        "bench/escalation.py's five libraries (1,536 clean segments) it changed one clean "
        "flag, removed (a cut it now sees); their virtual camera never slows down, so that "
        "price is not measured there. Null: off.",
    )
    settle_frames: int = Field(
        4, ge=1, le=25, description="The most settling frames counted (see settle_ratio)."
    )


class AnalysisConfig(StrictModel):
    pixels_per_frame: int = Field(
        65536,
        ge=4096,
        description="Frame area (pixels) per sampled frame the picture detectors look at, "
        "two thirds in horizontal and one third in vertical full-length 16-pixel strips (of "
        "vertical strips every other column is read). 64 Ki is most of a 320x180 frame "
        "across and a third of it down, 7% of a 720p frame: the detectors then cost a fixed "
        "~2 ms per sampled frame whatever the resolution (12-24% of a 720p H.264 decode on "
        "2 cores; the content checks of issue 16 added 30%), and the strips, rotating from "
        "frame to frame, still cover much of the picture over the 8 default sampled frames. "
        "Calibration held from 64 to 128 Ki.",
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
    min_frame_fraction: float = Field(
        0.5,
        gt=0,
        le=1,
        description="Kept for compatibility and not used: blocking is judged on the "
        "visible-edge energy of all sampled frames pooled, which is steadier than a vote of "
        "frames (one frame's strips hold few block boundaries in sparse pictures).",
    )
    max_step: float = Field(
        24.0,
        gt=0,
        description="Luma steps larger than this (0-255 codes) are real edges: a block "
        "boundary whose 3-pixel zone holds one is left out. Blocking steps in flat areas stay "
        "below ~20 codes even at CRF 51.",
    )
    visible_step: float = Field(
        3.0,
        gt=0,
        description="A block boundary counts as a visible block edge when the level change "
        "across it (over 3 steps: deblocking spreads it) exceeds what the slope inside the "
        "blocks on both sides explains by at least this many codes. Below 3 codes are the "
        "1-code steps of any 8-bit gradient (which clean x264 encodes of smooth or dark "
        "wallpapers put on the block grid), with the +-1 of the gray rebuilt from rounded RGB.",
    )
    edge_cap: float = Field(
        6.0,
        gt=0,
        description="A visible block edge counts with its excess up to this many codes: the "
        "visibility of a step saturates, and a few strong content edges that happen to sit "
        "on the grid should not outweigh many block edges.",
    )
    min_direction_ratio: float = Field(
        1.1,
        ge=1,
        description="Coding blocks are two-dimensional: the grid must stand out by at least "
        "this ratio along rows and along columns alike. Content aligned with the grid one way "
        "(colour bars, wooden slats at 360p) does not.",
    )
    floor: float = Field(
        0.04,
        gt=0,
        description="Codes per position added to both sides of the ratio, so that a few "
        "visible edges in a nearly flat picture do not make a large ratio out of two small "
        "numbers.",
    )
    threshold: float = Field(
        1.45,
        gt=1,
        description="Flag when the visible-edge energy (codes per position, see visible_step) "
        "on the 8- or 16-pixel block grid, over the sampled frames of the segment, is this "
        "many times the same measure half-way between grid lines, where content edges fall "
        "as often but coding blocks do not. Clean CRF 16-23 encodes of 77 real pictures "
        "(x264, x265, dimmed, grainy; 720p and 360p) pool to 0.85-1.41, mostly near 1.0; "
        "the same at CRF 42 to a median 1.34 (up to 5.4), at CRF 48 2.4 (up to 9.2); the "
        "test gradient at CRF 40 to 3.0.",
    )
    full: float = Field(
        25.0,
        gt=1,
        description="Ratio at which severity reaches 1. Severity grows with 1 - 1/ratio, the "
        "share of the grid's visible-edge energy the grid itself adds (the ratio is unbounded "
        "once the inside of blocks is flat): ratio 2 gives 0.29, 3 0.54, 5 0.74.",
    )


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
    sharp_edge_contrast: float = Field(
        20.0,
        gt=0,
        description="An edge is judged for sharpness when luma rises monotonically by at least "
        "this many codes over the 10 pixels around its steepest step (counter-steps up to 2 "
        "codes or a tenth of the rise are let through: grain, ringing). Texture finer than "
        "10 pixels is not an edge, steps on or next to the 8-pixel block grid are not judged "
        "(coding makes crisp steps of its own there), and the measure is relative to each "
        "edge's own contrast, so dim pictures are judged on the edges they have.",
    )
    sharp_edge_share: float = Field(
        0.1,
        gt=0,
        le=1,
        description="The sharpest this share of a frame's judged edges decide whether any edge "
        "in it is crisp (0.1: the 90th percentile of edge slope).",
    )
    sharp_edge_slope: float = Field(
        0.32,
        gt=0,
        le=1,
        description="A frame counts as blurred (besides reaching the blur-effect threshold) "
        "only when its sharpest edges (see sharp_edge_share) rise by at most this share of "
        "their contrast in their steepest pixel step. An ideal step keeps 0.75 after a "
        "Lanczos resample, about 0.27 after a gaussian blur of sigma 1.5 px, 0.15 of sigma 3; "
        "a sharp picture upscaled 2x 0.45, 3.5x 0.27. Clean wallpapers at 720p keep "
        "0.3-0.87, the test scene blurred by sigma 1.5 0.30. Crisp edges anywhere mean the "
        "softness elsewhere is the content's (soft generated backgrounds, shallow focus, "
        "dim scenes), which the blur effect alone took for blur on 14-20% of clean real "
        "clips. Pictures that are soft all over, down to their sharpest edges (photographs "
        "of 512 pixels upscaled 3x or more), cannot be told from blurred ones.",
    )
    min_sharp_edges: int = Field(
        12,
        ge=1,
        description="A frame with fewer edges judged for sharpness than this cannot show that "
        "it has crisp edges, nor that it lacks them, and does not count as blurred.",
    )


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
        4.0,
        gt=0,
        description="Flag when the estimated white-noise standard deviation reaches this many "
        "luma codes (0-255). Clean encodes estimate 0-0.3 (fine texture included); film "
        "grain, which is clean content, of sigma 2-3 codes before a CRF 16-23 encode "
        "estimates up to 1.8 on 77 real pictures at 720p, and of sigma 2-4 kept by a CRF "
        "8-14 encode up to 3.44 (17 of realset's 60 clean training segments were over 2.0, "
        "the threshold before). Noise of sigma 8 added before a CRF 20 encode comes out at "
        "4-6.",
    )
    min_frame_fraction: float = Field(
        0.25,
        gt=0,
        le=1,
        description="Share of the scored sampled frames that must reach the threshold (2 of "
        "the default 8). Grain is the same in every frame and stays under the threshold in "
        "all of them; a low-bitrate encode keeps added noise only in some (its keyframe and "
        "frames with fresh residuals: sigma 25 at 300 kbit/s, 320x180 estimates 0-7 a "
        "frame), so half the frames missed it.",
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
        description="Largest step counted as a band edge on its own (codes); larger ones count "
        "only as a staircase (stair_max_step). 16 luma levels (17-code steps) count alone.",
    )
    stair_max_step: float = Field(
        56.0,
        ge=0,
        description="Steps above max_step and up to this (codes) count as band edges when they "
        "form a staircase: stair_length of them in a row along the line, each the same "
        "size as the last (stair_match) and in the same direction. "
        "Luma quantised to 12 levels steps by 23 codes, to 8 by 36, to 6 by 51; colour bars "
        "step by 22-41 codes too, but unequal ones (25, 40, 25, 39 for full bars), so they "
        "stay quiet. 0 (or max_step) turns staircases off.",
    )
    stair_match: float = Field(
        0.1,
        ge=0,
        le=1,
        description="Two neighbouring large steps are in a staircase when their sizes differ by "
        "at most this share of the larger.",
    )
    stair_length: int = Field(
        3,
        ge=2,
        description="Large steps count only in a staircase of at least this many in a row: "
        "graphics repeat a pair of equal steps (a stripe two shades lighter), a banded "
        "gradient climbs level after level.",
    )
    stair_flat_tolerance: float = Field(
        2.0,
        gt=0,
        description="Flatness of a staircase's plateaus (codes): after 4:2:0 chroma and RGB "
        "rounding, the gray of a band whose luma is one code wobbles by 1-2 codes where "
        "its colour changes along it; small steps keep flat_tolerance.",
    )
    run_px: int = Field(
        4,
        ge=1,
        description="A band edge needs this many flat steps on each side, beyond a transition "
        "of up to 5 pixels (deblocking and chroma upsampling smear a step).",
    )
    min_coverage: float = Field(
        0.003,
        ge=0,
        le=1,
        description="A frame counts only when band edges make up at least this share of its "
        "positions (0.01 before the dark_floor and trend checks, which leave fewer but "
        "surer band edges).",
    )
    dark_floor: float = Field(
        16.0,
        ge=0,
        le=255,
        description="Band edges whose darker plateau is below this luma (0-255, full range) "
        "are not counted: there the encoder flattens dim pictures into plateaus a few codes "
        "apart that no one sees (below video black after the range expansion), which made "
        "clean dimmed clips look banded.",
    )
    trend_px: int = Field(
        64,
        ge=0,
        description="A band edge is a step of a gradient: over this many pixels beyond each "
        "plateau the picture keeps the step's direction (mean luma after minus before the "
        "edge is at least trend_share of its size). A flat shape on a flat background (the "
        "dots and icons of graphic wallpapers) steps up and back down within that and is "
        "not counted. 0 turns the check off.",
    )
    trend_share: float = Field(
        0.9,
        ge=0,
        le=1,
        description="Share of a band edge's level change that the mean luma over trend_px "
        "pixels on both sides must keep.",
    )
    threshold: float = Field(
        5.0,
        gt=0,
        description="Flag when the mean level change at band edges reaches this many luma "
        "codes (0-255). Clean CRF 18-23 encodes of smooth content already show 2-4 code "
        "plateaus (a 1/f scene at 640x360 reaches 4.0); luma quantised to 40 levels "
        "(6.5-code steps) scores 6.5, to 24 levels 9-10.",
    )
    full: float = Field(
        16.0, gt=0, description="Mean band step (codes) at which severity reaches 1."
    )
    comb_mass: float = Field(
        0.25,
        ge=0,
        le=1,
        description="Posterisation, the second evidence of banding: a frame whose luma "
        "histogram is a comb (evenly spaced peaks, as luma quantised to few levels leaves "
        "it) counts when this share of its pixels sits on the teeth. It sees banding where "
        "no staircase survives along a line (fine texture, where bands are a few pixels "
        "wide): textures quantised to 12-16 levels put 0.18-0.40 of their pixels on the "
        "teeth, photographs 0.2-0.98; clean encodes of smooth and textured content 0-0.05, "
        "whose few peaks are not evenly spaced. 0 turns it off.",
    )
    comb_teeth: int = Field(
        4,
        ge=3,
        description="A comb needs at least this many peaks: graphics (a flat slate, colour "
        "bars, a logo on a plain fill) have a few peaked levels too, seldom evenly spaced.",
    )
    comb_max_period: float = Field(
        40.0,
        gt=0,
        le=128,
        description="Widest tooth spacing (codes) counted: 8 levels space their peaks 36 "
        "codes apart; the clean graphics that come closest to a comb (4 peaks of a flat "
        "wallpaper) space them 43-53 codes apart.",
    )
    comb_regularity: float = Field(
        0.75,
        gt=0,
        le=1,
        description="Share of the gaps between neighbouring peaks that must be a whole number "
        "of the median gap (within 2 codes; a level absent from the picture leaves a gap "
        "twice as wide).",
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
    diff = np.nan_to_num(stats.luma_diff, nan=np.inf)  # a frame without a difference moved
    still = diff < threshold
    if cfg.ignore_dark_fraction is not None:
        still &= stats.dark_fraction < cfg.ignore_dark_fraction
    if cfg.settle_ratio is not None:  # after the dark mask: a fade into black is no freeze
        still = _settled(diff, still, cfg.settle_ratio, cfg.settle_frames)
    start, length = _longest_run(still)
    if length and _after_cut(stats.luma_diff, start, cfg):
        # A still shot after a cut is content, and it must not hide a picture that stopped
        # elsewhere in the segment. With shots in the segment, only a picture seen to stop
        # counts.
        moved = np.flatnonzero(np.nan_to_num(stats.luma_diff, nan=0.0) >= threshold)
        still[: moved[0] if len(moved) else len(still)] = False
        while length and _after_cut(stats.luma_diff, start, cfg):
            still[start : start + length] = False
            start, length = _longest_run(still)
    mask = np.zeros_like(still)
    evidence = {"threshold": threshold, "min_diff": float(np.nanmin(stats.luma_diff, initial=1.0))}
    if length:
        mask[max(start - 1, 0) : start + length] = True
        evidence["stopped"] = float(_moved_before(diff, stats.luma_mean, start, threshold))
        # held before this segment could show motion before it: whether the picture
        # stopped is the previous segment's to say (monitor.boundary)
        evidence["early"] = float(start < MOTION_FRAMES and _one_picture(stats.head_thumbs, start))
    return _run_flag("freeze", mask, decoded, cfg.min_duration_s, evidence)


MOTION_FRAMES = 5
"""The first frame a still run can start at for `_moved_before` to judge the motion before
it (two differences after the first, less the held frame's step and the one before)."""
SAME_PICTURE = 6.0
"""The largest mean absolute difference (8-bit codes) between two frames' thumbnails that
still shows one picture going on (monitor.boundary: a segment's last frame and the next
one's first; `_one_picture`: a segment's first frames, a frame apart): the held frame coded
again at the next segment's keyframe (0.25 on a synthetic scene), or a frame's motion
(realset's camera over 18 training pictures: 0.05-2.34; a synthetic scene panning 3
pixels a frame: 3.6). Cuts to a still of another of those pictures: 14.5-122.5."""


def _one_picture(head: dict[int, Any] | None, start: int) -> bool:
    """The frames before a still run from `start` show one picture going on (its thumbnails
    step by at most SAME_PICTURE a frame): no cut to another picture inside the hold's
    first frames, whose first frame alone monitor.boundary compares."""
    got = sorted((i, t) for i, t in (head or {}).items() if i < start)
    if not got or any(t is None for _, t in got):
        return False
    return all(
        float(np.mean(np.abs(a.astype(np.float32) - b))) <= SAME_PICTURE * (j - i)
        for (i, a), (j, b) in itertools.pairwise(got)
    )


STILL_STRETCH = 3
"""Differences under the still threshold in a row that end the motion a stop is judged on."""


def _moved_before(diff: np.ndarray, mean: np.ndarray, start: int, threshold: float) -> bool:
    """The picture was seen moving just before the still run from frame `start`: a picture
    that stops (a stuck encoder, a lost feed held on its last frame) moved; a slate or a
    still shot did not. Judged on the differences since the last STILL_STRETCH still ones
    (a still shot or a hold earlier in the segment does not outvote the motion after it),
    less the held frame's step and the one before it (a cut's, as `_after_cut` reads them),
    each less its change of mean luma (a fade is no motion): at least two known, their
    median at or above the still threshold. A flat graphic under a slow drift has medians
    of 0.004-0.16 codes against the threshold's 0.26; a dissolve into a still picture
    still counts as motion."""
    end = start - 2
    if start < MOTION_FRAMES:
        return False
    earlier = diff[1:end]
    fade = np.abs(np.diff(mean[:end]))  # each of those frames' change of mean luma
    lo = 0
    if len(earlier) >= STILL_STRETCH:
        ones = np.ones(STILL_STRETCH)
        stretches = np.flatnonzero(np.convolve(earlier < threshold, ones, "valid") >= STILL_STRETCH)
        lo = int(stretches[-1]) + STILL_STRETCH if len(stretches) else 0
    moving = (earlier - fade)[lo:]
    moving = moving[np.isfinite(moving)]
    return len(moving) >= 2 and float(np.median(moving)) >= threshold


def _settled(diff: np.ndarray, still: np.ndarray, ratio: float, most: int) -> np.ndarray:
    """`still` with the settling frames before each still run marked too (see
    FreezeConfig.settle_ratio): walking back from the run, frames whose difference is no
    larger than the one before it (a known one: after a gap, inf in `diff`, nothing is
    judged) and at most `ratio` of the median earlier difference."""
    out = still.copy()
    starts = np.flatnonzero(still[1:] & ~still[:-1]) + 1
    for s in starts:
        earlier = diff[1:s]
        earlier = earlier[np.isfinite(earlier)]
        if not len(earlier):
            continue
        bound = ratio * float(np.median(earlier))
        k = s - 1
        while k >= 2 and s - k <= most and diff[k] <= bound and diff[k] <= diff[k - 1] < np.inf:
            out[k] = True
            k -= 1
    return out


def _after_cut(luma_diff: np.ndarray, start: int, cfg: FreezeConfig) -> bool:
    """The still run from frame `start` follows a cut (see FreezeConfig.cut_ratio).

    Frames start-1 (the one held) and start-2 are both looked at: a cut coded with B-frames
    shows as two steps. The median is of the differences before them; a run too close to
    the segment's start to have one is not called a cut.
    """
    if cfg.cut_ratio is None or start < 2:
        return False
    step = float(np.nanmax(luma_diff[max(start - 2, 1) : start], initial=0.0))
    earlier = luma_diff[1 : max(start - 2, 1)]
    earlier = earlier[np.isfinite(earlier)]
    if not len(earlier) or step * 255.0 < cfg.cut_min_diff:
        return False
    return step >= cfg.cut_ratio * float(np.median(earlier))


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


_GRIDS = (("8", 7, 8), ("16", 15, 16), ("mid", 11, 8))
"""(name, first step, period): step k (pixel k to k + 1) is on a B-grid when (k + 1) % B
== 0; "mid" steps lie half-way between 8-grid lines, where blocks leave no edge."""
_DIRECTIONS = ("rows", "cols")


def block_edges(s: LumaStrips, cfg: BlockinessConfig) -> dict[str, float]:
    """Visible block-edge energy and positions looked at, per direction and grid.

    At each position judged, along every line read: the level change across it, over the
    three steps a deblocking filter spreads a block edge on, less three times the mean
    step at 2-4 pixels on both sides (what the content's own slope and texture explain).
    Where that excess reaches `visible_step` codes it counts, with its size up to
    `edge_cap`. Keys: "{direction}_{grid}" (energy) and "{direction}_{grid}_n" (positions).
    """
    out: dict[str, float] = {}
    for direction, arr in zip(_DIRECTIONS, s.lines(), strict=True):
        for grid, _, _ in _GRIDS:
            out[f"{direction}_{grid}"] = out[f"{direction}_{grid}_n"] = 0.0
        if arr.shape[0] == 0 or arr.shape[-1] < 2 * STRIP:
            continue
        d = np.diff(arr, axis=-1)
        a = np.abs(d)
        n = d.shape[-1]
        for grid, first, period in _GRIDS:
            at = _Every(first, period, (n - 5 - first) // period + 1)  # k <= n - 5
            across = np.abs(at(d, -1) + at(d, 0) + at(d, 1))
            inside = at(a, -4) + at(a, -3) + at(a, -2) + at(a, 2) + at(a, 3) + at(a, 4)
            excess = across - 0.5 * inside  # 3 steps' worth of the mean step inside
            zone = np.maximum(np.maximum(at(a, -1), at(a, 0)), at(a, 1))
            seen = (excess >= cfg.visible_step) & (zone <= cfg.max_step)
            out[f"{direction}_{grid}"] = float(np.minimum(excess[seen], cfg.edge_cap).sum())
            out[f"{direction}_{grid}_n"] = float(excess.size)
    return out


@dataclass(frozen=True, slots=True)
class _Every:
    """Positions first + i * period (i < count) along the last axis, shifted by an offset."""

    first: int
    period: int
    count: int

    def __call__(self, x: F32, offset: int) -> F32:
        start = self.first + offset
        return x[..., start : start + self.period * (self.count - 1) + 1 : self.period]


def _grid_ratio(edges: dict[str, float], directions: Sequence[str], floor: float) -> float:
    """Visible-edge energy per position on the worse grid over that at mid-block positions,
    in `directions` together; 1 when they hold no position."""
    per = {}
    for grid, _, _ in _GRIDS:
        total = sum(edges[f"{d}_{grid}"] for d in directions)
        looked = sum(edges[f"{d}_{grid}_n"] for d in directions)
        if not looked:
            return 1.0
        per[grid] = total / looked
    return max(
        (per["8"] + floor) / (per["mid"] + floor), (per["16"] + floor) / (per["mid"] + floor)
    )


def blockiness_score(s: LumaStrips, cfg: BlockinessConfig) -> Scored:
    """One frame's grid ratio (see block_edges and _grid_ratio), both directions together;
    detect_blockiness pools the frames of a segment instead."""
    edges = block_edges(s, cfg)
    if not any(edges[f"{d}_mid_n"] for d in _DIRECTIONS):
        return None
    return _grid_ratio(edges, _DIRECTIONS, cfg.floor), edges


def _quantile(x: F32, q: float) -> float:
    """The q-quantile by partial sort (np.median/percentile cost more than the data here)."""
    k = min(len(x) - 1, int(q * len(x)))
    return float(np.partition(x, k)[k])


def _box9(arr: F32) -> F32:
    """Mean of 9 neighbours along the last axis (valid part: length - 8)."""
    c = np.cumsum(arr, axis=-1, dtype=np.float32)
    c = np.concatenate([np.zeros((*arr.shape[:-1], 1), dtype=np.float32), c], axis=-1)
    return (c[..., 9:] - c[..., :-9]) * np.float32(1 / 9)


def blur_score(s: LumaStrips, cfg: BlurConfig) -> Scored:
    """Crété-Roffet blur effect on edge positions, the worse of the two directions.

    When that reaches the threshold, the evidence also holds the slope of the frame's
    sharpest edges (see edge_slopes), which decides whether the frame counts as blurred.
    """
    return blur_parts(s, cfg)[0]


def blur_parts(s: LumaStrips, cfg: BlurConfig) -> tuple[Scored, float | None]:
    """(blur_score's result, the share of positions along the lines with a luma step of at
    least edge_step: what a blur too strong to leave edges to judge still shows)."""
    effects = []
    edges = positions = 0
    judged = []
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
        judged.append(arr)
    fraction = edges / positions if positions else None
    if not effects or edges < cfg.min_edge_fraction * positions:
        return None, fraction
    effect = max(effects)
    evidence = {"edge_fraction": edges / positions}
    if effect >= cfg.threshold:
        slopes = np.concatenate([edge_slopes(arr, cfg) for arr in judged])
        if slopes.size >= cfg.min_sharp_edges:
            evidence["sharp_edge_slope"] = _quantile(slopes, 1.0 - cfg.sharp_edge_share)
    return (effect, evidence), fraction


_EDGE_HALF = 4
"""Edges are judged over 2 * 4 + 2 = 10 pixels around their steepest step."""


def edge_slopes(arr: F32, cfg: BlurConfig) -> F32:
    """Steepest step / total rise of each monotonic edge along the lines of `arr`.

    An edge sits at a local maximum of the step (at least edge_step codes) around which
    luma rises or falls by at least sharp_edge_contrast over 10 pixels, monotonically up to
    a small tolerance. 1 is a one-pixel step; a gaussian edge of sigma s gives about
    0.4 / s.
    """
    h = _EDGE_HALF
    d = np.diff(arr, axis=-1)
    a = np.abs(d)
    n = d.shape[-1]
    if n <= 2 * h + 2:
        return np.empty(0, dtype=np.float32)
    c = a[..., h : n - h]
    rise = arr[..., 2 * h + 1 :] - arr[..., : n - 2 * h]  # pixel k + h + 1 minus pixel k - h
    candidate = (c >= cfg.edge_step) & (np.abs(rise) >= cfg.sharp_edge_contrast)
    candidate &= (c >= a[..., h - 1 : n - h - 1]) & (c > a[..., h + 1 : n - h + 1])
    candidate &= d[..., h : n - h] * rise > 0
    # Steps on (or, deblocked, next to) the 8-pixel block grid: coding puts crisp steps of
    # its own there, which say nothing about the sharpness of the picture (CRF 51 keeps
    # sharp block edges on a picture with no detail left).
    phase = (np.arange(h, n - h) + 1) % 8
    candidate &= (phase > 1) & (phase < 7)
    idx = np.nonzero(candidate)
    if not idx[0].size:
        return np.empty(0, dtype=np.float32)
    # The 2h + 1 steps around each candidate, oriented so that the edge rises.
    k = idx[-1][:, None] + np.arange(2 * h + 1)
    rises = rise[idx]
    window = d[(*(i[:, None] for i in idx[:-1]), k)] * np.sign(rises)[:, None]
    tol = np.maximum(2.0, 0.1 * np.abs(rises))
    monotonic = (window >= -tol[:, None]).all(axis=-1)
    return np.asarray(c[idx][monotonic] / np.abs(rises[monotonic]), dtype=np.float32)


_IMMERKAER = math.sqrt(math.pi / 2) / 6
_PIXEL_PATTERN = 0.35
"""Half-resolution over full-resolution residual below which flat blocks hold a pixel-scale
pattern, not noise: white noise gives 0.5, noise after an encoder 0.6-0.8 (it removes the
finest part), the hatched pixel-art wallpaper at 360p 0.09-0.2."""
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
    full_res, half_res = float(np.mean(r1[flat] ** 2)), float(np.mean(r2[flat] ** 2))
    if half_res < _PIXEL_PATTERN**2 * full_res:
        # White noise keeps half its amplitude at half resolution and picture detail more;
        # a residual that shrinks further is a pixel-scale pattern (hatching, dither, pixel
        # art) that the estimate would take for noise.
        return None
    sigma = math.sqrt(max(4 / 3 * (full_res - half_res), 0.0))
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
        found, steps, n = _band_edges(arr[:, ::2], cfg)
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


def _band_edges(x: F32, cfg: BandingConfig) -> tuple[int, float, int]:
    """(edge count, sum of their level changes, positions looked at) along the lines of `x`.

    The edge sits at the largest step q of its transition q-2..q+2; its size is the level
    change across that transition, and the `run_px` steps beyond it on each side must
    be flat (both sides are plateaus), the darker of them at least `dark_floor`. Steps
    above `max_step` count only as a staircase (`_staircase`).
    """
    d = np.diff(x, axis=-1)
    run, w = cfg.run_px, _BAND_ZONE
    a = np.abs(d)
    p = a.shape[-1]
    lo, hi = run + w, p - run - w  # edge positions q in [lo, hi)
    n = hi - lo
    here = a[..., lo:hi]
    peak = np.ones(here.shape, dtype=bool)
    change = d[..., lo:hi].copy()
    for k in range(1, w + 1):
        peak &= (here >= a[..., lo - k : hi - k]) & (here > a[..., lo + k : hi + k])
        change += d[..., lo - k : hi - k] + d[..., lo + k : hi + k]
    size = np.abs(change)

    # c[k] counts flat steps before k: the left run is [q-w-run, q-w), the right one
    # (q+w, q+w+run].
    zero = np.zeros((*a.shape[:-1], 1), dtype=np.int32)
    c = np.concatenate([zero, np.cumsum(a < cfg.flat_tolerance, axis=-1, dtype=np.int32)], axis=-1)
    left = c[..., lo - w : lo - w + n] - c[..., lo - w - run : lo - w - run + n]
    right = c[..., lo + w + 1 + run : lo + w + 1 + run + n] - c[..., lo + w + 1 : lo + w + 1 + n]
    edge = peak & (size >= cfg.min_step) & (size <= cfg.max_step) & (left == run) & (right == run)
    # From here on, edges are index tuples (lines..., position): few, so gathers are cheap.
    found = _kept(x, np.nonzero(edge), change, size, lo, cfg)
    count, total = len(found[-1]), float(size[found].sum())
    if cfg.stair_max_step > cfg.max_step:
        big = np.nonzero(peak & (size > cfg.max_step) & (size <= cfg.stair_max_step))
        big = _select(big, _flat_runs(a, big, lo, w, run, cfg.stair_flat_tolerance))
        big = _kept(x, big, change, size, lo, cfg)
        stairs = _select(big, _staircase(big, change, cfg.stair_match, cfg.stair_length))
        count, total = count + len(stairs[-1]), total + float(size[stairs].sum())
    return count, total, int(edge.size)


Index = tuple[npt.NDArray[np.intp], ...]


def _select(idx: Index, keep: npt.NDArray[np.bool_]) -> Index:
    return tuple(i[keep] for i in idx)


def _kept(x: F32, idx: Index, change: F32, size: F32, lo: int, cfg: BandingConfig) -> Index:
    """The edges of `idx` whose darker plateau is at least `dark_floor` and whose step the
    picture continues over `trend_px` on both sides."""
    w = _BAND_ZONE
    if cfg.dark_floor > 0 and len(idx[-1]):
        # Plateau levels: pixel q-w before the transition, q+w+1 after it.
        q = idx[-1] + lo
        darker = np.minimum(x[(*idx[:-1], q - w)], x[(*idx[:-1], q + w + 1)])
        idx = _select(idx, darker >= cfg.dark_floor)
    if cfg.trend_px > 0 and len(idx[-1]):
        trend = _trend(x, idx, lo, w, cfg.trend_px) * np.sign(change[idx])
        idx = _select(idx, trend >= cfg.trend_share * size[idx])
    return idx


def _flat_runs(
    a: F32, idx: Index, lo: int, w: int, run: int, tolerance: float
) -> npt.NDArray[np.bool_]:
    """Which edges of `idx` (positions q = lo + index) have `run` steps of `a` below
    `tolerance` on each side of the transition q-w..q+w; looked up at the edges alone."""
    q = idx[-1] + lo
    offsets = np.concatenate([np.arange(-w - run, -w), np.arange(w + 1, w + 1 + run)])
    steps = a[(*(i[:, None] for i in idx[:-1]), q[:, None] + offsets)]
    return np.asarray((steps < tolerance).all(axis=-1), dtype=bool)


def _staircase(idx: Index, change: F32, match: float, length: int) -> npt.NDArray[np.bool_]:
    """Which large steps of `idx` (in line order) are in a staircase: at least `length` of
    them in a row along a line, each the same size as the last to within `match` and in
    the same direction. A quantised gradient steps by equal amounts, level after level;
    real edges (bars, objects) by unequal ones, and a graphic's pair of equal steps is
    not a staircase."""
    c = change[idx]
    s = np.abs(c)
    if len(s) < 2:
        return np.zeros(s.shape, dtype=bool)
    line = np.ravel_multi_index(idx[:-1], change.shape[:-1]) if change.ndim > 1 else 0 * s
    pair = (
        (line[1:] == line[:-1])
        & (np.sign(c[1:]) == np.sign(c[:-1]))
        & (np.abs(s[1:] - s[:-1]) <= match * np.maximum(s[1:], s[:-1]))
    )
    # Runs of consecutive matching pairs: a run of r pairs links r + 1 steps.
    bounds = np.diff(np.concatenate([[0], pair.astype(np.int8), [0]]))
    starts, ends = np.nonzero(bounds == 1)[0], np.nonzero(bounds == -1)[0]
    long = ends - starts + 1 >= length
    delta = np.zeros(s.shape[0] + 1, dtype=np.int32)
    np.add.at(delta, starts[long], 1)
    np.add.at(delta, ends[long] + 1, -1)
    return np.asarray(np.cumsum(delta)[:-1] > 0, dtype=bool)


def _trend(x: F32, idx: tuple[npt.NDArray[np.intp], ...], lo: int, gap: int, span: int) -> F32:
    """At band edges `idx` (step q = lo + idx[-1]: pixel q to q + 1, along the lines of `x`),
    the mean of the `span` pixels from q + gap + 1 on minus that of the `span` pixels up to
    q - gap: the level change across the transition, in its context. Windows are clipped at
    the ends of the lines."""
    length = x.shape[-1]
    zero = np.zeros((*x.shape[:-1], 1), dtype=np.float64)
    c = np.concatenate([zero, np.cumsum(x, axis=-1, dtype=np.float64)], axis=-1)
    q = idx[-1] + lo
    a0 = q + gap + 1
    a1 = np.minimum(a0 + span, length)
    b1 = q - gap + 1
    b0 = np.maximum(b1 - span, 0)
    lines = idx[:-1]
    after = (c[(*lines, a1)] - c[(*lines, a0)]) / (a1 - a0)
    before = (c[(*lines, b1)] - c[(*lines, b0)]) / (b1 - b0)
    return np.asarray(after - before, dtype=np.float32)


def _severity(score: float, threshold: float, full: float) -> float:
    if full <= threshold:
        return 1.0
    return float(min(1.0, max(0.0, (score - threshold) / (full - threshold))))


def _ratio_severity(score: float, threshold: float, full: float) -> float:
    """Severity linear in 1 - 1/ratio: for a ratio that grows without bound."""
    if full <= threshold:
        return 1.0
    return _severity(1.0 / threshold - 1.0 / score, 0.0, 1.0 / threshold - 1.0 / full)


def _picture_flag(
    kind: str,
    decoded: DecodedSegment,
    scored: list[tuple[LumaStrips, Scored]],
    threshold: float,
    full: float,
    min_frame_fraction: float,
    *,
    hit: Callable[[float, dict[str, float]], bool] | None = None,
    severity: Callable[[float, float, float], float] = _severity,
) -> Flag | None:
    """One flag from per-frame scores: enough frames over the threshold (and passing `hit`,
    when given), severity of their median score."""
    judged = [(s, r) for s, r in scored if r is not None]
    hits = [(s, r) for s, r in judged if r[0] >= threshold and (hit is None or hit(*r))]
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
        severity=severity(score, threshold, full),
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
    """Blocking is a property of the encode that holds over the segment: the visible-edge
    energy of all sampled frames is pooled (evidence from every frame, at 8x the positions
    of one) before the grid is compared with mid-block positions."""
    scored = [(s, r) for s, r in _scored(decoded, strips, lambda s: blockiness_score(s, cfg)) if r]
    if not scored:
        return None
    pooled = {k: float(sum(r[1][k] for _, r in scored)) for k in scored[0][1][1]}
    ratio = _grid_ratio(pooled, _DIRECTIONS, cfg.floor)
    directions = [d for d in _DIRECTIONS if pooled[f"{d}_mid_n"]]
    each = {d: _grid_ratio(pooled, (d,), cfg.floor) for d in directions}
    if ratio < cfg.threshold or min(each.values()) < cfg.min_direction_ratio:
        return None
    span = decoded.info.duration_s / max(len(decoded.frames), 1)
    start = min(s.pts_s for s, _ in scored)
    end = max(s.pts_s for s, _ in scored) + span
    looked = {g: sum(pooled[f"{d}_{g}_n"] for d in directions) for g, _, _ in _GRIDS}
    energy = {g: sum(pooled[f"{d}_{g}"] for d in directions) / looked[g] for g, _, _ in _GRIDS}
    return Flag(
        "blockiness",
        severity=_ratio_severity(ratio, cfg.threshold, cfg.full),
        start_s=start,
        duration_s=end - start,
        evidence={
            **{f"edge_energy_{g}": e for g, e in energy.items()},
            **{f"ratio_{d}": r for d, r in each.items()},
            "score": ratio,
            "threshold": cfg.threshold,
            "frames_flagged": float(sum(r[0] >= cfg.threshold for _, r in scored)),
            "frames_scored": float(len(scored)),
        },
    )


def detect_blur(
    decoded: DecodedSegment, cfg: BlurConfig, strips: Sequence[LumaStrips] | None = None
) -> Flag | None:
    return blur_flag(decoded, cfg, _scored(decoded, strips, lambda s: blur_score(s, cfg)))


def blur_flag(
    decoded: DecodedSegment, cfg: BlurConfig, scored: list[tuple[LumaStrips, Scored]]
) -> Flag | None:
    """The blur flag from the sampled frames' blur_score results."""

    def no_crisp_edge(score: float, evidence: dict[str, float]) -> bool:
        slope = evidence.get("sharp_edge_slope")
        return slope is not None and slope <= cfg.sharp_edge_slope

    return _picture_flag(
        "blur",
        decoded,
        scored,
        cfg.threshold,
        cfg.full,
        cfg.min_frame_fraction,
        hit=no_crisp_edge,
    )


def detect_noise(
    decoded: DecodedSegment, cfg: NoiseConfig, strips: Sequence[LumaStrips] | None = None
) -> Flag | None:
    scored = _scored(decoded, strips, lambda s: noise_score(s, cfg))
    return _picture_flag("noise", decoded, scored, cfg.threshold, cfg.full, cfg.min_frame_fraction)


def detect_banding(
    decoded: DecodedSegment,
    cfg: BandingConfig,
    strips: Sequence[LumaStrips] | None = None,
    combs: list[tuple[LumaStrips, Scored]] | None = None,
) -> Flag | None:
    """Band edges along lines first; where they find nothing, a posterised histogram
    (`combs`: comb_score of each frame's strips, when already taken)."""
    scored = _scored(decoded, strips, lambda s: banding_score(s, cfg))
    flag = _picture_flag(
        "banding", decoded, scored, cfg.threshold, cfg.full, cfg.min_frame_fraction
    )
    if flag is not None or cfg.comb_mass <= 0:
        return flag
    if combs is None:
        combs = _scored(decoded, strips, lambda s: comb_score(s, cfg))
    # all of a frame on the teeth is a picture of few levels: severity 1 from 3x the threshold
    return _picture_flag(
        "banding",
        decoded,
        combs,
        cfg.comb_mass,
        min(1.0, 3 * cfg.comb_mass),
        cfg.min_frame_fraction,
    )


_COMB_PAD = 12


def comb_score(s: LumaStrips, cfg: BandingConfig) -> Scored:
    """Share of the frame's pixels on the teeth of an evenly spaced comb in its luma
    histogram (0 when the peaks are too few, too far apart or not evenly spaced).

    A peak is a histogram bin that is the largest within 3 codes, holds at least 0.3% of
    the pixels, and whose tooth (the bin and its two neighbours) holds 3x what the bins
    4-10 codes away on both sides hold per bin: a level the picture piles up on, not the
    top of a smooth hill. Every other line of the row strips is read.
    """
    luma = s.rows[:, ::2]
    if luma.size == 0:
        return None
    # gray from 8-bit RGB lies in [0, 255]: rounding is adding a half and truncating
    hist = np.bincount((luma + 0.5).astype(np.uint8).ravel(), minlength=256)
    total = float(luma.size)
    o = _COMB_PAD
    pad = np.zeros(256 + 2 * o)
    pad[o : o + 256] = hist
    cs = np.zeros(len(pad) + 1)
    np.cumsum(pad, out=cs[1:])
    here = pad[o : o + 256]
    top = pad[o - 3 : o + 253].copy()  # the largest bin within 3 codes
    for k in range(-2, 4):
        np.maximum(top, pad[o + k : o + k + 256], out=top)
    tooth = cs[o + 2 : o + 258] - cs[o - 1 : o + 255]
    ring = (cs[o - 3 : o + 253] - cs[o - 10 : o + 246]) + (
        cs[o + 11 : o + 267] - cs[o + 4 : o + 260]
    )
    peak = (
        (here == top)
        & (here > pad[o - 1 : o + 255])  # one peak per plateau of equal bins
        & (here >= 0.003 * total)
        & (tooth >= 3.0 * 3.0 * ring / 14.0)
    )
    where = np.flatnonzero(peak)
    mass = float(tooth[where].sum()) / total
    evidence = {"comb_mass": mass, "comb_teeth": float(len(where)), "comb_period": 0.0}
    if len(where) < cfg.comb_teeth:
        return 0.0, evidence
    gaps = np.diff(where).astype(np.float64)
    period = float(np.median(gaps))
    evidence["comb_period"] = period
    whole = np.abs(gaps / period - np.rint(gaps / period)) * period <= 2.0
    if period > cfg.comb_max_period or float(whole.mean()) < cfg.comb_regularity:
        return 0.0, evidence
    return mass, evidence


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
        return self.examine(decoded)[0]

    def examine(self, decoded: DecodedSegment) -> tuple[list[Flag], dict[str, float]]:
        """The flags of every enabled detector, and the raw measures (MEASURES) that were
        taken, flagged or not: what a rendition's own recent level is made of."""
        cfg = self.config
        measures: dict[str, float] = {}
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
                parts = [(s, blur_parts(s, cfg.blur)) for s in strips]
                found.append(blur_flag(decoded, cfg.blur, [(s, r) for s, (r, _) in parts]))
                effects = [r[0] for _, (r, _) in parts if r is not None]
                if effects:
                    measures["blur_effect"] = float(np.median(effects))
                fractions = [f for _, (_, f) in parts if f is not None]
                if fractions:
                    fraction = max(float(np.median(fractions)), EDGE_FLOOR)
                    measures["edge_loss"] = -math.log2(fraction)
            if cfg.noise.enabled:
                found.append(detect_noise(decoded, cfg.noise, strips))
            if cfg.banding.enabled:
                combs = _scored(decoded, strips, lambda s: comb_score(s, cfg.banding))
                found.append(detect_banding(decoded, cfg.banding, strips, combs))
                masses = [r[1]["comb_mass"] for _, r in combs if r is not None]
                if masses:
                    measures["comb_mass"] = float(np.median(masses))
        return [f for f in found if f is not None], measures

    def score_one(self, decoded: DecodedSegment) -> Verdict:
        seg = decoded.segment
        flags, measures = self.examine(decoded)
        extra: dict[str, Any] = (
            {MEASURES_KEY: {k: round(v, 4) for k, v in measures.items()}} if measures else {}
        )
        if self.config.freeze.enabled and (found := edges(decoded, self.config.freeze)):
            extra[EDGES_KEY] = found
        return Verdict(
            seg.segment_id,
            seg.stream,
            seg.rendition,
            seg.seq,
            None,
            None,
            (),
            tuple(flags),
            (f"{self.name}@{self.version}",),
            extra,
        )

    def score(self, segments: Sequence[DecodedSegment]) -> list[Verdict]:
        return [self.score_one(d) for d in segments]

    def close(self) -> None:
        pass

"""Screen side: turn an escalated verdict and its decoded segment into an EscalationRequest.

Needs only PyAV (core): no Pillow, no torch, so the screen role stays light.
"""

from __future__ import annotations

import time

import numpy as np
import numpy.typing as npt
from pydantic import Field

from ingest.config import StrictModel
from ingest.types import DecodedSegment
from scorers.types import Verdict
from scorers.vlm.images import encode_jpeg, spread
from scorers.vlm.types import MAX_FRAMES, EscalationRequest, RequestError


class FramesConfig(StrictModel):
    max_frames: int = Field(
        8,
        ge=1,
        le=MAX_FRAMES,
        description="Most sampled frames sent per escalation (evenly spread, the key frame kept).",
    )
    max_side: int = Field(
        768,
        ge=64,
        le=4096,
        description="Frames are downscaled so their longer side is at most this many pixels "
        "(Qwen2.5-VL's cost grows with pixels; 768 keeps blocking and noise visible).",
    )
    qscale: int = Field(
        3, ge=2, le=31, description="JPEG quantiser, FFmpeg's -q:v: 2 (best) to 31 (smallest)."
    )
    max_bytes: int = Field(
        700_000,
        ge=10_000,
        le=6 * 1024 * 1024,
        description="Budget for the request's JPEG bytes: over it, frames are dropped (the key "
        "frame last), then re-encoded smaller. 700 kB stays under Kafka's default 1 MB "
        "message limit after base64.",
    )


def key_frame_index(verdict: Verdict, n_frames: int) -> int:
    """The worst frame by the per-frame MOS when it matches the frames, else the middle one."""
    if len(verdict.frame_mos) == n_frames and n_frames:
        return int(np.argmin(verdict.frame_mos))
    return n_frames // 2


def make_request(
    decoded: DecodedSegment,
    verdict: Verdict,
    reason: str,
    config: FramesConfig | None = None,
    reference: npt.NDArray[np.uint8] | None = None,
    reference_label: str | None = None,
) -> EscalationRequest:
    """Build the message for vqmon.escalations, within config.max_bytes.

    `reference` is an RGB picture known to be good (the last good segment of the rendition,
    or a sibling rendition of this segment) for the comparison task.
    """
    cfg = config or FramesConfig()
    frames = decoded.frames
    if not frames:
        raise RequestError(f"{verdict.segment_id}: no sampled frames to send")
    key = key_frame_index(verdict, len(frames))
    count = min(len(frames), cfg.max_frames)
    side, qscale = cfg.max_side, cfg.qscale
    while True:
        chosen = pick_frames(len(frames), key, count)
        jpegs = [encode_jpeg(frames[i].rgb, side, qscale) for i in chosen]
        ref = None if reference is None else encode_jpeg(reference, side, qscale)
        size = sum(map(len, jpegs)) + len(ref or b"")
        if size <= cfg.max_bytes:
            break
        if count > 1:
            count -= 1
        elif side > 128:
            side, qscale = side * 3 // 4, min(31, qscale + 3)
        else:
            raise RequestError(
                f"{verdict.segment_id}: one {side}-px frame is {size} bytes, over "
                f"frames.max_bytes={cfg.max_bytes}"
            )
    return EscalationRequest(
        segment_id=verdict.segment_id,
        stream=verdict.stream,
        rendition=verdict.rendition,
        seq=verdict.seq,
        verdict=verdict.to_json(),
        frames=tuple(jpegs),
        key_frame=chosen.index(key),
        frame_pts_s=tuple(frames[i].pts_s for i in chosen),
        reference=ref,
        reference_label=reference_label,
        reason=reason,
        created_at=time.time(),
    )


def pick_frames(n: int, key: int, count: int) -> list[int]:
    """`count` of range(n) evenly spread, the one nearest `key` replaced by it."""
    chosen = spread(n, count)
    if key not in chosen:
        nearest = min(range(len(chosen)), key=lambda j: abs(chosen[j] - key))
        chosen[nearest] = key
    return sorted(chosen)

"""Sample verdicts and escalation requests for the VLM tests."""

from __future__ import annotations

import numpy as np

from scorers.types import Flag, Verdict
from scorers.vlm.images import encode_jpeg
from scorers.vlm.types import EscalationRequest


def picture(seed: int, h: int = 72, w: int = 128) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([x * 2, y * 3, (x + y)], axis=-1) % 256
    return (base + rng.integers(0, 40, (h, w, 3))).clip(0, 255).astype(np.uint8)


def verdict(seq: int = 7, flags: tuple[Flag, ...] = (), mos: float | None = 2.1) -> Verdict:
    return Verdict(
        f"news/720p/{seq}",
        "news",
        "720p",
        seq,
        mos,
        None if mos is None else mos - 0.3,
        (2.4, 1.8, 2.2),
        flags,
        ("artifacts@1.1", "distilled@2.1"),
        degradation={"clean": 0.1, "compression": 0.7, "blur": 0.2},
    )


def request(seq: int = 7, frames: int = 3, reference: bool = True) -> EscalationRequest:
    flags = (Flag("blockiness", 0.62, 0.0, 2.0, {"ratio": 1.9}),)
    v = verdict(seq, flags)
    return EscalationRequest(
        v.segment_id,
        v.stream,
        v.rendition,
        v.seq,
        v.to_json(),
        tuple(encode_jpeg(picture(seq * 10 + i)) for i in range(frames)),
        key_frame=min(1, frames - 1),
        frame_pts_s=tuple(0.5 * i for i in range(frames)),
        reference=encode_jpeg(picture(999)) if reference else None,
        reference_label="news/720p/6" if reference else None,
        reason="flag:blockiness",
        created_at=1732400000.5,
    )

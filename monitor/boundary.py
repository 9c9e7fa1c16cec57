"""A picture that stops at a segment boundary.

The freeze detector calls a still run `stopped` when it saw the picture move before it
held (scorers.artifacts._moved_before): a stuck encoder or a lost feed held on its last
frame, news even on a rendition whose stills are its habit. A hold that begins in a
segment's first frames (before scorers.artifacts.MOTION_FRAMES) has too little motion
before it in its own segment to judge: whether the picture stopped is the previous
segment's to say. The artifacts scorer puts each segment's edges
in its verdict (`extra["edges"]`: the first and last frames' thumbnails, and whether the
picture moved up to its end); the screen role hands a job the edge its rendition's
previous segment ended on (`Edge`, when that segment was screened before the job left),
and the worker marks the freeze `stopped` when that segment moved up to its end and this
one begins on the picture it ended on and holds from one of its first frames
(`held_across`). A cut to a
still shot at the boundary holds another picture, and a still shot that goes on held
still before it: neither is a stop.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np

from ingest.decode import THUMB
from scorers.artifacts import EDGES_KEY
from scorers.types import Verdict

SAME_PICTURE = 6.0
"""The largest mean absolute difference (8-bit codes) between the thumbnails of a segment's
last frame and the next one's first that still shows one picture going on: the held frame
coded again at the next segment's keyframe (0.25 on a synthetic scene), or a frame's
motion (realset's camera over 18 training pictures: 0.05-2.34; a synthetic scene panning
3 pixels a frame: 3.6). Cuts to a still of another of those pictures: 14.5-122.5."""


@dataclass(frozen=True, slots=True)
class Edge:
    """What a rendition's segment ended on: its number, its last frame's thumbnail (the
    base64 text the verdict carried) and whether the picture moved up to its end."""

    seq: int
    last: str
    moving: bool


def _thumb(text: Any) -> np.ndarray | None:
    """A thumbnail from a verdict's edges, None when it is not one (a verdict off the
    topic may hold anything)."""
    if not isinstance(text, str) or len(text) > 4 * THUMB * THUMB:
        return None
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None
    if len(raw) != THUMB * THUMB:
        return None
    return np.frombuffer(raw, dtype=np.uint8).astype(np.float32)


def edge_of(v: Verdict) -> Edge | None:
    """The edge a verdict's segment ended on, None without one."""
    got = v.extra.get(EDGES_KEY)
    if not isinstance(got, dict) or _thumb(got.get("last")) is None:
        return None
    return Edge(v.seq, got["last"], got.get("moving") == 1.0)


def held_across(v: Verdict, prev: Edge | None) -> Verdict:
    """`v` with its freeze marked stopped (evidence `stopped` and `held_across` 1.0) when
    the rendition's previous segment `prev` (seq one before) moved up to its end, `v`
    begins on the picture it ended on, and holds from one of its first frames (evidence
    `early`); else `v` unchanged."""
    if prev is None or not prev.moving or v.seq != prev.seq + 1:
        return v
    got = v.extra.get(EDGES_KEY)
    first = _thumb(got.get("first")) if isinstance(got, dict) else None
    last = _thumb(prev.last)
    if first is None or last is None:
        return v
    flags = list(v.flags)
    for i, f in enumerate(flags):
        if f.kind != "freeze" or f.evidence.get("early") != 1.0 or f.evidence.get("stopped"):
            continue
        if float(np.mean(np.abs(first - last))) > SAME_PICTURE:
            return v  # another picture: a cut to a still, not a stop
        evidence = {**f.evidence, "stopped": 1.0, "held_across": 1.0}
        flags[i] = dataclasses.replace(f, evidence=evidence)
        return dataclasses.replace(v, flags=tuple(flags))
    return v

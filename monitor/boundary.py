"""A picture that stops at a segment boundary.

The freeze detector calls a still run `stopped` when it saw the picture move before it
held (scorers.artifacts._moved_before): a stuck encoder or a lost feed held on its last
frame, news even on a rendition whose stills are its habit. A hold that begins in a
segment's first frames (before scorers.artifacts.MOTION_FRAMES) has too little motion
before it in its own segment to judge: whether the picture stopped is the previous
segment's to say. The artifacts scorer puts each segment's edges in its verdict
(`extra["edges"]`: the first and last frames' thumbnails, and whether the picture moved
up to its end: a cut or a fade into a still in its last frames is no motion), and marks
such a hold `early` when its first frames show one picture going on (no cut to another
among them). The screen role hands a job the edge its rendition's segment seq - 1 ended
on (`Edge`, when that segment was decided before the job left), and the worker marks an
early freeze `stopped` (`held_across`) when that segment moved up to its end and this
one begins on the picture it ended on. A cut to a still shot at the boundary holds
another picture, and a still shot that goes on held still before it: neither is a stop.

What it does not see: a hold after a cheap screen (adaptive screening reads keyframes
alone, so a cheap verdict has no last frame and its rendition's next segment no edge);
after a gap in the rendition's numbering, or on a feed whose segments carry no `seq`
header (the Kafka offset stands in, and a rendition's offsets are not consecutive); and
after a restart, until a segment of the rendition has been decided.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np

from ingest.decode import THUMB
from scorers.artifacts import EDGES_KEY, SAME_PICTURE
from scorers.types import Verdict


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
    """The edge a verdict's segment ended on, None without one (a cheap screen, which read
    keyframes alone, has none)."""
    got = v.extra.get(EDGES_KEY)
    if not isinstance(got, dict) or _thumb(got.get("last")) is None:
        return None
    moving = got.get("moving")
    return Edge(v.seq, got["last"], type(moving) is float and moving == 1.0)


def held_across(v: Verdict, prev: Edge | None) -> Verdict:
    """`v` with its freeze marked stopped (evidence `stopped` and `held_across` 1.0) when
    the rendition's previous segment `prev` (seq one before) moved up to its end, `v`
    begins on the picture it ended on, and holds from one of its first frames (evidence
    `early`); else `v` unchanged."""
    if prev is None or not prev.moving or v.seq != prev.seq + 1:
        return v
    early = [i for i, f in enumerate(v.flags) if f.kind == "freeze" and _early(f.evidence)]
    if not early:
        return v
    got = v.extra.get(EDGES_KEY)
    first = _thumb(got.get("first")) if isinstance(got, dict) else None
    last = _thumb(prev.last)
    if first is None or last is None or float(np.mean(np.abs(first - last))) > SAME_PICTURE:
        return v  # no thumbnails, or another picture: a cut to a still, not a stop
    flags = list(v.flags)
    f = flags[early[0]]
    flags[early[0]] = dataclasses.replace(
        f, evidence={**f.evidence, "stopped": 1.0, "held_across": 1.0}
    )
    return dataclasses.replace(v, flags=tuple(flags))


def _early(evidence: dict[str, Any]) -> bool:
    """A freeze held from a segment's first frames that its own segment did not call
    stopped (scorers.artifacts.detect_freeze's evidence)."""
    early = evidence.get("early")
    return type(early) is float and early == 1.0 and evidence.get("stopped") == 0.0

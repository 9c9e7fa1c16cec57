"""The messages scorers make: Flag and Verdict. Scorers know nothing of Kafka or the judge."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

from ingest.types import DecodedSegment


def finite_number(x: object) -> float | None:
    """A JSON number as a finite float, else None (text, bool, NaN, infinities and integers
    beyond a float's range): for fields read back from records another release or a
    hostile producer wrote."""
    if isinstance(x, bool) or not isinstance(x, int | float):
        return None
    try:
        value = float(x)
    except OverflowError:
        return None
    return value if math.isfinite(value) else None


FLAG_KINDS = ("black", "freeze", "blockiness", "blur", "noise", "banding", "corruption")


@dataclass(frozen=True, slots=True)
class Flag:
    """One artifact found in a segment."""

    kind: str
    severity: float
    """0 (not there) to 1 (as bad as it gets)."""
    start_s: float
    """Media time where the affected span starts."""
    duration_s: float
    evidence: dict[str, float] = field(default_factory=dict)
    """The numbers the decision was made from, for people and dashboards."""

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "severity": round(self.severity, 4),
            "start_s": round(self.start_s, 3),
            "duration_s": round(self.duration_s, 3),
            "evidence": {k: round(v, 5) for k, v in self.evidence.items()},
        }


@dataclass(frozen=True, slots=True)
class Verdict:
    """What the scorers concluded about one segment.

    `mos` is on the papers' 1-5 scale (None when no scorer in the chain predicts
    quality, e.g. artifacts alone); `mos_low` is a low percentile of the per-frame
    scores so a short bad run is not averaged away. `scorers` names every scorer
    and model version that contributed ("name@version").
    """

    segment_id: str
    stream: str
    rendition: str
    seq: int
    mos: float | None
    mos_low: float | None
    frame_mos: tuple[float, ...]
    flags: tuple[Flag, ...]
    scorers: tuple[str, ...]
    extra: dict[str, Any] = field(default_factory=dict)
    """Scorer-specific outputs (e.g. the execution provider), JSON-serialisable."""
    degradation: dict[str, float] = field(default_factory=dict)
    """Probability of each degradation class (clean, compression, blur, ...), when a model
    predicts them; empty otherwise."""
    mode: str = "full"
    """How the segment was screened: "full", "cheap" (keyframes and packet-level signals),
    or "promoted" (cheap signals looked wrong, so it was screened fully)."""

    @property
    def degradation_class(self) -> str | None:
        """The most likely degradation class, or None without a degradation head."""
        d = self.degradation
        return max(d, key=lambda k: d[k]) if d else None

    @classmethod
    def empty(cls, decoded: DecodedSegment, scorer: str, reason: str | None = None) -> Verdict:
        """A verdict without a score; `reason` (in extra["no_score_reason"]) says why."""
        seg = decoded.segment
        extra = {"no_score_reason": reason} if reason else {}
        return cls(
            seg.segment_id, seg.stream, seg.rendition, seg.seq, None, None, (), (), (scorer,), extra
        )

    def merge(self, other: Verdict) -> Verdict:
        """Combine two verdicts on one segment; the later quality score wins if both have one."""
        if other.segment_id != self.segment_id:
            raise ValueError(f"cannot merge verdicts of {self.segment_id} and {other.segment_id}")
        use_other = other.mos is not None
        return Verdict(
            self.segment_id,
            self.stream,
            self.rendition,
            self.seq,
            other.mos if use_other else self.mos,
            other.mos_low if use_other else self.mos_low,
            other.frame_mos if use_other else self.frame_mos,
            self.flags + other.flags,
            self.scorers + other.scorers,
            {**self.extra, **other.extra},
            other.degradation or self.degradation,
            self.mode,
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "segment_id": self.segment_id,
            "stream": self.stream,
            "rendition": self.rendition,
            "seq": self.seq,
            "mos": None if self.mos is None else round(self.mos, 4),
            "mos_low": None if self.mos_low is None else round(self.mos_low, 4),
            "frame_mos": [round(m, 4) for m in self.frame_mos],
            "flags": [f.to_json() for f in self.flags],
            "scorers": list(self.scorers),
            "mode": self.mode,
            "degradation_class": self.degradation_class,
            "degradation": {k: round(v, 4) for k, v in self.degradation.items()},
            **({"extra": self.extra} if self.extra else {}),
        }


class Scorer(Protocol):
    """A screen-path backend. Takes a batch so model backends can batch across segments."""

    name: ClassVar[str]

    @property
    def version(self) -> str: ...

    def score(self, segments: Sequence[DecodedSegment]) -> list[Verdict]: ...

    def close(self) -> None: ...


class ScorerError(Exception):
    """A scorer that cannot be built or run (missing model file, bad config): says how to fix it."""

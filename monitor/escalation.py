"""Which verdicts go to the diagnosis tier: pure policy, no Kafka, clock injected.

`EscalationPolicy.decide(verdict)` says escalate or not, with a reason (or the reason it
was dropped). Triggers: a flag at or above a severity (per kind: any corruption at all),
mos_low below a threshold or far below the rendition's recent level (rolling median),
a degradation class the head now sees far more than it did on the rendition's recent
segments (rolling median of its probability), a detector's raw measure far above the
rendition's recent level of it (edges lost), a coarse mean quantiser (the bitstream's,
where the codec exports one), a degradation head sure of a degradation, an unsure
degradation head, and a deterministic audit sample of normal segments. Limits: a
per-stream token bucket and a global budget (escalated fraction of the segments seen in
a sliding window, 5% by default). Impaired segments have priority: audits, and verdicts
whose only trigger is the unsure head (weak evidence: the head is unsure on content it
never learned, ~30% of clean synthetic segments in bench/escalation.py), use at most
`audit_budget_share` of the budget together and never take a stream's last token.
When the budget binds, the rarest evidence across the fleet goes first (Ranking).
"""

from __future__ import annotations

import hashlib
import math
import statistics
import time
from collections import Counter, OrderedDict, deque
from collections.abc import Callable, Container
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from pydantic import Field, field_validator, model_validator

from ingest.config import StrictModel
from scorers.artifacts import MEASURES, measure
from scorers.hybrid import DEGRADATIONS, LADDER_UPSCALE, mean_qp, upscale
from scorers.types import Verdict
from scorers.vlm.request import FramesConfig

T = TypeVar("T")
CLEAN = "clean"
"""The degradation head's no-degradation class (scorers/train/model.py DEGRADATIONS)."""
HEAD_CLASSES = tuple(d for d in DEGRADATIONS if d != CLEAN)
"""The degradation head's classes other than clean."""
DEGRADED_KINDS: dict[str, float | None] = {"compression": None, "blur": 0.75, "banding": 0.65}
RISE_KINDS: dict[str, float] = {"banding": 0.3, "blur": 0.4}
MEASURE_RISE: dict[str, float] = {"edge_loss": 2.3, "comb_mass": 0.3, "qp": 12.0}
RISE_MEASURES = (*MEASURES, "qp")
"""What measure_rise may judge against the rendition's own level: the artifacts scorer's raw
measures, and qp, the segment's mean frame quantiser (scorers.hybrid.mean_qp: H.264's
0-51 scale; absent for codecs that export none)."""
QP_ABOVE = 40.0
PACE_MIN_S = 2.0
"""What a young budget window adds to its age to read a pace (budget_lend_s): a common
segment's length, so the first segments of every stream, arriving together, read as one
segment's span, not as a pace they will not keep. Longer segments arriving together read
faster than they are over their first segment (6-s ones: up to three times)."""


@dataclass(frozen=True, slots=True)
class Recent:
    """What a rendition's recent segments looked like, once `recent_min` are known: the
    rolling medians the relative triggers compare a verdict with."""

    mos_low: float | None = None
    head: tuple[tuple[str, float], ...] = ()
    """(class, rolling median of the head's probability) for the rise_above_recent classes."""
    measures: tuple[tuple[str, float], ...] = ()
    """(measure, rolling median) for the measure_rise measures the rendition reported."""
    settled: tuple[tuple[str, float], ...] = ()
    """(trigger label, ceiling): the rendition's habits and ongoing events, which alone get
    an audit's priority while the verdict's flag of that label is no stronger than the
    ceiling (a habit's strongest recent hit plus habit_margin; inf otherwise). Sent to the
    worker with the job, so it makes no JPEG frames for what the limits treat as weak."""
    upscale: float | None = None
    """The rolling median of how many times the rendition is enlarged to its display (see
    by_design), from its first segment on; None before one is known."""


SOFT_RISE: dict[str, float] = {"banding": 0.2, "blur": 0.25}
SOFT_MEASURE_RISE: dict[str, float] = {"edge_loss": 1.5, "comb_mass": 0.2}


class SoftTriggers(StrictModel):
    """Lower thresholds of the relative triggers (judged against the rendition's own
    level), escalated only while the budget has room to spare (`budget_share`): what they
    catch is paid for from the budget's unused part, never from an impairment's."""

    mos_low_drop: float | None = Field(
        0.5,
        gt=0,
        le=4,
        description="mos_low this far below the rendition's rolling median (the full "
        "trigger: drop_below_recent). None: off.",
    )
    head: dict[str, float] = Field(
        default_factory=lambda: dict(SOFT_RISE),
        description="Per degradation class, a rise of the head's probability over the "
        "rendition's median (the full trigger: rise_above_recent).",
    )
    measures: dict[str, float] = Field(
        default_factory=lambda: dict(SOFT_MEASURE_RISE),
        description="Per raw detector measure, a rise over the rendition's median (the full "
        "trigger: measure_rise).",
    )
    budget_share: float = Field(
        0.8,
        ge=0,
        le=1,
        description="Soft triggers alone are escalated only while the total stays under "
        "this share of the budget (audits: audit_budget_share; a larger audit share is "
        "used for both), so a feed whose budget binds (a new deployment's first minutes) "
        "keeps the rest for impairments.",
    )

    @field_validator("head")
    @classmethod
    def _head(cls, given: dict[str, float]) -> dict[str, float]:
        return _rises("soft.head", given, HEAD_CLASSES, "degradation class", 1.0)

    @field_validator("measures")
    @classmethod
    def _measures(cls, given: dict[str, float]) -> dict[str, float]:
        return _rises("soft.measures", given, RISE_MEASURES, "measure", math.inf)


class Ranking(StrictModel):
    """When the budget binds, the strongest evidence first. A verdict's novel triggers are
    scored by how rarely each is news across the fleet: the surprisal, in bits, of the
    share of the budget window's segments on which it was a novel trigger (not a habit or
    an ongoing event), summed, so several triggers that agree score high. A
    verdict is escalated with the whole budget of its kind while the window's candidates
    that could use that share (an impairment: impairments) scoring at least as high fit
    in it, or none scores higher; a weaker one may not take the part kept back for the
    stronger ones (1 - beyond_share of the budget, in whole escalations: none of a budget
    under ten). A trigger that is news on many streams
    (every still picture looks frozen to the freeze detector) yields to rare ones (black,
    corruption) and to agreement, without a delay: the screen path never waits."""

    prior_rate: float = Field(
        0.05,
        gt=0,
        lt=1,
        description="A trigger's share of segments before the window has seen many: a "
        "daemon started cold ranks by how many triggers agree.",
    )
    prior_segments: int = Field(
        40, ge=1, description="The weight of prior_rate, in segments (10-200 all the same)."
    )
    beyond_share: float = Field(
        0.9,
        ge=0,
        le=1,
        description="The share of the budget a candidate it cannot afford may use (the "
        "window's candidates scoring at least as high, one of them higher, are more than "
        "the budget). 0.85 lost up to 1.5 points on warm fresh draws, 0.95 gained less cold.",
    )


class EscalationConfig(StrictModel):
    enabled: bool = Field(True, description="Escalate anomalies to the diagnose role.")
    flag_severity: float = Field(
        0.5, ge=0, le=1, description="A flag at or above this severity escalates."
    )
    flag_kinds: dict[str, float] = Field(
        default_factory=lambda: {"corruption": 0.0, "banding": 0.05},
        description="Per flag kind, a severity overriding flag_severity. corruption: 0.0, "
        "every corruption flag, since any concealed or missing frame is a transport fault "
        "(no clean segment of the synthetic or the real training library raises it, nor 435 "
        "clean, ladder, compression and filtered training-split segments, 154 of them HEVC; "
        "one lost frame of a 2-s segment is severity 0.04, which 0.05 let pass). banding: "
        "0.05, since no clean segment of the synthetic or the real training library raises "
        "it at all, while banding the head misses raises it at 0.15-0.3.",
    )
    mos_low_below: float | None = Field(
        2.5, ge=1, le=5, description="mos_low below this escalates (None: off)."
    )
    drop_below_recent: float | None = Field(
        0.8,
        gt=0,
        le=4,
        description="mos_low this far (MOS points) below the rendition's rolling median "
        "escalates (None: off).",
    )
    recent_window: int = Field(
        30, ge=3, le=10000, description="Segments per rendition in the rolling median."
    )
    recent_min: int = Field(
        5, ge=1, description="The median is used once it has this many segments."
    )
    degraded_above: float | None = Field(
        0.5,
        gt=0,
        le=1,
        description="The distilled degradation head's most likely class is a degradation "
        "(not 'clean') with at least this probability: escalates (None: off). Catches "
        "noise, banding and compression the detectors' flags miss.",
    )
    degraded_kinds: dict[str, float | None] = Field(
        default_factory=lambda: dict(DEGRADED_KINDS),
        description="Per degradation class, a probability overriding degraded_above (None: "
        "that class never escalates on the head alone); classes given are merged over the "
        "defaults, and degraded_above: null turns the head off altogether. Calibrated on "
        "real pictures (the real-content set's training split, bench/escalation.py "
        "--pictures --split train): the head, trained on other content, calls 66% of "
        "clean real segments 'compression' (up to 0.99), so compression escalates on the "
        "hybrid score's mos_low instead; clean real segments reach 0.73 for blur and 0.60 "
        "for banding.",
    )

    @field_validator("degraded_kinds")
    @classmethod
    def _merge_kinds(cls, given: dict[str, float | None]) -> dict[str, float | None]:
        for kind, at in given.items():
            if kind not in HEAD_CLASSES:
                raise ValueError(
                    f"degraded_kinds: {kind!r} is not a class of the degradation head; "
                    f"use one of {', '.join(HEAD_CLASSES)}"
                )
            if at is not None and not 0 < at <= 1:
                raise ValueError(f"degraded_kinds.{kind}: {at} is not a probability in (0, 1]")
        return {**DEGRADED_KINDS, **given}

    rise_above_recent: dict[str, float] = Field(
        default_factory=lambda: dict(RISE_KINDS),
        description="Per degradation class, a rise of the distilled degradation head's "
        "probability this far above the rendition's rolling median of it escalates: a "
        "change of the picture, judged against the rendition's own habit. Content the head "
        "never learned keeps a steady level (a star field photograph's banding probability "
        "sits near 0.3 in every clean segment), so an absolute threshold either fires on all "
        "of it or misses the banding injected into it. Calibrated on bench/escalation.py's "
        "synthetic library and the real-content training split ({} turns it off).",
    )

    @field_validator("rise_above_recent")
    @classmethod
    def _rise_kinds(cls, given: dict[str, float]) -> dict[str, float]:
        return _rises("rise_above_recent", given, HEAD_CLASSES, "degradation class", 1.0)

    measure_rise: dict[str, float] = Field(
        default_factory=lambda: dict(MEASURE_RISE),
        description="Per raw detector measure (the artifacts scorer's, in the verdict's "
        "extra.artifacts, taken on every segment whether flagged or not: "
        "scorers.artifacts.MEASURES; and qp, the mean frame quantiser), a rise this far "
        "above the rendition's rolling median of it escalates: a picture judged against "
        "its own detail, an encoder against its own quantiser. qp 12: a quantiser step "
        "four times the rendition's usual one, as an encoder starved of bits or set far "
        "coarser makes (heavy compression, CRF 44-51, on the real training pictures: +16 "
        "to +29; their clean segments at CRF 20-26 rise at most 7.9, the synthetic ones "
        "11.5), which a flat picture can hide from every picture measure. Calibrated on "
        "H.264 (VP9's 0-255 q-index is mapped linearly, not on the same steps); cheap "
        "verdicts (adaptive screening's keyframes) neither count in the level nor fire it. "
        "edge_loss 2.3: the picture keeps under a fifth of its usual luma edges, as a blur "
        "too strong to leave edges for the blur flag to judge does (blur of sigma 3-4.5 on "
        "a star field: edge_loss +4.6 to +8); clean segments of one picture filmed at "
        "varied crops lose at most 1.8 (bench/escalation.py's synthetic and real training "
        "libraries). A cut to a dark or flat scene raises it too; a channel that has them "
        "often makes it a habit. comb_mass 0.3: a third more of the picture's pixels piled "
        "on a few luma levels than usual, as posterised luma does whether or not the "
        "banding flag sees its levels (banding at 8-16 levels on real training pictures: "
        "+0.3 to +0.85; no clean segment of the three calibration libraries rises over "
        "0.26; on them, 1.1-1.4 points more impairments escalated in every feed mode, none "
        "fewer). blur_effect (0 sharp to 1) is also reported, with no default ({} turns "
        "this trigger off).",
    )

    @field_validator("measure_rise")
    @classmethod
    def _measures(cls, given: dict[str, float]) -> dict[str, float]:
        return _rises("measure_rise", given, RISE_MEASURES, "measure", math.inf)

    qp_above: float | None = Field(
        QP_ABOVE,
        ge=0,
        le=51,
        description="The segment's mean frame quantiser (the hybrid score's bitstream feature, "
        "on H.264's 0-51 scale) at or above this escalates: quantisation coarse enough to "
        "wipe out detail, whatever the picture scores (a no-reference score can miss it on "
        "content it never learned). Codecs that export no quantiser (HEVC) never fire it "
        "(None: off).",
    )
    unsure_below: float | None = Field(
        0.4,
        gt=0,
        le=1,
        description="The distilled degradation head is unsure when its top probability "
        "(the verdict's `degradation` distribution) is below this; that escalates with an "
        "audit's priority (weak evidence) (None: off).",
    )
    habitual_share: float | None = Field(
        0.05,
        gt=0,
        le=1,
        description="A trigger that fired on at least this share of recent_window (rounded "
        "up: 2 of 30 segments by default) among the rendition's last segments is that "
        "rendition's habit, not an anomaly: a static slate always looks frozen, a soft picture "
        "always looks blurred to the degradation head. Alone, habitual triggers get an "
        "audit's priority, so the budget goes to what changed: a trigger is escalated twice "
        "a window, then yields (None: off). 3 of 30 before: a channel that cuts between still "
        "and moving shots of a picture spent the budget on its stills' third freeze flags "
        "(bench/escalation.py on real training pictures, fresh draws: 58% -> 67% of "
        "impairments escalated; synthetic and 10-segment shots unchanged).",
    )
    habit_margin: float | None = Field(
        0.1,
        ge=0,
        le=1,
        description="A habitual flag stronger than its strongest hit in the rendition's "
        "recent window by more than this is not the habit but what changed, and escalates "
        "as an impairment: a channel whose camera holds still for half a segment now and "
        "then (freeze 0.4-0.6) and then stops for the whole segment (0.98). Flags only "
        "(their severity); other triggers stay habits. On bench/escalation.py's real "
        "training library, 10-segment shots after a warm-up: 89.5% -> 90.1% of "
        "impairments escalated (96.4% of the visible ones), fresh draws 87.4% -> 89.5%, "
        "the escalated fraction unchanged; 0.05-0.15 all the same, 0.3 no gain; the "
        "synthetic library unchanged (None: a habit is a habit at any severity).",
    )
    habit_runs: bool = Field(
        True,
        description="A trigger whose hits in the window form one run of at least "
        "recent_min segments that has ended is a past event (a still shot that is over), "
        "not the rendition's habit: a habit is a trigger that comes back or is still "
        "firing; and such a still shot sets no ceiling for the shorter holds that are the "
        "habit (a full stop after it is news, not its peak; no calibration library moved). "
        "Without it, a channel that held one still shot for 20 s made every freeze of the "
        "next minute habitual. On bench/escalation.py's real training libraries, warm "
        "10-segment shots: +0.4 to +1.6 points of impairments escalated (three real "
        "libraries; the synthetic one unchanged), at +0.3 points escalated; a daemon "
        "started cold on fresh draws: unchanged on three, -1.3 on one (False: every "
        "trigger seen on habitual_share of the window is a habit).",
    )
    stops: bool = Field(
        True,
        description="A freeze flag on a picture seen moving before it held (the artifacts "
        "detector's evidence `stopped`) adds its own trigger, stopped:freeze: a rendition "
        "whose stills are its habit (a slate, still shots) holds its pictures from the "
        "segment's start, and a habit of those does not cover a picture that moves and then "
        "stops (a stuck encoder, a lost feed held on its last frame). The stop's freeze flag "
        "counts in the freeze habit and events as before; a stop's event goes on while the "
        "picture stays still; stops that come back are a habit of their own; and a stop "
        "ranks by its own rate, not as two triggers that agree. On bench/escalation.py's "
        "real training libraries (10 feeds in each of four modes): -0.1 to +0.2 points of "
        "impairments escalated on the first, +0.3 to +2.5 on the second, the synthetic "
        "library unchanged; 3 of their 864 clean segments are stops (cuts from a pan to a "
        "still window too gentle for the freeze detector's cut_ratio). False: a stop is a "
        "freeze like any other.",
    )
    once_per_event: bool = Field(
        True,
        description="A trigger that was escalated on one of the rendition's segments and has "
        "fired on every segment since is the same event going on (a freeze that lasts, a "
        "static slate): alone, it gets an audit's priority, so a long event is explained "
        "once and the budget stays for the next one. A trigger whose first segment was "
        "refused is not an escalated event and keeps its priority; a flag stronger than the "
        "event's escalated severity by more than habit_margin is news (a camera's half-"
        "segment hold escalated, then the picture stops for whole segments; on "
        "bench/escalation.py's real training libraries, warm 10-segment shots: +0.2 and "
        "+0.3 points of impairments escalated, other feeds -0.1 to +0.3, the escalated "
        "fraction unchanged).",
    )
    soft: SoftTriggers | None = Field(
        default_factory=SoftTriggers,
        description="Soft triggers: the relative triggers at lower thresholds, each only "
        "where its full one did not fire, escalated with their own priority between an "
        "impairment's and an audit's (budget_share). On bench/escalation.py's four "
        "calibration libraries (three real, one synthetic): warm 10-segment shots +2.2, "
        "+2.8, +1.0 and +0.1 points of impairments escalated, at 3.1-4.1% escalated; "
        "cold fresh draws unchanged (0 to +0.4); a share of 0.9 lost up to 0.8 cold, 0.6 "
        "gained less. None: off.",
    )
    rank: Ranking | None = Field(
        default_factory=Ranking,
        description="Rank what is escalated when the budget binds (see Ranking). On "
        "bench/escalation.py's three real calibration libraries, a daemon started cold: "
        "-0.9 to +2.8 points of impairments escalated on fresh draws, -0.3 to 0 on "
        "10-segment shots; a running one (whole budget windows): 0 to +0.4 on fresh draws, "
        "unchanged on shots; the synthetic library unchanged; on the held-out pictures, cold "
        "fresh draws +9.3 and +11.7. None: first come, first served.",
    )
    audit_fraction: float = Field(
        0.005,
        ge=0,
        le=1,
        description="Share of normal segments escalated for audit, chosen by a hash of the "
        "segment id (deterministic: a redelivered segment decides the same way).",
    )
    stream_rate_per_s: float = Field(
        0.1, gt=0, description="Per-stream token bucket refill: escalations per second."
    )
    stream_burst: int = Field(5, ge=1, description="Per-stream token bucket size.")
    budget_fraction: float = Field(
        0.05,
        gt=0,
        le=1,
        description="Most escalated / seen segments over the sliding window (all streams).",
    )
    budget_window_s: float = Field(300.0, gt=0, description="The budget's sliding window.")
    budget_lend_s: float = Field(
        15.0,
        ge=0,
        description="While the budget window is younger than budget_window_s (a daemon "
        "started cold, with no verdicts to read back, or a feed back after a silence longer "
        "than the window), the budget is budget_fraction of what the segments seen so far "
        "make over this many seconds more at the same pace (read over its age plus "
        f"{PACE_MIN_S:g} s), at most a full window's: a new deployment's renditions have "
        "no habits yet, their first clean stills and bands trigger, and a budget of 5% of "
        "the few segments seen would refuse the faults among them. Over its first window "
        "the daemon still escalates at most budget_fraction of a window at that pace "
        "(segments of up to 2 s; longer ones arriving together, a little more at first); "
        "stopped early, more (lending 15 s, 16 s in: up to 5% of 28 s of segments). It "
        "never lends less than nothing, and never more as time alone passes. On "
        "bench/escalation.py's real training libraries started cold: +1.7 to +1.9 points "
        "of recall (fresh draws and 10-segment shots, 30 feeds), the escalated fraction "
        "+0.15 to +0.2 points; 45 s and more spend the window's first seconds on clean segments "
        "and lose recall. 0: 5% of what was seen, from the first segment.",
    )
    budget_floor: int = Field(
        2,
        ge=0,
        description="Escalations always allowed per window, so a quiet start or a small "
        "feed can still escalate.",
    )
    audit_budget_share: float = Field(
        0.5,
        ge=0,
        le=1,
        description="Audits are made only while total escalations stay under this share of "
        "the budget: the rest is kept for impaired segments.",
    )
    max_keys: int = Field(
        10000, ge=1, description="Streams and renditions tracked (least recent forgotten)."
    )
    warm_start_segments: int = Field(
        3000,
        ge=0,
        description="On start, the screen role reads this many of the latest verdicts of "
        "each vqmon.verdicts partition back into the renditions' rolling state (medians, "
        "measures, habits), and those of the last budget_window_s into the budget window "
        "(counted per rendition once this member screens it), so a restarted daemon judges "
        "and spends as it did before, not from nothing. 0: start cold. A topic that cannot "
        "be read is logged and the daemon starts cold.",
    )
    frames: FramesConfig = Field(
        default_factory=FramesConfig,
        description="The JPEG frames an escalation carries (made in the screen workers, only "
        "for segments a trigger or the audit sample picks).",
    )

    @model_validator(mode="after")
    def _soft_below_full(self) -> EscalationConfig:
        """A soft trigger lowers a full one: below it (one whose full trigger is off never
        fires)."""
        soft = self.soft
        if soft is None:
            return self
        lowered = [("mos_low_drop", soft.mos_low_drop, self.drop_below_recent)]
        lowered += [(f"head.{k}", x, self.rise_above_recent.get(k)) for k, x in soft.head.items()]
        lowered += [
            (f"measures.{k}", x, self.measure_rise.get(k)) for k, x in soft.measures.items()
        ]
        for name, low, full in lowered:
            if low is not None and full is not None and low >= full:
                raise ValueError(
                    f"soft.{name}: {low} is not below its full trigger's {full}, so it could "
                    "never fire; lower it, or leave it out"
                )
        return self


def _rises(
    field: str, given: dict[str, float], known: tuple[str, ...], what: str, most: float
) -> dict[str, float]:
    """A config's {name: rise} checked: known names, rises in (0, most]."""
    for name, rise in given.items():
        if name not in known:
            raise ValueError(f"{field}: unknown {what} {name!r} (known: {', '.join(known)})")
        if not 0 < rise <= most:
            raise ValueError(f"{field}.{name}: {rise} is not in (0, {most:g}]")
    return given


Kind = Literal["impaired", "soft", "unsure", "audit"]
Room = Literal["all", "soft", "impaired", "none"]
WEAK = ("degradation_unsure",)
"""Triggers that alone get an audit's priority, not an impairment's."""
STOPPED = "stopped:freeze"
"""The trigger of a freeze on a picture seen moving before it held (EscalationConfig.stops)."""
STOPPED_LABEL, FREEZE_LABEL = "stopped_freeze", "flag_freeze"
RANKED: tuple[Kind, ...] = ("impaired", "soft")
"""The kinds of verdict that are ranked when the budget binds (see Ranking)."""


@dataclass(frozen=True, slots=True)
class Decision:
    escalate: bool
    reason: str
    """Why it was escalated ("flag:black>=0.50,mos_low<2.50", "audit") or "normal"."""
    kind: Kind | None = None
    dropped: str | None = None
    """Set when a trigger fired but it was refused: "stream_rate", "budget" or "ranked"
    (the limits; ranked: the budget's last part is kept for rarer evidence, see Ranking),
    "no_frames" (the limits had room, but the worker made no request: nothing is spent)."""


def triggers(v: Verdict, cfg: EscalationConfig, recent: Recent | None) -> list[str]:
    """Reasons this verdict looks impaired (empty: normal). Pure."""
    out = []
    recent_median = recent.mos_low if recent is not None else None
    for f in v.flags:
        at = cfg.flag_kinds.get(f.kind, cfg.flag_severity)
        if f.severity >= at:
            out.append(f"flag:{f.kind}>={at:.2f}")
            if cfg.stops and f.kind == "freeze" and f.evidence.get("stopped"):
                out.append(STOPPED)
    low = v.mos_low
    if low is not None and cfg.mos_low_below is not None and low < cfg.mos_low_below:
        out.append(f"mos_low<{cfg.mos_low_below:.2f}")
    if (
        low is not None
        and recent_median is not None
        and cfg.drop_below_recent is not None
        and low < recent_median - cfg.drop_below_recent
    ):
        out.append(f"mos_low_drop>{cfg.drop_below_recent:.2f}")
    qp = mean_qp(v.extra) if cfg.qp_above is not None else None
    if qp is not None and cfg.qp_above is not None and qp >= cfg.qp_above:
        out.append(f"qp>={cfg.qp_above:.1f}")
    head = v.degradation
    if head:
        top = max(head, key=lambda k: head[k])
        p = head[top]
        need = cfg.degraded_above
        if need is not None:  # None turns the head off, per-class overrides included
            need = cfg.degraded_kinds.get(top, need)
        if need is not None and top != CLEAN and p >= need:
            out.append(f"degraded:{top}>={need:.2f}")
        if cfg.unsure_below is not None and p < cfg.unsure_below:
            out.append(f"degradation_unsure<{cfg.unsure_below:.2f}")
        for kind, median in recent.head if recent is not None else ():
            rise = cfg.rise_above_recent.get(kind)
            if rise is not None and head.get(kind, 0.0) - median >= rise:
                out.append(f"rise:{kind}>={rise:.2f}")
    for name, median in recent.measures if recent is not None else ():
        rise = cfg.measure_rise.get(name)
        value = _measure(v, name)
        if rise is not None and value is not None and value - median >= rise:
            out.append(f"rise:{name}>={rise:.2f}")
    if recent is not None:
        out += _soft(v, cfg, recent, out)
    return out


def _measure(v: Verdict, name: str) -> float | None:
    """A RISE_MEASURES value of a verdict, None when it was not taken. A cheap verdict has
    no qp: its decode read keyframes alone, whose quantiser is not the segment's mean (a
    rendition screened cheaply most of the time would judge its full segments against a
    level several steps off)."""
    if name == "qp":
        return None if v.mode == "cheap" else mean_qp(v.extra)
    return measure(v.extra, name)


LADDER_TOLERANCE = 0.5
"""log2 of the enlargement a rung may differ from its usual one by and still be as the
ladder made it (a factor of 1.4 in area)."""


def by_design(reasons: list[str], v: Verdict, recent: Recent | None) -> list[str]:
    """`reasons` less what the ladder does to this rendition: the head's "scaling" on a rung
    judged enlarged to its display as it usually is (every rung below the top says it on
    every segment, saturated near 1: it tells nothing about the rung). A daemon started cold
    spent its first escalations on them, and real faults seconds later found the budget
    gone; later, each came back as news after any break (a black run). A rung enlarged
    more than it usually is (a top rung coded smaller, a lower rung's encoder falling to a
    smaller size) still escalates on it."""
    times = upscale(v.extra)
    if times is None or times < LADDER_UPSCALE:
        return reasons
    usual = recent.upscale if recent is not None else None
    if usual is not None and abs(math.log2(times / usual)) >= LADDER_TOLERANCE:
        return reasons
    return [r for r in reasons if not r.startswith("degraded:scaling>")]


def _soft(v: Verdict, cfg: EscalationConfig, recent: Recent, fired: list[str]) -> list[str]:
    """The soft triggers (EscalationConfig.soft) whose full trigger is on and not among
    `fired`."""
    soft = cfg.soft
    if soft is None:
        return []
    out = []
    full = {reason_label(r) for r in fired}
    drop = soft.mos_low_drop
    if drop is not None and cfg.drop_below_recent is not None and "mos_low_drop" not in full:
        low, median = v.mos_low, recent.mos_low
        if low is not None and median is not None and low < median - drop:
            out.append(f"soft:mos_low_drop>{drop:.2f}")
    head = v.degradation or {}
    for kind, at in recent.head if head else ():  # the full rise_above_recent classes
        rise = soft.head.get(kind)
        if rise is not None and f"rise_{kind}" not in full and head.get(kind, 0.0) - at >= rise:
            out.append(f"soft:{kind}>={rise:.2f}")
    for name, at in recent.measures:  # the full measure_rise measures
        rise = soft.measures.get(name)
        value = _measure(v, name)
        if rise is None or f"rise_{name}" in full or value is None:
            continue
        if value - at >= rise:
            out.append(f"soft:{name}>={rise:.2f}")
    return out


def is_weak(reasons: list[str]) -> bool:
    """Only weak triggers fired (see WEAK)."""
    return all(r.split("<", 1)[0].split(">", 1)[0] in WEAK for r in reasons)


def is_soft(reasons: list[str]) -> bool:
    """Soft triggers fired, beside weak ones at most (EscalationConfig.soft): they get a
    soft trigger's priority."""
    soft = [r for r in reasons if r.startswith("soft:")]
    return bool(soft) and is_weak([r for r in reasons if not r.startswith("soft:")])


def _kind(novel: list[str]) -> Kind:
    """The priority of a verdict whose triggers not settled are `novel`."""
    if not novel:
        return "unsure"
    if is_soft(novel):
        return "soft"
    return "unsure" if is_weak(novel) else "impaired"


def unsettled(v: Verdict, reasons: list[str], recent: Recent | None) -> list[str]:
    """`reasons` less the rendition's habits and ongoing events (see Recent.settled): what
    the policy will judge this verdict by."""
    if recent is None or not recent.settled:
        return reasons
    ceilings = dict(recent.settled)
    severities = _flag_severities(v)
    out = []
    for r in reasons:
        label = reason_label(r)
        settled = label if label in ceilings else family(label)
        if settled not in ceilings or severities.get(label, 0.0) > ceilings[settled]:
            out.append(r)
    return out


def candidate(v: Verdict, cfg: EscalationConfig, recent: Recent | None) -> str | None:
    """Why this verdict may be escalated (its triggers, or "audit"), None when it will not.

    What a screen worker asks before it spends time on JPEG frames: the same triggers and
    audit sample as `EscalationPolicy.decide`, without the limits (the parent applies them).
    """
    if not cfg.enabled:
        return None
    reasons = by_design(triggers(v, cfg, recent), v, recent)
    if reasons:
        return ",".join(reasons)
    return "audit" if audit_pick(v.segment_id, cfg.audit_fraction) else None


def reason_label(reason: str) -> str:
    """A bounded metric label for a Decision.reason: its first trigger's name.

    "flag:black>=0.50,mos_low<2.50" -> "flag_black"; "mos_low<2.50" -> "mos_low";
    "mos_low_drop>0.80" -> "mos_low_drop"; "degraded:noise>=0.50" -> "degraded_noise";
    "rise:banding>=0.30" -> "rise_banding"; "rise:blur_effect>=0.30" -> "rise_blur_effect";
    "soft:edge_loss>=1.50" -> "soft_edge_loss"; "soft:mos_low_drop>0.50" -> "soft_mos_low_drop";
    "stopped:freeze" -> "stopped_freeze";
    "degradation_unsure<0.40" -> "degradation_unsure"; "audit" -> "audit";
    "habitual:flag:freeze>=0.50" -> "habitual"; "ongoing:flag:freeze>=0.50" -> "ongoing".
    """
    if reason.startswith("habitual:"):
        return "habitual"
    if reason.startswith("ongoing:"):
        return "ongoing"
    first = reason.split(",", 1)[0]
    for prefix in ("flag", "degraded", "rise", "soft", "stopped"):
        if first.startswith(prefix + ":"):
            return prefix + "_" + first[len(prefix) + 1 :].split(">", 1)[0].split("<", 1)[0]
    for sep in ("<", ">"):
        first = first.split(sep, 1)[0]
    return first or "unknown"


def family(label: str) -> str:
    """The full trigger a soft trigger's label lowers ("soft_mos_low_drop" ->
    "mos_low_drop", "soft_edge_loss" -> "rise_edge_loss"); other labels are their own.
    A habit or an event of the full trigger covers its soft one (not the reverse)."""
    if not label.startswith("soft_"):
        return label
    name = label[len("soft_") :]
    return name if name == "mos_low_drop" else f"rise_{name}"


def _going_on(labels: frozenset[str]) -> set[str]:
    """The events a segment with trigger `labels` continues: their own; their full
    triggers' (an event goes on while its soft counterpart fires: the same thing, weaker);
    and a stop's while the picture stays still (its freeze flag fires), so a stuck feed
    that jumps and sticks again is the same event."""
    out = set(labels) | {family(k) for k in labels}
    if FREEZE_LABEL in labels:
        out.add(STOPPED_LABEL)
    return out


def _ranked_labels(novel: list[str]) -> frozenset[str]:
    """The labels a verdict's novel triggers are ranked by (see Ranking): a stop's freeze
    flag is not a second trigger agreeing with it (a stop is always a freeze), so a stop
    ranks by its own rate alone."""
    labels = frozenset(reason_label(r) for r in novel)
    return labels - {FREEZE_LABEL} if STOPPED_LABEL in labels else labels


def _covered(label: str, settled: Container[str]) -> bool:
    return label in settled or family(label) in settled


def audit_pick(segment_id: str, fraction: float) -> bool:
    """Deterministic sample: the segment id's hash, uniform in [0, 1), below fraction."""
    h = int.from_bytes(hashlib.sha256(segment_id.encode()).digest()[:8], "big")
    return h / 2**64 < fraction


class _Bucket:
    def __init__(self, burst: int, now: float) -> None:
        self.tokens = float(burst)
        self.at = now

    def refill(self, now: float, rate: float, burst: int) -> None:
        self.tokens = min(float(burst), self.tokens + (now - self.at) * rate)
        self.at = now


class _Ranks:
    """The escalation candidates (impaired and soft verdicts, by their novel triggers) and
    the segments seen over the budget's window (see Ranking): a row per second, totals
    kept as rows come and go. A trigger's rate counts only the segments it was news on,
    so an outage's ongoing black, or a habit, does not make black common. Candidates are
    scored at today's rates, so two with the same triggers always rank alike."""

    def __init__(self, config: Ranking, window_s: float) -> None:
        self.config = config
        self.window_s = window_s
        self.rows: deque[_RankRow] = deque()
        self.labels: Counter[str] = Counter()
        self.candidates: Counter[tuple[Kind, frozenset[str]]] = Counter()
        self.seen = 0

    def see(self, at: float, news: tuple[Kind, frozenset[str]] | None = None) -> None:
        """One segment decided (or remembered) at `at`, with its kind and novel triggers if
        it had any: they count in the rates, and it is a candidate if its kind is ranked
        (a weak trigger alone is not, but its rate is the rate it is news at)."""
        row = self._row(at)
        row.seen += 1
        self.seen += 1
        if news is not None:
            row.labels.update(news[1])
            self.labels.update(news[1])
            if news[0] in RANKED:
                row.candidates[news] += 1
                self.candidates[news] += 1

    def beyond(self, kind: Kind, novel: frozenset[str], afford: float) -> bool:
        """Whether a candidate of `kind` with these novel triggers is beyond what the
        budget affords (`afford` escalations of its kind in the window): candidates that
        could use its share scoring higher are in the window, and with those scoring as
        high they are more than `afford`. An impairment is compared with impairments
        only (a soft trigger cannot use the room kept above it)."""
        bits = self._bits()
        mine = sum(bits(k) for k in novel)
        higher = same = 0
        for (theirs_kind, labels), n in self.candidates.items():
            if n <= 0 or (kind == "impaired" and theirs_kind != "impaired"):
                continue
            theirs = sum(bits(k) for k in labels)
            if theirs > mine + 1e-9:
                higher += n
            elif theirs >= mine - 1e-9:
                same += n
        return bool(higher) and higher + same > afford

    def _bits(self) -> Callable[[str], float]:
        """A trigger's surprisal in bits: -log2 of the share of the window's segments it
        was news on, drawn towards prior_rate with the weight of prior_segments. A
        verdict's score is the sum over its triggers (their surprisal together, were they
        independent)."""
        cfg = self.config
        prior = cfg.prior_rate * cfg.prior_segments
        total = self.seen + cfg.prior_segments
        cache: dict[str, float] = {}

        def bits(label: str) -> float:
            x = cache.get(label)
            if x is None:
                x = cache[label] = -math.log2((self.labels[label] + prior) / total)
            return x

        return bits

    def expire(self, now: float) -> None:
        horizon = now - self.window_s
        if not self.rows or self.rows[0].sec >= horizon:
            return
        while self.rows and self.rows[0].sec < horizon:
            old = self.rows.popleft()
            self.labels.subtract(old.labels)
            self.candidates.subtract(old.candidates)
            self.seen -= old.seen
        if len(self.candidates) > 64:
            self.candidates = +self.candidates  # drop the sets no longer in the window

    def _row(self, at: float) -> _RankRow:
        """The row of `at`'s second, made in order (a warm start's remembered segments
        come in after later ones)."""
        sec = float(int(at))
        if not self.rows or self.rows[-1].sec < sec:
            self.rows.append(_RankRow(sec))
            return self.rows[-1]
        i = len(self.rows) - 1
        while i > 0 and self.rows[i - 1].sec >= sec:
            i -= 1
        if self.rows[i].sec != sec:
            self.rows.insert(i, _RankRow(sec))
        return self.rows[i]


@dataclass(slots=True)
class _RankRow:
    sec: float
    labels: Counter[str] = field(default_factory=Counter)
    candidates: Counter[tuple[Kind, frozenset[str]]] = field(default_factory=Counter)
    seen: int = 0


class EscalationPolicy:
    """Stateful wrapper around `triggers`: rolling medians, buckets, budget. One thread."""

    def __init__(
        self, config: EscalationConfig, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.config = config
        self._clock = clock
        self._recent: OrderedDict[str, deque[float]] = OrderedDict()
        self._heads: OrderedDict[str, deque[tuple[float, ...]]] = OrderedDict()
        self._measures: OrderedDict[str, deque[tuple[float, ...]]] = OrderedDict()
        self._upscales: OrderedDict[str, deque[float]] = OrderedDict()
        self._triggers: OrderedDict[str, deque[frozenset[str]]] = OrderedDict()
        self._flags: OrderedDict[str, deque[dict[str, float]]] = OrderedDict()
        """Per rendition, each recent segment's flag severities by trigger label."""
        self._ongoing: OrderedDict[str, dict[str, float]] = OrderedDict()
        """Per rendition, its escalated events going on: trigger label -> the strongest flag
        that still is the same event (its escalated severity plus habit_margin)."""
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()
        self._window: deque[list[float]] = deque()  # [second, seen, escalated]
        self._past: OrderedDict[
            str, list[tuple[float, bool, tuple[Kind, frozenset[str]] | None]]
        ] = OrderedDict()
        """Per rendition, remembered verdicts of the budget window not yet counted."""
        self._carried: OrderedDict[str, dict[str, int]] = OrderedDict()
        """Per rendition, for each trigger whose run goes on at the window's first slot, how
        many of its segments slid out before it (a still shot's true length)."""
        self._remembered: OrderedDict[str, frozenset[str]] = OrderedDict()
        """Per rendition, the warm start's events: triggers of a remembered escalated
        verdict firing on every remembered segment since (for the ranks' rates)."""
        self._seen = 0
        self._escalated = 0
        self._since = math.inf
        """When the budget window began filling: the first segment counted since it was
        last empty (a cold start, or a silence longer than the window), or a warm start's
        earliest remembered segment; budget_lend_s lends while it is younger than the
        window."""
        self._ranks = _Ranks(config.rank, config.budget_window_s) if config.rank else None

    def decide(self, v: Verdict, has_request: bool = True) -> Decision:
        """Escalate this verdict or not. Without a request (the worker made none: the limits
        were full when the job left, or its rolling median moved since), an admissible
        escalation is refused as "no_frames" and spends no budget or token."""
        cfg = self.config
        now = self._clock()
        key = f"{v.stream}/{v.rendition}"
        if self._past:
            self._count_past(key, now)
        self._count(now, seen=1)
        if not cfg.enabled:
            return Decision(False, "disabled")
        recent = self.recent(v.stream, v.rendition)
        fired = triggers(v, cfg, recent)
        labels = frozenset(reason_label(r) for r in fired)
        reasons = by_design(fired, v, recent)
        severities = _flag_severities(v)
        habitual = self.habitual(key, severities)
        # an escalated event goes on while its trigger fires on every segment, no stronger
        # than it was escalated at (plus the habit margin)
        events = self._ongoing.pop(key, {})
        present = _going_on(labels)
        ongoing = {
            k: top for k, top in events.items() if k in present and severities.get(k, 0.0) <= top
        }
        self._record(key, v, labels, severities)
        if not reasons:
            self._rank(now)
            if audit_pick(v.segment_id, cfg.audit_fraction):
                return self._admit(v.stream, now, "audit", "audit", has_request)
            return Decision(False, "normal")
        novel = [r for r in reasons if not _covered(reason_label(r), habitual | ongoing.keys())]
        kind = _kind(novel)
        if novel:
            why = ",".join(novel)
        else:
            habit = any(_covered(k, habitual) for k in labels)
            why = ("habitual:" if habit else "ongoing:") + ",".join(reasons)
        beyond = self._rank(now, kind, novel)
        d = self._admit(v.stream, now, kind, why, has_request, beyond)
        if cfg.once_per_event and (d.escalate or ongoing):
            if d.escalate:
                for k in labels:
                    ongoing[k] = max(ongoing.get(k, 0.0), self._ceiling(severities.get(k)))
            self._ongoing[key] = ongoing
            _cap(self._ongoing, cfg.max_keys)
        return d

    def remember(self, v: Verdict, age_s: float | None = None, escalated: bool = False) -> None:
        """Add an earlier verdict to its rendition's rolling state without deciding (the
        warm start of a restarted daemon; oldest first). No token or ongoing event is
        touched.

        A verdict `age_s` old, inside the budget window, is also kept for the window
        (seen, and escalated if it was) until this policy decides the rendition's next
        segment: then it counts, so a restart neither forgets what it spent nor starts
        with a budget of 5% of a few segments, and a member of a group counts the past of
        the renditions it screens, not of those its partners screen."""
        cfg = self.config
        if not cfg.enabled:
            return
        key = f"{v.stream}/{v.rendition}"
        reasons = triggers(v, cfg, self.recent(v.stream, v.rendition))
        labels = frozenset(reason_label(r) for r in reasons)
        news = self._remembered_news(key, v, reasons, labels, escalated)
        self._record(key, v, labels)
        if age_s is not None and 0.0 <= age_s < cfg.budget_window_s:
            past = self._past.get(key)
            if past is None:
                past = self._past[key] = []
                _cap(self._past, cfg.max_keys)
            past.append((self._clock() - age_s, escalated, news))

    def _remembered_news(
        self, key: str, v: Verdict, reasons: list[str], labels: frozenset[str], escalated: bool
    ) -> tuple[Kind, frozenset[str]] | None:
        """What a remembered verdict was news of, as decide() judged it for the ranks: its
        triggers less the rendition's habits and the remembered events (a trigger escalated
        and firing on every segment since); None before the rendition has recent_min
        verdicts (the running daemon had its history) or without news."""
        if self._ranks is None:
            return None
        history = self._triggers.get(key)
        events = self._remembered.pop(key, frozenset())
        events = events & _going_on(labels)
        if escalated:
            events |= labels
        if events:
            self._remembered[key] = events
            _cap(self._remembered, self.config.max_keys)
        if not history or len(history) < self.config.recent_min:
            return None
        habitual = self.habitual(key, _flag_severities(v))
        novel = [r for r in reasons if not _covered(reason_label(r), habitual | events)]
        if not novel:
            return None
        return _kind(novel), _ranked_labels(novel)

    def _count_past(self, key: str, now: float) -> None:
        """The remembered window of rendition `key` into the budget window (see remember)."""
        past = self._past.pop(key, None)
        horizon = now - self.config.budget_window_s
        if not past or past[-1][0] < horizon:
            return
        seconds = {int(sec): [sec, seen, esc] for sec, seen, esc in self._window}
        for at, escalated, news in past:
            if at >= horizon:
                self._since = min(self._since, at)
                row = seconds.setdefault(int(at), [float(int(at)), 0.0, 0.0])
                row[1] += 1
                row[2] += escalated
                self._seen += 1
                self._escalated += int(escalated)
                if self._ranks is not None:
                    self._ranks.see(at, news)
        self._window = deque(row for _, row in sorted(seconds.items()))

    def _record(
        self,
        key: str,
        v: Verdict,
        labels: frozenset[str],
        severities: dict[str, float] | None = None,
    ) -> None:
        cfg = self.config
        if v.mos_low is not None:
            self._history(self._recent, key).append(v.mos_low)
        if v.degradation and cfg.rise_above_recent:
            rising = cfg.rise_above_recent
            self._history(self._heads, key).append(tuple(v.degradation.get(k, 0.0) for k in rising))
        times = upscale(v.extra)
        if times is not None:
            self._history(self._upscales, key).append(times)
        if cfg.measure_rise:
            taken = tuple(_measure(v, name) for name in cfg.measure_rise)
            if any(x is not None for x in taken):
                self._history(self._measures, key).append(
                    tuple(math.nan if x is None else x for x in taken)
                )
        if key not in self._triggers:
            self._carried.pop(key, None)  # a new history (or one forgotten and begun again)
        history = self._history(self._triggers, key)
        if len(history) == history.maxlen:  # its first slot leaves: runs going on carry it
            carried = self._carried.pop(key, {})
            kept = {k: carried.get(k, 0) + 1 for k in history[0] & history[1]}
            if kept:
                self._carried[key] = kept
                _cap(self._carried, cfg.max_keys)
        history.append(labels)
        if severities is None:
            severities = _flag_severities(v)
        self._history(self._flags, key).append({k: x for k, x in severities.items() if k in labels})

    def _ceiling(self, severity: float | None) -> float:
        """The strongest flag that is still the habit or event a flag of `severity` was:
        habit_margin above it (inf for triggers that are no flag, or without a margin)."""
        margin = self.config.habit_margin
        return math.inf if severity is None or margin is None else severity + margin

    def habitual(self, key: str, severities: dict[str, float] | None = None) -> set[str]:
        """Trigger labels that fired on at least habitual_share of the rendition's recent
        segments (see EscalationConfig.habitual_share). A flag in `severities` (this
        segment's, by label) stronger than the habit's peak by habit_margin is not one."""
        ceilings = self._habits(key)
        given = severities or {}
        return {k for k, top in ceilings.items() if given.get(k, 0.0) <= top}

    def _habits(self, key: str) -> dict[str, float]:
        """The rendition's habits, each with the strongest flag that still is one: its
        strongest hit in the window plus habit_margin (inf without a margin)."""
        share = self.config.habitual_share
        history = self._triggers.get(key)
        if share is None or not history or len(history) < self.config.recent_min:
            return {}
        runs = _runs(history)
        counts = Counter({k: sum(map(len, found)) for k, found in runs.items()})
        # share of the window, not of what is known yet: on a short history one earlier
        # hit would already be a "habit"
        need = max(1.0, share * self.config.recent_window)
        if self.config.habit_runs:
            counts = self._recurring(history, counts, runs)
        habits = [k for k, n in counts.items() if n >= need]
        if not habits:
            return {}
        flagged = [k for k in habits if k.startswith("flag_")]
        past = self._past_event(key, runs, len(history), flagged) if self.config.habit_runs else {}
        peaks: dict[str, float] = {}
        for i, seen in enumerate(self._flags.get(key, ())):
            for k, x in seen.items():
                if i not in past.get(k, ()):
                    peaks[k] = max(peaks.get(k, 0.0), x)
        return {k: self._ceiling(peaks.get(k, 0.0)) for k in habits}

    def _past_event(
        self, key: str, runs: dict[str, list[range]], slots: int, labels: list[str]
    ) -> dict[str, range]:
        """Per trigger of `labels`, the slots of its one still shot that is over when it
        also has other runs (a channel's short holds and one still shot): the habit is the
        holds, and the still shot's hits set no ceiling for them. A still shot is an ended
        run of at least recent_min segments, counting those of it that slid out of the
        window (the tail of one sliding out is still one)."""
        carried = self._carried.get(key, {})
        out = {}
        for k in labels:
            found = runs.get(k, [])
            shots = [
                r
                for r in found
                if r.stop < slots
                and len(r) + (carried.get(k, 0) if r.start == 0 else 0) >= self.config.recent_min
            ]
            if len(shots) == 1 and len(found) > 1:
                out[k] = shots[0]
        return out

    def _recurring(
        self, history: deque[frozenset[str]], counts: Counter[str], runs: dict[str, list[range]]
    ) -> Counter[str]:
        """`counts` without the triggers whose hits in `history` form a single run of at
        least recent_min segments that has ended (see EscalationConfig.habit_runs)."""
        last = history[-1]
        # a run that reaches back to the window's first slot began before it: its length is
        # unknown, so its tail is not taken for a short run (a habit) as it slides out
        cut = history[0] if len(history) == history.maxlen else frozenset()
        short = self.config.recent_min
        return Counter(
            {
                k: n
                for k, n in counts.items()
                if len(runs[k]) >= 2 or k in last or (n < short and k not in cut)
            }
        )

    def recent_median(self, stream: str, rendition: str) -> float | None:
        """The rendition's rolling median of mos_low, once `recent_min` are known."""
        history = self._recent.get(f"{stream}/{rendition}")
        if not history or len(history) < self.config.recent_min:
            return None
        return float(statistics.median(history))

    def recent(self, stream: str, rendition: str) -> Recent:
        """The rendition's rolling medians (mos_low, and the head's probability of each
        rise_above_recent class), each once `recent_min` segments are known."""
        key = f"{stream}/{rendition}"
        heads = self._heads.get(key)
        medians: tuple[tuple[str, float], ...] = ()
        if heads and len(heads) >= self.config.recent_min:
            rising = list(self.config.rise_above_recent)
            medians = tuple(
                (kind, float(statistics.median(h[i] for h in heads)))
                for i, kind in enumerate(rising)
            )
        settled = self._habits(key)
        for k, top in self._ongoing.get(key, {}).items():
            settled[k] = max(settled.get(k, 0.0), top)
        upscales = self._upscales.get(key)
        return Recent(
            self.recent_median(stream, rendition),
            medians,
            self._measure_medians(key),
            tuple(sorted(settled.items())),
            float(statistics.median(upscales)) if upscales else None,
        )

    def _measure_medians(self, key: str) -> tuple[tuple[str, float], ...]:
        """(measure, rolling median) of each measure_rise measure taken on at least
        recent_min of the rendition's recent segments."""
        history = self._measures.get(key)
        out = []
        for i, name in enumerate(self.config.measure_rise):
            taken = [h[i] for h in history or () if not math.isnan(h[i])]
            if len(taken) >= self.config.recent_min:
                out.append((name, float(statistics.median(taken))))
        return tuple(out)

    def room(self, stream: str) -> Room:
        """What the policy would admit of `stream` now: "all", only "impaired" verdicts (no
        audit or weak trigger), or "none" (budget or the stream's bucket spent). A hint sent
        with each job, so a worker does not encode frames for a request the limits would
        refuse (triggers can fire on a large share of content a scorer never learned).
        It may be stale by the time the verdict is decided: decide() then refuses a verdict
        without a request as `no_frames`, spending nothing."""
        cfg = self.config
        if not cfg.enabled:
            return "none"
        bucket = self._buckets.get(stream)
        tokens = float(cfg.stream_burst)
        if bucket is not None:
            bucket.refill(self._clock(), cfg.stream_rate_per_s, cfg.stream_burst)
            tokens = bucket.tokens
        if self._refused("audit", tokens, 1) is None:
            return "all"
        if cfg.soft is not None and self._refused("soft", tokens, 1) is None:
            return "soft"
        return "impaired" if self._refused("impaired", tokens, 1) is None else "none"

    @property
    def budget(self) -> float:
        """Escalations allowed in the current window."""
        return self._budget(0)

    def _budget(self, pending: int) -> float:
        """The budget with `pending` more segments seen (room() asks for the next one,
        which decide() counts before it judges: without it, the segment that tips the
        budget over got no frames from a hint of "none", then was admitted as no_frames)."""
        cfg = self.config
        seen: float = self._seen + pending
        age = max(0.0, self._clock() - self._since)  # no window yet (since inf): 0
        if cfg.budget_lend_s and age < cfg.budget_window_s:
            # a young window: what its pace makes over budget_lend_s more, at most a window's.
            # The pace is read over its age plus PACE_MIN_S (the first arrivals count a
            # whole segment's span, so streams arriving together do not count one burst
            # twice); never less than without lending, and never growing with time alone.
            window = cfg.budget_window_s
            lent = min(window, age + cfg.budget_lend_s) / min(window, age + PACE_MIN_S)
            seen *= max(1.0, lent)
        return max(float(cfg.budget_floor), cfg.budget_fraction * seen)

    def _admit(
        self,
        stream: str,
        now: float,
        kind: Kind,
        reason: str,
        has_request: bool = True,
        beyond: bool = False,
    ) -> Decision:
        cfg = self.config
        bucket = self._buckets.get(stream)
        if bucket is None:
            bucket = self._buckets[stream] = _Bucket(cfg.stream_burst, now)
            _cap(self._buckets, cfg.max_keys)
        self._buckets.move_to_end(stream)
        bucket.refill(now, cfg.stream_rate_per_s, cfg.stream_burst)
        refused = self._refused(kind, bucket.tokens, beyond=beyond)
        if refused is not None:
            return Decision(False, reason, kind, dropped=refused)
        if not has_request:
            return Decision(False, reason, kind, dropped="no_frames")
        bucket.tokens -= 1.0
        self._count(now, escalated=1)
        return Decision(True, reason, kind)

    def _refused(
        self, kind: Kind, tokens: float, pending: int = 0, beyond: bool = False
    ) -> str | None:
        """The limit that refuses one more escalation of `kind` now ("budget"; "ranked" for
        a candidate `beyond` what the budget affords, see Ranking; then "stream_rate"),
        None when they all admit it."""
        cap = self._budget(pending) * self._share(kind)
        if self._escalated + 1 > cap:
            return "budget"
        if beyond and self._ranks is not None:
            # the part kept for stronger candidates, in whole escalations: none of a budget
            # under ten (a small feed, or a cold start's first segments; kept continuously, a
            # tenth of a budget of five kept a whole escalation of five)
            keep = math.floor(cap * (1.0 - self._ranks.config.beyond_share) + 1e-9)
            if self._escalated + 1 > cap - keep:
                return "ranked"
        if tokens < (1.0 if kind == "impaired" else 2.0):
            return "stream_rate"
        return None

    def _share(self, kind: Kind) -> float:
        """The share of the budget `kind` may use: audits, weak and soft triggers leave
        part of it (soft ones its last part) for impairments."""
        cfg = self.config
        # soft triggers rank between impairments and audits, whatever the two shares say
        soft = max(cfg.soft.budget_share, cfg.audit_budget_share) if cfg.soft else 0.0
        return {"impaired": 1.0, "soft": soft}.get(kind, cfg.audit_budget_share)

    def _rank(self, now: float, kind: Kind | None = None, novel: list[str] | None = None) -> bool:
        """Count the segment decided now in the ranks (see Ranking), with its novel
        triggers (they count in the rates whatever its kind); whether it is a candidate
        (impaired or soft) beyond what the budget affords."""
        ranks = self._ranks
        if ranks is None:
            return False
        ranks.expire(now)
        if kind is None or not novel:
            ranks.see(now)
            return False
        labels = _ranked_labels(novel)
        ranks.see(now, (kind, labels))
        if kind not in RANKED:
            return False
        return ranks.beyond(kind, labels, self._budget(0) * self._share(kind))

    def _history(self, store: OrderedDict[str, deque[T]], key: str) -> deque[T]:
        """The rendition's rolling window in `store` (made on first use; least recently
        used renditions forgotten beyond max_keys)."""
        d = store.get(key)
        if d is None:
            d = store[key] = deque(maxlen=self.config.recent_window)
            _cap(store, self.config.max_keys)
        store.move_to_end(key)
        return d

    def _count(self, now: float, seen: int = 0, escalated: int = 0) -> None:
        sec = float(int(now))
        if not self._window or self._window[-1][0] < now - self.config.budget_window_s:
            self._since = now  # a cold start, or a silence longer than the window
        if not self._window or self._window[-1][0] != sec:
            self._window.append([sec, 0.0, 0.0])
        self._window[-1][1] += seen
        self._window[-1][2] += escalated
        self._seen += seen
        self._escalated += escalated
        horizon = now - self.config.budget_window_s
        while self._window and self._window[0][0] < horizon:
            _, s, e = self._window.popleft()
            self._seen -= int(s)
            self._escalated -= int(e)


def _runs(history: deque[frozenset[str]]) -> dict[str, list[range]]:
    """Each trigger's runs of consecutive hits in `history`, as ranges of its slots."""
    runs: dict[str, list[range]] = {}
    start: dict[str, int] = {}
    for i, labels in enumerate([*history, frozenset()]):
        for k in [k for k in start if k not in labels]:
            runs.setdefault(k, []).append(range(start.pop(k), i))
        for k in labels:
            start.setdefault(k, i)
    return runs


def _flag_severities(v: Verdict) -> dict[str, float]:
    """The verdict's flag severities by trigger label ("flag_freeze": 0.98)."""
    out: dict[str, float] = {}
    for f in v.flags:
        label = f"flag_{f.kind}"
        out[label] = max(out.get(label, 0.0), f.severity)
    return out


def _cap(d: OrderedDict[str, Any], size: int) -> None:
    while len(d) > size:
        d.popitem(last=False)

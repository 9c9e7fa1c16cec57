"""`rules` backend: no weights. A Diagnosis from the verdict's detector flags and the
distilled scorer's degradation distribution, marked model "rules", so the whole flow runs
on a laptop. It answers the score and degradation tasks; the others are skipped."""

from __future__ import annotations

import json
import time
from typing import Any, Literal

from pydantic import Field

from ingest.config import StrictModel
from scorers.hybrid import enlarged, mean_qp
from scorers.vlm.prompts import NO_DISTORTION, SEVERITIES
from scorers.vlm.types import Diagnosis, EscalationRequest, Task, TaskResult

RULES_MODEL = "rules"
RULES_VERSION = "rules/3"
"""rules/2: the escalation's own triggers, when they name what changed, pick the evidence.
rules/3: a noise flag beside compression evidence names noise (RulesConfig.noise_starves)."""

FLAG_TO_CLASS = {
    "black": "black",
    "freeze": "freeze",
    "blockiness": "blocking",
    "blur": "blur",
    "noise": "noise",
    "banding": "banding",
    "corruption": "packet_loss",
}
"""Detector flag kind (scorers.artifacts) -> degradation class (prompts.DEGRADATION_CLASSES)."""
EXPLAIN_A_FREEZE = frozenset({"corruption", "blockiness", "black"})
"""Flags that name the fault behind repeated frames (RulesConfig.freeze_yields)."""
HEAD_TO_CLASS = {
    "compression": "compression",
    "blur": "blur",
    "noise": "noise",
    "scaling": "scaling",
    "packet_loss": "packet_loss",
    "banding": "banding",
}
"""Distilled head name (scorers/train/model.py DEGRADATIONS) -> class; 'clean' -> none."""

RISE_TO_CLASS = {
    **HEAD_TO_CLASS,
    "comb_mass": "banding",
    "edge_loss": "blur",
    "blur_effect": "blur",
    "qp": "compression",
}
"""A rise trigger (monitor.escalation: rise:<head class, artifacts measure, or qp>) -> the
class it shows (every head class and measure a config may give a rise for)."""


def changed(reason: str) -> tuple[frozenset[str], tuple[tuple[str, str], ...]]:
    """What an escalation's reason (monitor.escalation Decision.reason) names as having
    changed on the segment: (flag kinds, (class, the trigger that shows it) from its other
    triggers, in order; the trigger cut to 80 characters). Empty
    for a reason that names no news: an audit, a habitual or ongoing trigger ("habitual:",
    "ongoing:"), or no reason. Any string is accepted (it comes off a topic)."""
    if not reason or reason.startswith(("habitual:", "ongoing:", "audit")):
        return frozenset(), ()
    kinds: set[str] = set()
    classes: list[tuple[str, str]] = []
    for trigger in reason.split(","):
        head, _, rest = trigger.partition(":")
        name = rest.split(">=", 1)[0]
        cls = None
        if head in ("flag", "stopped") and name:  # stopped:freeze (monitor.escalation)
            kinds.add(name)
        elif head in ("rise", "soft"):  # a soft trigger is a lower rise (monitor.escalation)
            cls = RISE_TO_CLASS.get(name)
        elif head == "degraded":
            cls = HEAD_TO_CLASS.get(name)
        elif trigger.startswith("qp>="):
            cls = "compression"
        if cls is not None and all(cls != known for known, _ in classes):
            classes.append((cls, trigger[:80]))
    return frozenset(kinds), tuple(classes)


class RulesConfig(StrictModel):
    type: Literal["rules"] = "rules"
    min_flag_severity: float = Field(
        0.0,
        ge=0,
        le=1,
        description="Flags below this severity are ignored; the distilled head decides then.",
    )
    coarse_qp: float | None = Field(
        40.0,
        ge=0,
        le=51,
        description="With no flag, a mean frame quantiser at or above this (H.264's 0-51 "
        "scale, from the verdict's hybrid features) is 'compression', whatever the head "
        "says; severity grows from QP 26 (none) to 51 (extreme). None: off.",
    )
    freeze_yields: bool = Field(
        True,
        description="A freeze yields to transport and encoder evidence: beside a corruption, "
        "blockiness or black flag that flag's class wins, and with a mean quantiser at or "
        "above coarse_qp it is 'compression'. A decoder that lost data and a starved encoder "
        "both repeat frames, and a static picture (a slate, a still shot) looks frozen on "
        "every segment. Picture flags (blur, noise, banding) do not explain a freeze and do "
        "not win over it. False: the worst flag, freeze included, wins.",
    )
    min_head_probability: float = Field(
        0.4,
        ge=0,
        le=1,
        description="The distilled head's top class is used only at or above this probability; "
        "below it the class is 'none' (unsure).",
    )
    noise_starves: bool = Field(
        True,
        description="A noise flag (at any severity) beside evidence of compression (a "
        "blockiness flag, a coarse or risen quantiser, the head's compression) names noise: "
        "grain at the source takes the bits of an encoder held to a bitrate, so its "
        "quantiser rises and its blocks show, most on the lower rungs, where the grain "
        "itself is mostly coded away. Denoising mends both; more bits mend only the blocks. "
        "The noise detector fired on no clean segment and no other impairment of the "
        "escalation bench's training libraries. A verdict alone cannot tell a channel that "
        "is always grainy (film grain) starved by a bitrate cut: that too is answered noise, "
        "where the judge (judge.noise_starves, which knows the rendition's look) opens "
        "starvation. False: compression is answered as such.",
    )
    follow_reason: bool = Field(
        True,
        description="When the escalation's reason names what changed (its novel triggers: "
        "a flag, a rise of a measure or head class, a sure head, a coarse quantiser), only "
        "that evidence is read: a blur on a channel whose still shots always raise the "
        "freeze flag is escalated on its lost edges, not on the freeze that is the "
        "rendition's habit, and diagnosed as blur. Reasons that name no news (habitual, "
        "ongoing, audit) leave the verdict's own evidence. False: the verdict alone.",
    )


def severity_label(x: float) -> str:
    """0-1 severity -> Q-Insight's five levels, in equal fifths."""
    x = min(1.0, max(0.0, x))  # a severity is 0-1; a hostile verdict's 1e308 is not
    return SEVERITIES[min(len(SEVERITIES) - 1, int(x * len(SEVERITIES)))]


def rules_degradation(
    verdict: dict[str, Any], cfg: RulesConfig, reason: str = ""
) -> tuple[str, str, str]:
    """(class, severity, why) from the worst flag (a freeze yields to transport and encoder
    evidence: RulesConfig.freeze_yields), else a coarse quantiser, else the distilled head,
    else none; first narrowed to what the escalation's `reason` names as changed
    (RulesConfig.follow_reason). Compression beside a noise flag is noise
    (RulesConfig.noise_starves)."""
    cls, sev, why = _degradation(verdict, cfg, reason)
    if cfg.noise_starves and cls in ("compression", "blocking"):
        grain = max(
            (
                float(f.get("severity", 0.0))
                for f in verdict.get("flags", ())
                if f.get("kind") == "noise"
            ),
            default=0.0,
        )
        if grain > 0 and grain >= cfg.min_flag_severity:
            shown = SEVERITIES.index(sev) / len(SEVERITIES) if sev in SEVERITIES else 0.0
            return (
                "noise",
                severity_label(max(grain, shown)),
                f"noise flag {grain:.2f} beside {cls} ({why}): a noisy source starves the encoder",
            )
    return cls, sev, why


def _degradation(verdict: dict[str, Any], cfg: RulesConfig, reason: str) -> tuple[str, str, str]:
    flags = [f for f in verdict.get("flags", ()) if f.get("severity", 0) >= cfg.min_flag_severity]
    kinds, classes = changed(reason) if cfg.follow_reason else (frozenset(), ())
    if "freeze" in kinds:  # a named freeze still yields to what explains it (freeze_yields)
        kinds |= EXPLAIN_A_FREEZE
    if named := [f for f in flags if f.get("kind") in kinds]:
        flags = named
    elif classes:
        cls, trigger = classes[0]
        sev = _mos_severity(verdict)
        return cls, severity_label(0.5 if sev is None else sev), f"escalated on {trigger}"
    qp = mean_qp(verdict.get("extra") or {})
    coarse = cfg.coarse_qp is not None and qp is not None and qp >= cfg.coarse_qp
    if cfg.freeze_yields and any(f["kind"] == "freeze" for f in flags):
        others = [f for f in flags if f["kind"] != "freeze"]
        if coarse or any(f["kind"] in EXPLAIN_A_FREEZE for f in others):
            flags = [f for f in others if f["kind"] in EXPLAIN_A_FREEZE]
    if flags:
        worst = max(flags, key=lambda f: f.get("severity", 0.0))
        cls = FLAG_TO_CLASS.get(worst["kind"], worst["kind"])
        sev = float(worst.get("severity", 0.0))
        return cls, severity_label(sev), f"flag {worst['kind']} severity {sev:.2f}"
    if coarse and qp is not None:
        sev = min(1.0, max(0.0, (qp - 26.0) / 25.0))
        return "compression", severity_label(sev), f"mean quantiser {qp:.1f}"
    head = dict(verdict.get("degradation") or {})
    ladder = ""
    if len(head) > 1 and enlarged(verdict.get("extra") or {}) and "scaling" in head:
        # a rung below the top, judged enlarged to its display, looks scaled by design
        del head["scaling"]
        ladder = " (scaling left out: the rung is shown enlarged, as its ladder does)"
    if head:
        name, p = max(head.items(), key=lambda kv: kv[1])
        sev = _mos_severity(verdict)
        if name in HEAD_TO_CLASS and p >= cfg.min_head_probability and sev is not None:
            return HEAD_TO_CLASS[name], severity_label(sev), f"head {name} p={p:.2f}{ladder}"
        return NO_DISTORTION, NO_DISTORTION, f"head {name} p={p:.2f}{ladder}"
    return NO_DISTORTION, NO_DISTORTION, "no flag, no degradation head"


def _mos_severity(verdict: dict[str, Any]) -> float | None:
    """The verdict's mos_low as a 0-1 severity (MOS 5 none, 1 extreme), None without one."""
    mos_low = verdict.get("mos_low")
    return (5.0 - float(mos_low)) / 4.0 if isinstance(mos_low, int | float) else None


def rules_diagnosis(
    request: EscalationRequest, tasks: tuple[Task, ...], cfg: RulesConfig | None = None
) -> Diagnosis:
    cfg = cfg or RulesConfig()
    t0 = time.perf_counter()
    v = request.verdict
    results: list[TaskResult] = []
    skipped: dict[str, str] = {}
    for task in tasks:
        if task == "score":
            mos = v.get("mos")
            frame = [float(m) for m in v.get("frame_mos", ())]
            raw = json.dumps({"mos": mos, "frame_mos": frame})
            if mos is None:
                results.append(TaskResult(task, (raw,), ("verdict has no mos",), 0.0))
                continue
            spread = _std(frame) if frame else 0.0
            results.append(TaskResult(task, (raw,), (None,), 0.0, float(mos), spread))
        elif task == "degradation":
            cls, sev, why = rules_degradation(v, cfg, request.reason)
            raw = json.dumps({"distortion_class": cls, "severity": sev, "from": why})
            results.append(TaskResult(task, (raw,), (None,), 0.0, degradation=cls, severity=sev))
        else:
            skipped[task] = "the rules backend answers only score and degradation"
    latency = time.perf_counter() - t0
    return Diagnosis(
        segment_id=request.segment_id,
        stream=request.stream,
        rendition=request.rendition,
        seq=request.seq,
        model=RULES_MODEL,
        prompt_version=RULES_VERSION,
        asked_flags=request.flags,
        tasks=tuple(results),
        latency_s=latency,
        samples=1,
        skipped=skipped,
        escalation_reason=request.reason,
        diagnosed_at=time.time(),
    )


def _std(xs: list[float]) -> float:
    m = sum(xs) / len(xs)
    return (sum((x - m) ** 2 for x in xs) / len(xs)) ** 0.5

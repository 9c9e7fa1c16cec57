"""The rules backend: a Diagnosis with no weights, from flags and the distilled head."""

from __future__ import annotations

import dataclasses

from scorers.types import Flag
from scorers.vlm.config import DiagnoseConfig
from scorers.vlm.diagnoser import Diagnoser
from scorers.vlm.rules import RulesConfig, rules_degradation, severity_label
from scorers.vlm.types import Diagnosis
from tests.unit.vlm_samples import request, verdict


def test_rules_diagnosis_from_the_worst_flag() -> None:
    diag = Diagnoser(DiagnoseConfig(tasks=["score", "degradation", "compare", "video"]))
    d = diag.diagnose(request())
    assert d.model == "rules" and d.asked_flags == ("blockiness",)
    assert d.degradation == ("blocking", "serious")
    assert d.score_mean == 2.1 and d.parse_ok
    assert set(d.skipped) == {"compare", "video"}
    assert Diagnosis.from_json(d.to_json()) == d


def test_rules_fall_back_to_the_distilled_head() -> None:
    cfg = RulesConfig()
    v = verdict(3).to_json()  # no flags; head says compression 0.7, mos_low 1.8
    assert rules_degradation(v, cfg)[:2] == ("compression", "catastrophic")
    unsure = {**v, "degradation": {"clean": 0.35, "blur": 0.33, "noise": 0.32}}
    assert rules_degradation(unsure, cfg)[:2] == ("none", "none")
    bare = {**v, "degradation": {}}
    assert rules_degradation(bare, cfg)[:2] == ("none", "none")
    flagged = verdict(3, (Flag("corruption", 0.95, 0, 1), Flag("blur", 0.3, 0, 2))).to_json()
    assert rules_degradation(flagged, cfg)[:2] == ("packet_loss", "catastrophic")
    assert [severity_label(x) for x in (0.0, 0.3, 0.5, 0.7, 1.0)] == [
        "slight",
        "moderate",
        "obvious",
        "serious",
        "catastrophic",
    ]


def test_rules_leave_out_the_scaling_a_lower_rung_shows_by_design() -> None:
    # A starved 320x180 rung at the 640x360 display, escalated on its MOS: "scaling" (what
    # every lower rung looks like enlarged) is not what is wrong with it.
    cfg = RulesConfig()
    v = verdict(3).to_json()
    head = {"scaling": 0.9, "compression": 0.06, "clean": 0.04}
    lower = {**v, "degradation": head, "extra": {"hybrid": {"log2_upscale": 2.0}}}
    cls, _, why = rules_degradation(lower, cfg)
    assert cls == "none" and "scaling left out" in why  # compression 0.06: unsure
    sure = {**lower, "degradation": {"scaling": 0.5, "compression": 0.45, "clean": 0.05}}
    assert rules_degradation(sure, cfg)[0] == "compression"
    top = {**lower, "extra": {"hybrid": {"log2_upscale": 0.0}}}
    assert rules_degradation(top, cfg)[0] == "scaling"  # at its display: a real scaling


def test_rules_call_a_coarse_quantiser_compression() -> None:
    cfg = RulesConfig()
    unsure = {**verdict(3).to_json(), "degradation": {"clean": 0.35, "blur": 0.33, "noise": 0.32}}
    coarse = {**unsure, "extra": {"hybrid": {"qp_mean": 46.0 / 51.0, "has_qp": 1.0}}}
    assert rules_degradation(coarse, cfg) == ("compression", "catastrophic", "mean quantiser 46.0")
    at_40 = {**unsure, "extra": {"hybrid": {"qp_mean": 40.0 / 51.0, "has_qp": 1.0}}}
    assert rules_degradation(at_40, cfg)[:2] == ("compression", "obvious")
    fine = {**unsure, "extra": {"hybrid": {"qp_mean": 30.0 / 51.0, "has_qp": 1.0}}}
    assert rules_degradation(fine, cfg)[:2] == ("none", "none")
    hevc = {**unsure, "extra": {"hybrid": {"qp_mean": 0.0, "has_qp": 0.0}}}
    assert rules_degradation(hevc, cfg)[:2] == ("none", "none")
    off = RulesConfig(coarse_qp=None)
    assert rules_degradation(coarse, off)[:2] == ("none", "none")
    flagged = {**coarse, "flags": [{"kind": "black", "severity": 1.0}]}
    assert rules_degradation(flagged, cfg)[:2] == ("black", "catastrophic")


def test_a_freeze_yields_to_transport_and_encoder_evidence() -> None:
    cfg = RulesConfig()
    frozen = Flag("freeze", 1.0, 0, 2)
    v = verdict(3, (frozen, Flag("corruption", 0.3, 0, 1))).to_json()
    assert rules_degradation(v, cfg)[:2] == ("packet_loss", "moderate")  # the loss froze it
    v = verdict(3, (frozen, Flag("blockiness", 0.5, 0, 2))).to_json()
    assert rules_degradation(v, cfg)[0] == "blocking"
    # a picture flag does not explain repeated frames (and fires on still, soft shots)
    v = verdict(3, (frozen, Flag("blur", 0.6, 0, 2))).to_json()
    assert rules_degradation(v, cfg)[:2] == ("freeze", "catastrophic")
    # a still picture coded coarsely: the encoder is the fault
    coarse = {
        **verdict(3, (frozen,)).to_json(),
        "extra": {"hybrid": {"qp_mean": 46.0 / 51.0, "has_qp": 1.0}},
    }
    assert rules_degradation(coarse, cfg)[0] == "compression"
    assert rules_degradation(verdict(3, (frozen,)).to_json(), cfg)[0] == "freeze"
    off = RulesConfig(freeze_yields=False)
    assert rules_degradation(coarse, off)[0] == "freeze"
    v = verdict(3, (frozen, Flag("corruption", 0.3, 0, 1))).to_json()
    assert rules_degradation(v, off)[0] == "freeze"


def test_the_escalations_reason_picks_the_evidence_of_what_changed() -> None:
    cfg = RulesConfig()
    frozen = Flag("freeze", 1.0, 0, 2)
    still = verdict(3, (frozen,)).to_json()  # a still shot: its freeze flag is the habit
    assert rules_degradation(still, cfg)[0] == "freeze"
    # escalated on its lost edges (the freeze being the rendition's habit): a blur
    cls, sev, why = rules_degradation(still, cfg, "rise:edge_loss>=2.30")
    assert (cls, sev) == ("blur", "catastrophic") and why == "escalated on rise:edge_loss>=2.30"
    assert rules_degradation(still, cfg, "rise:comb_mass>=0.30,mos_low_drop>0.80")[0] == "banding"
    assert rules_degradation(still, cfg, "degraded:noise>=0.50")[0] == "noise"
    assert rules_degradation(still, cfg, "qp>=40.0")[0] == "compression"
    assert rules_degradation(still, cfg, "soft:edge_loss>=1.50")[0] == "blur"  # a lower rise
    # a flag the reason names is read alone: noise, not the habitual freeze beside it
    both = verdict(3, (frozen, Flag("noise", 0.6, 0, 2))).to_json()
    assert rules_degradation(both, cfg)[0] == "freeze"
    assert rules_degradation(both, cfg, "flag:noise>=0.50")[:2] == ("noise", "serious")
    # a picture seen to stop names the freeze (monitor.escalation's stopped:freeze)
    noisy = verdict(3, (Flag("freeze", 0.6, 0, 2), Flag("noise", 0.9, 0, 2))).to_json()
    assert rules_degradation(noisy, cfg)[0] == "noise"
    assert rules_degradation(noisy, cfg, "stopped:freeze")[0] == "freeze"
    # reasons that name no news leave the verdict's own evidence
    for reason in ("habitual:rise:edge_loss>=2.30", "ongoing:flag:noise>=0.50", "audit", ""):
        assert rules_degradation(both, cfg, reason)[0] == "freeze", reason
    # and so do reasons that name nothing the rules know (a topic carries any string)
    for reason in ("mos_low_drop>0.80", "rise:unknown>=0.1", ":::", "flag:", "x" * 10_000):
        assert rules_degradation(both, cfg, reason)[0] in ("freeze", "noise"), reason
    # every rise a config may set names its class; the why quotes that trigger, bounded
    for rise, cls in (("noise", "noise"), ("packet_loss", "packet_loss"), ("blur_effect", "blur")):
        assert rules_degradation(still, cfg, f"rise:{rise}>=0.30")[0] == cls
    long = "mos_low<2.50,rise:edge_loss>=2.30" + "9" * 100_000
    _cls, _sev, why = rules_degradation(still, cfg, long)
    assert why.startswith("escalated on rise:edge_loss>=2.30") and len(why) < 100
    # a named freeze still yields to a blockiness below its own trigger (freeze_yields)
    blocky = verdict(3, (frozen, Flag("blockiness", 0.3, 0, 2))).to_json()
    assert rules_degradation(blocky, cfg, "flag:freeze>=0.50")[0] == "blocking"
    assert rules_degradation(still, RulesConfig(follow_reason=False), "rise:edge_loss")[0] == (
        "freeze"
    )
    # through the diagnose role's rules backend
    req = dataclasses.replace(request(), verdict=still, reason="rise:comb_mass>=0.30")
    d = Diagnoser(DiagnoseConfig()).diagnose(req)
    assert d.degradation is not None and d.degradation[0] == "banding"
    assert d.prompt_version == "rules/3" and d.escalation_reason == "rise:comb_mass>=0.30"


def test_noise_beside_compression_evidence_is_noise() -> None:
    """The demo's noise fault on its 320x180 rung: the grain is mostly coded away (noise
    flag 0.15, under its trigger) while the rung's quantiser rises; escalated on that rise,
    rules/2 answered compression. The noise starved the encoder: denoise mends both."""
    cfg = RulesConfig()
    grain = Flag("noise", 0.15, 0, 2)
    v = verdict(3, (grain,)).to_json()
    cls, sev, why = rules_degradation(v, cfg, "rise:qp>=12.00,soft:mos_low_drop>0.50")
    assert cls == "noise" and "starves the encoder" in why and "rise:qp" in why
    assert sev == "catastrophic"  # the compression it caused (mos_low 1.8) is the harm shown
    # the 640x360 rung's ongoing segments: blockiness beside the noise
    blocky = verdict(3, (Flag("blockiness", 0.39, 0, 2), Flag("noise", 0.28, 0, 2))).to_json()
    assert rules_degradation(blocky, cfg, "ongoing:qp>=40.0")[0] == "noise"
    assert rules_degradation(blocky, cfg)[0] == "noise"
    coarse = {**v, "extra": {"hybrid": {"qp_mean": 46.0 / 51.0, "has_qp": 1.0}}}
    assert rules_degradation(coarse, cfg, "qp>=40.0")[0] == "noise"
    assert rules_degradation(v, cfg, "degraded:compression>=0.50")[0] == "noise"
    # without a noise flag compression stays compression; other classes are left alone
    clean = verdict(3).to_json()
    assert rules_degradation(clean, cfg, "rise:qp>=12.00")[0] == "compression"
    blurred = verdict(3, (grain, Flag("blur", 0.7, 0, 2))).to_json()
    assert rules_degradation(blurred, cfg, "flag:blur>=0.50")[0] == "blur"
    lost = verdict(3, (grain, Flag("corruption", 0.7, 0, 2))).to_json()
    assert rules_degradation(lost, cfg)[0] == "packet_loss"
    # a noise flag under min_flag_severity is not read; the switch turns it off
    assert rules_degradation(v, RulesConfig(min_flag_severity=0.2), "qp>=40.0")[0] == (
        "compression"
    )
    zero = verdict(3, (Flag("noise", 0.0, 0, 2),)).to_json()  # a flag of no severity
    assert rules_degradation(zero, cfg, "rise:qp>=12.00")[0] == "compression"
    off = RulesConfig(noise_starves=False)
    assert rules_degradation(v, off, "rise:qp>=12.00")[0] == "compression"


def test_rules_score_without_mos_is_a_failure() -> None:
    r = request()
    no_mos = type(r)(
        **{
            **{f: getattr(r, f) for f in r.__dataclass_fields__},
            "verdict": verdict(7, mos=None).to_json(),
        }
    )
    d = Diagnoser(DiagnoseConfig()).diagnose(no_mos)
    score = d.task("score")
    assert score is not None and not score.parse_ok and score.score_mean is None

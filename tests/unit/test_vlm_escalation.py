"""monitor.escalation: triggers, audit sample, per-stream rate limit and global budget."""

from __future__ import annotations

import copy
import dataclasses
import json
import types
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest

from monitor.escalate import warm_start
from monitor.escalation import (
    STOPPED,
    Decision,
    EscalationConfig,
    EscalationPolicy,
    Ranking,
    Recent,
    _ranked_labels,
    _Ranks,
    audit_pick,
    candidate,
    family,
    reason_label,
    triggers,
    unsettled,
)
from monitor.types import MessageError, verdict_from_json
from scorers.types import Flag, Verdict
from scorers.vlm.rules import RulesConfig, rules_degradation


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def v(
    seq: int,
    mos_low: float | None = 4.0,
    flags: tuple[Flag, ...] = (),
    stream: str = "news",
    head: dict[str, float] | None = None,
) -> Verdict:
    return Verdict(
        f"{stream}/720p/{seq}",
        stream,
        "720p",
        seq,
        mos_low,
        mos_low,
        (),
        flags,
        ("x@1",),
        degradation=head or {},
    )


BLACK = (Flag("black", 1.0, 0, 2),)
NO_AUDIT = {"audit_fraction": 0.0, "habitual_share": None, "once_per_event": False}
"""No audits, and a trigger is never a habit nor an ongoing event: the budget and bucket
tests repeat one trigger on one stream (habits and events have their own tests)."""


def test_triggers_are_pure_and_named() -> None:
    cfg = EscalationConfig()
    assert triggers(v(1), cfg, None) == []
    assert triggers(v(1, flags=BLACK), cfg, None) == ["flag:black>=0.50"]
    assert triggers(v(1, flags=(Flag("blur", 0.3, 0, 2),)), cfg, None) == []
    assert triggers(v(1, mos_low=2.0), cfg, None) == ["mos_low<2.50"]
    assert triggers(v(1, mos_low=3.0), cfg, Recent(4.2)) == ["mos_low_drop>0.80"]
    assert triggers(v(1, mos_low=3.6), cfg, Recent(4.2)) == ["soft:mos_low_drop>0.50"]
    assert triggers(v(1, mos_low=3.8), cfg, Recent(4.2)) == []
    assert triggers(v(1, mos_low=3.6), EscalationConfig(soft=None), Recent(4.2)) == []
    unsure = {"clean": 0.3, "blur": 0.35, "noise": 0.35}
    assert triggers(v(1, head=unsure), cfg, None) == ["degradation_unsure<0.40"]
    assert triggers(v(1, head={"clean": 0.9, "blur": 0.1}), cfg, None) == []
    assert triggers(v(1, mos_low=None), cfg, Recent(4.0)) == []


def test_a_lower_rung_looking_scaled_at_its_display_is_no_news() -> None:
    # The demo's 320x180 rungs, judged at the 640x360 display, had the head saying scaling
    # 0.98 on every segment: a cold start escalated their first ones, and the starved,
    # black and noisy segments a few seconds later found the budget spent.
    scaled = {"scaling": 0.98, "clean": 0.01, "blur": 0.01}
    cfg = EscalationConfig(audit_fraction=0.0, budget_floor=100)

    def shown(seq: int, log2_upscale: float | None, head: dict[str, float] = scaled) -> Verdict:
        hybrid = {} if log2_upscale is None else {"hybrid": {"log2_upscale": log2_upscale}}
        return dataclasses.replace(v(seq, head=head), extra=hybrid)

    assert candidate(shown(0, 2.0), cfg, None) is None  # a quarter of the display's area
    assert candidate(shown(0, 0.0), cfg, None) == "degraded:scaling>=0.50"  # the top rung
    assert candidate(shown(0, None), cfg, None) == "degraded:scaling>=0.50"  # no features
    blurred = shown(0, 2.0, {"blur": 0.9, "clean": 0.1})
    assert candidate(blurred, cfg, None) == "degraded:blur>=0.75"  # other classes still do
    # Not while young, not as a habit later, not after a break (a black run: it came
    # back as news); but a rung enlarged more than it usually is (a top rung coded
    # smaller) is news.
    clock = Clock()
    pol = EscalationPolicy(cfg, clock)
    for i in range(20):
        clock.t += 2
        head = {"packet_loss": 0.9, "clean": 0.1} if i in (8, 9) else scaled
        d = pol.decide(shown(i, 2.0, head))
        assert d.escalate == (i in (8, 9)), (i, d)  # the black run's own head escalates
    top = EscalationPolicy(cfg, clock)
    for i in range(6):
        clock.t += 2
        assert not top.decide(shown(i, 0.0, {"clean": 0.9, "scaling": 0.1})).escalate
    d = top.decide(shown(6, 2.0))
    assert d.escalate and d.reason == "degraded:scaling>=0.50"
    # odd features are no upscale at all
    for odd in (10**400, float("nan"), "2", True):
        assert candidate(shown(0, odd), cfg, None) == "degraded:scaling>=0.50"  # type: ignore[arg-type]


def test_rolling_median_catches_a_drop_on_one_rendition() -> None:
    clock = Clock()
    pol = EscalationPolicy(EscalationConfig(budget_floor=100, **NO_AUDIT), clock)
    for i in range(10):
        clock.t += 2
        assert not pol.decide(v(i, mos_low=4.3)).escalate
    clock.t += 2
    d = pol.decide(v(10, mos_low=3.3))  # above the absolute threshold, 1 below the median
    assert d.escalate and d.reason == "mos_low_drop>0.80" and d.kind == "impaired"
    # another stream has no history yet: no drop trigger
    assert not pol.decide(v(0, mos_low=3.3, stream="sport")).escalate


def test_a_head_class_rising_above_the_renditions_habit_escalates() -> None:
    # A star field the head always gives ~0.3 banding: an absolute threshold either
    # fires on every segment or misses banding on it; the rise over its own median does not.
    cfg = EscalationConfig()
    habit = {"clean": 0.6, "banding": 0.3, "blur": 0.1}
    banded = {"clean": 0.3, "banding": 0.62, "blur": 0.08}
    recent = Recent(4.0, (("banding", 0.3), ("blur", 0.1)))
    assert triggers(v(1, head=banded), cfg, recent) == ["rise:banding>=0.30"]
    assert triggers(v(1, head=habit), cfg, recent) == []
    near = v(1, head={"clean": 0.4, "banding": 0.58})  # 0.28 up: a soft trigger only
    assert triggers(near, cfg, recent) == ["soft:banding>=0.20"]
    assert triggers(near, EscalationConfig(soft=None), recent) == []
    assert triggers(v(1, head={"clean": 0.5, "banding": 0.45}), cfg, recent) == []
    assert triggers(v(1, head=banded), cfg, None) == []  # no history yet
    off = EscalationConfig(rise_above_recent={})  # the soft rise has its own setting
    assert triggers(v(1, head=banded), off, recent) == ["soft:banding>=0.20"]
    off = EscalationConfig(rise_above_recent={}, soft=None)
    assert triggers(v(1, head=banded), off, recent) == []
    assert reason_label("rise:banding>=0.30,mos_low<2.50") == "rise_banding"

    clock = Clock()
    pol = EscalationPolicy(EscalationConfig(budget_floor=100, **NO_AUDIT), clock)
    assert pol.recent("news", "720p") == Recent(None, ())
    for i in range(5):
        clock.t += 2
        assert not pol.decide(v(i, head=habit)).escalate
    assert pol.recent("news", "720p") == Recent(4.0, (("banding", 0.3), ("blur", 0.1)))
    clock.t += 2
    d = pol.decide(v(5, head=banded))
    assert d.escalate and d.reason == "rise:banding>=0.30" and d.kind == "impaired"
    # the same picture on a rendition that always looks banded to the head: its habit
    for i in range(5):
        clock.t += 2
        assert not pol.decide(v(i, head=banded, stream="sport")).escalate
    assert not pol.decide(v(5, head=banded, stream="sport")).escalate


def soft(seq: int, loss: float, stream: str = "news") -> Verdict:
    """A verdict whose artifacts scorer measured this edge loss (and flagged nothing)."""
    return dataclasses.replace(v(seq, stream=stream), extra={"artifacts": {"edge_loss": loss}})


def test_a_picture_losing_its_own_edges_escalates() -> None:
    # A star field keeps ~5% of its positions on edges (edge_loss 4.3); blurred hard, the
    # blur flag has no edge left to judge, but the picture lost most of its own edges.
    cfg = EscalationConfig()
    recent = Recent(4.0, (), (("edge_loss", 4.3),))
    assert triggers(soft(1, 8.0), cfg, recent) == ["rise:edge_loss>=2.30"]
    # 1.8 up, as another crop of the picture can be: a soft trigger only
    assert triggers(soft(1, 6.1), cfg, recent) == ["soft:edge_loss>=1.50"]
    assert triggers(soft(1, 5.5), cfg, recent) == []
    assert triggers(soft(1, 8.0), cfg, None) == []  # no history yet
    assert triggers(v(1), cfg, recent) == []  # not measured
    assert triggers(soft(1, 8.0), EscalationConfig(measure_rise={}, soft=None), recent) == []
    assert reason_label("rise:edge_loss>=2.30") == "rise_edge_loss"
    assert reason_label("soft:edge_loss>=1.50,soft:banding>=0.20") == "soft_edge_loss"
    assert reason_label("soft:mos_low_drop>0.50") == "soft_mos_low_drop"
    # posterised luma piles a third more of the pixels on a few levels than usual
    combed = dataclasses.replace(v(1), extra={"artifacts": {"comb_mass": 0.75}})
    on_its_level = Recent(4.0, (), (("comb_mass", 0.5),))
    assert triggers(combed, cfg, Recent(4.0, (), (("comb_mass", 0.03),))) == [
        "rise:comb_mass>=0.30"
    ]
    assert triggers(combed, cfg, on_its_level) == ["soft:comb_mass>=0.20"]  # 0.25 up
    # a graphic that always looks so
    assert triggers(combed, cfg, Recent(4.0, (), (("comb_mass", 0.7),))) == []
    # blur_effect is reported too, and escalates only when configured
    sharpness = EscalationConfig(measure_rise={"blur_effect": 0.3})
    blurred = dataclasses.replace(v(1), extra={"artifacts": {"blur_effect": 0.7}})
    habit = Recent(4.0, (), (("blur_effect", 0.35),))
    assert triggers(blurred, sharpness, habit) == ["rise:blur_effect>=0.30"]
    assert triggers(blurred, cfg, habit) == []

    clock = Clock()
    pol = EscalationPolicy(EscalationConfig(budget_floor=100, **NO_AUDIT), clock)
    for i, loss in enumerate((4.0, 4.3, 4.6, 4.3, 5.0)):
        clock.t += 2
        assert not pol.decide(soft(i, loss)).escalate
    clock.t += 2
    assert not pol.decide(v(5)).escalate  # not measured: the median is of the five that were
    assert pol.recent("news", "720p").measures == (("edge_loss", 4.3),)
    clock.t += 2
    d = pol.decide(soft(6, 7.0))
    assert d.escalate and d.reason == "rise:edge_loss>=2.30" and d.kind == "impaired"
    # another rendition with no history of its own: nothing to rise above
    assert not pol.decide(soft(0, 7.0, stream="sport")).escalate


def coded(seq: int, qp: float | None, stream: str = "news") -> Verdict:
    """A verdict whose bitstream gave this mean quantiser (None: a codec that exports none)."""
    feats = {"has_qp": 0.0} if qp is None else {"has_qp": 1.0, "qp_mean": qp / 51.0}
    return dataclasses.replace(v(seq, stream=stream), extra={"hybrid": feats})


def test_an_encoder_quantising_far_coarser_than_its_own_level_escalates() -> None:
    # a flat graphic squeezed to CRF 44-51 keeps its look to every picture measure; its
    # encoder's quantiser rose 16-29 over the rendition's usual one
    cfg = EscalationConfig()
    usual = Recent(4.0, (), (("qp", 21.0),))
    assert triggers(coded(1, 36.0), cfg, usual) == ["rise:qp>=12.00"]
    assert triggers(coded(1, 32.0), cfg, usual) == []  # 11 up: content, not the encoder
    assert triggers(coded(1, 36.0), cfg, None) == []  # no history yet
    assert triggers(coded(1, None), cfg, usual) == []  # HEVC: no quantiser exported
    assert triggers(coded(1, 36.0), EscalationConfig(measure_rise={}), usual) == []
    assert reason_label("rise:qp>=12.00") == "rise_qp"
    # the policy keeps the rendition's own level, and a channel coded coarse all along
    # (a habit) is not news
    clock = Clock()
    pol = EscalationPolicy(EscalationConfig(budget_floor=100, **NO_AUDIT), clock)
    for i, qp in enumerate((20.0, 21.0, 22.0, 21.0, 20.0)):
        clock.t += 2
        assert not pol.decide(coded(i, qp)).escalate
    assert pol.recent("news", "720p").measures == (("qp", 21.0),)
    clock.t += 2
    d = pol.decide(coded(5, 35.0))
    assert d.escalate and d.reason == "rise:qp>=12.00" and d.kind == "impaired"
    for i in range(6):
        clock.t += 2
        assert not pol.decide(coded(i, 35.0, stream="starved")).escalate
    # and the rules diagnosis reads it as compression
    assert rules_degradation(coded(5, 35.0).to_json(), RulesConfig(), d.reason)[0] == (
        "compression"
    )


def test_a_cheap_or_hostile_quantiser_is_no_level() -> None:
    # adaptive screening's cheap verdicts read keyframes alone: their quantiser is not the
    # segment's mean, so it neither sets the rendition's level nor fires against it
    clock = Clock()
    pol = EscalationPolicy(EscalationConfig(budget_floor=100, **NO_AUDIT), clock)
    for i in range(5):
        clock.t += 2
        pol.decide(dataclasses.replace(coded(i, 10.0), mode="cheap"))
        clock.t += 2
        pol.decide(coded(100 + i, 24.0))
    assert pol.recent("news", "720p").measures == (("qp", 24.0),)
    usual = Recent(4.0, (), (("qp", 21.0),))
    cheap = dataclasses.replace(coded(1, 36.0), mode="cheap")
    assert triggers(cheap, EscalationConfig(), usual) == []
    assert triggers(dataclasses.replace(cheap, mode="promoted"), EscalationConfig(), usual) == [
        "rise:qp>=12.00"
    ]
    # off the topic: a quantiser outside 0-51, or has_qp that is not 1, is none
    for feats in (
        {"has_qp": 1.0, "qp_mean": -0.1},
        {"has_qp": 1.0, "qp_mean": 1e300},
        {"has_qp": "no", "qp_mean": 0.7},
        {"has_qp": [0], "qp_mean": 0.7},
        {"has_qp": 1.0, "qp_mean": "0.7"},
    ):
        hostile = dataclasses.replace(v(1), extra={"hybrid": feats})
        assert triggers(hostile, EscalationConfig(), usual) == [], feats
        pol.decide(hostile)
    assert pol.recent("news", "720p").measures == (("qp", 24.0),)


def test_soft_triggers_use_only_the_budgets_spare_part() -> None:
    clock = Clock()
    cfg = EscalationConfig(
        budget_lend_s=0.0, budget_fraction=0.1, budget_floor=0, stream_burst=1000, **NO_AUDIT
    )
    pol = EscalationPolicy(cfg, clock)
    for i in range(100):  # a rendition at mos 4.2; 100 seen: a budget of 10
        clock.t += 0.1
        pol.decide(v(i, mos_low=4.2))
    made = []
    for i in range(100, 112):  # 0.6 below the rendition's median: soft (0.5), not full (0.8)
        clock.t += 0.1
        made.append(pol.decide(v(i, mos_low=3.6)))
    assert {d.kind for d in made} == {"soft"} and made[0].reason == "soft:mos_low_drop>0.50"
    # 80% of the budget (0.1 of 112 seen) for soft triggers, the rest kept for impairments
    assert sum(d.escalate for d in made) == 8 and made[-1].dropped == "budget"
    clock.t += 0.1
    assert pol.decide(v(112, flags=BLACK)).escalate  # an impairment still has room
    off = EscalationConfig(soft=None, **NO_AUDIT)
    assert triggers(v(1, mos_low=3.6), off, Recent(4.2)) == []


def test_a_soft_trigger_of_a_settled_event_or_habit_is_no_news() -> None:
    clock = Clock()
    cfg = EscalationConfig(audit_fraction=0.0, budget_floor=1000, stream_burst=1000)
    pol = EscalationPolicy(cfg, clock)
    for i in range(10):
        clock.t += 2
        pol.decide(v(i, mos_low=4.0))

    def seg(i: int, mos_low: float) -> Decision:
        clock.t += 2
        return pol.decide(v(i, mos_low=mos_low))

    assert seg(10, 3.0).reason == "mos_low_drop>0.80"  # an event, escalated
    weaker = seg(11, 3.3)  # the same drop, in the soft band: the event goes on
    assert weaker.kind == "unsure" and weaker.reason == "ongoing:soft:mos_low_drop>0.50"
    assert seg(12, 3.0).reason.startswith(("ongoing:", "habitual:"))  # and still does
    # the worker reads the same: a soft trigger of a settled event gets no frames of its own
    recent = pol.recent("news", "720p")
    assert unsettled(v(13, mos_low=3.3), ["soft:mos_low_drop>0.50"], recent) == []
    assert family("soft_edge_loss") == "rise_edge_loss" and family("flag_black") == "flag_black"


def test_soft_triggers_are_checked_against_their_full_ones() -> None:
    with pytest.raises(ValueError, match=r"soft\.head\.banding: 0\.3 is not below"):
        EscalationConfig(soft={"head": {"banding": 0.3}})
    # a soft share below the audits' takes the audits' (soft triggers rank above audits)
    low = EscalationPolicy(EscalationConfig(soft={"budget_share": 0.3}, audit_budget_share=0.5))
    assert low._refused("soft", 5.0) == low._refused("audit", 5.0)
    # a full trigger turned off turns its soft one off too
    off = EscalationConfig(drop_below_recent=None, measure_rise={}, rise_above_recent={})
    assert triggers(v(1, mos_low=3.0), off, Recent(4.2)) == []


def test_room_judges_the_budget_with_the_segment_it_is_asked_for() -> None:
    # decide() counts a segment as seen before it judges it; room() must too, or the
    # segment that tips the budget over gets no frames and is then admitted as no_frames
    clock = Clock()
    cfg = EscalationConfig(budget_lend_s=0.0, budget_fraction=0.05, budget_floor=0, **NO_AUDIT)
    pol = EscalationPolicy(cfg, clock)
    for i in range(19):  # 19 seen: 0.95 of an escalation; the 20th makes it 1
        clock.t += 0.1
        pol.decide(v(i))
    assert pol.room("news") == "impaired"
    clock.t += 0.1
    assert pol.decide(v(19, flags=BLACK)).escalate


def test_measures_are_checked() -> None:
    with pytest.raises(ValueError, match="unknown measure 'sharpness'"):
        EscalationConfig(measure_rise={"sharpness": 0.3})
    with pytest.raises(ValueError, match="not in"):
        EscalationConfig(measure_rise={"blur_effect": 0.0})


def test_rise_classes_are_checked() -> None:
    with pytest.raises(ValueError, match="unknown degradation class 'grain'"):
        EscalationConfig(rise_above_recent={"grain": 0.3})
    with pytest.raises(ValueError, match="not in"):
        EscalationConfig(rise_above_recent={"banding": 1.5})


def test_audit_is_deterministic_and_near_its_fraction() -> None:
    picks = [audit_pick(f"s/r/{i}", 0.05) for i in range(4000)]
    assert 0.04 < sum(picks) / len(picks) < 0.06
    assert picks == [audit_pick(f"s/r/{i}", 0.05) for i in range(4000)]
    assert not any(audit_pick(f"s/r/{i}", 0.0) for i in range(100))


def test_budget_caps_the_escalated_fraction() -> None:
    clock = Clock()
    cfg = EscalationConfig(
        budget_lend_s=0.0, budget_fraction=0.05, budget_floor=0, stream_burst=1000, **NO_AUDIT
    )
    pol = EscalationPolicy(cfg, clock)
    made = dropped = 0
    for i in range(1000):
        clock.t += 0.1
        bad = i % 10 == 0  # 10% impaired
        d = pol.decide(v(i, flags=BLACK if bad else ()))
        made += d.escalate
        dropped += d.dropped == "budget"
    assert made <= 0.05 * 1000 and made >= 45
    assert dropped == 100 - made


def _cold_fleet(
    cfg: EscalationConfig, seconds: float, segment_s: float = 2.0, together: bool = False
) -> list[tuple[float, int, int]]:
    """40 streams of `segment_s` segments started cold, every tenth segment black, spread
    evenly or arriving `together` (within 40 ms): the time, segments seen and escalations
    made after each segment."""
    clock = Clock()
    pol = EscalationPolicy(cfg, clock)
    out = []
    made = 0
    for i in range(round(seconds * 40 / segment_s)):
        n, s = divmod(i, 40)
        clock.t = 1000.0 + n * segment_s + (s * 0.001 if together else s * segment_s / 40)
        d = pol.decide(v(n, flags=BLACK if i % 10 == 0 else (), stream=f"s{s}"))
        made += d.escalate
        out.append((clock.t - 1000.0, i + 1, made))
    return out


def test_a_cold_start_lends_the_next_seconds_of_budget_never_more_than_a_window() -> None:
    # a new deployment: 40 streams, 10% of segments black. 5% of the few segments seen
    # refuses most of the first faults; lending 15 s at the pace seen lets them through,
    # and the first window still never spends more than 5% of a window at that pace.
    cfg = EscalationConfig(budget_floor=0, stream_burst=1000, **NO_AUDIT)
    strict = _cold_fleet(cfg.model_copy(update={"budget_lend_s": 0.0}), 10)
    assert strict[199][1:] == (200, 9)  # 10 s in: 20 black segments, 9 escalated
    for together in (False, True):  # spread over the segment's 2 s, or all at once
        lent = _cold_fleet(cfg, 300, together=together)
        assert lent[199][1:] == (200, 19)  # every fault but the first, before any budget
        for t, _seen, made in lent:  # at most 5% of the next 15 s at 20 segments a second
            assert made <= 0.05 * 20 * min(cfg.budget_window_s, t + cfg.budget_lend_s)
        assert lent[-1][2] <= 0.05 * 6000  # the first window: 5% of its segments in all
    # once the window is full, 5% of what it holds, as without lending
    clock = Clock()
    pol = EscalationPolicy(cfg, clock)
    for i in range(6400):
        clock.t = 1000.0 + i * 0.05
        pol.decide(v(i // 40, stream=f"s{i % 40}"))
    assert pol.budget == pytest.approx(0.05 * pol._seen)
    # a lend shorter than the pace's span never lends less than nothing
    small = EscalationPolicy(cfg.model_copy(update={"budget_lend_s": 0.5}), clock)
    small.decide(v(1))
    assert small.budget == pytest.approx(0.05)


def test_a_warm_start_counts_its_remembered_window_s_age_and_a_long_silence_lends_again() -> None:
    clock = Clock()
    clock.t = 1000.7  # a clock between whole seconds: the window's age is not rounded
    cfg = EscalationConfig(budget_floor=0, **NO_AUDIT)
    pol = EscalationPolicy(cfg, clock)
    for i in range(300):  # a segment a second for the last 300 s
        pol.remember(v(i), age_s=299.5 - i)
    pol.decide(v(300))
    assert pol.budget == pytest.approx(0.05 * 301)  # remembered a whole window: no lending
    clock.t += 400.0  # a silence longer than the window: the next one starts young
    pol.decide(v(301))
    assert pol.budget == pytest.approx(0.05 * 1 * 15.0 / 2.0)
    clock.t += 10.0
    for i in range(302, 312):
        pol.decide(v(i))
    assert pol.budget == pytest.approx(0.05 * 11 * 25.0 / 12.0)
    # a deployment 100 s old restarted: its remembered 100 s are the window's age
    young = EscalationPolicy(cfg, clock)
    for i in range(100):
        young.remember(v(i, stream="young"), age_s=100.0 - i)
    young.decide(v(100, stream="young"))
    assert young.budget == pytest.approx(0.05 * 101 * 115.0 / 102.0)


def test_room_agrees_with_a_young_window_s_decision() -> None:
    # the young window's budget never grows with time alone: a hint of "none" is not
    # followed by an admission the worker made no frames for (dropped as no_frames)
    clock = Clock()
    cfg = EscalationConfig(budget_floor=0, stream_burst=1000, **NO_AUDIT)
    pol = EscalationPolicy(cfg, clock)
    made = sum(pol.decide(v(0, flags=BLACK, stream=f"s{i}")).escalate for i in range(40))
    assert made == 15  # 40 first segments at once: 5% of 40 read over 2 s, lent 15 s
    clock.t += 0.1
    assert pol.room("s40") == "none"  # the worker makes no frames
    clock.t += 1.1  # no other segment decided in between
    assert pol.decide(v(0, flags=BLACK, stream="s40"), has_request=False).dropped == "budget"


RANKED = {**NO_AUDIT, "budget_floor": 0, "budget_lend_s": 0.0, "stream_burst": 1000, "soft": None}
STILL = (Flag("freeze", 1.0, 0, 2, {"run_frames": 50.0}),)


def _fleet(
    rank: Ranking | None,
    pick: Callable[[int], tuple[tuple[Flag, ...], float]],
    n: int = 3000,
    since: int = 0,
    **cfg: Any,
) -> Counter:
    """`n` segments of 40 streams (20 a second) through a policy: (what, escalated,
    dropped) counts of those from `since` on, `pick(i)` giving segment i's flags and
    mos_low."""
    clock = Clock()
    pol = EscalationPolicy(EscalationConfig(**{**RANKED, **cfg}, rank=rank), clock)
    out: Counter = Counter()
    for i in range(n):
        clock.t += 0.05
        flags, low = pick(i)
        dip = ["low"] if low < 2.5 else ["dip"] if low < 4.0 else []
        what = "+".join([f.kind for f in flags] + dip) or "clean"
        d = pol.decide(v(i, low, flags, stream=f"s{i % 40}"))
        if i >= since:
            out[what, d.escalate, d.dropped] += 1
    return out


def test_when_the_budget_binds_a_rare_trigger_goes_before_a_common_one() -> None:
    """Still pictures look frozen on 30% of the fleet's segments; black comes on 2%. First
    come, first served, the budget (5%) is spent on the stills before each black arrives;
    ranked, the blacks go first, and the stills take the rest up to beyond_share."""

    def pick(i: int) -> tuple[tuple[Flag, ...], float]:
        if i % 50 == 25:
            return BLACK, 4.0
        return (STILL if i % 10 < 3 else ()), 4.0

    fcfs = _fleet(None, pick)
    assert fcfs["black", False, "budget"] == 60  # every black refused
    ranked = _fleet(Ranking(), pick)
    # the first few meet a cold budget under ten, which keeps nothing back
    assert ranked["black", True, None] >= 56
    assert ranked["freeze", False, "ranked"] > 700
    made = sum(n for (_, esc, _), n in ranked.items() if esc)
    assert 0.9 * 150 - 2 <= made <= 150  # beyond_share of the budget spent, never over


def test_triggers_that_agree_outrank_each_alone() -> None:
    """A still picture (30%) and a low score (30%) are each common; together (2%) they are
    not, and go first."""

    def pick(i: int) -> tuple[tuple[Flag, ...], float]:
        if i % 50 == 25:
            return STILL, 2.0
        return (STILL if i % 10 < 3 else ()), (2.0 if 3 <= i % 10 < 6 else 4.0)

    fcfs = _fleet(None, pick)
    assert fcfs["freeze+low", False, "budget"] == 60
    ranked = _fleet(Ranking(), pick)
    assert ranked["freeze+low", True, None] >= 56
    assert ranked["low", False, "ranked"] > 0 and ranked["freeze", False, "ranked"] > 0


def test_the_ranks_count_a_remembered_window_once_the_rendition_is_screened() -> None:
    """A warm start's verdicts join the ranks (as candidates, when they were) only once
    this member decides the rendition's next segment, as they join the budget; those
    older than the window, or from a clock ahead of ours, never; all leave with it."""
    clock = Clock()
    pol = EscalationPolicy(EscalationConfig(**RANKED, budget_window_s=10), clock)
    ranks = pol._ranks
    assert ranks is not None
    for i in range(20):
        pol.remember(v(i, 4.0, STILL), age_s=5.0)
    pol.remember(v(98, 4.0, STILL), age_s=50.0)  # older than the window
    pol.remember(v(99, 4.0, STILL), age_s=-60.0)  # published by a clock ahead of ours
    pol.remember(v(0, 4.0, STILL, stream="theirs"), age_s=5.0)  # a partner's rendition
    assert ranks.seen == 0  # not yet screened here
    pol.decide(v(100, 4.0))
    # news from the rendition's recent_min-th remembered verdict on (the running daemon
    # had the history of the first ones)
    assert ranks.seen == 21 and ranks.labels["flag_freeze"] == 15
    assert ranks.candidates["impaired", frozenset({"flag_freeze"})] == 15
    clock.t += 11
    pol.decide(v(101, 4.0))
    assert ranks.labels["flag_freeze"] == 0 and ranks.seen == 1


def test_what_left_the_window_no_longer_ranks() -> None:
    """Blacks in the first 150 s only, stills all along (30%): once the blacks have left
    the 300-s window, nothing scores above the stills and none is refused as ranked."""

    def pick(i: int) -> tuple[tuple[Flag, ...], float]:
        if i % 50 == 25 and i < 3000:
            return BLACK, 4.0
        return (STILL if i % 10 < 3 else ()), 4.0

    late = _fleet(Ranking(), pick, n=12000, since=9100)
    assert late["freeze", True, None] > 100 and not late["freeze", False, "ranked"]
    early = _fleet(Ranking(), pick, n=3000, since=1000)
    assert early["freeze", False, "ranked"] > 100


def test_an_outages_ongoing_black_is_not_counted_as_news_live_or_remembered() -> None:
    """10 streams black for a minute: a trigger's rate counts the segments it was news on
    (before it became the rendition's habit, 2 of 30, or, without habits, the escalated
    first one of each event), not the 300 it fired on; a restarted daemon reading the
    same verdicts back counts them the same way."""
    _outage(EscalationConfig(audit_fraction=0.0, budget_fraction=1.0, stream_burst=1000), 20)
    no_habits = {"audit_fraction": 0.0, "budget_fraction": 1.0, "habitual_share": None}
    _outage(EscalationConfig(**no_habits, stream_burst=1000), 10)


def _outage(cfg: EscalationConfig, news: int) -> None:
    clock = Clock()
    live = EscalationPolicy(cfg, clock)
    seen = []
    for i in range(60 * 40 // 2):  # a minute of 2-s segments on 40 streams
        clock.t += 0.05
        stream = f"s{i % 40}"
        verdict = v(i, 4.0, BLACK if i % 40 < 10 and i >= 400 else (), stream=stream)
        seen.append((verdict, live.decide(verdict).escalate, clock.t))
    assert live._ranks is not None and live._ranks.labels["flag_black"] <= news
    restarted = EscalationPolicy(cfg, clock)
    for verdict, escalated, at in seen:
        restarted.remember(verdict, clock.t - at, escalated)
    for s in range(40):
        restarted.decide(v(9999, 4.0, stream=f"s{s}"))
    assert restarted._ranks is not None and restarted._ranks.labels["flag_black"] <= news


def test_a_common_soft_trigger_is_ranked_below_a_rare_impairment() -> None:
    """Soft drops of mos_low (0.6 below the median) on a fifth of every stream's segments,
    black on 2%: the soft ones are beyond what their share affords and leave its kept
    part to the blacks."""

    def pick(i: int) -> tuple[tuple[Flag, ...], float]:
        if i % 50 == 25:
            return BLACK, 4.0
        return (), (3.4 if (i // 40) % 5 == 0 else 4.0)

    cfg = {"soft": {}}
    ranked = _fleet(Ranking(), pick, **cfg)
    assert ranked["dip", False, "ranked"] > 0 and ranked["black", True, None] >= 56
    fcfs = _fleet(None, pick, **cfg)
    assert fcfs["dip", True, None] > 0 and not fcfs["dip", False, "ranked"]


def test_an_impairment_is_ranked_among_impairments_only() -> None:
    """A soft trigger cannot use the room kept above its own share, so a rarer soft one
    does not hold an impairment back."""
    ranks = _Ranks(Ranking(), 300.0)
    for i in range(400):
        ranks.see(1000.0 + i / 20, ("impaired", frozenset({"flag_freeze"})) if i % 3 == 0 else None)
    ranks.see(1020.0, ("soft", frozenset({"soft_mos_low_drop"})))
    assert not ranks.beyond("impaired", frozenset({"flag_freeze"}), 20.0)
    assert ranks.beyond("soft", frozenset({"flag_freeze"}), 16.0)
    ranks.see(1020.0, ("impaired", frozenset({"flag_black"})))
    assert ranks.beyond("impaired", frozenset({"flag_freeze"}), 20.0)
    assert not ranks.beyond("impaired", frozenset({"flag_freeze"}), 200.0)  # all fit


def test_a_small_feed_on_its_budget_floor_keeps_nothing_back() -> None:
    """One stream of 15-s segments: 20 a window, a budget of budget_floor (2). A black,
    then two stills: the first still takes the second escalation, none is kept back."""
    clock = Clock()
    pol = EscalationPolicy(EscalationConfig(), clock)
    made = []
    for i in range(20):
        clock.t += 15
        flags = BLACK if i == 4 else (STILL if i in (9, 14) else ())
        d = pol.decide(v(i, 2.0 if i == 4 else 4.0, flags, stream="a"))
        if flags:
            made.append((flags[0].kind, d.escalate, d.dropped))
    assert made == [("black", True, None), ("freeze", True, None), ("freeze", False, "budget")]


def test_the_part_kept_back_is_whole_escalations_never_more_than_its_share() -> None:
    """Three blacks meet a cold budget and are refused; five stills follow, more common,
    so beyond what the budget affords with the blacks. At a budget of five
    a tenth is half an escalation: nothing is kept back, the fifth still goes (kept
    continuously, it would be refused: a fifth of the budget)."""
    clock = Clock()
    pol = EscalationPolicy(EscalationConfig(**RANKED), clock)
    made = []
    for i in range(110):
        clock.t += 0.5
        flags = BLACK if 5 <= i < 8 else (STILL if i >= 60 and i % 10 == 0 else ())
        d = pol.decide(v(i, 4.0, flags, stream=f"s{i % 40}"))
        if flags:
            made.append((flags[0].kind, d.escalate, d.dropped))
    assert made == [("black", False, "budget")] * 3 + [("freeze", True, None)] * 5
    assert pol._ranks is not None
    assert pol._ranks.beyond("impaired", frozenset({"flag_freeze"}), pol.budget)
    assert 5 <= pol.budget < 10


def test_ranking_settings_are_checked() -> None:
    assert EscalationConfig(rank=None).rank is None
    with pytest.raises(ValueError, match="beyond_share"):
        EscalationConfig(rank={"beyond_share": 1.5})


def test_budget_window_slides() -> None:
    clock = Clock()
    cfg = EscalationConfig(
        budget_lend_s=0.0,
        budget_fraction=0.5,
        budget_floor=0,
        budget_window_s=10,
        stream_burst=100,
        **NO_AUDIT,
    )
    pol = EscalationPolicy(cfg, clock)
    assert pol.decide(v(0, flags=BLACK)).dropped == "budget"  # 0.5 of 1 seen < 1
    assert pol.decide(v(1, flags=BLACK)).escalate  # 0.5 of 2 seen = 1
    assert pol.decide(v(2, flags=BLACK)).dropped == "budget"
    clock.t += 20  # the window has moved on: nothing seen, nothing escalated
    assert pol.decide(v(3, flags=BLACK)).dropped == "budget"
    assert pol.decide(v(4, flags=BLACK)).escalate


def test_per_stream_token_bucket() -> None:
    clock = Clock()
    cfg = EscalationConfig(stream_burst=2, stream_rate_per_s=0.5, budget_fraction=1.0, **NO_AUDIT)
    pol = EscalationPolicy(cfg, clock)
    got = [pol.decide(v(i, flags=BLACK)) for i in range(4)]
    assert [d.escalate for d in got] == [True, True, False, False]
    assert got[2].dropped == "stream_rate"
    # another stream has its own bucket
    assert pol.decide(v(0, flags=BLACK, stream="sport")).escalate
    clock.t += 1.9  # 0.95 tokens: not yet
    assert pol.decide(v(5, flags=BLACK)).dropped == "stream_rate"
    clock.t += 0.2
    assert pol.decide(v(6, flags=BLACK)).escalate


def test_impaired_segments_have_priority_over_audits() -> None:
    clock = Clock()
    cfg = EscalationConfig(
        budget_lend_s=0.0,
        audit_fraction=1.0,
        budget_fraction=0.2,
        budget_floor=1,
        audit_budget_share=0.5,
        stream_burst=1000,
    )
    pol = EscalationPolicy(cfg, clock)
    kinds = {"audit": 0, "impaired": 0}
    for i in range(400):
        clock.t += 0.5
        bad = i % 20 == 10  # 5% impaired, every normal segment wants an audit
        d = pol.decide(v(i, flags=BLACK if bad else ()))
        if d.escalate:
            assert d.kind is not None
            kinds[d.kind] += 1
        elif bad:
            pytest.fail(f"impaired segment {i} was not escalated: {d}")
    assert kinds["impaired"] == 20
    # audits only fill what impairments leave of audit_budget_share of the budget
    assert kinds["audit"] + kinds["impaired"] <= 0.5 * 0.2 * 400 + 1
    assert kinds["audit"] > 0


def test_audit_leaves_the_last_token_to_an_impairment() -> None:
    clock = Clock()
    cfg = EscalationConfig(
        audit_fraction=1.0, stream_burst=2, stream_rate_per_s=0.001, budget_fraction=1.0
    )
    pol = EscalationPolicy(cfg, clock)
    assert pol.decide(v(0)).reason == "audit" and pol.decide(v(0)).escalate is False
    assert pol.decide(v(1, flags=BLACK)).escalate


def test_disabled() -> None:
    pol = EscalationPolicy(EscalationConfig(enabled=False))
    assert pol.decide(v(0, flags=BLACK)).escalate is False


def test_per_kind_flag_thresholds_and_a_head_sure_of_a_degradation() -> None:
    cfg = EscalationConfig()
    assert triggers(v(1, flags=(Flag("corruption", 0.08, 0, 2),)), cfg, None) == [
        "flag:corruption>=0.00"
    ]
    # one lost frame of a 2-s 25-fps segment: any corruption flag is a transport fault
    one_frame = (Flag("corruption", 0.04, 0, 0.04),)
    assert triggers(v(1, flags=one_frame), cfg, None) == ["flag:corruption>=0.00"]
    assert triggers(v(1, flags=(Flag("banding", 0.15, 0, 2),)), cfg, None) == ["flag:banding>=0.05"]
    assert triggers(v(1, flags=(Flag("blur", 0.08, 0, 2),)), cfg, None) == []
    noisy = {"clean": 0.2, "noise": 0.7, "blur": 0.1}
    assert triggers(v(1, head=noisy), cfg, None) == ["degraded:noise>=0.50"]
    assert triggers(v(1, head={"clean": 0.8, "noise": 0.2}), cfg, None) == []
    assert triggers(v(1, head=noisy), EscalationConfig(degraded_above=None), None) == []


def test_an_unsure_head_alone_has_an_audits_priority() -> None:
    clock = Clock()
    cfg = EscalationConfig(
        budget_fraction=0.1, budget_floor=0, audit_budget_share=0.5, stream_burst=1000, **NO_AUDIT
    )
    pol = EscalationPolicy(cfg, clock)
    unsure = {"clean": 0.3, "blur": 0.35, "noise": 0.35}
    made = {"unsure": 0, "impaired": 0}
    missed = 0
    for i in range(1000):
        clock.t += 0.1
        bad = i % 40 == 20  # 2.5% impaired; every other segment's head is unsure
        d = pol.decide(v(i, flags=BLACK if bad else (), head=None if bad else unsure))
        if d.escalate:
            assert d.kind is not None and d.kind != "audit"
            made[d.kind] += 1
        missed += bad and not d.escalate
    assert missed == 0  # unsure verdicts never crowd out an impairment
    assert made["unsure"] <= 0.05 * 1000 + 1 and made["impaired"] == 25


def test_an_escalated_event_is_explained_once_while_it_lasts() -> None:
    clock = Clock()
    cfg = EscalationConfig(
        audit_fraction=0.0, habitual_share=None, budget_floor=1000, stream_burst=1000
    )
    pol = EscalationPolicy(cfg, clock)
    frozen = (Flag("freeze", 1.0, 0, 2),)

    def seg(i: int, flags: tuple[Flag, ...] = frozen, stream: str = "news") -> Decision:
        clock.t += 2
        return pol.decide(v(i, flags=flags, stream=stream))

    first, *going = [seg(i) for i in range(4)]  # a freeze over four segments
    assert first.escalate and first.kind == "impaired"
    assert all(d.kind == "unsure" and d.reason.startswith("ongoing:") for d in going)
    # something new during the event is news; the event goes on
    black = seg(4, frozen + BLACK)
    assert black.kind == "impaired" and black.reason == "flag:black>=0.50"
    assert seg(5).kind == "unsure"
    assert seg(0, stream="sport").kind == "impaired"  # another rendition's own event
    seg(6, ())  # the picture moves again: the event is over
    again = seg(7)
    assert again.kind == "impaired" and again.reason == "flag:freeze>=0.50"


def test_an_event_growing_far_stronger_than_it_was_escalated_is_news() -> None:
    # a camera holds still for half a segment (escalated), then the picture stops
    clock = Clock()
    cfg = EscalationConfig(
        audit_fraction=0.0, habitual_share=None, budget_floor=1000, stream_burst=1000
    )

    def run(policy: EscalationPolicy, severities: list[float]) -> list[Decision]:
        out = []
        for i, sev in enumerate(severities):
            clock.t += 2
            out.append(policy.decide(v(i, flags=(Flag("freeze", sev, 0, 2),))))
        return out

    hold, stop, still = run(EscalationPolicy(cfg, clock), [0.5, 0.98, 0.98])
    assert hold.kind == "impaired" and stop.escalate and stop.kind == "impaired"
    assert still.kind == "unsure" and still.reason.startswith("ongoing:")  # 0.98 goes on
    near = run(EscalationPolicy(cfg, clock), [0.5, 0.55])[1]  # within the margin
    assert near.kind == "unsure" and near.reason.startswith("ongoing:")
    off = run(EscalationPolicy(cfg.model_copy(update={"habit_margin": None}), clock), [0.5, 0.98])
    assert off[1].kind == "unsure" and off[1].reason.startswith("ongoing:")
    # the worker's hint agrees: a stronger flag of the event is not settled
    pol = EscalationPolicy(cfg, clock)
    run(pol, [0.5])
    assert dict(pol.recent("news", "720p").settled)["flag_freeze"] == pytest.approx(0.6)


def test_an_event_refused_at_its_start_keeps_its_priority() -> None:
    clock = Clock()
    cfg = EscalationConfig(
        budget_lend_s=0.0,
        audit_fraction=0.0,
        habitual_share=None,
        budget_floor=0,
        budget_fraction=0.5,
    )
    pol = EscalationPolicy(cfg, clock)
    refused = pol.decide(v(0, flags=BLACK))  # 0.5 of 1 seen: no room
    assert refused.dropped == "budget"
    clock.t += 2
    later = pol.decide(v(1, flags=BLACK))  # room now, and nothing was explained yet
    assert later.escalate and later.kind == "impaired"
    assert reason_label("ongoing:flag:black>=0.50") == "ongoing"


def test_a_habitual_trigger_yields_to_what_changed() -> None:
    clock = Clock()
    cfg = EscalationConfig(
        audit_fraction=0.0, budget_floor=1000, stream_burst=1000, once_per_event=False
    )
    pol = EscalationPolicy(cfg, clock)
    frozen = (Flag("freeze", 1.0, 0, 2),)
    got = []
    for i in range(12):  # a static slate: every segment looks frozen
        clock.t += 2
        got.append(pol.decide(v(i, flags=frozen)))
    # escalated while it is news; habitual once 2 of the recent segments (and at least
    # recent_min are known) had it: an audit's priority from then on
    assert [d.kind for d in got[:5]] == ["impaired"] * 5
    assert all(d.kind == "unsure" and d.reason.startswith("habitual:") for d in got[5:])
    assert "flag_freeze" in pol.habitual("news/720p")
    clock.t += 2
    black = pol.decide(v(12, flags=frozen + BLACK))  # something new on the same rendition
    assert black.escalate and black.kind == "impaired" and black.reason == "flag:black>=0.50"
    clock.t += 2
    other = pol.decide(v(0, flags=frozen, stream="sport"))  # no habit on another stream
    assert other.escalate and other.kind == "impaired"


def test_a_habitual_flag_far_stronger_than_its_habit_is_what_changed() -> None:
    # a camera that holds still for half a segment now and then, then a whole-segment stop
    clock = Clock()
    cfg = EscalationConfig(audit_fraction=0.0, budget_floor=1000, stream_burst=1000)
    holds = [0.5 if i in (1, 4, 7, 10) else 0.0 for i in range(12)]

    def run(policy: EscalationPolicy, last: float) -> Decision:
        for i, sev in enumerate(holds):
            clock.t += 2
            policy.decide(v(i, flags=(Flag("freeze", sev, 0, 2),) if sev else ()))
        clock.t += 2
        return policy.decide(v(12, flags=(Flag("freeze", last, 0, 2),)))

    stop = run(EscalationPolicy(cfg, clock), 0.98)
    assert stop.escalate and stop.kind == "impaired" and stop.reason == "flag:freeze>=0.50"
    hold = run(EscalationPolicy(cfg, clock), 0.55)  # within the margin: still the habit
    assert hold.kind == "unsure" and hold.reason.startswith("habitual:")
    off = run(EscalationPolicy(cfg.model_copy(update={"habit_margin": None}), clock), 0.98)
    assert off.kind == "unsure" and off.reason.startswith("habitual:")


def test_a_still_shot_that_is_over_is_no_habit_but_one_that_comes_back_is() -> None:
    clock = Clock()
    cfg = EscalationConfig(audit_fraction=0.0, budget_floor=1000, stream_burst=1000)
    frozen = (Flag("freeze", 1.0, 0, 2),)

    def run(policy: EscalationPolicy, shots: list[tuple[Flag, ...]]) -> Decision:
        for i, flags in enumerate(shots):
            clock.t += 2
            policy.decide(v(i, flags=flags))
        clock.t += 2
        return policy.decide(v(len(shots), flags=frozen))

    # a 6-segment still shot, then the camera moves for 8: the picture stops
    over = [frozen] * 6 + [()] * 8
    stop = run(EscalationPolicy(cfg, clock), over)
    assert stop.escalate and stop.kind == "impaired" and stop.reason == "flag:freeze>=0.50"
    # stills that come back (two shots) are the channel's habit
    back = run(EscalationPolicy(cfg, clock), [frozen] * 6 + [()] * 3 + [frozen] * 6 + [()] * 2)
    assert back.kind == "unsure" and back.reason.startswith("habitual:")
    # a still shot still going is the habit too, however it began
    going = run(EscalationPolicy(cfg, clock), [()] * 3 + [frozen] * 6)
    assert going.kind == "unsure" and going.reason.startswith(("habitual:", "ongoing:"))
    off = cfg.model_copy(update={"habit_runs": False})
    assert run(EscalationPolicy(off, clock), over).kind == "unsure"
    # a run shorter than recent_min (5) is no still shot: two adjacent stills are a habit
    short = run(EscalationPolicy(cfg, clock), [frozen] * 4 + [()] * 8)
    assert short.kind == "unsure" and short.reason.startswith("habitual:")
    assert run(EscalationPolicy(cfg, clock), [frozen] * 5 + [()] * 8).kind == "impaired"
    # nor does a long shot's tail turn into a habit as it slides out of the 30-segment window
    for quiet in range(21, 30):
        tail = run(EscalationPolicy(cfg, clock), [frozen] * 10 + [()] * quiet)
        assert tail.kind == "impaired", quiet


def _after(
    policy: EscalationPolicy, clock: Clock, shots: list[tuple[Flag, ...]], flags: tuple[Flag, ...]
) -> Decision:
    """The decision on a segment with `flags` after segments with each of `shots`."""
    for i, seen in enumerate(shots):
        clock.t += 2
        policy.decide(v(i, flags=seen))
    clock.t += 2
    return policy.decide(v(len(shots), flags=flags))


def test_a_still_shot_that_is_over_sets_no_ceiling_for_a_channels_short_holds() -> None:
    """Short camera holds (freeze 0.6) are the channel's habit; one still shot of 6
    segments (1.0) that is over is a past event, not the habit's peak: a full stop later is
    news, not habitual. Two still shots are the habit, peak and all."""
    clock = Clock()
    cfg = EscalationConfig(audit_fraction=0.0, budget_floor=1000, stream_burst=1000)
    hold, frozen = (Flag("freeze", 0.6, 0, 1),), (Flag("freeze", 1.0, 0, 2),)

    def stop_after(shots: list[tuple[Flag, ...]]) -> Decision:
        return _after(EscalationPolicy(cfg, clock), clock, shots, frozen)

    quiet: list[tuple[Flag, ...]] = [()] * 3
    holds = [*quiet, hold, *quiet, hold, *quiet]
    stop = stop_after([*holds, *[frozen] * 6, *quiet, hold, *quiet])
    assert stop.escalate and stop.kind == "impaired", stop
    again = stop_after([*holds, *[frozen] * 6, *quiet, *[frozen] * 6, *quiet, hold, *quiet])
    assert again.kind == "unsure" and again.reason.startswith("habitual:")

    # nor while it slides out of a full window, however long it was
    for length in (5, 6, 10, 15, 20):
        policy = EscalationPolicy(cfg, clock)
        habitual = []
        for i in range(40 + length + 30):
            clock.t += 2
            # (no hold right after it: a run going on is the still shot going on)
            held = i % 4 == 0 and i != 40 + length
            flags = frozen if 40 <= i < 40 + length else (hold if held else ())
            policy.decide(v(i, flags=flags))
            if i >= 40 + length and i % 4 != 3:  # ended; the next segment is no hold
                stop = copy.deepcopy(policy).decide(v(i + 1, flags=frozen))
                if stop.kind != "impaired":
                    habitual.append(i - 40 - length)
        assert not habitual, (length, habitual)


def test_a_picture_that_stops_is_news_where_stills_are_the_habit() -> None:
    """A rendition whose picture is still from each segment's start (a slate, still shots)
    has that freeze as its habit; a picture seen moving and then held (the detector's
    `stopped`) is not covered by it. A channel whose habit is stops has them covered."""
    clock = Clock()
    cfg = EscalationConfig(audit_fraction=0.0, budget_floor=1000, stream_burst=1000)
    still = (Flag("freeze", 1.0, 0, 2, {"stopped": 0.0}),)
    stop = (Flag("freeze", 0.8, 0.4, 1.6, {"stopped": 1.0}),)

    def last(config: EscalationConfig, shots: list[tuple[Flag, ...]]) -> Decision:
        return _after(EscalationPolicy(config, clock), clock, shots, stop)

    news = last(cfg, [still] * 12)
    assert news.escalate and news.kind == "impaired" and news.reason == STOPPED
    assert reason_label(news.reason) == "stopped_freeze"
    off = last(cfg.model_copy(update={"stops": False}), [still] * 12)
    assert off.kind == "unsure" and off.reason == "habitual:flag:freeze>=0.50"
    # a channel that stops now and then: its stops are its habit
    quiet: list[tuple[Flag, ...]] = [()] * 3
    habit = last(cfg, [*quiet, stop, *quiet, stop, *quiet, stop, *quiet])
    assert habit.kind == "unsure" and habit.reason.startswith("habitual:")
    # the trigger is the freeze flag's: below its severity, neither fires
    weak = (Flag("freeze", 0.3, 1.4, 0.6, {"stopped": 1.0}),)
    assert triggers(v(0, flags=weak), cfg, None) == []
    assert triggers(v(0, flags=stop), cfg, None) == ["flag:freeze>=0.50", STOPPED]


def test_a_stuck_picture_that_jumps_and_sticks_again_is_one_event() -> None:
    clock = Clock()
    cfg = EscalationConfig(audit_fraction=0.0, budget_floor=1000, stream_burst=1000)
    stop = (Flag("freeze", 0.92, 0.16, 1.84, {"stopped": 1.0}),)
    still = (Flag("freeze", 1.0, 0, 2, {"stopped": 0.0}),)
    policy = EscalationPolicy(cfg, clock)
    got = []
    for flags in [()] * 6 + [stop, still, still, stop, still]:
        clock.t += 2
        got.append(policy.decide(v(len(got), flags=flags)))
    assert [d.kind for d in got[6:]] == ["impaired"] + ["unsure"] * 4
    assert all(d.reason.startswith(("ongoing:", "habitual:")) for d in got[7:])
    # the picture moves again: the event is over, and the next stop is news
    for flags in [(), stop]:
        clock.t += 2
        got.append(policy.decide(v(len(got), flags=flags)))
    assert got[-1].kind == "impaired"


def test_a_stop_ranks_by_its_own_rate_not_as_two_agreeing_triggers() -> None:
    # as many stops as corruptions in the window: the corruption is not outranked
    ranks = _Ranks(Ranking(), 300.0)
    stop = _ranked_labels(["flag:freeze>=0.50", STOPPED])
    assert stop == frozenset({"stopped_freeze"})
    corrupt = frozenset({"flag_corruption"})
    for t in range(100):
        ranks.see(float(t), ("impaired", stop) if t % 10 == 0 else None)
        ranks.see(float(t), ("impaired", corrupt) if t % 10 == 5 else None)
    assert not ranks.beyond("impaired", corrupt, 10.0)
    # ranked as two agreeing triggers, the same stops would outrank every corruption
    doubled = _Ranks(Ranking(), 300.0)
    for t in range(100):
        doubled.see(float(t), ("impaired", stop | {"flag_freeze"}) if t % 10 == 0 else None)
        doubled.see(float(t), ("impaired", corrupt) if t % 10 == 5 else None)
    assert doubled.beyond("impaired", corrupt, 10.0)
    assert _ranked_labels(["flag:freeze>=0.50", "mos_low<2.50"]) == {"flag_freeze", "mos_low"}


def test_degradation_head_thresholds_per_class() -> None:
    cfg = EscalationConfig()
    # the head calls clean real content "compression" with up to 0.99: never alone
    assert triggers(v(1, head={"compression": 0.99, "clean": 0.01}), cfg, None) == []
    assert triggers(v(1, head={"noise": 0.6, "clean": 0.4}), cfg, None) == ["degraded:noise>=0.50"]
    assert triggers(v(1, head={"blur": 0.7, "clean": 0.3}), cfg, None) == []
    assert triggers(v(1, head={"blur": 0.8, "clean": 0.2}), cfg, None) == ["degraded:blur>=0.75"]
    back = EscalationConfig(degraded_kinds={"compression": 0.5})
    assert triggers(v(1, head={"compression": 0.99}), back, None) == ["degraded:compression>=0.50"]


def test_a_habit_needs_its_share_of_the_window_not_of_a_short_history() -> None:
    clock = Clock()
    cfg = EscalationConfig(audit_fraction=0.0, budget_floor=1000, stream_burst=1000)
    pol = EscalationPolicy(cfg, clock)
    decided = []
    for i in range(8):  # black twice, 6 segments apart: intermittent, not a habit
        clock.t += 2
        decided.append(pol.decide(v(i, flags=BLACK if i in (0, 6) else ())))
    # one earlier hit in a history of 6 is a sixth of it, not 2 of the window's 30
    assert decided[6].escalate and decided[6].kind == "impaired"
    assert pol.habitual("news/720p") == {"flag_black"}  # twice in the window now


def test_a_trigger_seen_twice_in_the_window_is_a_habit() -> None:
    # a channel cutting between still and moving shots: its stills look frozen now and then
    clock = Clock()
    cfg = EscalationConfig(audit_fraction=0.0, budget_floor=1000, stream_burst=1000)
    pol = EscalationPolicy(cfg, clock)
    frozen = (Flag("freeze", 1.0, 0, 2),)
    decided = []
    for i in range(20):
        clock.t += 2
        decided.append(pol.decide(v(i, flags=frozen if i in (2, 9, 15) else ())))
    assert [decided[i].kind for i in (2, 9)] == ["impaired", "impaired"]
    assert decided[15].kind == "unsure" and decided[15].reason.startswith("habitual:")
    three = EscalationPolicy(cfg.model_copy(update={"habitual_share": 0.1}), clock)
    third = []
    for i in range(20):
        clock.t += 2
        third.append(three.decide(v(i, flags=frozen if i in (2, 9, 15) else ())))
    assert third[15].kind == "impaired"  # 3 of 30: the third still was still news


def test_head_switches_and_class_overrides() -> None:
    head_off = EscalationConfig(degraded_above=None)
    assert triggers(v(1, head={"blur": 0.99, "clean": 0.01}), head_off, None) == []
    merged = EscalationConfig(degraded_kinds={"blur": 0.9})
    assert merged.degraded_kinds == {"compression": None, "blur": 0.9, "banding": 0.65}
    with pytest.raises(ValueError, match="not a class of the degradation head"):
        EscalationConfig(degraded_kinds={"blurr": 0.9})
    assert reason_label("habitual:flag:freeze>=0.50,mos_low<2.50") == "habitual"


def _with_qp(qp: float | None) -> Verdict:
    """A verdict whose hybrid features say the segment's mean quantiser (None: no QP)."""
    hybrid = {"qp_mean": (qp or 0.0) / 51.0, "has_qp": float(qp is not None)}
    return dataclasses.replace(v(1), extra={"hybrid": hybrid})


def test_a_coarse_quantiser_escalates_whatever_the_picture_scores() -> None:
    cfg = EscalationConfig()
    assert triggers(_with_qp(45.0), cfg, None) == ["qp>=40.0"]
    assert triggers(_with_qp(cfg.qp_above), cfg, None) == ["qp>=40.0"]
    assert triggers(_with_qp(31.0), cfg, None) == []
    assert triggers(_with_qp(None), cfg, None) == []  # HEVC exports no quantiser
    assert triggers(v(1), cfg, None) == []  # no hybrid features (artifacts alone)
    assert triggers(_with_qp(51.0), EscalationConfig(qp_above=None), None) == []
    assert reason_label("qp>=40.0,mos_low<2.50") == "qp"


def test_the_quantiser_trigger_reads_what_the_real_chain_measures() -> None:
    from ingest.decode import decode
    from ingest.synth import EncodeSettings, clip
    from ingest.types import Segment
    from monitor.config import Config
    from scorers.chain import Chain

    chain = Chain.from_configs(Config().scorers)
    cfg = EscalationConfig()
    fired = {}
    for crf in (23, 50):
        data = clip("texture", width=320, height=180, seconds=1.0, settings=EncodeSettings(crf=crf))
        verdict = chain.score([decode(Segment(data, stream=f"crf{crf}"))])[0]
        fired[crf] = "qp>=40.0" in triggers(verdict, cfg, None)
    assert fired == {23: False, 50: True}


FREEZE = (Flag("freeze", 1.0, 0, 2, {"run_frames": 50.0}),)


def test_a_published_verdict_reads_back_as_the_verdict() -> None:
    sent = dataclasses.replace(
        v(7, 3.25, FREEZE, head={"clean": 0.25, "blur": 0.75}),
        extra={"artifacts": {"edge_loss": 1.5}},
        mode="promoted",
    )
    got = verdict_from_json(json.loads(json.dumps(sent.to_json())))
    assert got == sent
    for bad in (
        {**sent.to_json(), "flags": ["freeze"]},
        {**sent.to_json(), "mos_low": "low"},
        {**sent.to_json(), "degradation": {"blur": True}},
        {**sent.to_json(), "schema": "vqmon.verdict/9"},
        {k: x for k, x in sent.to_json().items() if k != "stream"},
    ):
        with pytest.raises(MessageError):
            verdict_from_json(bad)


def test_a_remembered_history_makes_habits_without_spending_budget() -> None:
    clock = Clock()
    cfg = EscalationConfig(audit_fraction=0.0)
    warm, cold = EscalationPolicy(cfg, clock), EscalationPolicy(cfg, clock)
    for i in range(30):  # a slate: every segment looks frozen
        warm.remember(v(i, 3.0, FREEZE))
    assert "flag_freeze" in warm.habitual("news/720p")
    assert warm.recent_median("news", "720p") == 3.0
    assert warm.budget == cold.budget  # remembering is not seeing
    d = warm.decide(v(30, 3.0, FREEZE))
    assert d.reason.startswith("habitual:")
    assert cold.decide(v(30, 3.0, FREEZE)).reason == "flag:freeze>=0.50"


def test_a_restart_counts_the_window_it_remembers_for_the_renditions_it_screens() -> None:
    clock = Clock()
    cfg = EscalationConfig(
        budget_lend_s=0.0, audit_fraction=0.0, habitual_share=None, once_per_event=False
    )
    pol = EscalationPolicy(cfg, clock)
    for i in range(200):  # news: 200 segments in the last 200 s, 10 of them escalated
        pol.remember(v(i, 4.0), age_s=200.0 - i, escalated=i % 20 == 0)
    for i in range(50):  # older than the window: history, not budget
        pol.remember(v(i, 4.0, stream="old"), age_s=400.0)
    for i in range(100):  # a rendition another member screens
        pol.remember(v(i, 4.0, stream="theirs"), age_s=50.0, escalated=True)
    assert pol.budget == cfg.budget_floor  # nothing counts before its rendition is screened
    pol.decide(v(200, 4.0))  # news is ours: its window counts, 201 seen
    assert pol.budget == pytest.approx(0.05 * 201)
    assert not pol.decide(v(201, 4.0, BLACK)).escalate  # 10 spent of 10.1: no room
    pol.decide(v(50, 4.0, stream="old"))
    assert pol.budget == pytest.approx(0.05 * 203)
    clock.t += 300  # the remembered window slides out like any other
    assert pol.decide(v(202, 4.0, BLACK)).escalate


def test_hostile_verdict_records_are_skipped_by_the_warm_start() -> None:
    good = {**v(1, 3.0, FREEZE).to_json(), "screened_at": 1000.0, "escalated": True}
    hostile = [
        b"[" * 100_000,  # deeper than the JSON parser goes
        b"not json",
        b"\xff\xfe",
        json.dumps([good]).encode(),
        json.dumps({**good, "flags": 5}).encode(),
        json.dumps({**good, "flags": [{"kind": "freeze", "evidence": [1]}]}).encode(),
        json.dumps({**good, "extra": {"artifacts": {"edge_loss": 1e999}}}).encode(),
        json.dumps({**good, "seq": True}).encode(),
    ]
    records = [types.SimpleNamespace(value=x) for x in [*hostile, json.dumps(good).encode()]]
    pol = EscalationPolicy(EscalationConfig())
    remembered, skipped = warm_start(pol, records, now=1010.0)
    # the infinite edge_loss is a verdict without that measure, not a bad record
    assert (remembered, skipped) == (2, len(hostile) - 1)
    assert pol.recent("news", "720p").measures == ()


def test_a_cold_start_s_outage_stays_news_until_recent_min() -> None:
    # a daemon started cold during a partial outage: 14 of 40 channels dead (black on every
    # segment) from the first round. Each dead channel's black stays news for its first
    # recent_min segments, so the budget reaches most of them as impairments as it grows.
    # (A habit judged as soon as its hits could be, for every trigger or for those common
    # across the fleet, made their third segment habitual: 4 of 14, two tried forms)
    clock = Clock()
    pol = EscalationPolicy(EscalationConfig(audit_fraction=0.0), clock)
    dead = set(range(0, 40, 3))
    first: dict[int, int] = {}
    for seq in range(16):
        for s in range(40):
            clock.t += 0.05
            d = pol.decide(v(seq, flags=BLACK if s in dead else (), stream=f"c{s}"))
            if s in dead and d.escalate and d.kind == "impaired":
                first.setdefault(s, seq)
    assert len(first) >= 8 and max(first.values()) < EscalationConfig().recent_min

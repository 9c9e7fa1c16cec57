"""The judge on sequences of verdicts: gating, hysteresis, localisation, restore."""

from __future__ import annotations

import base64
from collections.abc import Iterable, Sequence
from typing import Any

import pytest
from pydantic import ValidationError

from monitor.judge import Judge, JudgeConfig, ladder_findings
from monitor.types import Incident, Observation

LADDER = {"360p": (800_000, 3.6), "720p": (2_500_000, 4.3)}


def verdict(
    rendition: str,
    seq: int,
    mos: float | None,
    *,
    stream: str = "news",
    flags: Sequence[tuple[str, float, float]] = (),
    errors: int = 0,
    degradation: dict[str, float] | None = None,
) -> dict[str, Any]:
    """A vqmon.verdict/1 value as docs/topics.md shows it (only what the judge reads)."""
    return {
        **({"degradation": degradation} if degradation is not None else {}),
        "schema": "vqmon.verdict/1",
        "segment_id": f"{stream}/{rendition}/{seq}",
        "stream": stream,
        "rendition": rendition,
        "seq": seq,
        "mos": mos,
        "mos_low": None if mos is None else mos - 0.2,
        "frame_mos": [],
        "flags": [
            {"kind": k, "severity": s, "start_s": 0.0, "duration_s": d, "evidence": {}}
            for k, s, d in flags
        ],
        "scorers": ["artifacts@1.1", "distilled@2.1"],
        "stream_info": {"duration_s": 2.0, "bitrate": 1.0},
        "declared_bitrate": LADDER[rendition][0],
        "decode": {"errors": errors, "corrupt_frames": 0, "seconds": 0.1, "messages": []},
        "screened_at": 1000.0 + seq * 2,
    }


def cfg(**kw: Any) -> JudgeConfig:
    base: dict[str, Any] = {"warmup_segments": 5, "clear_after": 3}
    base["starvation"] = {"open_after": 3, **kw.pop("starvation", {})}
    return JudgeConfig.model_validate({**base, **kw})


class Run:
    """Feeds rounds of verdicts (every rendition per seq) and keeps the events by round."""

    def __init__(self, judge: Judge | None = None, **kw: Any) -> None:
        self.judge = judge or Judge(cfg(**kw))
        self.seq = 0
        self.events: list[Incident] = []
        self.by_seq: dict[int, list[Incident]] = {}

    def round(self, **per_rendition: dict[str, Any] | float | None) -> list[Incident]:
        seq, self.seq = self.seq, self.seq + 1
        out: list[Incident] = []
        for name, spec in per_rendition.items():
            kw = spec if isinstance(spec, dict) else {"mos": spec}
            doc = verdict(name, seq, kw.pop("mos", LADDER[name][1]), **kw)
            out += self.judge.observe(Observation.from_verdict_json(doc), now=1000.0 + seq * 2)
        out += self.judge.flush(now=1000.0 + seq * 2)
        self.events += out
        self.by_seq[seq] = out
        return out

    def clean(self, n: int, jitter: Iterable[float] = (0.0, 0.05, -0.05)) -> None:
        j = list(jitter)
        for i in range(n):
            d = j[i % len(j)]
            self.round(**{"360p": LADDER["360p"][1] + d, "720p": LADDER["720p"][1] - d})


def states(events: Iterable[Incident]) -> list[tuple[str, str, str, str]]:
    return [(e.state, e.scope, e.kind, e.localisation) for e in events]


def test_clean_ladder_opens_nothing() -> None:
    run = Run()
    run.clean(40, jitter=(0.0, 0.1, -0.1, 0.15, -0.2))
    assert run.events == []


def test_an_unusual_first_segment_does_not_set_the_baseline() -> None:
    # An encoder's first segment often scores well above the rest. Weighted as a seed of
    # an EWMA it held the baseline 0.5 above ordinary segments for a dozen segments, and
    # ordinary segments opened a starvation incident (the demo on a loaded machine).
    run = Run()
    run.round(**{"360p": 3.6, "720p": 5.0})
    for _ in range(15):
        run.round(**{"360p": 3.6, "720p": 4.2})
    assert run.events == []
    base = run.judge.baseline("news", "720p")
    assert base is not None and base.mos == pytest.approx(4.25, abs=0.03)


def test_a_rendition_that_swings_gets_a_wider_margin_and_a_real_drop_still_opens() -> None:
    # Content that alternates easy and hard scenes: every third segment 0.5-0.6 below the
    # mean is this rendition's normal, not a drop. A starved rung falls far below that.
    run = Run(starvation={"open_after": 1})
    for i in range(15):
        run.round(**{"360p": 3.6, "720p": 3.9 if i % 3 == 2 else 4.7})
    assert run.events == []
    out = run.round(**{"360p": 3.6, "720p": 2.6})
    assert states(out) == [("open", "720p", "starvation", "rendition")]
    ev = out[0].evidence["renditions"]["720p"]
    assert 0.5 < ev["margin"] < 1.4  # wider than the fixed margin, narrower than the drop


def test_starvation_opens_within_n_segments_and_resolves_after_clear_after() -> None:
    run = Run()
    run.clean(8)
    opened_at = None
    for i in range(5):  # 720p starved: 0.7 below its own baseline, still above 360p
        if run.round(**{"360p": 3.6, "720p": 3.7}) and opened_at is None:
            opened_at = i + 1
    assert opened_at == 3
    assert {(e.kind, e.state) for e in run.events} == {("starvation", "open")}
    starv = [e for e in run.events if e.kind == "starvation"]
    assert states(starv[:1]) == [("open", "720p", "starvation", "rendition")]
    assert starv[0].id == "news/720p/starvation/8@1016000"
    assert starv[0].segments[0] == "news/720p/8"
    assert starv[0].evidence["renditions"]["720p"]["baseline_mos"] == pytest.approx(4.3, abs=0.05)
    # hysteresis: two good segments do not resolve it, a bad one in between restarts the count
    run.clean(2)
    run.round(**{"360p": 3.6, "720p": 3.7})
    run.clean(2)
    assert not [e for e in run.events if e.state == "resolved" and e.kind == "starvation"]
    out = run.round(**{"360p": 3.6, "720p": 4.3})  # the third good segment in a row
    assert states(out) == [("resolved", "720p", "starvation", "rendition")]
    assert [e.state for e in run.events if e.id == starv[0].id].count("resolved") == 1
    assert run.judge.open_incidents() == []


def test_a_freeze_interrupts_a_starvation_run_not_yet_opened() -> None:
    # A dip, a frozen run (which explains its own low MOS), a dip: two bad segments, but
    # not two in a row; with open_after 2 nothing opens but the freeze. Found by the
    # closed-loop test: a rung's segments either side of a freeze scored 0.6 under baseline.
    run = Run(starvation={"open_after": 2}, kinds={"freeze": {"min_duration_s": 0}})
    run.clean(8)
    frozen = {"flags": [("freeze", 1.0, 2.0)], "mos": 2.0}
    run.round(**{"360p": 3.6, "720p": 3.7})
    for _ in range(3):
        run.round(**{"360p": 3.6, "720p": dict(frozen)})
    run.round(**{"360p": 3.6, "720p": 3.7})
    run.clean(4)
    assert {e.kind for e in run.events} == {"freeze"}
    # two dips in a row after the freeze do open it
    run.round(**{"360p": 3.6, "720p": 3.7})
    out = run.round(**{"360p": 3.6, "720p": 3.7})
    assert states(out) == [("open", "720p", "starvation", "rendition")]


BLURRED = {"blur": 0.9, "compression": 0.06, "clean": 0.04}
BLOCKY = {"compression": 0.8, "blur": 0.15, "clean": 0.05}


@pytest.mark.parametrize(
    ("head", "kinds"),
    [
        (BLURRED, {"blur"}),  # the head agrees with the flag: a blurred picture
        (BLOCKY, {"blur", "starvation", "ladder_inversion"}),  # a starved encode, soft too
        (None, {"blur", "starvation", "ladder_inversion"}),  # no head: as before
    ],
)
def test_a_picture_fault_the_head_names_explains_a_low_rung(
    head: dict[str, float] | None, kinds: set[str]
) -> None:
    # The demo's blur on one rung opened "starvation at rendition", and the encoder was
    # told to raise that rung's bitrate: bits do not sharpen a blurred picture.
    run = Run(starvation={"open_after": 2})
    run.clean(8)
    blurred = {"mos": 3.1, "flags": [("blur", 0.6, 2.0)], "degradation": head}
    for _ in range(4):
        run.round(**{"360p": 3.6, "720p": dict(blurred)})
    opened = {e.kind for e in run.events if e.state == "open"}
    assert opened == kinds
    assert all(e.scope == "720p" for e in run.events)


def test_an_open_starvation_clears_under_a_picture_fault_once_the_mos_is_back() -> None:
    # Found in review: pictured segments did not step the gate at all, so a starvation
    # stayed open while a blur lasted, and the policy raised the rung for it again.
    run = Run(starvation={"open_after": 2}, ladder={"enabled": False})
    run.clean(8)
    for _ in range(3):
        run.round(**{"360p": 3.6, "720p": {"mos": 3.1, "degradation": BLOCKY}})
    blurred = {"mos": 4.3, "flags": [("blur", 0.6, 2.0)], "degradation": BLURRED}
    for _ in range(6):
        run.round(**{"360p": 3.6, "720p": dict(blurred)})
    assert [(e.state, e.kind) for e in run.events if e.kind == "starvation"] == [
        ("open", "starvation"),
        ("resolved", "starvation"),
    ]


def test_a_head_torn_between_blur_and_compression_does_not_hide_a_starvation() -> None:
    # Found in review: a pictured segment reset the run, so a starved encode whose head
    # named blur on every third segment never reached open_after.
    torn = {"blur": 0.48, "compression": 0.45, "clean": 0.07}
    blocky = {"compression": 0.48, "blur": 0.45, "clean": 0.07}
    run = Run(ladder={"enabled": False})  # open_after 3
    run.clean(8)
    for i in range(9):
        head = torn if i % 3 == 2 else blocky
        soft = {"mos": 3.1, "flags": [("blur", 0.6, 2.0)], "degradation": head}
        run.round(**{"360p": 3.6, "720p": soft})
    assert {e.kind for e in run.events if e.state == "open"} == {"blur", "starvation"}


def test_a_source_drop_with_one_rung_explained_stays_at_the_source() -> None:
    # Found in review: the explained rung left the stream-wide test, and the other rung's
    # drop opened at the rendition, where the policy raises its bitrate.
    scaled = {"scaling": 0.8, "blur": 0.1, "clean": 0.1}
    run = Run(ladder={"enabled": False})
    run.clean(8)
    blurred = {"mos": 3.3, "flags": [("blur", 0.6, 2.0)], "degradation": BLURRED}
    for _ in range(5):
        run.round(**{"360p": {"mos": 2.9, "degradation": scaled}, "720p": dict(blurred)})
    opened = {(e.kind, e.scope) for e in run.events if e.state == "open"}
    assert ("starvation", "*") in opened and ("starvation", "360p") not in opened
    # a rung that shows a blur but holds its MOS does not make another's drop the source's
    run = Run(ladder={"enabled": False})
    run.clean(8)
    sharp_enough = {"mos": 4.3, "flags": [("blur", 0.6, 2.0)], "degradation": BLURRED}
    for _ in range(5):
        run.round(**{"360p": 2.9, "720p": dict(sharp_enough)})
    opened = {(e.kind, e.scope) for e in run.events if e.state == "open"}
    assert ("starvation", "360p") in opened and ("starvation", "*") not in opened


def test_an_explained_rung_sits_out_the_ladder_check_the_others_stay_in() -> None:
    # Found in review: one pictured rung turned the ladder check off for the whole stream.
    LADDER["1080p"] = (5_000_000, 4.5)
    try:
        run = Run()
        for _ in range(8):
            run.round(**{"360p": 3.6, "720p": 4.3, "1080p": 4.5})
        soft = {"mos": 3.0, "flags": [("blur", 0.6, 2.0)], "degradation": BLURRED}
        for _ in range(5):  # 1080p within its starvation margin, but below 720p
            run.round(**{"360p": dict(soft), "720p": 4.3, "1080p": 4.2})
        opened = {(e.kind, e.scope) for e in run.events if e.state == "open"}
        assert ("ladder_inversion", "1080p") in opened
        assert not {k for k, scope in opened if scope == "360p"} - {"blur"}
    finally:
        del LADDER["1080p"]


def test_a_picture_fault_does_not_explain_a_drop_its_flag_does_not_show() -> None:
    # The head naming blur without a bad blur flag (or a flag within the rendition's usual
    # look) explains nothing: the drop is judged as before.
    run = Run(starvation={"open_after": 2})
    run.clean(8)
    for _ in range(3):
        run.round(**{"360p": 3.6, "720p": {"mos": 3.7, "degradation": BLURRED}})
    assert {e.kind for e in run.events} == {"starvation"}


def test_explained_by_off_judges_every_drop_as_before() -> None:
    run = Run(starvation={"open_after": 2, "explained_by": []})
    run.clean(8)
    blurred = {"mos": 3.7, "flags": [("blur", 0.6, 2.0)], "degradation": BLURRED}
    for _ in range(3):
        run.round(**{"360p": 3.6, "720p": dict(blurred)})
    assert {e.kind for e in run.events} == {"starvation", "blur"}
    with pytest.raises(ValidationError, match="explained_by: 'freeze' is not one of"):
        cfg(starvation={"explained_by": ["freeze"]})
    with pytest.raises(ValidationError, match="explained_by: 'blocking' is not one of"):
        cfg(starvation={"explained_by": ["blocking"]})  # the head has no blocking class
    with pytest.raises(ValidationError, match="'blur' is listed twice"):
        cfg(starvation={"explained_by": ["blur", "blur"]})


def test_the_observation_takes_the_heads_likeliest_class_and_passes_over_junk() -> None:
    def likeliest(head: Any) -> str | None:
        doc = verdict("720p", 0, 4.0)
        doc["degradation"] = head
        return Observation.from_verdict_json(doc).degradation

    assert likeliest(BLURRED) == "blur"
    assert likeliest({"clean": 0.7, "noise": 0.3}) == "clean"
    assert likeliest(None) is None and likeliest({}) is None and likeliest([1, 2]) is None
    hostile = {"blur": "9", "x" * 40: 1.0, "\ud800": 2.0, "noise": float("nan"), "clean": 0.2}
    assert likeliest(hostile) == "clean"


def test_target_below_opens_without_baseline() -> None:
    run = Run(starvation={"targets": {"720p": 4.5}})
    out = [run.round(**{"360p": 3.6, "720p": 4.3}) for _ in range(3)]
    assert out[0] == out[1] == [] and states(out[2]) == [
        ("open", "720p", "starvation", "rendition")
    ]
    assert out[2][0].evidence["renditions"]["720p"]["target_mos"] == 4.5


def test_black_shorter_than_min_duration_opens_nothing() -> None:
    run = Run()
    run.clean(6)
    black = {"flags": [("black", 1.0, 1.5)], "mos": 1.2}
    run.round(**{"360p": dict(black), "720p": dict(black)})
    run.clean(6)
    assert run.events == []


def test_black_run_across_segments_opens_once_at_the_source() -> None:
    run = Run()
    run.clean(6)
    first = {"flags": [("black", 1.0, 1.0)], "mos": 1.2}  # last second of the segment
    run.round(**{"360p": dict(first), "720p": dict(first)})
    assert run.events == []
    second = {"flags": [("black", 1.0, 1.2)], "mos": 1.2}  # 2.2 s in a row: over 2.0
    out = run.round(**{"360p": dict(second), "720p": dict(second)})
    assert states(out) == [("open", "*", "black", "source")]
    assert out[0].renditions == ("360p", "720p") and out[0].opened_seq == 6
    run.clean(6)
    assert states(run.events) == [
        ("open", "*", "black", "source"),
        ("resolved", "*", "black", "source"),
    ]


def test_source_degradation_on_every_rung_is_localised_to_the_source() -> None:
    run = Run()
    run.clean(8)
    for _ in range(4):
        run.round(**{"360p": 2.7, "720p": 3.2})
    assert states(run.events) == [("open", "*", "starvation", "source")]
    per = run.events[0].evidence["renditions"]
    assert set(per) == {"360p", "720p"}


def test_one_rung_alone_is_localised_to_that_rendition() -> None:
    run = Run()
    run.clean(8)
    for _ in range(4):
        run.round(**{"360p": 3.6, "720p": {"mos": 4.25, "flags": [("blockiness", 0.6, 2.0)]}})
    assert states(run.events) == [("open", "720p", "blocking", "rendition")]


def test_transport_errors_on_every_rung_point_at_packaging() -> None:
    run = Run()
    run.clean(6)
    for _ in range(2):
        run.round(**{"360p": {"errors": 3, "mos": 2.0}, "720p": {"errors": 5, "mos": 2.5}})
    assert states(run.events) == [("open", "*", "corruption", "packaging")]
    run.clean(3)
    assert states(run.events)[-1] == ("resolved", "*", "corruption", "packaging")
    # the low MOS of damaged segments is explained by the damage: no starvation, no baseline hit
    assert all(e.kind == "corruption" for e in run.events)


def test_transport_errors_on_one_rung_point_at_that_rendition() -> None:
    run = Run()
    run.clean(6)
    for _ in range(2):
        run.round(**{"360p": 3.6, "720p": {"errors": 5, "mos": 2.5}})
    assert states(run.events) == [("open", "720p", "corruption", "rendition")]


def test_rendition_incident_that_turns_stream_wide_is_superseded() -> None:
    run = Run()
    run.clean(8)
    for _ in range(3):
        run.round(**{"360p": 3.6, "720p": {"errors": 2}})
    for _ in range(2):
        run.round(**{"360p": {"errors": 2}, "720p": {"errors": 2}})
    got = states(run.events)
    assert got[0] == ("open", "720p", "corruption", "rendition")
    assert ("resolved", "720p", "corruption", "rendition") in got
    wide = [e for e in run.events if e.scope == "*"]
    assert wide and wide[0].localisation == "packaging"
    first = run.events[0]
    resolved = [e for e in run.events if e.id == first.id and e.state == "resolved"]
    assert resolved[0].superseded_by == wide[0].id


def test_ladder_inversion_is_reported_on_the_higher_rung() -> None:
    assert ladder_findings([("a", 1, 3.0), ("b", 2, 3.0)], 0.0)["b"].bad
    assert not ladder_findings([("a", 1, 3.0), ("b", 2, 3.1)], 0.0)["b"].bad
    run = Run(starvation={"enabled": False})
    run.clean(4)
    for _ in range(3):
        run.round(**{"360p": 3.6, "720p": 3.55})
    assert states(run.events) == [("open", "720p", "ladder_inversion", "rendition")]
    ev = run.events[0].evidence["renditions"]["720p"]
    assert ev["lower"] == "360p" and ev["higher_mos"] == 3.55


def test_arrival_order_of_renditions_does_not_change_localisation() -> None:
    judge = Judge(cfg())
    events: list[Incident] = []
    for seq, mos in enumerate([3.6] * 8 + [2.6] * 4):
        order = ["720p", "360p"] if seq % 2 else ["360p", "720p"]
        for name in order:
            m = mos if name == "360p" else mos + 0.7
            obs = Observation.from_verdict_json(verdict(name, seq, m))
            events += judge.observe(obs, now=1000.0 + seq * 2)
    assert states(events) == [("open", "*", "starvation", "source")]


def lagged_feed(lag: int) -> list[Incident]:
    """A source starvation (every rung 1 MOS down for 5 segments) while the 360p rung's
    verdicts arrive `lag` segments (2 s each) after the 720p rung's, as when one screen
    worker is behind; the judge ticks every segment."""
    judge = Judge(cfg())
    mos = [3.6] * 10 + [2.6] * 5 + [3.6] * 10
    events: list[Incident] = []
    for t in range(len(mos) + lag):
        now = 1000.0 + t * 2
        for name, seq, up in (("720p", t, 0.7), ("360p", t - lag, 0.0)):
            if 0 <= seq < len(mos):
                obs = Observation.from_verdict_json(verdict(name, seq, mos[seq] + up))
                events += judge.observe(obs, now=now)
        events += judge.tick(now)
    return events + judge.flush(now=2000.0)


@pytest.mark.parametrize("lag", [1, 3, 4])
def test_a_lagging_rendition_is_waited_for_and_the_source_is_blamed(lag: int) -> None:
    # Lags of 6-8 s (3-4 segments) used to close rounds without the late rung (two later
    # rounds waiting were enough), so the 720p rung alone looked bad first: a rendition
    # incident, then the source one superseding it.
    assert states(lagged_feed(lag)) == [
        ("open", "*", "starvation", "source"),
        ("resolved", "*", "starvation", "source"),
    ]


def test_a_rendition_that_skipped_a_seq_does_not_hold_its_round() -> None:
    judge = Judge(cfg())
    for seq in range(3):
        for name in ("360p", "720p"):
            judge.observe(Observation.from_verdict_json(verdict(name, seq, 3.6)), now=1000.0)
    judge.flush(now=1000.0)  # a new stream's first rounds wait to learn its renditions
    judge.observe(Observation.from_verdict_json(verdict("720p", 3, 4.3)), now=1001.0)
    for seq in (4, 5):  # 360p's seq 3 may still come, out of order
        judge.observe(Observation.from_verdict_json(verdict("360p", seq, 3.6)), now=1001.5)
        assert 3 in judge.streams["news"].pending
    judge.observe(Observation.from_verdict_json(verdict("360p", 6, 3.6)), now=1001.5)
    # 360p is three seqs past 3: it skipped it (a lost segment), so round 3 is judged now
    assert sorted(judge.streams["news"].pending) == [4, 5, 6]


def spied(judge: Judge) -> list[tuple[int, list[str]]]:
    """Record each round `judge` judges: (seq, renditions in it)."""
    judged: list[tuple[int, list[str]]] = []
    original = judge._judge_round

    def spy(st: Any, rnd: Any, now: float) -> list[Incident]:
        judged.append((rnd.seq, sorted(rnd.obs)))
        return original(st, rnd, now)

    judge._judge_round = spy  # type: ignore[method-assign]
    return judged


def judged_rounds(renditions: Sequence[str]) -> tuple[Judge, list[tuple[int, list[str]]]]:
    """A judge past a new stream's first rounds (seqs 0-9 of `renditions` judged) that
    records each round it judges: (seq, renditions in it)."""
    judge = Judge(cfg())
    for seq in range(10):
        for name in renditions:
            judge.observe(Observation.from_verdict_json(verdict(name, seq, 3.6)), now=1000.0)
    judge.flush(now=1000.0)
    return judge, spied(judge)


@pytest.mark.parametrize(
    "order",
    [
        [("720p", 10), ("360p", 11), ("720p", 11), ("360p", 10)],  # one rendition's swapped
        [("720p", 11), ("360p", 11), ("720p", 10), ("360p", 10)],  # both: round 10 comes last
        [("720p", 11), ("720p", 10)],  # a stream of one rendition
    ],
)
def test_verdicts_overtaken_by_their_renditions_next_ones_are_still_waited_for(
    order: list[tuple[str, int]],
) -> None:
    # A pool of screen workers publishes in the order jobs finish: seq 11 of a rendition
    # may come before its seq 10. Neither round is judged without it, nor is it dropped.
    names = sorted({name for name, _ in order})
    judge, judged = judged_rounds(names)
    for name, seq in order:
        judge.observe(Observation.from_verdict_json(verdict(name, seq, 3.6)), now=1001.0)
    assert judged == [(10, names), (11, names)]


def test_a_late_verdict_whose_siblings_were_judged_is_judged_at_once() -> None:
    # 360p lags more than round_wait_s: round 10 is judged with 720p alone. When 360p's
    # verdict of seq 10 comes, 720p's of it was judged already, so it is judged at once.
    judge, judged = judged_rounds(["360p", "720p"])
    judge.observe(Observation.from_verdict_json(verdict("720p", 10, 3.6)), now=1001.0)
    judge.tick(now=1011.0)
    judge.observe(Observation.from_verdict_json(verdict("360p", 10, 3.6)), now=1012.0)
    assert judged == [(10, ["720p"]), (10, ["360p"])]


def restarted_numbering(seg_s: float = 2.0, **kw: Any) -> list[Incident]:
    """A stream black on both rungs from seq 520; at seq 526 its packager restarts and
    numbers its segments from 0 again, still black for 80 segments, then clean."""
    judge, events, now = Judge(cfg(**kw)), [], 1000.0
    black = [("black", 1.0, seg_s)]
    plan = [(s, False) for s in range(500, 520)] + [(s, True) for s in range(520, 526)]
    plan += [(s, True) for s in range(80)] + [(s, False) for s in range(80, 90)]
    for seq, dark in plan:
        for name in ("360p", "720p"):
            mos = 1.0 if dark else LADDER[name][1]
            doc = verdict(name, seq, mos, flags=black if dark else ())
            doc["stream_info"]["duration_s"] = seg_s
            events += judge.observe(Observation.from_verdict_json(doc), now=now)
        events += judge.tick(now)
        now += seg_s
    return events


def test_a_packager_that_restarts_its_numbering_does_not_blind_the_judge() -> None:
    assert states(restarted_numbering()) == [
        ("open", "*", "black", "source"),
        ("resolved", "*", "black", "source"),  # when the picture is back, not before
    ]
    assert restarted_numbering()[-1].resolved_at == 1000.0 + 2 * (26 + 80 + 2)  # 3rd clean
    # Segments as long as round_wait_s: the restart's verdicts come 10 s apart.
    assert states(restarted_numbering(seg_s=10.0)) == states(restarted_numbering())
    # Without the rule every renumbered verdict was dropped as late: the judge saw
    # nothing until the renditions went stale, resolved the black as stale while it went
    # on, and opened it again.
    assert states(restarted_numbering(renumber_gap=10**6)) == [
        ("open", "*", "black", "source"),
        ("resolved", "*", "black", "source"),
        ("open", "*", "black", "source"),
        ("resolved", "*", "black", "source"),
    ]


def renumbering(
    judge: Judge, tail: Sequence[tuple[str, int, bool]]
) -> tuple[list[Incident], list[tuple[int, list[str]]]]:
    """Seqs 500-524 on both rungs, clean, then `tail` (rendition, seq, black), a segment
    every second; events and the rounds judged after 524."""
    events: list[Incident] = []
    judged = spied(judge)
    plan = [(n, s, False) for s in range(500, 525) for n in ("360p", "720p")] + list(tail)
    for i, (name, seq, dark) in enumerate(plan):
        mos = 1.0 if dark else LADDER[name][1]
        doc = verdict(name, seq, mos, flags=[("black", 1.0, 2.0)] if dark else ())
        events += judge.observe(Observation.from_verdict_json(doc), now=1000.0 + i)
        events += judge.tick(now=1000.0 + i)
    return events, [r for r in judged if r[0] not in range(500, 525)]


def test_rounds_of_the_old_numbering_are_judged_before_the_new_ones() -> None:
    # 360p's 525 waits for 720p's, which never comes: the packager restarted. Judged
    # after the new numbering's rounds, 525 would look like a segment out of time order.
    tail = [("360p", 525, False)] + [(n, s, False) for s in range(6) for n in ("360p", "720p")]
    events, judged = renumbering(Judge(cfg()), tail)
    assert judged == [(525, ["360p"])] + [(s, ["360p", "720p"]) for s in range(6)]
    assert events == []


def test_renditions_that_restart_their_numbering_one_after_another_are_judged_together() -> None:
    # The packager restarts 360p first; 720p's screening follows 3 segments behind, still
    # on the old numbering meanwhile. A black on both rungs from the new seq 0 is the
    # source's, one incident, as it is without a restart.
    tail = [("360p", s, True) for s in range(3)]
    for s in range(3, 12):
        tail += [("360p", s, True), ("720p", s - 3, True)]
    events, judged = renumbering(Judge(cfg()), tail)
    assert states(events) == [("open", "*", "black", "source")]
    assert judged[:5] == [(s, ["360p", "720p"]) for s in range(5)]


def test_a_rendition_renumbered_alone_holds_no_round_past_round_wait_s() -> None:
    # Only 360p's packager restarted: from then on the two rungs number their segments
    # apart. Once the restart is past, 360p's rounds do not wait for 720p (far ahead), so
    # 720p's rounds, behind them in seq order, are not held past round_wait_s either.
    judge = Judge(cfg())
    tail = [(n, s if n == "360p" else 525 + s, False) for s in range(60) for n in LADDER]
    renumbering(judge, tail)
    now, wait = 1000.0 + 50 + 120 - 1, judge.cfg.round_wait_s
    assert all(now - r.first_arrival <= wait for r in judge.streams["news"].pending.values())


def dead_letter(name: str, seq: int) -> dict[str, Any]:
    """A vqmon.dead-letter/1 value: one news segment that did not decode."""
    headers = (("stream", "news"), ("rendition", name), ("seq", str(seq)))
    return {
        "schema": "vqmon.dead-letter/1",
        "reason": "decode_error",
        "segment_id": f"news/{name}/{seq}",
        "headers": [[k, base64.b64encode(v.encode()).decode()] for k, v in headers],
    }


def letter(name: str, seq: int) -> Observation:
    """The judge's reading of dead_letter(name, seq)."""
    dead = Observation.from_dead_letter_json(dead_letter(name, seq))
    assert dead is not None
    return dead


def test_a_late_dead_letter_is_not_a_new_numbering() -> None:
    judge = Judge(cfg())
    renumbering(judge, [])
    judged = spied(judge)
    dead = letter("360p", 400)
    assert dead.seq == 400
    judge.observe(dead, now=1100.0)
    judge.observe(Observation.from_verdict_json(verdict("360p", 524, 3.6)), now=1100.0)
    assert judge.flush(now=1100.0) == [] and judged == []  # nothing judged twice


@pytest.mark.parametrize("far", [[3], [3, 40], [3, 3]])
def test_verdicts_far_below_that_are_not_two_in_a_row_hold_no_round(far: list[int]) -> None:
    # One crafted or stray seq far below 360p's (or two far apart, or one redelivered) is
    # not a packager restart: the stream's rounds go on being judged as they complete.
    # Taken for a new numbering, it held every later round up to round_wait_s.
    tail = [("360p", s, False) for s in far]
    tail += [(n, s, False) for s in range(525, 530) for n in ("360p", "720p")]
    events, judged = renumbering(Judge(cfg()), tail)
    assert judged == [(s, ["360p", "720p"]) for s in range(525, 530)]
    assert events == []


def test_stray_verdicts_near_each_other_but_rounds_apart_hold_no_round() -> None:
    # Seqs 3 and 4 of 360p far below, with 360p going on in its numbering between them:
    # no restart stops there. Paired, they held every later round up to round_wait_s.
    tail = [("360p", 3, False)]
    tail += [(n, s, False) for s in range(525, 530) for n in ("360p", "720p")]
    tail += [("360p", 4, False)]
    tail += [(n, s, False) for s in range(530, 535) for n in ("360p", "720p")]
    events, judged = renumbering(Judge(cfg()), tail)
    assert events == []
    assert judged == [(s, ["360p", "720p"]) for s in range(525, 535)]


def test_a_fault_at_a_resolved_incidents_seq_after_a_renumbering_is_a_new_incident() -> None:
    # Black at seqs 10-15, clean to 199; the packager restarts its numbering and the
    # black comes back at the same seqs. Ids of stream, scope, kind and seq alone were the
    # same for both: the second was taken for a replay of the first and never published.
    judge, events, now = Judge(cfg()), [], 1000.0
    for seq in [*range(200), *range(30)]:
        dark = 10 <= seq < 16
        for name in ("360p", "720p"):
            doc = verdict(name, seq, 1.0 if dark else LADDER[name][1])
            doc["flags"] = verdict(name, 0, 1.0, flags=[("black", 1.0, 2.0)])["flags"] * dark
            doc["screened_at"] = now
            events += judge.observe(Observation.from_verdict_json(doc), now=now)
        events += judge.tick(now)
        now += 2.0
    life = [("open", "*", "black", "source"), ("resolved", "*", "black", "source")]
    assert states(events) == life * 2
    first, second = (e.id for e in events if e.state == "open")
    assert first.startswith("news/*/black/10@") and second.startswith("news/*/black/10@")
    assert first != second


def test_a_restored_starvation_stays_open_at_the_display_size_it_was_judged_at() -> None:
    # A restarted judge whose replay holds none of the rung's verdicts restores the
    # starvation with the baseline its evidence recorded. Without the display size that
    # baseline is a MOS at, the next verdict's size looked new: the baseline started
    # over cold and the starvation cleared while the rung stayed starved.
    def doc(name: str, seq: int, starved: bool) -> dict[str, Any]:
        d = verdict(name, seq, LADDER[name][1] - (0.65 if starved else 0.0))
        d["extra"] = {"judged_at": "1280x720"}
        return d

    live, events = Judge(cfg()), []
    for seq in range(20):
        for name in ("360p", "720p"):
            obs = Observation.from_verdict_json(doc(name, seq, name == "720p" and seq >= 12))
            events += live.observe(obs, now=1000.0 + seq * 2)
    events += live.flush(now=1040.0)
    assert states(events) == [("open", "720p", "starvation", "rendition")]
    assert events[0].evidence["renditions"]["720p"]["judged_at"] == "1280x720"

    after = Judge(cfg())
    after.restore(events)
    later = []
    for seq in range(20, 30):
        for name in ("360p", "720p"):
            obs = Observation.from_verdict_json(doc(name, seq, name == "720p" and seq < 26))
            later += after.observe(obs, now=1000.0 + seq * 2)
    later += after.flush(now=1060.0)
    assert states(later) == [("resolved", "720p", "starvation", "rendition")]
    assert later[0].resolved_at == 1000.0 + 28 * 2  # the third good segment, not before


@pytest.mark.parametrize(
    "restart",
    [
        # its first new segments undecodable on both rungs: the packager's fault
        [(n, s, "dead" if s in (1, 2, 3) else "ok") for s in range(15) for n in LADDER],
        # verdicts out of order (a pool of workers): 360p's seq 0 is black
        [("360p", 0, "black"), ("720p", 0, "ok"), ("360p", 4, "ok"), ("720p", 4, "ok")]
        + [(n, s, "ok") for s in (1, 2, 3, *range(5, 15)) for n in LADDER],
    ],
)
def test_nothing_of_a_restarted_numbering_is_lost(restart: list[tuple[str, int, str]]) -> None:
    # Held one at a time (the next far-below verdict replacing it), the new numbering's
    # first verdict was lost when dead letters or a verdict more than REORDER_SLACK + 1
    # seqs on came next: the damage or the black on it was never judged.
    judge, events = Judge(cfg()), []
    judged = spied(judge)
    clean = [(n, s, "ok") for s in range(500, 525) for n in LADDER]
    for i, (name, seq, what) in enumerate(clean + restart):
        doc = verdict(name, seq, 1.0 if what == "black" else LADDER[name][1])
        if what == "black":
            doc["flags"] = verdict(name, seq, 1.0, flags=[("black", 1.0, 2.0)])["flags"]
        obs = letter(name, seq) if what == "dead" else Observation.from_verdict_json(doc)
        events += judge.observe(obs, now=1000.0 + i) + judge.tick(now=1000.0 + i)
    events += judge.flush(now=1100.0)
    assert [s for s, _ in judged if s < 500] == list(range(15))
    dead = any(what == "dead" for *_, what in restart)
    wide, rung = ("open", "*", "corruption", "packaging"), ("open", "360p", "black", "rendition")
    assert states(events)[:1] == [wide if dead else rung]


def opening_id(screenings: Sequence[float], produced_ms: int | None) -> str:
    """The id of a black on 720p at seq 10 whose segment was screened at each of
    `screenings` (a screen worker that died before committing screens it again)."""
    judge, events = Judge(cfg()), []
    docs = [verdict(n, s, LADDER[n][1]) for s in range(10) for n in LADDER]
    for at in screenings:
        doc = verdict("720p", 10, 1.0, flags=[("black", 1.0, 2.0)])
        doc["screened_at"] = at
        docs.append(doc)
    docs += [verdict(n, s, LADDER[n][1]) for s in range(11, 14) for n in LADDER]
    docs.insert(-6, verdict("360p", 10, LADDER["360p"][1]))
    for doc in docs:
        if produced_ms is not None:
            doc["source"] = {"topic": "vqmon.segments", "partition": 0, "offset": doc["seq"]}
            doc["source"]["timestamp_ms"] = produced_ms + 2000 * doc["seq"]
        events += judge.observe(Observation.from_verdict_json(doc), now=1100.0)
    events += judge.flush(now=1100.0)
    (opened,) = (e.id for e in events if e.state == "open")
    return opened


def test_a_segment_screened_twice_gives_one_incident_id() -> None:
    # The id's stamp is when the segment was produced (its record's timestamp), the
    # same in every verdict of it; screened_at differs. Without a record timestamp the
    # first verdict of the segment in its round is the one judged.
    ids = {opening_id(s, 1_700_000_000_000) for s in ([1020.0], [1045.0], [1020.0, 1045.0])}
    assert ids == {"news/720p/black/10@1700000020000"}
    assert opening_id([1020.0, 1045.0], None) == "news/720p/black/10@1020000"


def blacks(judge: Judge, plan: list[tuple[str, int, bool]], stream: str = "news") -> list[Incident]:
    """Feed (rendition, seq, black) verdicts, then judge every waiting round."""
    out = []
    for name, seq, dark in plan:
        flags = [("black", 1.0, 2.0)] if dark else ()
        doc = verdict(name, seq, 1.0 if dark else LADDER[name][1], flags=flags, stream=stream)
        out += judge.observe(Observation.from_verdict_json(doc), now=1100.0)
    return out + judge.flush(now=1100.0)


@pytest.mark.parametrize("window", [slice(0, 20), slice(23, 24)])
def test_a_restored_incident_keeps_its_stamp_when_it_turns_stream_wide(window: slice) -> None:
    # Black on 720p from seq 10, on both rungs from 12. A judge restarted after seq 11,
    # whose replay held none of the black (a window of other rounds) or only its last
    # segment, restores the 720p incident; the stream-wide one then opens at its seq
    # with its stamp, as it did live.
    plan = [(n, s, False) for s in range(10) for n in LADDER]
    plan += [("360p", s, False) for s in (10, 11)] + [("720p", s, True) for s in (10, 11)]
    plan += [(n, s, True) for s in range(12, 15) for n in LADDER]

    live = blacks(Judge(cfg()), plan)
    wide = [e.id for e in live if e.scope == "*" and e.state == "open"]
    assert wide == ["news/*/black/10@1020000"]
    rung = [Incident.from_json(e.to_json()) for e in live if e.scope == "720p"][:1]
    after = Judge(cfg())
    blacks(after, plan[window])
    after.forget_incidents()
    after.restore(rung)
    assert [e.id for e in blacks(after, plan[24:]) if e.state == "open"] == wide


@pytest.mark.parametrize("stream", ["news", "live@eu"])  # names may hold "@"
def test_ids_made_before_they_carried_a_stamp_still_mute_their_replays(stream: str) -> None:
    # After an upgrade the incidents topic holds ids without the stamp; re-judged
    # verdicts of an incident resolved under such an id stay silent.
    plan = [(n, s, False) for s in range(10) for n in LADDER]
    plan += [("360p", 10, False), ("720p", 10, True)]
    plan += [(n, s, False) for s in range(11, 16) for n in LADDER]

    before = blacks(Judge(cfg()), plan, stream)
    life = [("open", "720p", "black", "rendition"), ("resolved", "720p", "black", "rendition")]
    assert states(before) == life
    old = [Incident.from_json({**e.to_json(), "id": e.id.rpartition("@")[0]}) for e in before]
    judge = Judge(cfg())
    blacks(judge, plan[:20], stream)
    judge.forget_incidents()
    judge.restore(old)
    assert blacks(judge, plan[20:], stream) == []


def test_an_id_without_a_stamp_does_not_mute_a_later_fault_at_its_seq() -> None:
    # An incident resolved under an id of an older release (no stamp; the compacted
    # topic keeps it for good) mutes only segments produced before it was resolved.
    old = Incident(
        "news/720p/black/10",
        "news",
        "720p",
        "black",
        "resolved",
        1.0,
        "rendition",
        10,
        opened_at=1.0,
        updated_at=2.0,
        resolved_at=2.0,
    )
    judge = Judge(cfg())
    judge.restore([old])
    plan = [(n, s, False) for s in range(10) for n in LADDER]
    plan += [("360p", 10, False), ("720p", 10, True), ("360p", 11, False), ("720p", 11, True)]
    plan += [(n, s, False) for s in range(12, 18) for n in LADDER]
    assert states(blacks(judge, plan)) == [
        ("open", "720p", "black", "rendition"),
        ("resolved", "720p", "black", "rendition"),
    ]


def test_a_stray_held_verdict_is_not_judged_into_a_new_numbering() -> None:
    # 360p's seq 40 far below, then its packager restarts at 0. Judged with the restart,
    # round 40 made 360p's real segments 2-39 look skipped, then late: never judged.
    tail = [("360p", 40, False)] + [(n, s, False) for s in range(13) for n in LADDER]
    _, judged = renumbering(Judge(cfg()), tail)
    assert judged == [(s, ["360p", "720p"]) for s in range(13)]


@pytest.mark.parametrize(
    "between",
    [
        [("360p", 525)] * 4,  # a segment screened again (redelivered) while its round waits
        [("360p", s) for s in range(525, 529)],  # verdicts screened before the restart
    ],
)
def test_a_restarts_damaged_first_segments_are_held_past_its_late_verdicts(
    between: list[tuple[str, int]],
) -> None:
    # 360p's packager restarts with two undecodable segments, whose dead letters come
    # before 360p's last verdicts of the old numbering (quick to fail, slow to screen).
    # Counted as the rendition going on, those let the dead letters go: the corruption
    # of the restart was laid on 720p alone.
    judge, events, now = Judge(cfg()), [], 1000.0
    judged = spied(judge)
    plan: list[tuple[str, int, bool]] = [(n, s, False) for s in range(500, 525) for n in LADDER]
    plan += [("360p", 0, True), ("360p", 1, True)] + [(n, s, False) for n, s in between]
    plan += [("720p", s, False) for s in range(525, 529)] + [("720p", 0, True), ("720p", 1, True)]
    plan += [(n, s, False) for s in range(2, 9) for n in LADDER]
    for name, seq, damaged in plan:
        doc = verdict(name, seq, LADDER[name][1])
        o = letter(name, seq) if damaged else Observation.from_verdict_json(doc)
        events += judge.observe(o, now=now) + judge.tick(now)
        now += 0.5
    events += judge.flush(now)
    assert [(s, names) for s, names in judged if s < 2] == [
        (0, ["360p", "720p"]),
        (1, ["360p", "720p"]),
    ]
    assert states(events)[:1] == [("open", "*", "corruption", "packaging")]


def display_learned(say: bool) -> list[Incident]:
    """The 360p rung judged at its coded size for 6 segments (a worker that had not seen
    the top rung yet), then at the 720p display, which scores it 0.6 lower; its verdicts
    say so (extra.judged_at) when `say`."""
    judge, events = Judge(cfg()), []
    for seq in range(20):
        for name in ("360p", "720p"):
            coded = name == "360p" and seq < 6
            doc = verdict(name, seq, 4.2 if coded else LADDER[name][1] - 0.2 * (name == "360p"))
            if say:
                doc["extra"] = {"judged_at": "640x360" if coded else "1280x720"}
            events += judge.observe(Observation.from_verdict_json(doc), now=1000.0 + seq * 2)
    return events + judge.flush(now=1100.0)


def test_a_rung_judged_at_a_new_display_size_starts_its_baseline_over() -> None:
    assert display_learned(say=True) == []
    # without knowing the size changed, the step down reads as starvation on the rung
    assert states(display_learned(say=False)) == [("open", "360p", "starvation", "rendition")]


def test_verdicts_judged_by_turns_at_two_sizes_each_meet_their_own_baseline() -> None:
    # Two screen workers take the 360p rung's segments in turn; one has seen the top
    # rung (judges at 1280x720), the other not (640x360, 0.6 higher). A starvation on
    # the rung still opens, and stays open while it lasts.
    judge, events = Judge(cfg()), []
    for seq in range(40):
        coded = seq % 2 == 1
        starved = 20 <= seq < 32
        mos = 3.4 + (0.6 if coded else 0.0) - (1.0 if starved else 0.0)
        for name, m in (("360p", mos), ("720p", LADDER["720p"][1])):
            doc = verdict(name, seq, m)
            doc["extra"] = {"judged_at": "640x360" if coded and name == "360p" else "1280x720"}
            events += judge.observe(Observation.from_verdict_json(doc), now=1000.0 + seq * 2)
    events += judge.flush(now=1100.0)
    assert states(events) == [
        ("open", "360p", "starvation", "rendition"),
        ("resolved", "360p", "starvation", "rendition"),
    ]
    assert events[0].opened_seq in (20, 21) and events[1].resolved_at >= 1000.0 + 32 * 2


def test_duplicate_verdicts_are_ignored() -> None:
    judge = Judge(cfg())
    doc = verdict("720p", 0, None, errors=2)
    for _ in range(5):
        judge.observe(Observation.from_verdict_json(doc), now=1000.0)
    assert judge.flush(now=1001.0) == []  # one bad segment, open_after is 2


def test_restore_keeps_the_open_incident_id_and_resolves_it_once() -> None:
    run = Run()
    run.clean(8)
    for _ in range(4):
        run.round(**{"360p": 3.6, "720p": {"errors": 4}})
    opened = [e for e in run.events if e.state == "open"]
    assert len(opened) == 1
    # a new judge (restart, or the partition moved): replay the incidents topic
    judge = Judge(cfg())
    judge.restore(run.events)
    assert [i.id for i in judge.open_incidents()] == [opened[0].id]
    after = Run(judge)
    after.seq = run.seq
    after.clean(5)
    assert [(e.id, e.state) for e in after.events] == [(opened[0].id, "resolved")]
    # replaying the same verdicts once more (redelivery after a crash) publishes nothing new
    again = Judge(cfg())
    again.restore([*run.events, *after.events])
    replay = Run(again)
    replay.clean(8)
    for _ in range(4):
        replay.round(**{"360p": 3.6, "720p": {"errors": 4}})
    replay.clean(5)
    assert replay.events == []


def test_restore_keeps_a_stream_wide_incident() -> None:
    run = Run()
    run.clean(6)
    for _ in range(2):
        run.round(**{"360p": {"errors": 1}, "720p": {"errors": 1}})
    judge = Judge(cfg())
    judge.restore(Incident.from_json(e.to_json()) for e in run.events)
    after = Run(judge)
    after.seq = run.seq
    after.round(**{"360p": {"errors": 1}, "720p": {"errors": 1}})
    after.clean(3)
    assert states(after.events) == [("resolved", "*", "corruption", "packaging")]


def test_stale_stream_resolves_its_incidents() -> None:
    run = Run()
    run.clean(6)
    for _ in range(2):
        run.round(**{"360p": {"errors": 1}, "720p": {"errors": 1}})
    out = run.judge.tick(now=10_000.0)
    assert states(out) == [("resolved", "*", "corruption", "packaging")]
    assert out[0].evidence["resolution"] == "stale"
    assert run.judge.streams == {}


def test_diagnosis_is_attached_to_the_incident() -> None:
    run = Run()
    run.clean(6)
    for _ in range(2):
        run.round(**{"360p": 3.6, "720p": {"errors": 1}})
    seg = run.events[0].segments[0]
    out = run.judge.attach_diagnosis(seg, {"degradation": "packet_loss"}, now=2000.0)
    assert len(out) == 1 and out[0].diagnosis == {"degradation": "packet_loss"}


def test_a_diagnosis_that_comes_before_its_incident_opens_is_attached() -> None:
    # The diagnose role can answer before the judge's round opens the incident: the
    # incident opens with the newest diagnosis of its segments, not without one.
    def opened(judge: Judge, late: float = 0.0) -> list[Incident]:
        run = Run(judge)
        run.clean(6)
        seq = run.seq
        for i, degradation in enumerate(("compression", "packet_loss")):
            for rendition in ("360p", "720p"):
                segment = f"news/{rendition}/{seq + i}"
                judge.attach_diagnosis(segment, {"degradation": degradation}, now=1010.0 - late)
        judge.attach_diagnosis("news/720p/999", {"degradation": "black"}, now=1010.0)  # not its
        for _ in range(2):
            run.round(**{"360p": {"errors": 1}, "720p": {"errors": 1}})
        return [e for e in run.events if e.state == "open"]

    first = opened(Judge())
    assert len(first) == 1 and first[0].diagnosis == {"degradation": "packet_loss"}
    off = opened(Judge(JudgeConfig(recent_diagnoses=0)))
    assert len(off) == 1 and off[0].diagnosis is None
    old = opened(Judge(), late=600.0)  # kept past recent_diagnoses_s: not attached
    assert len(old) == 1 and old[0].diagnosis is None
    # the memory is bounded
    judge = Judge(JudgeConfig(recent_diagnoses=2))
    for i in range(5):
        judge.attach_diagnosis(f"news/720p/{i}", {"degradation": "noise"}, now=0.0)
    assert list(judge._diagnoses) == ["news/720p/3", "news/720p/4"]
    # an id off the topic too long to be a segment's is not kept (4096 of a megabyte each)
    judge.attach_diagnosis("x" * 1_000_000, {"degradation": "noise"}, now=0.0)
    assert list(judge._diagnoses) == ["news/720p/3", "news/720p/4"]


def test_an_incident_that_grows_takes_the_diagnosis_of_its_new_segment() -> None:
    run = Run()
    run.clean(10)
    for _ in range(3):
        run.round(**{"360p": LADDER["360p"][1], "720p": LADDER["720p"][1] - 0.7})
    opened = [e for e in run.events if e.kind == "starvation"]
    assert states(opened) == [("open", "720p", "starvation", "rendition")]
    assert opened[0].diagnosis is None
    noise = {"degradation": "noise"}
    run.judge.attach_diagnosis(f"news/720p/{run.seq}", noise, now=1000.0 + run.seq * 2)
    grew = run.round(**{"360p": LADDER["360p"][1], "720p": 2.5})
    assert [(e.state, e.diagnosis) for e in grew if e.kind == "starvation"] == [("update", noise)]


def test_a_kept_diagnosis_is_not_taken_by_a_segment_id_used_again() -> None:
    # Diagnosed at seq 10, no incident; the packager restarts its numbering and black
    # comes at seqs 10-15 of the new one: not the old segment's diagnosis, however long
    # diagnoses are kept. A rebalance's new judge keeps what the old one had read.
    def black_after_restart(judge: Judge) -> list[Incident]:
        events, now = [], 1000.0
        for seq in [*range(200), *range(20)]:
            restarted = now > 1000.0 + 2 * 199
            if seq == 10 and not restarted:
                judge.attach_diagnosis("news/720p/10", {"degradation": "compression"}, now)
            dark = restarted and 10 <= seq < 16
            for name in ("360p", "720p"):
                doc = verdict(name, seq, 1.0 if dark else LADDER[name][1])
                doc["flags"] = verdict(name, 0, 1.0, flags=[("black", 1.0, 2.0)])["flags"] * dark
                events += judge.observe(Observation.from_verdict_json(doc), now=now)
            events += judge.tick(now)
            now += 2.0
        return [e for e in events if e.state == "open"]

    black = black_after_restart(Judge(cfg(recent_diagnoses_s=10_000.0)))
    assert states(black) == [("open", "*", "black", "source")] and black[0].diagnosis is None
    # without the drop at the new numbering it would have been taken
    kept = Judge(cfg(recent_diagnoses_s=10_000.0))
    kept._drop_diagnoses = lambda stream, rendition: None  # type: ignore[method-assign]
    assert black_after_restart(kept)[0].diagnosis == {"degradation": "compression"}
    rebuilt = Judge(cfg())
    rebuilt.adopt_diagnoses(kept)
    assert rebuilt._diagnoses == kept._diagnoses


def test_config_rejects_unknown_keys_and_bad_targets() -> None:
    with pytest.raises(ValidationError, match="extra"):
        JudgeConfig.model_validate({"kinds": {"blak": {}}})
    with pytest.raises(ValidationError, match="between 1 and 5"):
        JudgeConfig.model_validate({"starvation": {"targets": {"720p": 7}}})
    # a renumbering gap within reach of late verdicts would judge them out of order
    with pytest.raises(ValidationError, match="raise renumber_gap"):
        JudgeConfig.model_validate({"renumber_gap": 10})
    assert JudgeConfig.model_validate({"renumber_gap": 34}).renumber_gap == 34
    for name, field in JudgeConfig.model_fields.items():
        assert field.description or name in ("kinds", "starvation", "ladder"), name


def soft(sev: float) -> dict[str, Any]:
    """A 720p segment whose picture flags blur at `sev`, its MOS as usual."""
    return {"flags": [("blur", sev, 2.0)]}


def test_content_that_always_looks_soft_opens_no_incident() -> None:
    run = Run()
    for _ in range(40):  # a soft photograph: every segment flags blur about 0.5
        run.round(**{"360p": 3.6, "720p": soft(0.5)})
    assert run.events == []
    # the same feed with the look off: a blur incident on the rendition that never clears
    off = Run(look={"enabled": False})
    for _ in range(40):
        off.round(**{"360p": 3.6, "720p": soft(0.5)})
    assert states(off.events) == [("open", "720p", "blur", "rendition")]


def test_a_blur_beyond_the_look_opens_and_a_lasting_one_stays_open() -> None:
    run = Run()
    for _ in range(10):
        run.round(**{"360p": 3.6, "720p": soft(0.5)})
    for _ in range(40):  # far softer than the rendition ever is, for 80 s
        run.round(**{"360p": 3.6, "720p": soft(0.9)})
    # a segment judged bad never teaches the look, so the fault does not become it
    assert states(run.events) == [("open", "720p", "blur", "rendition")]
    assert run.events[0].evidence["renditions"]["720p"]["usual"] == pytest.approx(0.5, abs=0.01)
    run.clean(3)  # the picture is back to its usual look
    assert states(run.events)[-1] == ("resolved", "720p", "blur", "rendition")
    sharp = Run()
    sharp.clean(8)
    for _ in range(3):  # on a sharp rendition the flag's own threshold is what counts
        sharp.round(**{"360p": 3.6, "720p": soft(0.4)})
    assert states(sharp.events) == [("open", "720p", "blur", "rendition")]


def test_a_restarted_judge_remembers_the_look() -> None:
    before = [
        Observation.from_verdict_json(verdict("720p", seq, 4.3, flags=[("blur", 0.5, 2.0)]))
        for seq in range(10)
    ]
    judge = Judge(cfg())
    judge.warm(before)
    run = Run(judge)
    run.seq = 10
    for _ in range(3):  # warm: the look is known, so a blur far beyond it opens at once
        run.round(**{"720p": soft(0.95)})
    assert states(run.events) == [("open", "720p", "blur", "rendition")]
    cold = Run()
    cold.seq = 10
    for _ in range(3):  # cold: these are the segments the look is learned from
        cold.round(**{"720p": soft(0.95)})
    assert cold.events == []


def test_a_fault_that_varies_does_not_teach_itself_to_the_look() -> None:
    run = Run()
    for _ in range(10):
        run.round(**{"360p": 3.6, "720p": soft(0.5)})
    for i in range(100):  # some segments of the fault fall under usual + margin
        run.round(**{"360p": 3.6, "720p": soft((0.6, 0.7, 0.8, 0.9, 1.0)[i % 5])})
    assert states(run.events) == [("open", "720p", "blur", "rendition")]
    # only the fault's first segments, under the margin before anything was bad, were learned
    assert run.judge.streams["news"].renditions["720p"].looks["blur"].level < 0.55


def test_segments_that_show_nothing_do_not_teach_the_look() -> None:
    run = Run()
    for _ in range(10):
        run.round(**{"360p": 3.6, "720p": soft(0.5)})
    for _ in range(12):  # 24 s undecodable, then black: no blur flag, but not sharpness
        run.round(**{"360p": 3.6, "720p": {"mos": None, "errors": 5}})
    for _ in range(6):
        run.round(**{"360p": 3.6, "720p": {"flags": [("black", 1.0, 2.0)]}})
    for _ in range(10):
        run.round(**{"360p": 3.6, "720p": soft(0.5)})
    assert "blur" not in {e.kind for e in run.events}
    assert run.judge.streams["news"].renditions["720p"].looks["blur"].level == pytest.approx(
        0.5, abs=0.01
    )


def test_a_restored_picture_incident_keeps_the_look_it_opened_against() -> None:
    # the judge role's restart: replay the last 200 verdicts, forget, restore the topic
    first = Run()
    first.clean(10)
    for _ in range(250):  # a blur on a sharp rung, older than the replay window
        first.round(**{"360p": 3.6, "720p": soft(0.9)})
    assert states(first.events) == [("open", "720p", "blur", "rendition")]
    judge = Judge(cfg())
    for seq in range(first.seq - 200, first.seq):
        for name, spec in (("360p", {"mos": 3.6}), ("720p", soft(0.9))):
            doc = verdict(name, seq, spec.pop("mos", LADDER[name][1]), **spec)
            judge.observe(Observation.from_verdict_json(doc), now=1000.0 + seq * 2)
    judge.flush(now=1000.0 + first.seq * 2)
    judge.forget_incidents()
    judge.restore(first.events)
    assert judge.streams["news"].renditions["720p"].looks["blur"].level == pytest.approx(0.0)
    after = Run(judge)
    after.seq = first.seq
    for _ in range(20):  # the fault goes on: it must not resolve
        after.round(**{"360p": 3.6, "720p": soft(0.9)})
    assert after.events == []


def test_look_config_names_picture_kinds_only() -> None:
    with pytest.raises(ValidationError, match="freeze"):
        JudgeConfig.model_validate({"look": {"kinds": ["freeze"]}})
    with pytest.raises(ValidationError, match="twice"):
        JudgeConfig.model_validate({"look": {"kinds": ["blur", "blur"]}})


def test_a_rung_blocky_from_its_first_segment_still_opens() -> None:
    # blocking is not a look content has: a wrongly set encoder shows it from the start
    run = Run()
    for _ in range(4):
        run.round(**{"360p": 3.6, "720p": {"flags": [("blockiness", 0.6, 2.0)]}})
    assert states(run.events) == [("open", "720p", "blocking", "rendition")]


def test_a_still_picture_still_shows_its_look() -> None:
    # a slate: every segment frozen and soft; its blur is its look, a blur beyond it is not
    run = Run()
    still = [("freeze", 1.0, 2.0)]
    for _ in range(10):
        run.round(**{"360p": 3.6, "720p": {"flags": [*still, ("blur", 0.5, 2.0)]}})
    assert "blur" not in {e.kind for e in run.events}
    for _ in range(3):
        run.round(**{"360p": 3.6, "720p": {"flags": [*still, ("blur", 0.95, 2.0)]}})
    assert ("open", "720p", "blur", "rendition") in states(run.events)


def test_new_grain_that_starves_the_encoder_is_a_noise_fault() -> None:
    """The demo's 30-s run: noise at the source of a bitrate-capped ladder. The 720p rung
    flagged noise 0.85, 0.28, 0.62 with blockiness 0.44, 0.39, 0.47, the 360p rung noise
    0.15, 0.10, 0.05 and both dropped: starvation at the source and blocking on 720p opened
    (with a deblocking decision), and no noise incident. The grain starved the encoder."""
    run = Run()
    run.clean(8)
    grain720, blocks = (0.85, 0.28, 0.62), (0.44, 0.39, 0.47)
    for n, b, low in zip(grain720, blocks, (0.15, 0.10, 0.05), strict=True):
        run.round(
            **{
                "360p": {"mos": 2.6, "flags": [("noise", low, 2.0)]},
                "720p": {"mos": 2.8, "flags": [("noise", n, 2.0), ("blockiness", b, 2.0)]},
            }
        )
    opened = {(e.kind, e.scope) for e in run.events if e.state == "open"}
    assert opened == {("noise", "*")}, opened
    (inc,) = [e for e in run.events if e.state == "open"]
    assert inc.evidence["renditions"]["360p"]["starves"] == "starvation"
    # switched off, each is judged on its own, as before
    run = Run(noise_starves=False)
    run.clean(8)
    for n, b, low in zip(grain720, blocks, (0.15, 0.10, 0.05), strict=True):
        run.round(
            **{
                "360p": {"mos": 2.6, "flags": [("noise", low, 2.0)]},
                "720p": {"mos": 2.8, "flags": [("noise", n, 2.0), ("blockiness", b, 2.0)]},
            }
        )
    opened = {(e.kind, e.scope) for e in run.events if e.state == "open"}
    assert ("starvation", "*") in opened and ("blocking", "720p") in opened
    assert ("noise", "*") not in opened


def test_a_rendition_that_is_always_grainy_still_starves_as_starvation() -> None:
    run = Run(starvation={"open_after": 2}, ladder={"enabled": False})
    for _ in range(10):  # film grain is this channel's look on both rungs
        run.round(
            **{
                "360p": {"mos": 3.6, "flags": [("noise", 0.4, 2.0)]},
                "720p": {"mos": 4.3, "flags": [("noise", 0.45, 2.0)]},
            }
        )
    assert run.events == []
    for _ in range(3):  # a bitrate cut on 720p: the grain is as usual
        run.round(
            **{
                "360p": {"mos": 3.6, "flags": [("noise", 0.4, 2.0)]},
                "720p": {"mos": 2.9, "flags": [("noise", 0.42, 2.0)]},
            }
        )
    opened = {(e.kind, e.scope) for e in run.events if e.state == "open"}
    assert opened == {("starvation", "720p")}, opened
    # a drop with no grain at all is starvation, and blockiness without grain is blocking
    run = Run(starvation={"open_after": 2}, ladder={"enabled": False})
    run.clean(8)
    for _ in range(3):
        run.round(**{"360p": 3.6, "720p": {"mos": 2.9, "flags": [("blockiness", 0.6, 2.0)]}})
    opened = {(e.kind, e.scope) for e in run.events if e.state == "open"}
    assert opened == {("starvation", "720p"), ("blocking", "720p")}, opened


def test_grain_that_starved_a_segment_is_not_learned_as_the_look() -> None:
    judge = Judge(cfg(starvation={"open_after": 2}))
    run = Run(judge)
    run.clean(8)
    low = {"mos": 2.6, "flags": [("noise", 0.2, 2.0)]}
    run.round(**{"360p": dict(low), "720p": dict(low)})
    look = judge.streams["news"].renditions["360p"].looks["noise"]
    assert (look.level, look.count) == (0.0, 8)
    # a segment with grain and nothing starved is learned as usual (once the noise run
    # the grain began is over: a look learns nothing while its kind is going bad)
    run.clean(1)
    run.round(**{"360p": {"mos": 3.6, "flags": [("noise", 0.2, 2.0)]}, "720p": 4.3})
    look = judge.streams["news"].renditions["360p"].looks["noise"]
    assert look.count == 9 and look.level > 0.0


def test_grain_beside_blocks_on_a_rung_in_range_does_not_hold_its_starvation() -> None:
    """Found in review: a blocky rung whose MOS held, beside new grain, was held like a
    starved one and so counted as dropped with a starved sibling: a bitrate cut on 720p
    opened starvation at the source. Its starvation gate is stepped as usual."""
    run = Run()
    run.clean(8)
    for _ in range(3):
        run.round(
            **{
                "360p": {"mos": 3.6, "flags": [("blockiness", 0.4, 2.0), ("noise", 0.1, 2.0)]},
                "720p": 2.9,
            }
        )
    opened = {(e.kind, e.scope, e.localisation) for e in run.events if e.state == "open"}
    assert ("starvation", "720p", "rendition") in opened, opened
    assert ("noise", "360p", "rendition") in opened and not {k for k, *_ in opened} & {"blocking"}


def test_grain_after_a_fault_began_is_not_its_cause() -> None:
    """Found in review: a bitrate cut (or an encoder set up blocky), then a little grain: a
    noise incident opened beside it and the policy would denoise."""
    for first in ({"mos": 2.9}, {"mos": 4.3, "flags": [("blockiness", 0.6, 2.0)]}):
        run = Run(ladder={"enabled": False})
        run.clean(8)
        run.round(**{"360p": 3.6, "720p": dict(first)})  # the fault begins with no grain
        later = {**first, "flags": [*first.get("flags", []), ("noise", 0.1, 2.0)]}
        for _ in range(4):
            run.round(**{"360p": 3.6, "720p": dict(later)})
        kinds = {e.kind for e in run.events if e.state == "open"}
        assert "noise" not in kinds and kinds & {"starvation", "blocking"}, (first, kinds)


def test_occasional_grain_or_no_look_does_not_take_a_bitrate_cut() -> None:
    # a channel grainy one segment in four (its look ~0.05), cut during a grainy scene
    run = Run(ladder={"enabled": False})
    for i in range(16):
        grainy = [("noise", 0.2, 2.0)] if i % 4 == 0 else []
        run.round(**{"360p": 3.6, "720p": {"mos": 4.3, "flags": grainy}})
    for i in range(4):
        grainy = [("noise", 0.2, 2.0)] if i % 4 == 0 else []
        run.round(**{"360p": 3.6, "720p": {"mos": 2.9, "flags": grainy}})
    assert {e.kind for e in run.events if e.state == "open"} == {"starvation"}
    # with looks off nothing says what is usual: grain is not read as new
    run = Run(ladder={"enabled": False}, look={"enabled": False})
    run.clean(8)
    for _ in range(3):
        run.round(**{"360p": 3.6, "720p": {"mos": 2.9, "flags": [("noise", 0.2, 2.0)]}})
    assert {e.kind for e in run.events if e.state == "open"} == {"starvation"}
    # nor while the look is still being learned (a fault in the first segments)
    run = Run(ladder={"enabled": False}, starvation={"open_after": 1}, warmup_segments=1)
    run.clean(2)
    out = run.round(**{"360p": 3.6, "720p": {"mos": 2.9, "flags": [("noise", 0.2, 2.0)]}})
    assert [e.kind for e in out if e.state == "open"] == ["starvation"]
    assert run.judge.streams["news"].renditions["720p"].looks["noise"].count < 5


def test_a_rung_starved_by_new_grain_sits_out_the_ladder_check() -> None:
    # the grain starved 720p below 360p: that is the noise, not an inverted ladder
    run = Run()
    run.clean(8)
    for _ in range(3):
        run.round(**{"360p": 3.6, "720p": {"mos": 3.2, "flags": [("noise", 0.2, 2.0)]}})
    assert {e.kind for e in run.events if e.state == "open"} == {"noise"}


def test_grain_well_above_a_grainy_look_is_new() -> None:
    """A channel that usually shows some grain (0.2: under min_severity, over margin / 2)
    gets much more (0.6) with the blocks of a starved encoder: noise. Grain at its usual
    level with the same blocks: blocking."""
    for grain, expected in ((0.6, "noise"), (0.25, "blocking")):
        run = Run(ladder={"enabled": False})
        for _ in range(10):
            run.round(**{"360p": 3.6, "720p": {"mos": 4.3, "flags": [("noise", 0.2, 2.0)]}})
        blocks = [("blockiness", 0.7, 2.0), ("noise", grain, 2.0)]
        for _ in range(3):
            run.round(**{"360p": 3.6, "720p": {"mos": 4.3, "flags": blocks}})
        opened = [e for e in run.events if e.state == "open"]
        assert {e.kind for e in opened} == {expected}, (grain, opened)
        if expected == "noise":  # as bad as the blocks the grain made
            assert opened[0].severity >= 0.7

"""Escalation and the diagnose role on the runtime's in-memory doubles: worker-side
requests, the screen-side Escalator, and the diagnose step's drops (queue full, VLM
error, the watchdog on a hung call), each still committing its record."""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

from ingest.config import DecodeConfig, SamplingConfig
from ingest.contract import SegmentJob
from ingest.impair import black
from ingest.reference import ReferenceConfig
from ingest.synth import EncodeSettings, encode, pattern_frames
from ingest.types import Segment, StreamInfo
from monitor.clients import Partition, Record
from monitor.diagnose import BAD_ESCALATION, QUEUE_FULL, DiagnoseStep, RequestStep
from monitor.escalate import NO_FRAMES, Escalator
from monitor.escalation import EscalationConfig, EscalationPolicy, Recent, candidate, reason_label
from monitor.health import HealthState
from monitor.messages import DeadLetterRecord
from monitor.publisher import Publisher
from monitor.runtime import Runtime, RuntimeSettings
from monitor.workers import DecodeSummary, Screened, ScreenJob, WorkerSetup, screen_job
from scorers.artifacts import ArtifactsConfig, measure
from scorers.types import Flag, Verdict
from scorers.vlm.config import DiagnoseConfig
from scorers.vlm.diagnoser import Diagnoser
from scorers.vlm.types import Diagnosis, EscalationRequest, VLMError
from tests.unit.test_runtime import FakeConsumer, FakeProducer, dead_letter
from tests.unit.vlm_samples import request

TP = Partition("esc", 0)
BLACK = (Flag("black", 1.0, 0, 2),)
RULES = Diagnoser(DiagnoseConfig())


# ---------------------------------------------------------------- the screen side


def _segment(frames: list[np.ndarray], seq: int) -> SegmentJob:
    data = encode(frames, EncodeSettings(fps=25, gop=25))
    return SegmentJob(Segment(data, "news", "360p", seq))


def _setup(audit_fraction: float) -> WorkerSetup:
    """A worker screening 4 frames with the artifact detectors, escalating by default."""
    return WorkerSetup(
        DecodeConfig(sampling=SamplingConfig(mode="uniform", count=4)),
        ReferenceConfig(),
        [ArtifactsConfig()],
        escalation=EscalationConfig(audit_fraction=audit_fraction),
    )


def test_the_worker_attaches_frames_only_when_a_trigger_fires() -> None:
    clean = list(pattern_frames("scene", 320, 180, 25, seed=1))
    setup = _setup(audit_fraction=0.0)
    ok = screen_job(1, ScreenJob(_segment(clean, 1)), setup)
    assert isinstance(ok, Screened) and ok.escalation is None and ok.escalation_error is None

    bad = screen_job(2, ScreenJob(_segment(black(clean, 0, 25), 2)), setup)
    assert isinstance(bad, Screened) and bad.escalation is not None
    req = bad.escalation
    assert req.segment_id == "news/360p/2" and req.reason.startswith("flag:black")
    assert len(req.frames) == 4 and all(f.startswith(b"\xff\xd8") for f in req.frames)
    assert EscalationRequest.from_json(json.loads(json.dumps(req.to_json()))) == req

    off = WorkerSetup(setup.decode, setup.references, setup.scorers, escalation=None)
    none = screen_job(3, ScreenJob(_segment(black(clean, 0, 25), 3)), off)
    assert isinstance(none, Screened) and none.escalation is None


def test_no_frames_are_encoded_for_a_request_the_limits_would_refuse() -> None:
    """The parent says which escalations the limits would admit now (room); the worker
    makes no request for an audit unless "all", and none at all on "none"."""
    clean = list(pattern_frames("scene", 320, 180, 25, seed=1))
    setup = _setup(audit_fraction=1.0)  # every normal segment: an audit
    job = ScreenJob(_segment(clean, 1))
    room = screen_job(1, job, setup)
    assert isinstance(room, Screened) and room.escalation is not None
    assert room.escalation.reason == "audit"
    full = screen_job(2, dataclasses.replace(job, room="impaired"), setup)
    assert isinstance(full, Screened) and full.escalation is None
    assert full.escalation_error is None  # skipped, not failed
    bad = ScreenJob(_segment(black(clean, 0, 25), 3), room="impaired")
    impaired = screen_job(3, bad, setup)
    assert isinstance(impaired, Screened) and impaired.escalation is not None
    assert impaired.escalation.reason.startswith("flag:black")
    spent = screen_job(4, dataclasses.replace(bad, room="none"), setup)
    assert isinstance(spent, Screened) and spent.escalation is None


def test_no_frames_are_encoded_for_the_renditions_habit_when_only_impairments_get_room() -> None:
    """A trigger that is the rendition's habit (or an event going on) alone gets an audit's
    priority from the policy: the worker, told by the job's Recent, makes no frames for it
    unless the room is "all". A channel cutting between natural pictures and flat graphics
    made JPEG frames for every graphic that the limits then refused."""
    now = [1000.0]
    pol = EscalationPolicy(EscalationConfig(audit_fraction=0.0), lambda: now[0])

    def seen(seq: int, severity: float) -> Verdict:
        flags = (Flag("black", severity, 0.0, 2.0),) if severity else ()
        return Verdict(f"news/r/{seq}", "news", "r", seq, 4.0, 4.0, (), flags, ("x@1",))

    for i in range(10):  # a slate of black every fifth segment: the rendition's habit
        now[0] += 2
        pol.decide(seen(i, 0.6 if i % 5 == 0 else 0.0))
    recent = pol.recent("news", "r")
    assert dict(recent.settled) == {"flag_black": pytest.approx(0.7)}
    clean = list(pattern_frames("scene", 320, 180, 25, seed=1))
    setup = _setup(audit_fraction=0.0)
    slate = ScreenJob(_segment(black(clean, 0, 15), 11), recent=recent, room="impaired")
    habit = screen_job(1, slate, setup)
    assert isinstance(habit, Screened) and habit.escalation is None
    assert 0 < habit.verdict.flags[0].severity <= 0.7
    stronger = screen_job(
        2, dataclasses.replace(slate, job=_segment(black(clean, 0, 25), 12)), setup
    )
    assert isinstance(stronger, Screened) and stronger.escalation is not None  # what changed
    room = screen_job(3, dataclasses.replace(slate, room="all"), setup)
    assert isinstance(room, Screened) and room.escalation is not None


def test_a_soft_trigger_gets_frames_only_when_its_share_of_the_budget_has_room() -> None:
    clean = list(pattern_frames("scene", 320, 180, 25, seed=1))
    setup = _setup(audit_fraction=0.0)
    first = screen_job(1, ScreenJob(_segment(clean, 1)), setup)
    assert isinstance(first, Screened)
    loss = measure(first.verdict.extra, "edge_loss")
    assert loss is not None
    # the rendition usually keeps 1.8 more of its edges: a soft rise (1.5), not a full one
    job = ScreenJob(_segment(clean, 2), recent=Recent(None, (), (("edge_loss", loss - 1.8),)))
    got = {}
    for i, room in enumerate(("all", "soft", "impaired"), 2):
        out = screen_job(i, dataclasses.replace(job, room=room), setup)
        assert isinstance(out, Screened)
        got[room] = out.escalation.reason if out.escalation is not None else None
    assert got == {"all": "soft:edge_loss>=1.50", "soft": "soft:edge_loss>=1.50", "impaired": None}


def test_room_follows_the_budget_and_the_streams_bucket() -> None:
    now = [1000.0]
    cfg = EscalationConfig(
        audit_fraction=1.0,
        budget_fraction=0.5,
        budget_floor=0,
        budget_lend_s=0.0,
        audit_budget_share=0.5,
        stream_burst=3,
        stream_rate_per_s=0.001,
    )
    pol = EscalationPolicy(cfg, lambda: now[0])
    assert pol.room("news") == "none"  # nothing seen: no budget yet
    for i in range(40):  # 40 seen: 10 for audits and weak triggers, 2 of them used
        now[0] += 0.5
        pol.decide(Verdict(f"other/r/{i}", "other", "r", i, 4.0, 4.0, (), (), ("x@1",)))
    assert pol.room("news") == "all"  # budget left, and a fresh stream has a full bucket
    for i in range(16):  # audits until their half of the budget is spent (14 of 28)
        now[0] += 0.5
        pol.decide(Verdict(f"more/r/{i}", f"more{i}", "r", i, 4.0, 4.0, (), (), ("x@1",)))
    assert pol.room("news") == "soft"  # soft triggers may still use up to 80% of it
    assert pol.room("other") == "impaired"  # one token left: kept for an impairment
    assert pol.decide(Verdict("other/r/40", "other", "r", 40, 4.0, 4.0, (), BLACK, ("x",))).escalate
    assert pol.room("other") == "none"  # its bucket is empty
    assert EscalationPolicy(EscalationConfig(enabled=False)).room("news") == "none"


def test_the_rolling_median_from_the_parent_reaches_the_worker_check() -> None:
    cfg = EscalationConfig(audit_fraction=0.0)
    v = Verdict("s/r/1", "s", "r", 1, 3.4, 3.4, (), (), ("x@1",))
    assert candidate(v, cfg, None) is None
    assert candidate(v, cfg, Recent(4.5)) == "mos_low_drop>0.80"
    assert candidate(v, EscalationConfig(enabled=False), Recent(4.5)) is None
    assert candidate(v, EscalationConfig(audit_fraction=1.0), None) == "audit"


def test_reason_labels_are_bounded() -> None:
    assert reason_label("flag:black>=0.50,mos_low<2.50") == "flag_black"
    assert reason_label("mos_low<2.50") == "mos_low"
    assert reason_label("mos_low_drop>0.80") == "mos_low_drop"
    assert reason_label("degradation_unsure<0.40,audit") == "degradation_unsure"
    assert reason_label("audit") == "audit"


def _screened(seq: int, flags: tuple[Flag, ...], with_request: bool) -> Screened:
    v = Verdict(f"news/720p/{seq}", "news", "720p", seq, 4.0, 4.0, (), flags, ("x@1",))
    req = request(seq) if with_request else None
    info = StreamInfo("h264", None, 128, 72, 25.0, "yuv420p", 8, None, 1.0, 1e5, 25, 1, "mpegts")
    return Screened(seq, v, info, DecodeSummary(0, 0, 0.1), 0.0, escalation=req)


def test_escalator_sends_admitted_requests_and_counts_every_refusal() -> None:
    sent: list[str] = []
    dropped: list[tuple[str, str]] = []
    cfg = EscalationConfig(audit_fraction=0.0, budget_floor=2, stream_burst=10)
    esc = Escalator(
        EscalationPolicy(cfg, clock=lambda: 100.0),
        "vqmon.escalations",
        on_escalated=sent.append,
        on_dropped=lambda reason, trigger: dropped.append((reason, trigger)),
    )
    black_flag = (Flag("black", 1.0, 0.0, 2.0),)
    out = esc.outputs(_screened(1, black_flag, True))
    assert [(m.topic, m.key) for m in out] == [("vqmon.escalations", b"news/720p/1")]
    body = json.loads(out[0].value)
    assert body["schema"] == "vqmon.escalation/1" and body["reason"] == "flag:black>=0.50"
    assert esc.outputs(_screened(2, (), False)) == []  # normal: nothing, nothing counted
    assert esc.outputs(_screened(3, black_flag, False)) == []  # no frames from the worker
    # ... spent nothing: the floor of 2 still has room for the next one, then is used up
    assert len(esc.outputs(_screened(4, black_flag, True))) == 1
    assert esc.outputs(_screened(5, black_flag, True)) == []
    # each refusal names the trigger it refused, as the escalated ones do
    assert sent == ["flag_black", "flag_black"]
    assert dropped == [(NO_FRAMES, "flag_black"), ("budget", "ongoing")]  # black goes on


# ---------------------------------------------------------------- the diagnose role


@dataclass
class Rig:
    consumer: FakeConsumer
    producer: FakeProducer
    sent: list[tuple[str, bytes, bytes]]
    rt: Runtime
    step: DiagnoseStep
    drops: dict[str, int]

    def until(self, cond: Callable[[], bool], timeout_s: float = 10.0) -> None:
        deadline = time.monotonic() + timeout_s
        while not cond():
            assert time.monotonic() < deadline, "timed out"
            self.rt.turn()
            self.producer.ack()
            time.sleep(0.005)

    def topic(self, name: str) -> list[tuple[bytes, dict[str, Any]]]:
        return [(k, json.loads(v)) for t, k, v in self.sent if t == name]


def rig(
    values: list[bytes],
    diagnose: Callable[[Sequence[EscalationRequest]], list[Diagnosis]] = RULES.diagnose_batch,
    **step: Any,
) -> Rig:
    records = [Record(TP.topic, 0, i, b"k", v) for i, v in enumerate(values)]
    consumer = FakeConsumer({TP: records})
    sent: list[tuple[str, bytes, bytes]] = []
    producer = FakeProducer(sent)
    publisher = Publisher(lambda: producer, retry_backoff_s=0.0)
    settings = RuntimeSettings(commit_interval_s=0.0, max_poll_records=64)
    rt = Runtime(consumer, [TP.topic], publisher, dead_letter, settings, HealthState(60))
    drops: dict[str, int] = {}

    def dropped(reason: str, n: int) -> None:
        drops[reason] = drops.get(reason, 0) + n

    opts: dict[str, Any] = {"queue_size": 8, "batch_size": 2, "timeout_s": 30.0}
    opts.update(step)
    ds = DiagnoseStep(rt.context, diagnose, "diag", on_dropped=dropped, **opts)
    rt.first = RequestStep(rt.context, ds)
    consumer.subscribe([TP.topic], rt._guard(rt._assigned), rt._guard(rt._revoked))
    return Rig(consumer, producer, sent, rt, ds, drops)


def escalation(seq: int) -> bytes:
    return json.dumps(request(seq).to_json()).encode()


def test_diagnoses_are_published_by_segment_id_and_committed() -> None:
    hostile = [b"{not json", b'{"schema": "x"}', b"[" * 100_000]  # the last: too deep
    r = rig([escalation(i) for i in range(5)] + hostile)
    r.until(lambda: r.consumer.committed(TP) == 8)
    diags = r.topic("diag")
    assert [k for k, _ in diags] == [f"news/720p/{i}".encode() for i in range(5)]
    d = Diagnosis.from_json(diags[0][1])
    assert d.model == "rules" and d.degradation == ("blocking", "serious")
    dead = [DeadLetterRecord.parse(v) for t, _k, v in r.sent if t == "dlq"]
    assert [(x.reason, x.source.offset) for x in dead] == [(BAD_ESCALATION, k) for k in (5, 6, 7)]
    r.rt._shutdown()


def test_a_slow_vlm_fills_the_queue_then_requests_are_dropped_not_blocked() -> None:
    gate = threading.Event()

    def slow(reqs: Sequence[EscalationRequest]) -> list[Diagnosis]:
        gate.wait(10)
        return RULES.diagnose_batch(reqs)

    r = rig([escalation(i) for i in range(10)], slow, queue_size=3, batch_size=1)
    # 1 in the thread, 3 queued, 6 dropped: all polled at once, the consumer never paused
    r.until(lambda: r.drops.get(QUEUE_FULL) == 6)
    assert r.consumer.paused() == set() and r.topic("diag") == []
    gate.set()
    r.until(lambda: r.consumer.committed(TP) == 10)
    assert len(r.topic("diag")) == 4
    r.rt._shutdown()


def test_a_vlm_error_drops_the_batch_and_commits_it() -> None:
    def down(reqs: Sequence[EscalationRequest]) -> list[Diagnosis]:
        raise VLMError("connection refused")

    r = rig([escalation(i) for i in range(3)], down)
    r.until(lambda: r.consumer.committed(TP) == 3)
    assert r.drops == {"vlm_error": 3} and r.topic("diag") == []
    r.rt._shutdown()


@pytest.mark.parametrize("max_abandoned", [0, 1])
def test_the_watchdog_drops_a_hung_call_and_bounds_replacements(max_abandoned: int) -> None:
    hang = threading.Event()

    def hung(reqs: Sequence[EscalationRequest]) -> list[Diagnosis]:
        if reqs[0].seq == 0:
            hang.wait(10)
        return RULES.diagnose_batch(reqs)

    r = rig(
        [escalation(i) for i in range(3)],
        hung,
        batch_size=1,
        timeout_s=0.3,
        max_abandoned=max_abandoned,
    )
    r.until(lambda: r.drops.get("vlm_timeout") == 1)
    if max_abandoned:  # a new thread takes over: the rest is diagnosed
        r.until(lambda: r.consumer.committed(TP) == 3)
        assert [k for k, _ in r.topic("diag")] == [b"news/720p/1", b"news/720p/2"]
        assert r.step.stalled_s() == 0.0
    else:  # none left: the step says it is stuck (health goes red), work waits
        time.sleep(0.05)
        r.rt.turn()
        assert r.step.stalled_s() > 0 and r.step.depth == 2
        hang.set()  # the hung call returns: its thread exits, a new one starts
        r.until(lambda: r.consumer.committed(TP) == 3)
        assert r.step.stalled_s() == 0.0
    hang.set()
    r.rt._shutdown()


def loop_turns(r: Rig, seconds: float) -> int:
    """How many times the runtime's loop turns in `seconds` of wall time."""
    turns, end = 0, time.monotonic() + seconds
    while time.monotonic() < end:
        r.rt.turn()
        turns += 1
    return turns


def test_a_slow_call_is_waited_for_not_spun_on() -> None:
    # The runtime polls without a timeout while work is in flight; the step must wait for
    # its threads instead, or a stalled VLM turns the role into a busy loop that takes a
    # core from screening (bench/pipeline.py --mode vlm measured 0.76-0.83x before).
    release = threading.Event()

    def slow(reqs: Sequence[EscalationRequest]) -> list[Diagnosis]:
        release.wait(10)
        return RULES.diagnose_batch(reqs)

    r = rig([escalation(0)], slow, batch_size=1)
    r.until(lambda: r.step.running == 1)
    turns = loop_turns(r, 0.4)
    assert turns < 100, f"{turns} loop turns in 0.4 s while one call ran: a busy loop"
    release.set()
    r.until(lambda: r.consumer.committed(TP) == 1)
    assert [k for k, _ in r.topic("diag")] == [b"news/720p/0"]
    r.rt._shutdown()


def test_with_every_thread_hung_the_loop_still_waits() -> None:
    hang = threading.Event()

    def hung(reqs: Sequence[EscalationRequest]) -> list[Diagnosis]:
        hang.wait(10)
        return RULES.diagnose_batch(reqs)

    r = rig([escalation(i) for i in range(3)], hung, batch_size=1, timeout_s=0.1, max_abandoned=0)
    r.until(lambda: r.drops.get("vlm_timeout") == 1)  # its one thread abandoned, none left
    assert r.step.running == 0 and r.step.depth == 2
    turns = loop_turns(r, 0.4)
    assert turns < 100, f"{turns} loop turns in 0.4 s with work held: a busy loop"
    hang.set()
    r.until(lambda: r.consumer.committed(TP) == 3)
    r.rt._shutdown()

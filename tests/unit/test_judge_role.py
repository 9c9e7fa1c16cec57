"""The judge role's step on in-memory records: round commits, outputs, forget, rebuild."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any, cast

from monitor.clients import Partition, Record, partition_for
from monitor.encoding import EncodingConfig, EncodingPolicy
from monitor.judge import Judge, JudgeConfig
from monitor.judge_role import JudgeStep, JudgeTopics, rebuild, summarize_diagnosis
from monitor.publisher import OutMessage
from monitor.runtime import Context, Message
from monitor.types import EncoderDecision, Incident, Observation
from tests.unit.test_judge import LADDER, cfg, dead_letter, verdict

TOPICS = JudgeTopics("ver", "dlq", "inc", "dec")


class FakeContext:
    def __init__(self) -> None:
        self.groups: list[tuple[list[Record], list[OutMessage]]] = []
        self.done_records: list[tuple[Record, str]] = []
        self.dead: list[tuple[Record, str]] = []

    def publish_group(self, records: list[Record], messages: list[OutMessage]) -> None:
        self.groups.append((list(records), list(messages)))

    def done(self, record: Record, result: str) -> None:
        self.done_records.append((record, result))

    def dead_letter(self, record: Record, reason: str, error: str) -> None:
        self.dead.append((record, reason))

    def committable(self) -> list[int]:
        return sorted(r.offset for records, _ in self.groups for r in records)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def step_for(ctx: FakeContext, judge: Judge | None = None, **encoding: Any) -> JudgeStep:
    policy = EncodingPolicy(EncodingConfig.model_validate(encoding or {}))
    judge = judge or Judge(JudgeConfig(warmup_segments=3, clear_after=2))
    return JudgeStep(cast(Context, ctx), judge, policy, TOPICS, clock=Clock())


_offsets = iter(range(10**6))


def record(doc: dict[str, Any], topic: str = "ver", partition: int = 0) -> Record:
    return Record(
        topic, partition, next(_offsets), doc["segment_id"].encode(), json.dumps(doc).encode()
    )


def feed(step: JudgeStep, docs: Iterable[dict[str, Any]]) -> list[Record]:
    out = []
    for d in docs:
        r = record(d)
        step.submit(Message(r, r))
        out.append(r)
    return out


def black(rendition: str, seq: int) -> dict[str, Any]:
    return verdict(rendition, seq, 1.0, flags=[("black", 1.0, 2.0)])


def first_round(step: JudgeStep) -> list[Record]:
    """A new stream's first round waits round_wait_s (its renditions are not known yet)."""
    records = feed(step, [verdict("360p", 0, 3.6), verdict("720p", 0, 4.3)])
    cast(Clock, step.clock).now += 11
    step.poll()
    return records


def test_a_rounds_records_are_committed_together_with_its_outputs() -> None:
    ctx = FakeContext()
    step = step_for(ctx)
    first = first_round(step)
    assert ctx.committable() == sorted(r.offset for r in first)
    low = feed(step, [verdict("360p", 1, 3.6)])
    assert len(ctx.groups) == 1  # round 1 waits for 720p
    high = feed(step, [verdict("720p", 1, 4.3)])
    assert ctx.committable() == sorted(r.offset for r in first + low + high)
    # A black run on every rung: the round that opens the source incident carries it.
    for seq in (2, 3):
        feed(step, [black("360p", seq), black("720p", seq)])
    messages = [m for _, ms in ctx.groups for m in ms]
    assert [m.topic for m in messages] == ["inc"]
    doc = json.loads(messages[0].value)
    expected = ("news/*/black/2@1004000", "source", "open")
    assert (doc["id"], doc["localisation"], doc["state"]) == expected
    assert messages[0].key == b"news/*/black/2@1004000"
    # Published with the records of the round that opened it (2 s of black: seq 2).
    (carrier,) = [records for records, ms in ctx.groups if ms]
    assert {json.loads(r.value or b"")["seq"] for r in carrier} == {2}


def test_forget_hands_back_records_of_rounds_not_judged() -> None:
    ctx = FakeContext()
    step = step_for(ctx)
    first_round(step)
    feed(step, [verdict("360p", 1, 3.6)])
    assert step.forget({Partition("ver", 0)}) == 1
    assert step.waiting == {}


def test_unreadable_verdicts_are_dead_lettered_and_unusable_dead_letters_done() -> None:
    ctx = FakeContext()
    step = step_for(ctx)
    bad = Record("ver", 0, 1, b"k", b"{not json")
    step.submit(Message(bad, bad))
    assert ctx.dead == [(bad, "unreadable_verdict")]
    # valid JSON to Python's parser, with a declared bitrate and an infinite measured one
    doc = verdict("720p", 1, 4.0)
    raw = json.dumps({**doc, "stream_info": {"duration_s": 2.0, "bitrate": float("inf")}})
    infinite = Record("ver", 0, 3, b"k", raw.encode())
    step.submit(Message(infinite, infinite))
    assert ctx.dead[-1] == (infinite, "unreadable_verdict")
    deep = Record("ver", 0, 4, b"k", b"[" * 100_000)  # deeper than the JSON parser goes
    step.submit(Message(deep, deep))
    assert ctx.dead[-1] == (deep, "unreadable_verdict")
    limit = Record(
        "dlq",
        0,
        2,
        b"k",
        json.dumps({"schema": "vqmon.dead-letter/1", "reason": "limit_exceeded"}).encode(),
    )
    step.submit(Message(limit, limit))
    assert ctx.done_records == [(limit, "skipped")]


def test_starved_rung_gets_one_raise_decision_with_the_incident() -> None:
    ctx = FakeContext()
    step = step_for(
        ctx,
        enabled=True,
        dry_run=False,
        cooldown_s=600,
        defaults={"target_mos": 3.0, "above_segments": 1000},
    )
    for seq in range(6):
        feed(step, [verdict("360p", seq, 3.6), verdict("720p", seq, 4.3)])
    for seq in range(6, 14):
        feed(step, [verdict("360p", seq, 3.6), verdict("720p", seq, 2.0)])
    decisions = [json.loads(m.value) for _, ms in ctx.groups for m in ms if m.topic == "dec"]
    assert [d["action"] for d in decisions] == ["raise_bitrate"]
    assert decisions[0]["incident_id"] == "news/720p/starvation/6@1012000"
    assert decisions[0]["parameters"] == {"from_bitrate": 2500000, "to_bitrate": 3000000}


class MemoryReader:
    def __init__(
        self,
        incidents: list[Incident],
        verdicts: list[dict[str, Any]],
        decisions: list[EncoderDecision] | None = None,
    ) -> None:
        self._incidents = incidents
        self._verdicts = verdicts
        self._decisions = decisions or []

    def partition_count(self, topic: str) -> int:
        return 4

    def incidents(self) -> list[Incident]:
        return self._incidents

    def decisions(self) -> list[EncoderDecision]:
        return self._decisions

    def committed(self, partitions: Iterable[Partition]) -> dict[Partition, int]:
        return {p: len(self._verdicts) for p in partitions}

    def recent(self, ends: Mapping[Partition, int], count: int) -> list[Observation]:
        return [Observation.from_verdict_json(v) for v in self._verdicts[-count:]] if ends else []

    def diagnoses(self) -> list[dict[str, Any]]:
        return []

    def close(self) -> None:
        pass


def test_rebuild_restores_the_open_incident_and_it_resolves_once() -> None:
    ctx = FakeContext()
    before = step_for(ctx)
    history = [verdict(r, s, m) for s in range(4) for r, m in (("360p", 3.6), ("720p", 4.3))]
    history += [black(r, s) for s in (4, 5, 6) for r in ("360p", "720p")]
    feed(before, history)
    opened = [Incident.from_json(json.loads(m.value)) for _, ms in ctx.groups for m in ms]
    assert [i.id for i in opened] == ["news/*/black/4@1008000"]

    # A new instance owning the stream's partition rebuilds from the topics.
    after_ctx = FakeContext()
    after = step_for(after_ctx)
    mine = partition_for(b"news", range(4))
    counts = rebuild(
        after,
        MemoryReader(opened, history),
        [Partition("ver", mine), Partition("dlq", mine)],
        lambda: (Judge(JudgeConfig(warmup_segments=3, clear_after=2)), after.policy),
        200,
    )
    assert counts == {"incidents": 1, "open": 1, "decisions": 0, "replayed": len(history)}
    assert [i.id for i in after.judge.open_incidents()] == ["news/*/black/4@1008000"]
    # Redelivered black segments change nothing; two good rounds resolve it, once.
    feed(after, [black(r, 6) for r in ("360p", "720p")])
    for s in (7, 8, 9, 10):
        feed(after, [verdict("360p", s, 3.6), verdict("720p", s, 4.3)])
    events = [json.loads(m.value) for _, ms in after_ctx.groups for m in ms]
    assert [(e["id"], e["state"]) for e in events] == [("news/*/black/4@1008000", "resolved")]


def test_a_rebalance_keeps_the_diagnoses_read_before_it() -> None:
    # The diagnoses reader goes on from where it was: what it read before a rebalance
    # is not read again, so the rebuilt judge keeps it for incidents still to open.
    step = step_for(FakeContext())
    step.judge.attach_diagnosis("news/720p/7", {"degradation": "noise"}, now=1000.0)
    mine = partition_for(b"news", range(4))
    rebuild(
        step,
        MemoryReader([], []),
        [Partition("ver", mine)],
        lambda: (Judge(JudgeConfig()), step.policy),
        200,
    )
    assert list(step.judge._diagnoses) == ["news/720p/7"]


def test_rebuild_judges_what_its_replay_left_waiting_before_restoring() -> None:
    """Renditions that number their segments apart (per-playlist HLS sequences) never
    complete a round, so a replay at one `now` leaves rounds waiting. Judged after the
    restore, their good segments from before the fault would clear the restored
    incident while the fault goes on (and mute its return under the same id)."""
    base = {"720p": 1000, "360p": 5000}

    def doc(name: str, i: int) -> dict[str, Any]:
        starved = name == "360p" and i >= 45
        return verdict(name, base[name] + i, LADDER[name][1] - (1.0 if starved else 0.0))

    live, published, arrived = Judge(cfg()), [], []
    for i in range(60):
        for name in ("720p", "360p"):
            arrived.append(doc(name, i))
            now = 1000.0 + 2 * i
            published += live.observe(Observation.from_verdict_json(arrived[-1]), now)
            published += live.tick(now)
    assert [e.id for e in published] == ["news/360p/starvation/5045@11090000"]
    waiting = set(live.streams["news"].pending)  # their records hold the offset back
    cut = next(k for k, d in enumerate(arrived) if d["seq"] in waiting)
    committed = arrived[:cut]

    after_ctx = FakeContext()
    after = step_for(after_ctx)
    clock = cast(Clock, after.clock)
    clock.now = 1121.0  # the new instance starts right after the old one died
    mine = partition_for(b"news", range(4))
    rebuild(
        after,
        MemoryReader(published, committed),
        [Partition("ver", mine), Partition("dlq", mine)],
        lambda: (Judge(cfg()), after.policy),
        200,
    )
    for i, d in enumerate(arrived[cut:] + [doc(n, i) for i in range(60, 75) for n in base]):
        clock.now = 1122.0 + i
        feed(after, [d])
        after.poll()
    events = [json.loads(m.value) for _, ms in after_ctx.groups for m in ms]
    assert [(e["state"], e["severity"]) for e in events] == []  # the starvation goes on
    assert [i.id for i in after.judge.open_incidents()] == ["news/360p/starvation/5045@11090000"]


def test_a_verdict_held_far_below_its_numbering_is_not_committed_until_judged() -> None:
    # A restarted packager's first segment failed to decode: its dead letter is held
    # until the new numbering shows. Committed at once, a rebalance then lost it (a
    # rebuild replays verdicts only).
    ctx = FakeContext()
    step = step_for(ctx, Judge(cfg()))
    feed(step, [verdict(n, s, LADDER[n][1]) for s in range(500, 525) for n in LADDER])
    held = record(dead_letter("360p", 0), "dlq")
    step.submit(Message(held, held))
    assert held.offset not in ctx.committable()
    feed(step, [verdict(n, s, LADDER[n][1]) for s in range(1, 4) for n in LADDER])
    feed(step, [verdict("720p", 0, LADDER["720p"][1])])
    assert held.offset in ctx.committable()  # judged in round 0 of the new numbering


def test_rebuild_ignores_streams_of_other_partitions() -> None:
    ctx = FakeContext()
    step = step_for(ctx)
    inc = Incident.from_json(
        {
            "schema": "vqmon.incident/1",
            "id": "news/*/black/4",
            "stream": "news",
            "scope": "*",
            "kind": "black",
            "state": "open",
            "severity": 1.0,
            "localisation": "source",
            "opened_seq": 4,
            "opened_at": 1.0,
            "updated_at": 1.0,
            "renditions": ["360p", "720p"],
        }
    )
    other = (partition_for(b"news", range(4)) + 1) % 4
    rebuild(
        step, MemoryReader([inc], []), [Partition("ver", other)], lambda: (Judge(), step.policy), 0
    )
    assert step.judge.open_incidents() == []


def test_summarize_diagnosis_keeps_class_severity_and_score() -> None:
    doc = {
        "segment_id": "news/720p/3",
        "model": "rules",
        "tasks": [
            {"task": "score", "score_mean": 2.5},
            {"task": "degradation", "degradation": "noise", "severity": "obvious"},
        ],
    }
    s = summarize_diagnosis(doc)
    assert (s["degradation"], s["severity"], s["score_mean"]) == ("noise", "obvious", 2.5)


def test_incident_events_and_open_incidents_reach_alertmanager() -> None:
    from monitor.alertmanager import AlertmanagerClient, AlertmanagerConfig
    from monitor.judge_role import AlertPusher

    bodies: list[list[dict[str, Any]]] = []

    def post(url: str, body: bytes, timeout: float) -> int:
        bodies.append(json.loads(body))
        return 200

    cfg = AlertmanagerConfig(enabled=True, resolve_timeout_s=30)
    ctx = FakeContext()
    step = step_for(ctx)
    step.alerts = AlertPusher(AlertmanagerClient(cfg, post))
    first_round(step)
    for seq in (1, 2):
        feed(step, [black("360p", seq), black("720p", seq)])
    cast(Clock, step.clock).now += 11  # an open incident is re-pushed every 10 s
    step.poll()
    step.close()
    names = [a["labels"]["incident_id"] for body in bodies for a in body]
    assert names == ["news/*/black/1@1002000", "news/*/black/1@1002000"]
    assert bodies[0][0]["labels"]["localisation"] == "source"

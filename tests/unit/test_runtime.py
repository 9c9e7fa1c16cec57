"""The runtime with injected in-memory clients: commit order, backpressure, rebalance mid-flight,
producer reset, poison pills, unreadable records, final output errors, the watchdog."""

from __future__ import annotations

import collections
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from kafka import errors as kerr

from monitor.clients import Partition, Record
from monitor.health import HealthState
from monitor.messages import DeadLetterRecord, Source, dead_letter_message
from monitor.publisher import OutMessage, Publisher
from monitor.runtime import Message, MessageRejected, Runtime, RuntimeSettings

TP0, TP1 = Partition("in", 0), Partition("in", 1)


class FakeConsumer:
    """An in-memory group member: records per partition, positions, pause, commits."""

    def __init__(self, records: dict[Partition, list[Record]]) -> None:
        self.records = records
        self.pos = {tp: 0 for tp in records}
        self._assigned: set[Partition] = set(records)
        self._paused: set[Partition] = set()
        self.commits: list[dict[Partition, int]] = []
        self.on_assigned: Callable[[list[Partition]], None] = lambda _p: None
        self.on_revoked: Callable[[list[Partition]], None] = lambda _p: None
        self.unreadable: set[tuple[Partition, int]] = set()
        self.before_poll: Callable[[], None] = lambda: None
        self.closed = False

    def subscribe(self, topics: Sequence[str], on_assigned: Any, on_revoked: Any) -> None:
        self.on_assigned, self.on_revoked = on_assigned, on_revoked
        on_assigned(sorted(self._assigned))

    def poll(self, timeout_s: float, max_records: int) -> list[Record]:
        self.before_poll()
        out: list[Record] = []
        for tp in sorted(self._assigned - self._paused):
            while self.pos[tp] < len(self.records[tp]) and len(out) < max_records:
                if (tp, self.pos[tp]) in self.unreadable:
                    if out:
                        return out
                    raise UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte")
                out.append(self.records[tp][self.pos[tp]])
                self.pos[tp] += 1
        return out

    def assignment(self) -> set[Partition]:
        return set(self._assigned)

    def pause(self, partitions: Sequence[Partition]) -> None:
        self._paused |= set(partitions)

    def resume(self, partitions: Sequence[Partition]) -> None:
        self._paused -= set(partitions)

    def paused(self) -> set[Partition]:
        return set(self._paused)

    def position(self, partition: Partition) -> int | None:
        return self.pos[partition]

    def seek(self, partition: Partition, offset: int) -> None:
        self.pos[partition] = offset

    def highwater(self, partition: Partition) -> int | None:
        return len(self.records[partition])

    def commit(self, offsets: Mapping[Partition, int], timeout_s: float) -> None:
        self.commits.append(dict(offsets))

    def close(self) -> None:
        self.closed = True

    def revoke(self, partitions: list[Partition]) -> None:
        self.on_revoked(partitions)
        self._assigned -= set(partitions)

    def committed(self, tp: Partition) -> int | None:
        for c in reversed(self.commits):
            if tp in c:
                return c[tp]
        return None


@dataclass
class FakeFuture:
    callbacks: list[Callable[[Any], Any]] = field(default_factory=list)
    errbacks: list[Callable[[BaseException], Any]] = field(default_factory=list)

    def add_callback(self, fn: Callable[[Any], Any]) -> None:
        self.callbacks.append(fn)

    def add_errback(self, fn: Callable[[BaseException], Any]) -> None:
        self.errbacks.append(fn)


class FakeProducer:
    """Acknowledges sends when `ack()` is called; can fail them or refuse large ones."""

    def __init__(self, log: list[tuple[str, bytes, bytes]], max_bytes: int = 10**9) -> None:
        self.log = log
        self.max_bytes = max_bytes
        self.pending: list[tuple[FakeFuture, tuple[str, bytes, bytes]]] = []
        self.partition_keys: list[bytes | None] = []
        self.closed = False

    def send(
        self,
        topic: str,
        key: bytes,
        value: bytes,
        headers: list[Any],
        partition_key: bytes | None = None,
    ) -> FakeFuture:
        self.partition_keys.append(partition_key)
        if len(value) > self.max_bytes:
            raise kerr.MessageSizeTooLargeError(f"{len(value)} bytes")
        f = FakeFuture()
        self.pending.append((f, (topic, key, value)))
        return f

    def ack(self) -> None:
        pending, self.pending = self.pending, []
        for f, msg in pending:
            self.log.append(msg)
            for cb in f.callbacks:
                cb(None)

    def fail(self, exc: BaseException) -> None:
        pending, self.pending = self.pending, []
        for f, _ in pending:
            for eb in f.errbacks:
                eb(exc)

    def flush(self, timeout_s: float) -> None:
        self.ack()

    def close(self, timeout_s: float) -> None:
        self.closed = True


class EchoStep:
    """A step that holds up to `capacity` messages and outputs one message per record
    when `release()` is called; "poison" values raise on submit."""

    def __init__(self, rt: Runtime, capacity: int = 100) -> None:
        self.rt = rt
        self.capacity = capacity
        self.held: collections.deque[Message[Record]] = collections.deque()
        self.released = 0
        self.progress_at = time.monotonic()
        self.closed = False

    def submit(self, message: Message[Record]) -> None:
        if (message.record.value or b"").startswith(b"poison"):
            raise RecursionError("maximum recursion depth exceeded")
        if len(self.held) >= self.capacity:
            raise MessageRejected
        self.held.append(message)

    def release(self, n: int | None = None) -> None:
        for _ in range(len(self.held) if n is None else n):
            m = self.held.popleft()
            out = OutMessage("out", m.record.value or b"", m.record.value or b"")
            self.rt.context.publish(m.record, [out])
        self.progress_at = time.monotonic()

    def poll(self) -> None:
        pass

    def join(self, deadline: float) -> None:
        self.release()

    def forget(self, partitions: set[Partition]) -> int:
        return 0  # everything held is in flight: finished, not handed back

    def stalled_s(self) -> float:
        return time.monotonic() - self.progress_at if self.held else 0.0

    def close(self) -> None:
        self.closed = True


def records(tp: Partition, values: list[bytes]) -> list[Record]:
    return [Record(tp.topic, tp.partition, i, b"k", v) for i, v in enumerate(values)]


def dead_letter(record: Record, reason: str, error: str) -> OutMessage:
    return dead_letter_message(
        "dlq",
        key=record.key,
        value=record.value,
        headers=record.headers,
        source=Source(record.topic, record.partition, record.offset),
        reason=reason,
        error=error,
        max_value_bytes=1000,
    )


@dataclass
class Rig:
    consumer: FakeConsumer
    producers: list[FakeProducer]
    sent: list[tuple[str, bytes, bytes]]
    rt: Runtime
    step: EchoStep
    health: HealthState

    @property
    def producer(self) -> FakeProducer:
        return self.producers[-1]

    def turns(self, n: int = 3) -> None:
        for _ in range(n):
            self.rt.turn()


def rig(
    parts: dict[Partition, list[bytes]],
    *,
    capacity: int = 100,
    max_bytes: int = 10**9,
    **settings: Any,
) -> Rig:
    consumer = FakeConsumer({tp: records(tp, v) for tp, v in parts.items()})
    sent: list[tuple[str, bytes, bytes]] = []
    producers: list[FakeProducer] = []

    def factory() -> FakeProducer:
        producers.append(FakeProducer(sent, max_bytes))
        return producers[-1]

    publisher = Publisher(factory, retry_backoff_s=0.0)
    health = HealthState(60)
    opts: dict[str, Any] = {"commit_interval_s": 0.0, "max_poll_records": 4}
    opts.update(settings)
    rt = Runtime(consumer, ["in"], publisher, dead_letter, RuntimeSettings(**opts), health)
    step = EchoStep(rt, capacity)
    rt.first = step
    consumer.subscribe(["in"], rt._guard(rt._assigned), rt._guard(rt._revoked))
    return Rig(consumer, producers, sent, rt, step, health)


def test_commits_only_what_is_acknowledged_in_offset_order() -> None:
    r = rig({TP0: [b"a", b"b", b"c"]})
    r.turns()
    assert len(r.step.held) == 3 and r.consumer.commits == []
    r.step.release(1)  # a's output sent, not yet acknowledged
    r.turns()
    assert r.consumer.commits == []
    r.producer.ack()
    r.turns()
    assert r.consumer.committed(TP0) == 1  # offset + 1 of the done prefix
    r.step.release(2)
    r.producer.ack()
    r.turns()
    assert r.consumer.committed(TP0) == 3


def test_out_of_order_acknowledgements_commit_the_contiguous_prefix() -> None:
    r = rig({TP0: [b"a", b"b", b"c"]})
    r.turns()
    held = list(r.step.held)
    r.step.held.clear()
    for m in (held[2], held[1]):  # c and b finish first
        r.rt.context.publish(m.record, [OutMessage("out", b"", b"x")])
    r.producer.ack()
    r.turns()
    assert r.consumer.committed(TP0) is None  # a is not done: nothing may be committed
    r.rt.context.publish(held[0].record, [OutMessage("out", b"", b"x")])
    r.producer.ack()
    r.turns()
    assert r.consumer.committed(TP0) == 3


def test_backpressure_pauses_and_resumes_without_losing_the_rejected_record() -> None:
    values = [bytes([65 + i]) for i in range(10)]
    r = rig({TP0: values}, capacity=3)
    r.turns()
    assert len(r.step.held) == 3 and r.consumer.paused() == {TP0}
    for _ in range(10):
        r.step.release()
        r.producer.ack()
        r.turns()
    assert r.consumer.paused() == set()
    assert [v for t, _k, v in r.sent if t == "out"] == values  # each once, in order
    assert r.consumer.committed(TP0) == 10


def test_outputs_the_broker_does_not_acknowledge_pause_the_intake_at_max_in_flight() -> None:
    # the step could take more, but the broker acknowledges nothing: pipeline.max_in_flight
    # bounds the records held for unacknowledged outputs (it was validated, not enforced)
    values = [bytes([65 + i]) for i in range(40)]
    r = rig({TP0: values}, max_in_flight=8)
    for _ in range(10):
        r.turns()
        r.step.release()  # screened and published; never acknowledged
    assert r.rt.tracker.in_flight() == 8 and r.consumer.paused() == {TP0}
    r.producer.ack()
    for _ in range(20):
        r.turns()
        r.step.release()
        r.producer.ack()
    assert r.consumer.paused() == set()
    assert [v for t, _k, v in r.sent if t == "out"] == values  # each once, in order
    assert r.consumer.committed(TP0) == 40


def test_a_record_that_breaks_a_step_becomes_a_dead_letter_and_the_loop_goes_on() -> None:
    r = rig({TP0: [b"a", b"poison", b"c"]})
    r.turns()
    r.step.release()
    r.producer.ack()
    r.turns()
    dead = [DeadLetterRecord.parse(v) for t, _k, v in r.sent if t == "dlq"]
    assert [(d.reason, d.source.offset) for d in dead] == [("internal_error", 1)]
    assert "RecursionError" in dead[0].error
    assert r.consumer.committed(TP0) == 3


def test_an_unreadable_record_is_found_skipped_and_dead_lettered() -> None:
    r = rig({TP0: [b"a", b"b"], TP1: [b"x", b"y", b"z"]}, poll_errors_before_isolating=2)
    r.consumer.unreadable.add((TP1, 1))
    for _ in range(8):
        r.turns()
        r.step.release()
        r.producer.ack()
    r.turns()
    dead = [DeadLetterRecord.parse(v) for t, _k, v in r.sent if t == "dlq"]
    assert [(d.reason, d.source.partition, d.source.offset) for d in dead] == [
        ("unreadable_record", 1, 1)
    ]
    assert sorted(v for t, _k, v in r.sent if t == "out") == [b"a", b"b", b"x", b"z"]
    assert r.consumer.committed(TP1) == 3 and r.consumer.committed(TP0) == 2


def test_rebalance_mid_flight_finishes_and_commits_the_revoked_partition() -> None:
    r = rig({TP0: [b"a", b"b"], TP1: [b"x", b"y"]}, capacity=3, shutdown_timeout_s=0.5)
    r.turns(1)
    # a, b, x are held (capacity 3); y is carried. TP1 is revoked: x must be finished
    # (it is in flight), y handed back uncommitted.

    def finish_during_revocation() -> None:
        r.step.release()
        r.producer.ack()

    r.consumer.before_poll = finish_during_revocation
    r.step.release()  # outputs of a, b, x sent; acknowledged during the drain below
    orig = r.rt._drive

    def drive() -> None:
        r.producer.ack()
        orig()

    r.rt._drive = drive  # type: ignore[method-assign]
    r.consumer.revoke([TP1])
    assert r.consumer.committed(TP1) == 1  # x done and committed; y handed back
    assert r.rt.handed_back == 1  # y, polled but never started
    r.rt._drive = orig  # type: ignore[method-assign]
    r.turns()
    assert TP1 not in r.rt.tracker.partitions


def test_a_failed_delivery_recreates_the_producer_and_resends() -> None:
    r = rig({TP0: [b"a", b"b"]})
    r.turns()
    r.step.release()
    r.producer.fail(kerr.KafkaConnectionError("broker gone"))
    r.turns()
    assert len(r.producers) == 2 and r.producers[0].closed
    r.producer.ack()
    r.turns()
    assert sorted(v for t, _k, v in r.sent if t == "out") == [b"a", b"b"]
    assert r.consumer.committed(TP0) == 2


def test_an_output_the_broker_can_never_take_is_replaced_and_does_not_hold_the_partition() -> None:
    # The poison record's dead letter copies up to 1000 bytes of its value: over this
    # producer's 900-byte limit, a final error; its reduced form goes out instead.
    big = b"poison" + b"v" * 5000
    r = rig({TP0: [big, b"ok"]}, max_bytes=900)
    for _ in range(3):
        r.turns()
        r.step.release()
        r.producer.ack()
    r.turns()
    dead = [DeadLetterRecord.parse(v) for t, _k, v in r.sent if t == "dlq"]
    assert len(dead) == 1 and dead[0].reduced and dead[0].value_bytes == len(big)
    assert r.consumer.committed(TP0) == 2
    assert len(r.producers) == 1  # a final error is not a reason to recreate the producer


def test_an_output_without_a_reduced_form_is_given_up_and_counted() -> None:
    lost: list[str] = []
    r = rig({TP0: [b"x" * 2000, b"ok"]}, max_bytes=900)
    r.rt.publisher.on_lost = lambda m, _e: lost.append(m.topic)
    for _ in range(3):
        r.turns()
        r.step.release()
        r.producer.ack()
    r.turns()
    assert lost == ["out"] and r.consumer.committed(TP0) == 2


def test_a_step_without_progress_turns_health_red_until_it_moves() -> None:
    r = rig({TP0: [b"a"]}, progress_timeout_s=0.2)
    r.turns()
    assert r.health.healthy()[0]
    time.sleep(0.3)
    r.turns(1)
    ok, why = r.health.healthy()
    assert not ok and "no progress" in why
    r.step.release()
    r.producer.ack()
    r.turns()
    assert r.health.healthy() == (True, "ok")


def test_shutdown_finishes_in_flight_work_commits_and_closes_within_its_deadline() -> None:
    r = rig({TP0: [b"a", b"b"]}, shutdown_timeout_s=1.0)
    r.turns()
    r.rt.stop()
    started = time.monotonic()
    r.rt.run(r.step)
    assert time.monotonic() - started < 2.0
    assert r.consumer.committed(TP0) == 2 and r.consumer.closed and r.step.closed


def test_shutdown_with_the_broker_gone_keeps_its_deadline_and_does_not_recreate() -> None:
    r = rig({TP0: [b"a"]}, shutdown_timeout_s=0.5)
    r.turns()
    r.step.release()
    r.producer.fail(kerr.KafkaConnectionError("gone"))
    r.rt.stop()
    started = time.monotonic()
    r.rt.run(r.step)
    assert time.monotonic() - started < 1.5
    assert r.consumer.committed(TP0) is None  # not acknowledged: handed back, not lost
    assert r.rt.handed_back == 1


def test_an_exception_in_a_rebalance_callback_does_not_escape() -> None:
    r = rig({TP0: [b"a"]})

    def boom(_p: list[Partition]) -> None:
        raise RuntimeError("bug")

    guarded = r.rt._guard(boom)
    guarded([TP0])  # logged and counted, not raised


def test_the_systemd_watchdog_is_fed_only_while_healthy() -> None:
    r = rig({TP0: [b"a"]}, progress_timeout_s=0.2)
    pings: list[float] = []
    r.rt.watchdog = lambda: pings.append(time.monotonic())
    r.turns()
    assert pings
    time.sleep(0.3)
    pings.clear()
    r.turns()
    assert pings == []  # stuck: systemd's watchdog will restart the unit


def test_a_group_publication_commits_all_its_records_only_once_acknowledged() -> None:
    r = rig({TP0: [b"a", b"b", b"c"]})
    r.turns()
    held = [m.record for m in r.step.held]
    r.step.held.clear()
    r.rt.context.publish_group(held[:2], [OutMessage("out", b"", b"ab")])
    r.rt.context.publish_group([], [OutMessage("out", b"", b"tick")])  # nothing to commit
    r.turns()
    assert r.consumer.committed(TP0) is None
    r.producer.ack()
    r.turns()
    assert r.consumer.committed(TP0) == 2
    assert [v for t, _k, v in r.sent if t == "out"] == [b"ab", b"tick"]


def test_assignment_and_revocation_observers_are_called() -> None:
    r = rig({TP0: [b"a"]})
    seen: list[tuple[str, list[Partition]]] = []
    r.rt.on_assigned = lambda ps: seen.append(("assigned", ps))
    r.rt.on_revoked = lambda ps: seen.append(("revoked", ps))
    r.rt._assigned([TP0, TP1])
    r.rt._revoked([TP1])
    assert seen == [("assigned", [TP0, TP1]), ("revoked", [TP1])]

"""The Kafka runtime: runs a role's chain of steps with at-least-once, commit-after-ack offsets.

In the manner of Arroyo's processing strategies: a role is a chain of small steps, each
with `submit` / `poll` / `join` / `forget` / `close`. The runtime owns the consumer
(kafka-python's is not thread-safe, so everything here runs on one thread) and
drives the chain:

- poll records and submit each to the first step; a step that cannot take more raises
  `MessageRejected`, and the runtime pauses its partitions and offers the same record
  again later (nothing is buffered without bound, nothing is dropped);
- a record's offset becomes committable when the role reports it `done` (every output
  made from it acknowledged by the broker); commits carry offset + 1 of the contiguous
  done prefix per partition, at most once per commit interval, forced on revocation
  and shutdown; nothing is auto-committed;
- nothing one record contains ends the loop: any exception while a step takes a record
  turns that record into a dead letter with a reason; errors from the consumer's poll
  are counted and retried, and a record the client cannot even read (corrupt, a
  header it cannot decode) is found by polling partitions one at a time, skipped and
  dead-lettered from its coordinates;
- a watchdog: a step that holds work without progress for `progress_timeout_s` turns
  /healthz (and the systemd watchdog) red until it moves again;
- shutdown has one deadline: stop polling, finish what is in flight, flush, commit,
  leave the group; nothing is recreated while stopping.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

from monitor.clients import Consumer, Partition, Record
from monitor.health import HealthState
from monitor.offsets import OffsetTracker
from monitor.publisher import OutMessage, Publisher

log = logging.getLogger(__name__)

T = TypeVar("T")

UNREADABLE = "unreadable_record"
INTERNAL = "internal_error"


class MessageRejected(Exception):
    """A step is full: the runtime pauses the partitions and offers the message again later."""


@dataclass(slots=True)
class Message(Generic[T]):
    """A consumed record on its way through the steps, with what the steps made of it."""

    record: Record
    payload: T
    polled_at: float = field(default_factory=time.monotonic)


class Step(Protocol[T]):
    def submit(self, message: Message[T]) -> None:
        """Take a message or raise MessageRejected. Any other exception dead-letters it."""

    def poll(self) -> None:
        """Move finished work along (to the next step, or to `Context.done`)."""

    def join(self, deadline: float) -> None:
        """Finish the work in flight, until `deadline` (time.monotonic)."""

    def forget(self, partitions: set[Partition]) -> int:
        """Drop work not yet started for `partitions` (revoked); return how many records."""

    def stalled_s(self) -> float:
        """How long in-flight work has gone without progress (0 when none is held)."""

    def close(self) -> None: ...


class Forward:
    """A step that hands each message on (or finishes it) at once: polling, joining,
    forgetting, progress and closing are the next step's."""

    next: Step[Any]

    def poll(self) -> None:
        self.next.poll()

    def join(self, deadline: float) -> None:
        self.next.join(deadline)

    def forget(self, partitions: set[Partition]) -> int:
        return self.next.forget(partitions)

    def stalled_s(self) -> float:
        return self.next.stalled_s()

    def close(self) -> None:
        self.next.close()


@dataclass
class RuntimeSettings:
    commit_interval_s: float = 1.0
    shutdown_timeout_s: float = 20.0
    progress_timeout_s: float = 120.0
    unacked_timeout_s: float = 120.0
    max_poll_records: int = 64
    commit_timeout_s: float = 5.0
    poll_errors_before_isolating: int = 3
    max_in_flight: int | None = None
    """Records polled and not yet done (their outputs not acknowledged) above which the
    partitions pause, whatever the first step could still take (pipeline.max_in_flight:
    outputs the broker refuses while inputs still flow would otherwise pile up)."""


class Context:
    """What steps use to finish records: publish outputs, dead-letter, mark done."""

    def __init__(
        self,
        runtime: Runtime,
        publisher: Publisher,
        dead_letter: Callable[[Record, str, str], OutMessage],
    ) -> None:
        self._runtime = runtime
        self.publisher = publisher
        self._dead_letter = dead_letter
        self.on_result: Callable[[Record, str], None] = lambda _r, _res: None
        """Observer: called once per finished record with its result ("ok", a reason)."""

    def publish(self, record: Record, messages: list[OutMessage], result: str = "ok") -> None:
        """Send `messages`; `record` is done (committable) once all are acknowledged."""
        self._runtime._publish(record, messages, result)

    def publish_group(
        self, records: list[Record], messages: list[OutMessage], result: str = "ok"
    ) -> None:
        """Send `messages`; every one of `records` is done once all are acknowledged.

        For outputs made from several records together (the judge judges a round of
        verdicts at once); with no records the messages are sent with nothing to commit.
        """
        self._runtime._publish_group(records, messages, result)

    def dead_letter(self, record: Record, reason: str, error: str) -> None:
        log.warning(
            "dead letter", extra={"reason": reason, "error": error[:500], "source": record.where}
        )
        self.publish(record, [self._dead_letter(record, reason, error)], reason)

    def done(self, record: Record, result: str) -> None:
        """`record` needs no output (e.g. a cached init segment): committable now."""
        self._runtime._finish(record, result)


class Runtime:
    """Drives one role's chain of steps over one consumer; see the module docstring."""

    def __init__(
        self,
        consumer: Consumer,
        topics: list[str],
        publisher: Publisher,
        dead_letter: Callable[[Record, str, str], OutMessage],
        settings: RuntimeSettings,
        health: HealthState,
        *,
        watchdog: Callable[[], None] | None = None,
        observe: Callable[[str, float], None] | None = None,
    ) -> None:
        self.consumer = consumer
        self.topics = topics
        self.publisher = publisher
        self.settings = settings
        self.health = health
        self.watchdog = watchdog or (lambda: None)
        self.observe = observe or (lambda _name, _value: None)
        """Metrics hook: observe("poll_error", 1), observe("commit", 1), gauges."""
        self.context = Context(self, publisher, dead_letter)
        self.tracker = OffsetTracker()
        self.first: Step[Record] | None = None
        self.handed_back = 0
        self._carry: collections.deque[Record] = collections.deque()
        self._published: dict[int, tuple[tuple[Record, ...], str, float]] = {}
        self._polled_at: dict[tuple[Partition, int], float] = {}
        self._tokens = 0
        self._paused = False
        self._stopping = False
        self._stop = threading.Event()
        self._last_commit = 0.0
        self._poll_errors = 0
        self._last_gauges = 0.0
        self.on_gauges: Callable[[], None] = lambda: None
        """Called about twice a second from the loop (queue depths, lag)."""
        self.on_assigned: Callable[[list[Partition]], None] = lambda _p: None
        """Observer: partitions assigned (after the runtime's own bookkeeping); a role
        rebuilds its state here (the judge restores incidents and baselines)."""
        self.on_revoked: Callable[[list[Partition]], None] = lambda _p: None
        """Observer: partitions revoked, after their in-flight work was finished and committed."""

    # ---- lifecycle -------------------------------------------------------------------

    def stop(self) -> None:
        """Ask the loop to finish (signal-handler safe)."""
        self._stop.set()

    def run(self, first: Step[Record], duration_s: float | None = None) -> None:
        self.first = first
        self.consumer.subscribe(
            self.topics, self._guard(self._assigned), self._guard(self._revoked)
        )
        deadline = None if duration_s is None else time.monotonic() + duration_s
        try:
            while not self._stop.is_set():
                if deadline is not None and time.monotonic() >= deadline:
                    break
                self.turn()
        finally:
            self._shutdown()

    def turn(self) -> None:
        """One pass: health, poll, every step, acknowledgements, commit, flow control."""
        self._health()
        self._consume()
        self._drive()
        self.maybe_commit()
        self._flow_control()
        now = time.monotonic()
        if now - self._last_gauges >= 0.5:
            self._last_gauges = now
            try:
                self.on_gauges()
            except Exception:
                log.debug("gauges failed", exc_info=True)

    # ---- the loop --------------------------------------------------------------------

    def _health(self) -> None:
        assert self.first is not None
        stalled = self.first.stalled_s()
        unacked = self.publisher.oldest_unacked_s()
        self.observe("stalled_seconds", stalled)
        self.observe("oldest_unacked_seconds", unacked)
        s = self.settings
        if stalled > s.progress_timeout_s:
            self.health.problem = (
                f"no progress for {stalled:.0f}s (pipeline.progress_timeout_s="
                f"{s.progress_timeout_s:.0f}): a decode or inference is stuck"
            )
        elif unacked > s.unacked_timeout_s:
            self.health.problem = (
                f"an output has waited {unacked:.0f}s for the broker's acknowledgement "
                f"(pipeline.unacked_timeout_s={s.unacked_timeout_s:.0f})"
            )
        else:
            self.health.problem = None
        self.health.tick()
        if self.health.healthy()[0]:
            self.watchdog()

    def _consume(self) -> None:
        assert self.first is not None
        if not self._carry:
            busy = bool(self.tracker.in_flight())
            try:
                records = self.consumer.poll(0.0 if busy else 0.1, self.settings.max_poll_records)
            except Exception as exc:  # kafka-python: corrupt record, undecodable header, auth ...
                self._poll_failed(exc)
                return
            self._poll_errors = 0
            now = time.monotonic()
            for record in records:
                self.tracker.track(record.tp, record.offset)
                self._polled_at[(record.tp, record.offset)] = now
            self._carry.extend(records)
            ready = bool(self.consumer.assignment())
            self.health.ready = ready
            self.health.reason = "ok" if ready else "waiting for a partition assignment"
        while self._carry:
            record = self._carry[0]
            try:
                self.first.submit(Message(record, record))
            except MessageRejected:
                return
            except Exception as exc:  # a poison pill: it costs this record, not the loop
                log.exception("a step failed on a record", extra={"source": record.where})
                self.context.dead_letter(record, INTERNAL, f"{type(exc).__name__}: {exc}")
            self._carry.popleft()

    def _drive(self) -> None:
        assert self.first is not None
        try:
            self.first.poll()
        except Exception:  # a step bug: logged, counted, the loop goes on
            log.exception("a step failed while polling")
            self.observe("step_error", 1)
        for token in self.publisher.poll():
            entry = self._published.pop(token, None)
            if entry is not None:
                records, result, sent = entry
                self.observe("produce_seconds", time.monotonic() - sent)
                for record in records:
                    self._finish(record, result)

    def _publish(self, record: Record, messages: list[OutMessage], result: str) -> None:
        self._publish_group([record], messages, result)

    def _publish_group(
        self, records: list[Record], messages: list[OutMessage], result: str
    ) -> None:
        self._tokens += 1
        self._published[self._tokens] = (tuple(records), result, time.monotonic())
        self.publisher.publish(self._tokens, messages)

    def _finish(self, record: Record, result: str) -> None:
        polled = self._polled_at.pop((record.tp, record.offset), None)
        if polled is not None:
            self.observe("total_seconds", time.monotonic() - polled)
        self.tracker.done(record.tp, record.offset)
        self.context.on_result(record, result)

    # ---- poll failures ---------------------------------------------------------------

    def _poll_failed(self, exc: Exception) -> None:
        self._poll_errors += 1
        self.observe("poll_error", 1)
        log.warning("consumer poll failed", extra={"error": f"{type(exc).__name__}: {exc}"[:500]})
        if self._poll_errors >= self.settings.poll_errors_before_isolating:
            self._skip_unreadable(exc)
            self._poll_errors = 0
        else:
            time.sleep(0.05 * self._poll_errors)

    def _skip_unreadable(self, exc: Exception) -> None:
        """Find the partition whose next record the client cannot read; skip and dead-letter it."""
        assigned = sorted(self.consumer.assignment())
        already = self.consumer.paused()
        for tp in assigned:
            if tp in already:
                continue
            others = [p for p in assigned if p != tp]
            self.consumer.pause(others)
            try:
                records = self.consumer.poll(0.5, 1)
            except Exception:
                position = self.consumer.position(tp)
                if position is None:
                    continue
                record = Record(tp.topic, tp.partition, position, None, None)
                self.tracker.track(tp, position)
                self.consumer.seek(tp, position + 1)
                self.context.dead_letter(
                    record,
                    UNREADABLE,
                    f"the Kafka client cannot read this record ({type(exc).__name__}: {exc}); "
                    "skipped. Check the producer of this partition",
                )
                return
            else:
                for record in records:
                    self.tracker.track(record.tp, record.offset)
                self._carry.extend(records)
            finally:
                self.consumer.resume([p for p in others if p not in already])
        time.sleep(0.5)  # not a record of ours: a broker or authorisation problem

    # ---- offsets and flow control ----------------------------------------------------

    def maybe_commit(self, force: bool = False, only: Iterable[Partition] | None = None) -> None:
        now = time.monotonic()
        if not force and now - self._last_commit < self.settings.commit_interval_s:
            return
        self._last_commit = now
        offsets: dict[Any, int] = self.tracker.to_commit()
        if only is not None:
            keep = set(only)
            offsets = {tp: o for tp, o in offsets.items() if tp in keep}
        if not offsets:
            return
        try:
            self.consumer.commit(offsets, self.settings.commit_timeout_s)
        except Exception as exc:
            log.warning("offset commit failed; will retry", extra={"error": repr(exc)[:300]})
            return
        self.tracker.committed(offsets)
        self.observe("commit", 1)

    def _flow_control(self) -> None:
        assigned = sorted(self.consumer.assignment())
        cap = self.settings.max_in_flight
        full = bool(self._carry) or (cap is not None and self.tracker.in_flight() >= cap)
        if full and not self._paused and assigned:
            self.consumer.pause(assigned)
            self._paused = True
            self.observe("pause", 1)
        elif self._paused and not full and not self._stopping:
            self.consumer.resume(assigned)
            self._paused = False
        self.observe("paused_partitions", float(len(self.consumer.paused())))

    # ---- rebalance and shutdown ------------------------------------------------------

    def _guard(self, fn: Callable[[list[Partition]], None]) -> Callable[[list[Partition]], None]:
        """Rebalance callbacks run inside the client's poll: an exception must not escape."""

        def guarded(partitions: list[Partition]) -> None:
            try:
                fn(partitions)
            except Exception:
                log.exception("rebalance callback failed", extra={"partitions": partitions})
                self.observe("step_error", 1)

        return guarded

    def _revoked(self, partitions: list[Partition]) -> None:
        """Finish what is in flight for `partitions` (bounded), commit it, hand back the rest."""
        gone = set(partitions)
        if not gone or self.first is None:
            return
        carried = [r for r in self._carry if r.tp in gone]
        self._carry = collections.deque(r for r in self._carry if r.tp not in gone)
        handed = len(carried) + self.first.forget(gone)
        if not self._stopping:  # shutdown drains once, under its own deadline
            deadline = time.monotonic() + self.settings.shutdown_timeout_s
            while self.tracker.in_flight(gone) > handed and time.monotonic() < deadline:
                self.health.tick()
                self._drive()
                time.sleep(0.01)
        self.maybe_commit(force=True, only=gone)
        left = self.tracker.in_flight(gone)
        self.tracker.forget(gone)
        self._polled_at = {k: v for k, v in self._polled_at.items() if k[0] not in gone}
        self.handed_back += left
        log.info(
            "partitions revoked",
            extra={"partitions": sorted(p.partition for p in gone), "handed_back": left},
        )
        self.on_revoked(sorted(gone))

    def _assigned(self, partitions: list[Partition]) -> None:
        log.info(
            "partitions assigned", extra={"partitions": sorted(p.partition for p in partitions)}
        )
        if self._paused and partitions:
            self.consumer.pause(partitions)
        self.on_assigned(list(partitions))

    def _shutdown(self) -> None:
        """Stop polling, finish in-flight work, flush, commit, leave the group: one deadline."""
        self._stopping = True
        self.publisher.stopping = True
        deadline = time.monotonic() + self.settings.shutdown_timeout_s
        self.health.ready = False
        self.health.reason = "stopping"
        first = self.first
        try:
            assigned = sorted(self.consumer.assignment())
            if assigned:
                self.consumer.pause(assigned)
            self._carry.clear()
            if first is not None:
                first.forget(set(assigned))
                first.join(deadline)
            while self._published and time.monotonic() < deadline:
                self._drive()
                for token in self.publisher.flush(min(deadline, time.monotonic() + 0.2)):
                    entry = self._published.pop(token, None)
                    if entry is not None:
                        for record in entry[0]:
                            self._finish(record, entry[1])
            self.maybe_commit(force=True)
            self.handed_back += self.tracker.in_flight()
        except Exception:
            log.exception("shutdown did not finish cleanly")
        finally:
            try:
                self.consumer.close()
            except Exception:
                log.debug("consumer close failed", exc_info=True)
            if first is not None:
                first.close()
            self.publisher.close(max(0.0, min(5.0, deadline - time.monotonic())))

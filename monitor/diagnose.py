"""The diagnose role: escalations in, diagnoses out, on the same runtime as the screen role.

Two steps (monitor.runtime):

- `RequestStep`: the escalation contract (`EscalationRequest.from_json`); anything off it
  becomes a dead letter (`bad_escalation`).
- `DiagnoseStep`: a bounded queue in front of diagnose threads that call
  `Diagnoser.diagnose_batch`. Diagnosis is optional work, so it never holds the
  consumer: a full queue DROPS the request (counted by reason, logged, offset committed)
  instead of raising MessageRejected. A watchdog bounds each call: past
  `generation_timeout_s` the batch is dropped (`vlm_timeout`) and its thread abandoned
  (Python cannot kill a thread; a replacement takes over, at most `max_abandoned` times,
  after which the step reports itself stalled and /healthz goes red). A VLMError from
  the backend (server down, its own timeout) drops the batch likewise.

Diagnoses are published on the runtime's thread (Context is not thread-safe); the
diagnose threads only hand results back through a queue.
"""

from __future__ import annotations

import collections
import json
import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from monitor.clients import Partition, Record
from monitor.messages import diagnosis_message
from monitor.runtime import Context, Forward, Message, Step
from scorers.vlm.types import Diagnosis, EscalationRequest, RequestError, VLMError, VLMTimeout

log = logging.getLogger(__name__)

BAD_ESCALATION = "bad_escalation"
QUEUE_FULL = "queue_full"
INTERNAL = "internal_error"

DiagnoseFn = Callable[[Sequence[EscalationRequest]], list[Diagnosis]]


class RequestStep(Forward):
    """Parse the escalation; a record that breaks the contract is dead-lettered."""

    def __init__(self, ctx: Context, next_step: Step[EscalationRequest]) -> None:
        self.ctx = ctx
        self.next = next_step

    def submit(self, message: Message[Record]) -> None:
        r = message.record
        try:
            request = EscalationRequest.from_json(json.loads(r.value or b""))
        except (RequestError, ValueError, TypeError, AttributeError, RecursionError) as exc:
            self.ctx.dead_letter(r, BAD_ESCALATION, f"{r.where}: {type(exc).__name__}: {exc}")
            return
        self.next.submit(Message(r, request, message.polled_at))


@dataclass
class _Batch:
    messages: list[Message[EscalationRequest]]
    started: float = field(default_factory=time.monotonic)


_Outcome = list[Diagnosis] | BaseException


class _Thread:
    """One diagnose thread: takes a batch from its inbox, answers on the shared outbox."""

    def __init__(self, fn: DiagnoseFn, outbox: queue.SimpleQueue[tuple[_Thread, _Outcome, float]]):
        self.fn = fn
        self.outbox = outbox
        self.inbox: queue.SimpleQueue[_Batch | None] = queue.SimpleQueue()
        self.batch: _Batch | None = None
        """Set by the runtime's thread while this thread works on it."""
        self.abandoned = False
        self.thread = threading.Thread(target=self._run, name="vqmon-diagnose", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while (batch := self.inbox.get()) is not None:
            t0 = time.perf_counter()
            outcome: _Outcome
            try:
                outcome = self.fn([m.payload for m in batch.messages])
            except BaseException as exc:  # reported to the runtime's thread, which drops
                outcome = exc
            self.outbox.put((self, outcome, time.perf_counter() - t0))
            if self.abandoned:
                return


class DiagnoseStep:
    """Bounded queue -> diagnose threads -> vqmon.diagnoses; drops (counted) instead of
    blocking. Hooks: on_diagnosis(d, seconds) per published diagnosis, on_dropped(reason,
    n) per drop, on_batch(seconds, diagnoses) per successful call."""

    def __init__(
        self,
        ctx: Context,
        diagnose: DiagnoseFn,
        topic: str,
        *,
        queue_size: int,
        batch_size: int,
        timeout_s: float,
        threads: int = 1,
        max_abandoned: int = 2,
        on_dropped: Callable[[str, int], None] | None = None,
        on_batch: Callable[[float, list[Diagnosis]], None] | None = None,
    ) -> None:
        self.ctx = ctx
        self.diagnose = diagnose
        self.topic = topic
        self.capacity = queue_size
        self.batch_size = batch_size
        self.timeout_s = timeout_s
        self.max_abandoned = max_abandoned
        self.threads = threads
        self.on_dropped = on_dropped or (lambda _r, _n: None)
        self.on_batch = on_batch or (lambda _s, _d: None)
        self.waiting: collections.deque[Message[EscalationRequest]] = collections.deque()
        self._outbox: queue.SimpleQueue[tuple[_Thread, _Outcome, float]] = queue.SimpleQueue()
        self._threads = [_Thread(diagnose, self._outbox) for _ in range(threads)]
        self._abandoned: set[_Thread] = set()
        self._lost_at: float | None = None

    @property
    def depth(self) -> int:
        return len(self.waiting)

    @property
    def running(self) -> int:
        return sum(len(t.batch.messages) for t in self._threads if t.batch is not None)

    def submit(self, message: Message[EscalationRequest]) -> None:
        if len(self.waiting) >= self.capacity:
            self._drop([message], QUEUE_FULL, "the diagnose queue is full (the VLM is behind)")
            return
        self.waiting.append(message)
        self._dispatch()  # an idle thread takes it now, so the queue holds only what waits

    def poll(self, wait_s: float = 0.02) -> None:
        """Hand on what the threads finished. While a call runs, wait up to `wait_s` for
        it: the runtime polls without a timeout while work is in flight, and a call that
        takes seconds (a slow or stalled VLM) must not turn that into a busy loop taking
        a core from the screen role beside it."""
        # Work held (running, or waiting with every thread hung): wait, do not spin.
        wait = wait_s if self.running or self.waiting or self._abandoned else 0.0
        while True:
            try:
                item = self._outbox.get(timeout=wait) if wait > 0 else self._outbox.get_nowait()
            except queue.Empty:
                break
            wait = 0.0
            self._answered(*item)
        self._watchdog()
        self._dispatch()

    def _dispatch(self) -> None:
        for t in self._threads:
            if not self.waiting:
                return
            if t.batch is None:
                n = min(self.batch_size, len(self.waiting))
                t.batch = _Batch([self.waiting.popleft() for _ in range(n)])
                t.inbox.put(t.batch)

    def _answered(self, thread: _Thread, outcome: _Outcome, seconds: float) -> None:
        if thread.abandoned:  # the watchdog dropped its batch already; it has exited
            self._abandoned.discard(thread)
            self._replace()
            return
        batch, thread.batch = thread.batch, None
        if batch is None:
            return
        if isinstance(outcome, BaseException):
            reason = outcome.reason if isinstance(outcome, VLMError) else INTERNAL
            if reason == INTERNAL:
                log.error("diagnose call failed", exc_info=outcome)
            self._drop(batch.messages, reason, f"{type(outcome).__name__}: {outcome}")
            return
        self.on_batch(seconds, outcome)
        for message, diagnosis in zip(batch.messages, outcome, strict=True):
            self.ctx.publish(message.record, [diagnosis_message(self.topic, diagnosis)])

    def _watchdog(self) -> None:
        now = time.monotonic()
        for t in list(self._threads):
            if t.batch is None or now - t.batch.started <= self.timeout_s:
                continue
            batch, t.batch = t.batch, None
            t.abandoned = True
            t.inbox.put(None)
            self._threads.remove(t)
            self._abandoned.add(t)
            self._drop(
                batch.messages,
                VLMTimeout.reason,
                f"no diagnosis within diagnose.generation_timeout_s={self.timeout_s:.0f}s; "
                "the call's thread is abandoned",
            )
        self._replace()

    def _replace(self) -> None:
        """Start threads for the abandoned ones while fewer than max_abandoned hang."""
        while len(self._threads) < self.threads and len(self._abandoned) <= self.max_abandoned:
            self._threads.append(_Thread(self.diagnose, self._outbox))
        if self._threads:
            self._lost_at = None
        elif self._lost_at is None:
            self._lost_at = time.monotonic()
            log.error(
                "every diagnose thread is hung; no more replacements",
                extra={"abandoned": len(self._abandoned), "max_abandoned": self.max_abandoned},
            )

    def _drop(self, messages: list[Message[EscalationRequest]], reason: str, why: str) -> None:
        log.warning(
            "diagnosis dropped",
            extra={
                "reason": reason,
                "error": why[:300],
                "segments": [m.payload.segment_id for m in messages][:8],
            },
        )
        self.on_dropped(reason, len(messages))
        for m in messages:
            self.ctx.done(m.record, f"dropped:{reason}")

    def join(self, deadline: float) -> None:
        while (self.waiting or self.running) and time.monotonic() < deadline:
            self.poll()
            if not self._threads:
                return
            time.sleep(0.01)

    def forget(self, partitions: set[Partition]) -> int:
        kept = [m for m in self.waiting if m.record.tp not in partitions]
        dropped = len(self.waiting) - len(kept)
        self.waiting = collections.deque(kept)
        return dropped

    def stalled_s(self) -> float:
        """Only a step with no thread left to diagnose is stuck: slow calls are the
        watchdog's to drop, not a reason to restart the daemon."""
        if self._lost_at is None:
            return 0.0
        return time.monotonic() - self._lost_at

    def close(self) -> None:
        for t in self._threads:
            t.inbox.put(None)

"""The screen daemon: poll -> decode (worker processes) -> score (batched) -> publish -> commit.

One thread owns the Kafka consumer (kafka-python's consumer is not thread-safe) and
drives the stages; scoring runs in its own thread so a batch does not stop polling.
Every stage is bounded; when the intake fills, the assigned partitions are paused
(nothing is dropped) and resumed at half. A record's offset becomes committable only
when every output made from it is acknowledged by the broker; commits carry offset + 1
of the contiguous done prefix per partition, at most once per commit_interval_s and
forced on revocation and shutdown. Nothing is auto-committed.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from kafka import ConsumerRebalanceListener, KafkaConsumer
from kafka.errors import KafkaError
from kafka.structs import OffsetAndMetadata, TopicPartition

from ingest import kafka as kafka_io
from ingest.types import DecodedSegment, IngestError
from monitor.config import Config
from monitor.health import HealthState
from monitor.metrics import Metrics
from monitor.offsets import OffsetTracker
from monitor.outputs import (
    OutMessage,
    Publisher,
    Source,
    alert_messages,
    dead_letter_message,
    verdict_message,
)
from monitor.workers import DecodePool, Outcome
from scorers.chain import Chain
from scorers.types import Verdict

log = logging.getLogger(__name__)

SCORER_ERROR = "scorer_error"


@dataclass
class Item:
    """One consumed record on its way through the pipeline."""

    id: int
    tp: TopicPartition
    source: Source
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes | None]]
    polled_at: float
    job: kafka_io.SegmentJob | None = None
    decoded: DecodedSegment | None = None
    result: str = "ok"
    stamps: dict[str, float] = field(default_factory=dict)


@dataclass
class Summary:
    started: float
    finished: float = 0.0
    results: collections.Counter[str] = field(default_factory=collections.Counter)
    flags: collections.Counter[str] = field(default_factory=collections.Counter)
    renditions: set[tuple[str, str]] = field(default_factory=set)
    handed_back: int = 0
    mos_sum: float = 0.0
    mos_count: int = 0
    published: int | None = None
    """Segments the built-in synthetic feed published (None without a feed)."""

    @property
    def screened(self) -> int:
        return self.results["ok"]

    def to_json(self) -> dict[str, Any]:
        return {
            "seconds": round(self.finished - self.started, 1),
            "screened": self.screened,
            "results": dict(self.results),
            "flags": dict(self.flags),
            "streams": len({s for s, _ in self.renditions}),
            "renditions": len(self.renditions),
            "handed_back": self.handed_back,
            "mean_mos": round(self.mos_sum / self.mos_count, 3) if self.mos_count else None,
            **({"published": self.published} if self.published is not None else {}),
        }


class ScoringStage:
    """A thread that scores decoded items in batches (up to batch_size, waiting batch_wait_s)."""

    def __init__(self, chain: Chain, batch_size: int, batch_wait_s: float) -> None:
        self.chain = chain
        self.batch_size = batch_size
        self.batch_wait_s = batch_wait_s
        self.inbox: queue.Queue[Item | None] = queue.Queue()
        self.outbox: queue.SimpleQueue[tuple[list[Item], list[Verdict] | Exception]] = (
            queue.SimpleQueue()
        )
        self.busy = 0  # items taken from inbox and not yet in outbox
        self._lock = threading.Lock()
        self.thread = threading.Thread(target=self._run, name="vqmon-score", daemon=True)
        self.thread.start()

    @property
    def depth(self) -> int:
        with self._lock:
            return self.inbox.qsize() + self.busy

    def submit(self, item: Item) -> None:
        self.inbox.put(item)

    def _take(self) -> list[Item] | None:
        first = self.inbox.get()
        if first is None:
            return None
        batch = [first]
        deadline = time.monotonic() + self.batch_wait_s
        while len(batch) < self.batch_size:
            try:
                nxt = self.inbox.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if nxt is None:
                self.inbox.put(None)
                break
            batch.append(nxt)
        return batch

    def _run(self) -> None:
        while True:
            batch = self._take()
            if batch is None:
                return
            with self._lock:
                self.busy += len(batch)
            result: list[Verdict] | Exception
            try:
                decoded = [i.decoded for i in batch if i.decoded is not None]
                result = self.chain.score(decoded)
            except Exception as exc:  # a scorer bug must not stop the daemon
                log.exception("scoring failed", extra={"batch": len(batch)})
                result = exc
            self.outbox.put((batch, result))
            with self._lock:
                self.busy -= len(batch)

    def stop(self) -> None:
        self.inbox.put(None)
        self.thread.join(10)


class Daemon:
    def __init__(
        self,
        config: Config,
        bootstrap: list[str],
        metrics: Metrics,
        health: HealthState | None = None,
        *,
        notify: Callable[[str], None] | None = None,
        watchdog: Callable[[], None] | None = None,
    ) -> None:
        self.config = config
        self.bootstrap = bootstrap
        self.metrics = metrics
        self.health = health or HealthState(config.http.stall_after_s)
        self.notify = notify or (lambda _status: None)
        self.watchdog = watchdog or (lambda: None)
        self.summary = Summary(time.time())
        self.tracker = OffsetTracker()
        self.init_cache = kafka_io.InitCache(config.ingest.init_cache_entries)
        self.items: dict[int, Item] = {}
        self.intake: collections.deque[Item] = collections.deque()
        self._stop = threading.Event()
        self._ids = 0
        self._paused = False
        self._last_commit = 0.0
        self._consumer: KafkaConsumer | None = None
        self._pool: DecodePool | None = None
        self._scoring: ScoringStage | None = None
        self._publisher: Publisher | None = None

    # ---- lifecycle -------------------------------------------------------------------

    def stop(self) -> None:
        """Ask the loop to finish (signal-handler safe)."""
        self._stop.set()

    def run(self, duration_s: float | None = None) -> Summary:
        cfg = self.config
        topics = cfg.kafka.topics
        if cfg.kafka.create_topics:
            created = kafka_io.ensure_topics(
                cfg.kafka,
                self.bootstrap,
                [topics.segments, topics.verdicts, topics.alerts, topics.dead_letter],
            )
            if created:
                log.info("created topics", extra={"topics": created})
        chain = Chain.from_configs(cfg.scorers)
        for name, version, provider in chain.runtimes():
            self.metrics.scorer_info.labels(name, version, provider).set(1)
        limits = cfg.decode.limits
        self._pool = DecodePool(
            cfg.pipeline.decode_workers,
            cfg.pipeline.worker_prefetch,
            cfg.decode,
            cfg.ingest.references,
            job_timeout_s=limits.decode_timeout_s
            + cfg.pipeline.watchdog_grace_s
            + cfg.ingest.references.http_timeout_s,
            max_restarts=cfg.pipeline.max_worker_restarts,
            restart_window_s=cfg.pipeline.restart_window_s,
            on_restart=lambda reason: self.metrics.worker_restarts.labels(reason).inc(),
        )
        self._scoring = ScoringStage(chain, cfg.pipeline.batch_size, cfg.pipeline.batch_wait_s)
        self._publisher = Publisher(
            lambda: kafka_io.make_producer(cfg.kafka, self.bootstrap),
            stuck_after_s=cfg.kafka.request_timeout_ms / 1000 + 30,
            on_reset=self.metrics.producer_resets.inc,
        )
        self._consumer = kafka_io.make_consumer(cfg.kafka, self.bootstrap)
        self._consumer.subscribe([topics.segments], listener=_Listener(self))
        log.info(
            "screening",
            extra={
                "topic": topics.segments,
                "group": cfg.kafka.group_id,
                "scorers": chain.names,
                "bootstrap": self.bootstrap,
            },
        )
        self.summary.started = time.time()
        deadline = None if duration_s is None else time.monotonic() + duration_s
        try:
            while not self._stop.is_set():
                if deadline is not None and time.monotonic() >= deadline:
                    break
                self._turn()
        finally:
            self._shutdown(chain)
        return self.summary

    def _turn(self) -> None:
        self.health.tick()
        self.watchdog()
        self._poll()
        self._pump(wait_s=0.02 if self.items else 0.0)
        self._maybe_commit()
        self._flow_control()
        self._gauges()

    # ---- stages ----------------------------------------------------------------------

    def _poll(self) -> None:
        assert self._consumer is not None
        room = min(
            self.config.pipeline.intake_queue - len(self.intake),
            self.config.pipeline.max_in_flight - len(self.items),
        )
        timeout = 0 if self.items else 100
        records = self._consumer.poll(timeout_ms=timeout, max_records=max(1, room))
        for tp, batch in records.items():
            for record in batch:
                self._intake(tp, record)
        assignment = self._consumer.assignment()
        self.metrics.assigned.set(len(assignment))
        ready = bool(assignment)
        self.health.ready = ready
        self.health.reason = "ok" if ready else "waiting for a partition assignment"

    def _intake(self, tp: TopicPartition, record: Any) -> None:
        self._ids += 1
        source = Source(record.topic, record.partition, record.offset, record.timestamp)
        item = Item(
            self._ids,
            tp,
            source,
            record.key,
            record.value,
            list(record.headers or []),
            time.monotonic(),
        )
        self.tracker.track(tp, record.offset)
        self.items[item.id] = item
        try:
            parsed = kafka_io.parse_message(
                record.key,
                record.value,
                item.headers,
                offset=record.offset,
                source=f"{record.topic}/{record.partition}@{record.offset}",
            )
        except IngestError as exc:
            self._dead_letter(item, exc.reason, str(exc))
            return
        if isinstance(parsed, kafka_io.InitSegment):
            self.init_cache.put(parsed.stream, parsed.rendition, parsed.data)
            item.result = "init"
            self._finish(item)
            return
        init = self.init_cache.get(parsed.segment.stream, parsed.segment.rendition)
        if init is not None:
            parsed = dataclasses.replace(
                parsed, segment=dataclasses.replace(parsed.segment, init=init)
            )
        item.job = parsed
        self.intake.append(item)

    def _dispatch(self) -> None:
        pool, scoring = self._pool, self._scoring
        assert pool is not None and scoring is not None
        while (
            self.intake
            and pool.free_slots() > 0
            and scoring.depth < self.config.pipeline.score_queue
        ):
            item = self.intake.popleft()
            assert item.job is not None
            item.stamps["dispatched"] = time.monotonic()
            self.metrics.stage_seconds.labels("queue").observe(
                item.stamps["dispatched"] - item.polled_at
            )
            pool.submit(item.id, item.job)

    def _pump(self, wait_s: float) -> None:
        """Move work along every stage once, waiting up to `wait_s` for a decode result."""
        pool, publisher = self._pool, self._publisher
        assert pool is not None and publisher is not None
        self._dispatch()
        for outcome in pool.poll(wait_s):
            self._decoded(outcome)
        self._dispatch()
        self._scored()
        for token in publisher.poll():
            item = self.items.get(token)
            if item is not None:
                self._finish(item)

    def _decoded(self, outcome: Outcome) -> None:
        item = self.items.get(outcome.job_id)
        if item is None:
            return
        self.metrics.stage_seconds.labels("decode").observe(outcome.seconds)
        if outcome.decoded is None:
            self._dead_letter(item, outcome.reason or "decode_error", outcome.error or "")
            return
        assert item.job is not None
        item.decoded = dataclasses.replace(outcome.decoded, segment=item.job.segment)
        item.stamps["decoded"] = time.monotonic()
        assert self._scoring is not None
        self._scoring.submit(item)

    def _scored(self) -> None:
        assert self._scoring is not None and self._publisher is not None
        topics = self.config.kafka.topics
        while True:
            try:
                batch, result = self._scoring.outbox.get_nowait()
            except queue.Empty:
                return
            now = time.monotonic()
            if isinstance(result, Exception):
                for item in batch:
                    self._dead_letter(item, SCORER_ERROR, f"{type(result).__name__}: {result}")
                continue
            for item, verdict in zip(batch, result, strict=True):
                assert item.decoded is not None
                self.metrics.stage_seconds.labels("score").observe(
                    now - item.stamps.get("decoded", now)
                )
                messages = [verdict_message(topics.verdicts, verdict, item.decoded, item.source)]
                messages += alert_messages(topics.alerts, verdict, self.config.outputs.alerts)
                self.metrics.observe_verdict(
                    verdict, item.decoded.decode_errors, item.decoded.corrupt_frames
                )
                self.summary.flags.update(f.kind for f in verdict.flags)
                self.summary.renditions.add((verdict.stream, verdict.rendition))
                if verdict.mos is not None:
                    self.summary.mos_sum += verdict.mos
                    self.summary.mos_count += 1
                item.decoded = None  # the frames are no longer needed
                self._publish(item, messages)

    def _dead_letter(self, item: Item, reason: str, error: str) -> None:
        log.warning(
            "dead letter",
            extra={"reason": reason, "error": error, "source": item.source.to_json()},
        )
        item.result = reason
        item.decoded = None
        message = dead_letter_message(
            self.config.kafka.topics.dead_letter,
            key=item.key,
            value=item.value,
            headers=item.headers,
            source=item.source,
            reason=reason,
            error=error,
            max_value_bytes=self.config.outputs.dead_letter_max_value_bytes,
        )
        self._publish(item, [message])

    def _publish(self, item: Item, messages: list[OutMessage]) -> None:
        assert self._publisher is not None
        item.stamps["published"] = time.monotonic()
        self._publisher.publish(item.id, messages)

    def _finish(self, item: Item) -> None:
        """Every output of `item` is acknowledged: its offset may be committed."""
        self.items.pop(item.id, None)
        now = time.monotonic()
        if "published" in item.stamps:
            self.metrics.stage_seconds.labels("produce").observe(now - item.stamps["published"])
        self.metrics.stage_seconds.labels("total").observe(now - item.polled_at)
        self.metrics.segments.labels(item.result).inc()
        if item.result not in ("ok", "init"):
            self.metrics.dead_letters.labels(item.result).inc()
        self.summary.results[item.result] += 1
        self.tracker.done(item.tp, item.source.offset)

    # ---- offsets and flow control ----------------------------------------------------

    def _maybe_commit(
        self, force: bool = False, only: Iterable[TopicPartition] | None = None
    ) -> None:
        now = time.monotonic()
        if not force and now - self._last_commit < self.config.pipeline.commit_interval_s:
            return
        self._last_commit = now
        assert self._consumer is not None
        offsets = self.tracker.to_commit()
        if only is not None:
            keep = set(only)
            offsets = {tp: o for tp, o in offsets.items() if tp in keep}
        if not offsets:
            return
        try:
            self._consumer.commit(
                {tp: OffsetAndMetadata(o, "", -1) for tp, o in offsets.items()},
                timeout_ms=5000,
            )
        except (KafkaError, AssertionError) as exc:
            log.warning("offset commit failed; will retry", extra={"error": repr(exc)})
            return
        self.tracker.committed(offsets)
        self.metrics.commits.inc()

    def _flow_control(self) -> None:
        assert self._consumer is not None
        p = self.config.pipeline
        full = len(self.intake) >= p.intake_queue or len(self.items) >= p.max_in_flight
        calm = len(self.intake) <= p.intake_queue // 2 and len(self.items) <= p.max_in_flight // 2
        assigned = self._consumer.assignment()
        if full and not self._paused and assigned:
            self._consumer.pause(*assigned)
            self._paused = True
            self.metrics.pauses.inc()
            log.debug("pipeline full: partitions paused", extra={"intake": len(self.intake)})
        elif self._paused and calm and not self._stop.is_set():
            self._consumer.resume(*assigned)
            self._paused = False
            log.debug("partitions resumed", extra={"intake": len(self.intake)})
        self.metrics.paused.set(len(self._consumer.paused()))

    def _gauges(self) -> None:
        assert self._pool and self._scoring and self._publisher and self._consumer
        m = self.metrics
        m.queue_depth.labels("intake").set(len(self.intake))
        m.queue_depth.labels("decode").set(self._pool.in_flight)
        m.queue_depth.labels("score").set(self._scoring.depth)
        m.queue_depth.labels("produce").set(self._publisher.in_flight)
        for tp in self._consumer.assignment():
            hw = self._consumer.highwater(tp)
            low = self.tracker.low_watermark(tp)
            if hw is not None and low is not None:
                m.lag.labels(str(tp.partition)).set(max(0, hw - low))

    # ---- rebalance and shutdown ------------------------------------------------------

    def revoked(self, partitions: list[TopicPartition]) -> None:
        """Finish what is in flight for `partitions` (bounded), commit it, hand back the rest."""
        gone = set(partitions)
        if not gone:
            return
        handed = [i for i in self.intake if i.tp in gone]
        self.intake = collections.deque(i for i in self.intake if i.tp not in gone)
        for item in handed:
            self.items.pop(item.id, None)
        deadline = time.monotonic() + self.config.pipeline.shutdown_timeout_s
        while self._in_flight(gone) and time.monotonic() < deadline:
            self.health.tick()
            self._pump(wait_s=0.05)
        self._maybe_commit(force=True, only=gone)
        left = self._in_flight(gone)
        for item in [i for i in self.items.values() if i.tp in gone]:
            self.items.pop(item.id, None)  # its outputs may still arrive: a duplicate, not a loss
        self.tracker.forget(gone)
        for tp in gone:
            with contextlib.suppress(KeyError):
                self.metrics.lag.remove(str(tp.partition))
        log.info(
            "partitions revoked",
            extra={
                "partitions": sorted(tp.partition for tp in gone),
                "handed_back": len(handed) + left,
            },
        )

    def assigned(self, partitions: list[TopicPartition]) -> None:
        log.info(
            "partitions assigned", extra={"partitions": sorted(p.partition for p in partitions)}
        )
        if self._paused and partitions and self._consumer is not None:
            self._consumer.pause(*partitions)

    def _in_flight(self, tps: set[TopicPartition]) -> int:
        return sum(1 for i in self.items.values() if i.tp in tps)

    def _shutdown(self, chain: Chain) -> None:
        """Stop polling, finish in-flight segments (bounded), flush, commit, leave the group."""
        self.notify("stopping: finishing in-flight segments")
        self.health.ready = False
        self.health.reason = "stopping"
        consumer, pool, scoring, publisher = (
            self._consumer,
            self._pool,
            self._scoring,
            self._publisher,
        )
        try:
            if consumer is not None and consumer.assignment():
                consumer.pause(*consumer.assignment())
            self.summary.handed_back += len(self.intake)
            for item in self.intake:
                self.items.pop(item.id, None)
            self.intake.clear()
            deadline = time.monotonic() + self.config.pipeline.shutdown_timeout_s
            if pool is not None and publisher is not None and consumer is not None:
                while self.items and time.monotonic() < deadline:
                    self.health.tick()
                    self._pump(wait_s=0.05)
                for token in publisher.flush(max(0.0, deadline - time.monotonic())):
                    flushed = self.items.get(token)
                    if flushed is not None:
                        self._finish(flushed)
                self._maybe_commit(force=True)
            self.summary.handed_back += len(self.items)
        finally:
            if consumer is not None:
                try:
                    consumer.close(autocommit=False)
                except Exception:
                    log.debug("consumer close failed", exc_info=True)
            if scoring is not None:
                scoring.stop()
            if pool is not None:
                pool.close()
            if publisher is not None:
                publisher.close()
            chain.close()
            self.summary.finished = time.time()
            log.info("stopped", extra={"summary": self.summary.to_json()})


class _Listener(ConsumerRebalanceListener):
    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon

    def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        self.daemon.revoked(list(revoked))

    def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        self.daemon.assigned(list(assigned))

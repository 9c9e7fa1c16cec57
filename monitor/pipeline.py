"""The daemon: builds the runtimes and the roles they run from the config.

`Daemon` (the screen role) and `DiagnoseDaemon` (the diagnose role) only assemble:
Kafka clients behind the runtime's protocols (monitor.clients), the publisher
(monitor.publisher), a runtime (monitor.runtime) and the role's steps (monitor.screen,
monitor.diagnose), with metrics and the run summary as observers. Everything they
build can be injected instead (tests pass in-memory clients). Each role has its own
consumer group and runtime; `--role all` runs both in one process (monitor.run).
"""

from __future__ import annotations

import collections
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kafka.errors import KafkaError

from ingest import kafka as kafka_io
from ingest.hls import HlsSourceConfig
from ingest.initcache import InitCache
from monitor.clients import (
    Consumer,
    Finite,
    KafkaConsumerClient,
    KafkaProducerClient,
    Producer,
    Record,
)
from monitor.config import Config
from monitor.diagnose import DiagnoseFn, DiagnoseStep, RequestStep
from monitor.escalate import Escalator, warm_start
from monitor.escalation import EscalationPolicy
from monitor.health import HealthState
from monitor.hls import HlsConsumer, SourceErrorStep
from monitor.messages import dead_letter_message
from monitor.metrics import Metrics
from monitor.publisher import OutMessage, Publisher
from monitor.runtime import Runtime, RuntimeSettings, Step
from monitor.screen import AdaptivePlanner, OutputStep, ParseStep, ScreenStep, source_of
from monitor.workers import Runner, Screened, WorkerPool, WorkerSetup
from scorers.chain import Chain
from scorers.types import Verdict
from scorers.vlm.diagnoser import Diagnoser
from scorers.vlm.types import Diagnosis

log = logging.getLogger(__name__)

WARM_START_TIMEOUT_S = 15.0
"""Longest read of the recent verdicts at start (escalation.warm_start_segments)."""


@dataclass
class Summary:
    started: float
    finished: float = 0.0
    results: collections.Counter[str] = field(default_factory=collections.Counter)
    flags: collections.Counter[str] = field(default_factory=collections.Counter)
    modes: collections.Counter[str] = field(default_factory=collections.Counter)
    renditions: set[tuple[str, str]] = field(default_factory=set)
    handed_back: int = 0
    mos_sum: float = 0.0
    mos_count: int = 0
    published: int | None = None
    """Segments the built-in synthetic feed published (None without a feed)."""
    escalations: collections.Counter[str] = field(default_factory=collections.Counter)
    escalations_dropped: collections.Counter[str] = field(default_factory=collections.Counter)
    diagnose: collections.Counter[str] | None = None
    """Diagnose role results (ok, dropped:<reason>, dead-letter reasons); None when it did
    not run."""
    roles: tuple[str, ...] = ("screen",)
    """The roles this process ran."""
    judge: dict[str, int] | None = None
    """Judge role totals (incidents opened, encoder decisions); None when it did not run."""

    @property
    def screened(self) -> int:
        return self.results["ok"]

    def add_verdict(self, verdict: Verdict) -> None:
        self.flags.update(f.kind for f in verdict.flags)
        self.modes[verdict.mode] += 1
        self.renditions.add((verdict.stream, verdict.rendition))
        if verdict.mos is not None:
            self.mos_sum += verdict.mos
            self.mos_count += 1

    def to_json(self) -> dict[str, Any]:
        return {
            "seconds": round(self.finished - self.started, 1),
            "screened": self.screened,
            "results": dict(self.results),
            "flags": dict(self.flags),
            "modes": dict(self.modes),
            "streams": len({s for s, _ in self.renditions}),
            "renditions": len(self.renditions),
            "handed_back": self.handed_back,
            "mean_mos": round(self.mos_sum / self.mos_count, 3) if self.mos_count else None,
            "escalations": dict(self.escalations),
            "escalations_dropped": dict(self.escalations_dropped),
            **({"published": self.published} if self.published is not None else {}),
            **({"diagnose": dict(self.diagnose)} if self.diagnose is not None else {}),
            **({"judge": dict(self.judge)} if self.judge is not None else {}),
            "roles": list(self.roles),
        }


def worker_setup(config: Config) -> WorkerSetup:
    """Scorers run inside the workers: one ONNX Runtime thread each unless set otherwise,
    since the workers already fill the cores."""
    scorers = [
        s.model_copy(update={"threads": 1}) if getattr(s, "threads", None) == 0 else s
        for s in config.scorers
    ]
    return WorkerSetup(
        config.decode,
        config.ingest.references,
        scorers,
        config.pipeline.screening.tiny_frame_ratio,
        config.escalation if config.escalation.enabled else None,
    )


def make_publisher(
    config: Config,
    bootstrap: list[str],
    metrics: Metrics,
    factory: Callable[[], Producer] | None = None,
) -> Publisher:
    return Publisher(
        factory or (lambda: KafkaProducerClient(kafka_io.make_producer(config.kafka, bootstrap))),
        stuck_after_s=config.kafka.request_timeout_ms / 1000 + 30,
        on_reset=metrics.producer_resets.inc,
        on_lost=lambda m, _exc: metrics.outputs_lost.labels(m.topic).inc(),
    )


def runtime_settings(
    config: Config, max_poll_records: int, max_in_flight: int | None = None
) -> RuntimeSettings:
    p = config.pipeline
    return RuntimeSettings(
        commit_interval_s=p.commit_interval_s,
        shutdown_timeout_s=p.shutdown_timeout_s,
        progress_timeout_s=p.progress_timeout_s,
        unacked_timeout_s=p.unacked_timeout_s,
        max_poll_records=max_poll_records,
        max_in_flight=max_in_flight,
    )


def dead_letter_maker(config: Config) -> Callable[[Record, str, str], OutMessage]:
    def make(record: Record, reason: str, error: str) -> OutMessage:
        return dead_letter_message(
            config.kafka.topics.dead_letter,
            key=record.key,
            value=record.value,
            headers=record.headers,
            source=source_of(record),
            reason=reason,
            error=error,
            max_value_bytes=config.outputs.dead_letter_max_value_bytes,
        )

    return make


def runtime_observer(
    metrics: Metrics, *, stages: bool = True, role: str = "screen"
) -> Callable[[str, float], None]:
    """The runtime's and steps' metrics hook. `stages=False` (the diagnose role) leaves the
    screen pipeline's stage histograms and gauges to the screen role."""

    def observe(name: str, value: float) -> None:
        m = metrics
        if name == "poll_error":
            m.poll_errors.inc()
        elif name == "step_error":
            m.step_errors.inc()
        elif name == "commit":
            m.commits.inc()
        elif name == "oldest_unacked_seconds":
            m.oldest_unacked.labels(role).set(value)
        elif not stages:
            return
        elif name in STAGE_OF:
            m.stage_seconds.labels(STAGE_OF[name]).observe(value)
        elif name == "pause":
            m.pauses.inc()
        elif name == "paused_partitions":
            m.paused.set(value)
        elif name == "stalled_seconds":
            m.stalled.set(value)

    return observe


STAGE_OF = {
    "queue_seconds": "queue",
    "screen_seconds": "decode",
    "score_seconds": "score",
    "total_seconds": "total",
    "produce_seconds": "produce",
}


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
        consumer: Consumer | None = None,
        producer_factory: Callable[[], Producer] | None = None,
        runner: Runner | None = None,
        summary: Summary | None = None,
    ) -> None:
        self.config = config
        self.bootstrap = bootstrap
        self.metrics = metrics
        self.health = health or HealthState(config.http.stall_after_s)
        self.notify = notify or (lambda _status: None)
        self.watchdog = watchdog or (lambda: None)
        self.summary = summary or Summary(time.time())
        self._consumer = consumer
        self._producer_factory = producer_factory
        self._runner = runner
        self.runtime: Runtime | None = None
        self._stop_asked = False
        self._decoder: tuple[str, str] | None = None

    def stop(self) -> None:
        """Ask the loop to finish (signal-handler safe)."""
        self._stop_asked = True
        if self.runtime is not None:
            self.runtime.stop()

    def run(self, duration_s: float | None = None) -> Summary:
        cfg = self.config
        topics = cfg.kafka.topics
        hls = isinstance(cfg.source, HlsSourceConfig)
        if cfg.kafka.create_topics and (self._consumer is None or hls):
            inputs = [] if hls else [topics.segments]
            created = kafka_io.ensure_topics(
                cfg.kafka,
                self.bootstrap,
                [
                    *inputs,
                    topics.verdicts,
                    topics.alerts,
                    topics.dead_letter,
                    *([topics.escalations] if cfg.escalation.enabled else []),
                ],
            )
            if created:
                log.info("created topics", extra={"topics": created})
        setup = worker_setup(cfg)
        chain = Chain.from_configs(setup.scorers)  # fails early on a missing model
        for name, version, provider in chain.runtimes():
            self.metrics.scorer_info.labels(name, version, provider).set(1)
        chain.close()
        pool = self._pool(setup)
        publisher = make_publisher(cfg, self.bootstrap, self.metrics, self._producer_factory)
        consumer = self._consumer or self._make_consumer()
        p = cfg.pipeline
        observe = runtime_observer(self.metrics)
        runtime = Runtime(
            consumer,
            [topics.segments],
            publisher,
            dead_letter_maker(cfg),
            runtime_settings(cfg, p.intake_queue, p.max_in_flight),
            self.health,
            watchdog=self.watchdog,
            observe=observe,
        )
        self.runtime = runtime
        runtime.on_gauges = self._gauges
        if self._stop_asked:
            runtime.stop()
        ctx = runtime.context
        ctx.on_result = self._finished
        escalator = self._escalator()
        if escalator is not None and self._producer_factory is None:
            self._warm_start(escalator.policy)
        outputs = OutputStep(
            ctx, topics.verdicts, topics.alerts, cfg.outputs.alerts, self._verdict, escalator
        )
        self.screen = ScreenStep(
            ctx,
            pool,
            AdaptivePlanner(p.screening),
            outputs,
            intake=p.intake_queue,
            observe=observe,
            recent=None if escalator is None else escalator.recent,
            room=None if escalator is None else escalator.room,
        )
        first: Step[Record] = ParseStep(
            ctx,
            InitCache(
                cfg.ingest.init_cache_entries,
                cfg.ingest.init_cache_bytes,
                cfg.ingest.init_segment_max_bytes,
            ),
            self.screen,
        )
        if hls:
            first = SourceErrorStep(ctx, first)  # segments the source could not fetch
        log.info(
            "screening",
            extra={
                "source": cfg.source.type,
                "topic": topics.segments,
                "group": cfg.kafka.group_id,
                "scorers": chain.names,
                "workers": p.decode_workers,
                "screening": p.screening.mode,
                "escalation": cfg.escalation.enabled,
                "bootstrap": self.bootstrap,
            },
        )
        self.summary.started = time.time()
        try:
            runtime.run(first, duration_s)
        finally:
            self.summary.handed_back += runtime.handed_back
            self.summary.finished = time.time()
            log.info("stopped", extra={"summary": self.summary.to_json()})
        return self.summary

    def _warm_start(self, policy: EscalationPolicy) -> None:
        """The renditions' recent verdicts back into the policy (EscalationConfig.
        warm_start_segments); a topic that cannot be read leaves it cold, never stops us."""
        cfg = self.config
        count = cfg.escalation.warm_start_segments
        if count <= 0:
            return
        topic = cfg.kafka.topics.verdicts
        try:
            records, left = kafka_io.read_tail(
                cfg.kafka, self.bootstrap, topic, count, WARM_START_TIMEOUT_S
            )
        except (KafkaError, OSError, ValueError) as e:
            log.warning(
                "escalation starts cold: the recent verdicts could not be read",
                extra={
                    "topic": topic,
                    "error": repr(e),
                    "fix": "check the broker and the "
                    "topic's ACLs; escalation.warm_start_segments: 0 turns this off",
                },
            )
            return
        try:
            remembered, skipped = warm_start(policy, records)
        except Exception:  # optional work: a bug here must not keep the daemon from starting
            log.exception("escalation starts cold: reading the verdicts back failed")
            return
        log.info(
            "escalation warmed from recent verdicts",
            extra={
                "topic": topic,
                "remembered": remembered,
                "unreadable": skipped,
                "partitions_unfinished": len(left),
            },
        )

    def _make_consumer(self) -> Consumer:
        cfg = self.config
        if isinstance(cfg.source, HlsSourceConfig):
            return HlsConsumer(cfg.source, observe=self.metrics.observe_hls)
        return KafkaConsumerClient(kafka_io.make_consumer(cfg.kafka, self.bootstrap))

    def _pool(self, setup: WorkerSetup) -> WorkerPool:
        cfg = self.config
        limits = cfg.decode.limits
        return WorkerPool(
            cfg.pipeline.decode_workers,
            cfg.pipeline.worker_prefetch,
            setup,
            job_timeout_s=limits.decode_timeout_s
            + cfg.pipeline.watchdog_grace_s
            + cfg.ingest.references.http_timeout_s,
            max_restarts=cfg.pipeline.max_worker_restarts,
            restart_window_s=cfg.pipeline.restart_window_s,
            on_restart=lambda reason: self.metrics.worker_restarts.labels(reason).inc(),
            runner=self._runner,
        )

    def _escalator(self) -> Escalator | None:
        cfg = self.config
        if not cfg.escalation.enabled:
            return None
        m, summary = self.metrics, self.summary

        def escalated(label: str) -> None:
            m.escalations.labels(label).inc()
            summary.escalations[label] += 1

        def dropped(reason: str, trigger: str) -> None:
            m.escalations_dropped.labels(reason, trigger).inc()
            summary.escalations_dropped[reason] += 1

        return Escalator(
            EscalationPolicy(cfg.escalation),
            cfg.kafka.topics.escalations,
            on_escalated=escalated,
            on_dropped=dropped,
        )

    def _verdict(self, verdict: Verdict, screened: Screened) -> None:
        self.metrics.observe_verdict(
            verdict, screened.decode.errors, screened.decode.corrupt_frames
        )
        self.metrics.screen_modes.labels(verdict.mode).inc()
        decoder = (self.config.decode.hwaccel, screened.info.decoder)
        if decoder != self._decoder:
            if self._decoder is not None:
                self.metrics.decoder_info.labels(*self._decoder).set(0)
            self.metrics.decoder_info.labels(*decoder).set(1)
            self._decoder = decoder
        self.summary.add_verdict(verdict)

    def _finished(self, record: Record, result: str) -> None:
        self.metrics.segments.labels(result).inc()
        if result not in ("ok", "init"):
            self.metrics.dead_letters.labels(result).inc()
        self.summary.results[result] += 1

    def _gauges(self) -> None:
        runtime, m = self.runtime, self.metrics
        assert runtime is not None
        self._stop_at_end(runtime)
        assigned = runtime.consumer.assignment()
        m.assigned.set(len(assigned))
        m.queue_depth.labels("intake").set(self.screen.depth)
        m.queue_depth.labels("decode").set(self.screen.pool.in_flight)
        m.queue_depth.labels("produce").set(runtime.publisher.in_flight)
        for tp in assigned:
            hw = runtime.consumer.highwater(tp)
            low = runtime.tracker.low_watermark(tp)
            if hw is not None and low is not None:
                m.lag.labels(str(tp.partition)).set(max(0, hw - low))

    def _stop_at_end(self, runtime: Runtime) -> None:
        """A source that ended (HLS VOD) stops the daemon once everything from it is done."""
        source = self.config.source
        consumer = runtime.consumer
        if (
            isinstance(source, HlsSourceConfig)
            and source.stop_at_end
            and isinstance(consumer, Finite)
            and consumer.exhausted()
            and runtime.tracker.in_flight() == 0
        ):
            log.info("every playlist ended and every segment is done: stopping")
            runtime.stop()


class DiagnoseDaemon:
    """The diagnose role: escalations topic -> Diagnoser -> diagnoses topic, in its own
    consumer group (`diagnose.group_id`, default '<kafka.group_id>-diagnose')."""

    def __init__(
        self,
        config: Config,
        bootstrap: list[str],
        metrics: Metrics,
        health: HealthState | None = None,
        *,
        watchdog: Callable[[], None] | None = None,
        consumer: Consumer | None = None,
        producer_factory: Callable[[], Producer] | None = None,
        diagnose: DiagnoseFn | None = None,
        model: str | None = None,
        summary: Summary | None = None,
    ) -> None:
        """`diagnose` (with `model`, its id) replaces the configured Diagnoser (tests)."""
        self.config = config
        self.bootstrap = bootstrap
        self.metrics = metrics
        self.health = health or HealthState(config.http.stall_after_s)
        self.watchdog = watchdog or (lambda: None)
        self.summary = summary or Summary(time.time())
        self.summary.diagnose = self.summary.diagnose or collections.Counter()
        self._consumer = consumer
        self._producer_factory = producer_factory
        self._diagnose = diagnose
        self._model = model or "injected"
        self.runtime: Runtime | None = None
        self.step: DiagnoseStep | None = None
        self._stop_asked = False

    @property
    def group_id(self) -> str:
        return self.config.diagnose.group_id or f"{self.config.kafka.group_id}-diagnose"

    def stop(self) -> None:
        """Ask the loop to finish (signal-handler safe)."""
        self._stop_asked = True
        if self.runtime is not None:
            self.runtime.stop()

    def run(self, duration_s: float | None = None) -> Summary:
        cfg = self.config
        topics, d = cfg.kafka.topics, cfg.diagnose
        if cfg.kafka.create_topics and self._consumer is None:
            kafka_io.ensure_topics(
                cfg.kafka,
                self.bootstrap,
                [topics.escalations, topics.diagnoses, topics.dead_letter],
            )
        diagnoser = None
        diagnose, model = self._diagnose, self._model
        if diagnose is None:
            diagnoser = Diagnoser(d)  # loads the model (or connects) before joining the group
            diagnose, model = diagnoser.diagnose_batch, diagnoser.model_id
        self._model = model
        consumer = self._consumer or KafkaConsumerClient(
            kafka_io.make_consumer(
                cfg.kafka.model_copy(update={"group_id": self.group_id}), self.bootstrap
            )
        )
        runtime = Runtime(
            consumer,
            [topics.escalations],
            make_publisher(cfg, self.bootstrap, self.metrics, self._producer_factory),
            dead_letter_maker(cfg),
            runtime_settings(cfg, d.poll_records),
            self.health,
            watchdog=self.watchdog,
            observe=runtime_observer(self.metrics, stages=False, role="diagnose"),
        )
        self.runtime = runtime
        runtime.on_gauges = self._gauges
        if self._stop_asked:
            runtime.stop()
        ctx = runtime.context
        ctx.on_result = self._finished
        self.step = DiagnoseStep(
            ctx,
            diagnose,
            topics.diagnoses,
            queue_size=d.queue,
            batch_size=d.batch_size,
            timeout_s=d.generation_timeout_s,
            max_abandoned=d.max_abandoned,
            on_dropped=self._dropped,
            on_batch=self._batch,
        )
        log.info(
            "diagnosing",
            extra={
                "topic": topics.escalations,
                "group": self.group_id,
                "model": model,
                "tasks": list(d.tasks),
                "bootstrap": self.bootstrap,
            },
        )
        try:
            runtime.run(RequestStep(ctx, self.step), duration_s)
        finally:
            if diagnoser is not None:
                diagnoser.close()
            log.info("diagnose role stopped", extra={"results": dict(self.summary.diagnose or {})})
        return self.summary

    def _finished(self, record: Record, result: str) -> None:
        assert self.summary.diagnose is not None
        self.summary.diagnose[result] += 1
        if result == "ok":
            self.metrics.diagnoses.labels(self._model).inc()
        elif not result.startswith("dropped:"):
            self.metrics.dead_letters.labels(result).inc()

    def _dropped(self, reason: str, n: int) -> None:
        self.metrics.diagnoses_dropped.labels(reason).inc(n)

    def _batch(self, seconds: float, diagnoses: list[Diagnosis]) -> None:
        m = self.metrics
        m.generation_seconds.observe(seconds)
        tps = next((x.tokens_per_s for x in diagnoses if x.tokens_per_s), None)
        if tps is not None:
            m.tokens_per_second.set(tps)
        for diagnosis in diagnoses:
            for task in diagnosis.tasks:
                failed = len(task.parse_errors) - task.parsed
                if failed:
                    m.parse_failures.labels(task.task).inc(failed)

    def _gauges(self) -> None:
        if self.step is not None:
            self.metrics.queue_depth.labels("diagnose").set(self.step.depth)
            self.metrics.queue_depth.labels("diagnosing").set(self.step.running)

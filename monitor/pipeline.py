"""The daemon: builds the runtime and the roles it runs from the config.

`Daemon` only assembles: Kafka clients behind the runtime's protocols
(monitor.clients), the publisher (monitor.publisher), the runtime (monitor.runtime)
and the screen role's steps (monitor.screen), with metrics and the run summary as
observers. Everything it builds can be injected instead (tests pass in-memory clients).
"""

from __future__ import annotations

import collections
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ingest import kafka as kafka_io
from ingest.contract import InitCache
from ingest.hls import HlsSourceConfig
from monitor.clients import (
    Consumer,
    Finite,
    KafkaConsumerClient,
    KafkaProducerClient,
    Producer,
    Record,
)
from monitor.config import Config
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

log = logging.getLogger(__name__)


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
            **({"published": self.published} if self.published is not None else {}),
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
    )


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
    ) -> None:
        self.config = config
        self.bootstrap = bootstrap
        self.metrics = metrics
        self.health = health or HealthState(config.http.stall_after_s)
        self.notify = notify or (lambda _status: None)
        self.watchdog = watchdog or (lambda: None)
        self.summary = Summary(time.time())
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
                [*inputs, topics.verdicts, topics.alerts, topics.dead_letter],
            )
            if created:
                log.info("created topics", extra={"topics": created})
        setup = worker_setup(cfg)
        chain = Chain.from_configs(setup.scorers)  # fails early on a missing model
        for name, version, provider in chain.runtimes():
            self.metrics.scorer_info.labels(name, version, provider).set(1)
        chain.close()
        pool = self._pool(setup)
        publisher = Publisher(
            self._producer_factory
            or (lambda: KafkaProducerClient(kafka_io.make_producer(cfg.kafka, self.bootstrap))),
            stuck_after_s=cfg.kafka.request_timeout_ms / 1000 + 30,
            on_reset=self.metrics.producer_resets.inc,
            on_lost=lambda m, _exc: self.metrics.outputs_lost.labels(m.topic).inc(),
        )
        consumer = self._consumer or self._make_consumer()
        p = cfg.pipeline
        runtime = Runtime(
            consumer,
            [topics.segments],
            publisher,
            self._dead_letter,
            RuntimeSettings(
                commit_interval_s=p.commit_interval_s,
                shutdown_timeout_s=p.shutdown_timeout_s,
                progress_timeout_s=p.progress_timeout_s,
                unacked_timeout_s=p.unacked_timeout_s,
                max_poll_records=p.intake_queue,
            ),
            self.health,
            watchdog=self.watchdog,
            observe=self._observe,
        )
        self.runtime = runtime
        runtime.on_gauges = self._gauges
        if self._stop_asked:
            runtime.stop()
        ctx = runtime.context
        ctx.on_result = self._finished
        outputs = OutputStep(ctx, topics.verdicts, topics.alerts, cfg.outputs.alerts, self._verdict)
        self.screen = ScreenStep(
            ctx,
            pool,
            AdaptivePlanner(p.screening),
            outputs,
            intake=p.intake_queue,
            observe=self._observe,
        )
        first: Step[Record] = ParseStep(
            ctx,
            InitCache(cfg.ingest.init_cache_entries, cfg.ingest.init_cache_bytes),
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

    def _dead_letter(self, record: Record, reason: str, error: str) -> OutMessage:
        return dead_letter_message(
            self.config.kafka.topics.dead_letter,
            key=record.key,
            value=record.value,
            headers=record.headers,
            source=source_of(record),
            reason=reason,
            error=error,
            max_value_bytes=self.config.outputs.dead_letter_max_value_bytes,
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

    def _observe(self, name: str, value: float) -> None:
        m = self.metrics
        if name in ("queue_seconds",):
            m.stage_seconds.labels("queue").observe(value)
        elif name == "screen_seconds":
            m.stage_seconds.labels("decode").observe(value)
        elif name == "score_seconds":
            m.stage_seconds.labels("score").observe(value)
        elif name == "total_seconds":
            m.stage_seconds.labels("total").observe(value)
        elif name == "produce_seconds":
            m.stage_seconds.labels("produce").observe(value)
        elif name == "poll_error":
            m.poll_errors.inc()
        elif name == "step_error":
            m.step_errors.inc()
        elif name == "commit":
            m.commits.inc()
        elif name == "pause":
            m.pauses.inc()
        elif name == "paused_partitions":
            m.paused.set(value)
        elif name == "oldest_unacked_seconds":
            m.oldest_unacked.set(value)
        elif name == "stalled_seconds":
            m.stalled.set(value)

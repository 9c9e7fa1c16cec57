"""Prometheus metrics of the daemon, on a registry passed in (tests use a fresh one).

Base units, `_total` counters, histograms for latency; labels only stream, rendition,
reason, stage and partition (plus the bounded enums kind, localisation, action and mode
of the judge and encoding block at the end), never segment ids. Stream/rendition label values are
capped (`max_series`): past the cap new ones are reported as "other".
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from monitor.types import EncoderDecision, Incident
from scorers.types import Verdict

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
GENERATION_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60, 120, 300)
STAGES = ("queue", "decode", "score", "produce", "total")
QUEUES = ("intake", "decode", "produce")


class Metrics:
    def __init__(self, registry: CollectorRegistry, *, max_series: int = 1000) -> None:
        self.registry = registry
        self.max_series = max_series
        self._series: set[tuple[str, str]] = set()
        self.segments = Counter(
            "vqmon_segments_processed",
            "Segments finished, by reason: ok (screened, verdict published), init (CMAF init "
            "segment cached) or the dead-letter reason code.",
            ["reason"],
            registry=registry,
        )
        self.stage_seconds = Histogram(
            "vqmon_stage_duration_seconds",
            "Time a segment spent in each pipeline stage (queue: polled until a decode worker "
            "took it; total: polled until every output was acknowledged).",
            ["stage"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.queue_depth = Gauge(
            "vqmon_queue_depth",
            "Segments waiting in or occupying each stage.",
            ["stage"],
            registry=registry,
        )
        self.paused = Gauge(
            "vqmon_paused_partitions",
            "Input partitions paused because the pipeline is full.",
            registry=registry,
        )
        self.pauses = Counter(
            "vqmon_partition_pauses",
            "Times the consumer paused its partitions because the pipeline was full.",
            registry=registry,
        )
        self.assigned = Gauge(
            "vqmon_assigned_partitions",
            "Input partitions assigned to this member of the consumer group.",
            registry=registry,
        )
        self.lag = Gauge(
            "vqmon_consumer_lag",
            "Messages behind the partition's high watermark, counted from the next offset "
            "to commit.",
            ["partition"],
            registry=registry,
        )
        self.mos = Gauge(
            "vqmon_quality_mos",
            "MOS (1-5) of the latest segment screened; absent until a quality scorer runs.",
            ["stream", "rendition"],
            registry=registry,
        )
        self.active_flags = Gauge(
            "vqmon_active_flags",
            "Flags in the latest verdict of each stream and rendition.",
            ["stream", "rendition"],
            registry=registry,
        )
        self.flags = Counter(
            "vqmon_flags",
            "Flags raised, by kind (black, freeze, ...).",
            ["reason"],
            registry=registry,
        )
        self.dead_letters = Counter(
            "vqmon_dead_letters",
            "Messages sent to the dead-letter topic, by reason code.",
            ["reason"],
            registry=registry,
        )
        self.decode_errors = Counter(
            "vqmon_decode_errors",
            "Packets the decoder rejected inside segments that still decoded.",
            ["stream", "rendition"],
            registry=registry,
        )
        self.corrupt_frames = Counter(
            "vqmon_corrupt_frames",
            "Frames the decoder output but marked corrupt.",
            ["stream", "rendition"],
            registry=registry,
        )
        self.worker_restarts = Counter(
            "vqmon_decode_worker_restarts",
            "Decode workers killed and replaced, by reason (decode_timeout, decoder_crashed).",
            ["reason"],
            registry=registry,
        )
        self.producer_resets = Counter(
            "vqmon_producer_resets",
            "Times the Kafka producer was recreated after a delivery failure.",
            registry=registry,
        )
        self.commits = Counter(
            "vqmon_offset_commits",
            "Offset commits acknowledged by the group coordinator.",
            registry=registry,
        )
        self.poll_errors = Counter(
            "vqmon_poll_errors",
            "Consumer polls that raised (corrupt or unreadable records, authorisation, ...).",
            registry=registry,
        )
        self.step_errors = Counter(
            "vqmon_step_errors",
            "Exceptions inside a processing step or a rebalance callback (bugs; the loop goes on).",
            registry=registry,
        )
        self.outputs_lost = Counter(
            "vqmon_outputs_lost",
            "Outputs the broker refused for good (too large, not authorised) and that had no "
            "reduced form to send instead, by topic.",
            ["topic"],
            registry=registry,
        )
        self.oldest_unacked = Gauge(
            "vqmon_oldest_unacknowledged_output_seconds",
            "Age of the oldest output still waiting for the broker's acknowledgement, by role "
            "(screen, judge, diagnose: each has its own producer).",
            ["role"],
            registry=registry,
        )
        self.stalled = Gauge(
            "vqmon_stalled_seconds",
            "How long in-flight screening has gone without finishing a segment (0 when idle).",
            registry=registry,
        )
        self.screen_modes = Counter(
            "vqmon_screened_segments",
            "Segments screened, by mode: full, cheap (keyframes and packet-level signals) or "
            "promoted (cheap signals looked wrong, then screened fully).",
            ["mode"],
            registry=registry,
        )
        self.decoder_info = Gauge(
            "vqmon_decoder_info",
            "1 for the decoder that actually runs in the screen workers: the hardware "
            "acceleration asked for and what runs (e.g. cuda, or software after a fallback).",
            ["requested", "active"],
            registry=registry,
        )
        self.scorer_info = Gauge(
            "vqmon_scorer_info",
            "1 for each scorer in the chain: its model version and the runtime provider that "
            "actually runs it (e.g. CUDAExecutionProvider, or CPUExecutionProvider after a "
            "CUDA fallback).",
            ["scorer", "version", "provider"],
            registry=registry,
        )
        for stage in STAGES:
            self.stage_seconds.labels(stage)
        for q in QUEUES:
            self.queue_depth.labels(q).set(0)
        self._init_closed_loop(registry)
        self._init_diagnosis(registry)
        self._init_hls(registry)

    def labels(self, stream: str, rendition: str) -> tuple[str, str]:
        key = (stream, rendition)
        if key in self._series:
            return key
        if len(self._series) < self.max_series:
            self._series.add(key)
            return key
        return ("other", "other")

    def observe_verdict(self, verdict: Verdict, decode_errors: int, corrupt_frames: int) -> None:
        s, r = self.labels(verdict.stream, verdict.rendition)
        if verdict.mos is not None:
            self.mos.labels(s, r).set(verdict.mos)
        self.active_flags.labels(s, r).set(len(verdict.flags))
        for flag in verdict.flags:
            self.flags.labels(flag.kind).inc()
        if decode_errors:
            self.decode_errors.labels(s, r).inc(decode_errors)
        if corrupt_frames:
            self.corrupt_frames.labels(s, r).inc(corrupt_frames)

    # ------------------------------------------------------------------ escalation and diagnosis
    # Labels: reason (the first trigger: flag_<kind>, mos_low, mos_low_drop,
    # degradation_unsure, audit; or a drop reason), model (the configured VLM), task.

    def _init_hls(self, registry: CollectorRegistry) -> None:
        self.hls_fetches = Counter(
            "vqmon_hls_fetches",
            "HTTP fetches of the HLS source, by kind (master, playlist, init, segment) and "
            "result (ok, or the reason: bad_reference, limit_exceeded, unsupported_reference).",
            ["kind", "result"],
            registry=registry,
        )
        self.hls_missed = Counter(
            "vqmon_hls_missed_segments",
            "Segments that left a live playlist's window before the source fetched them (the "
            "pipeline was behind): never screened.",
            ["stream", "rendition"],
            registry=registry,
        )

    def observe_hls(self, event: str, labels: Mapping[str, str]) -> None:
        """monitor.hls.HlsConsumer's observer."""
        if event == "fetch":
            self.hls_fetches.labels(labels["kind"], labels["result"]).inc()
        elif event == "missed":
            s, r = self.labels(labels["stream"], labels["rendition"])
            self.hls_missed.labels(s, r).inc(int(labels.get("count", "1")))

    def _init_diagnosis(self, registry: CollectorRegistry) -> None:
        self.escalations = Counter(
            "vqmon_escalations",
            "Segments the screen role escalated to the diagnose role, by their first trigger "
            "(flag_<kind>, mos_low, mos_low_drop, degraded_<class>, degradation_unsure, ...), "
            "habitual, ongoing or audit.",
            ["reason"],
            registry=registry,
        )
        self.escalations_dropped = Counter(
            "vqmon_escalations_dropped",
            "Escalations a trigger asked for but the screen role did not send, by reason: "
            "budget, ranked, stream_rate (the policy's limits), no_frames, request_error; "
            "and by the trigger refused (its first, labelled as in vqmon_escalations).",
            ["reason", "trigger"],
            registry=registry,
        )
        self.diagnoses = Counter(
            "vqmon_diagnoses",
            "Diagnoses published by the diagnose role, by model ('rules' without a VLM).",
            ["model"],
            registry=registry,
        )
        self.diagnoses_dropped = Counter(
            "vqmon_diagnoses_dropped",
            "Escalations the diagnose role gave up on (committed, no diagnosis), by reason: "
            "queue_full (the VLM is behind), vlm_timeout, vlm_error, internal_error.",
            ["reason"],
            registry=registry,
        )
        self.generation_seconds = Histogram(
            "vqmon_vlm_generation_seconds",
            "Wall time of one diagnose call (a batch of escalations, every configured task).",
            buckets=GENERATION_BUCKETS,
            registry=registry,
        )
        self.tokens_per_second = Gauge(
            "vqmon_vlm_tokens_per_second",
            "Generated tokens per second of the latest diagnose call that counted tokens.",
            registry=registry,
        )
        self.parse_failures = Counter(
            "vqmon_vlm_parse_failures",
            "VLM completions whose answer could not be parsed (never turned into a default), "
            "by task.",
            ["task"],
            registry=registry,
        )

    # ------------------------------------------------------------------ judge and encoding
    # Incidents (monitor.judge) and encoder decisions (monitor.encoding). Extra labels are
    # bounded enums: kind (monitor.types.INCIDENT_KINDS), localisation (source, rendition,
    # packaging), action (monitor.types.ACTIONS), mode (applied, dry_run).

    def _init_closed_loop(self, registry: CollectorRegistry) -> None:
        self.incidents_open = Gauge(
            "vqmon_incidents_open",
            "Incidents open now, by stream, kind and localisation (source, rendition, packaging).",
            ["stream", "kind", "localisation"],
            registry=registry,
        )
        self.incidents = Counter(
            "vqmon_incidents",
            "Incidents opened, by stream, kind and localisation.",
            ["stream", "kind", "localisation"],
            registry=registry,
        )
        self.decisions = Counter(
            "vqmon_encoder_decisions",
            "Encoder decisions made, by action; mode is applied or dry_run.",
            ["stream", "rendition", "action", "mode"],
            registry=registry,
        )
        self.saved_bytes = Counter(
            "vqmon_encoder_saved_bytes",
            "Estimated bytes not sent because a rendition runs below its nominal bitrate after "
            "lower_bitrate decisions: the segment's measured video bit/s x (nominal / current "
            "target - 1) x media seconds / 8 (an ABR encoder's spend scales with its target), "
            "at most (nominal - current) x seconds / 8, which is used when nothing was measured.",
            ["stream", "rendition"],
            registry=registry,
        )
        self._open_series: set[tuple[str, str, str]] = set()

    def observe_incidents(self, events: Iterable[Incident]) -> None:
        """Count the open events among the judge's output."""
        for inc in events:
            if inc.state == "open":
                stream = self.labels(inc.stream, inc.scope)[0]
                self.incidents.labels(stream, inc.kind, inc.localisation).inc()

    def set_open_incidents(self, incidents: Iterable[Incident]) -> None:
        """Set the gauge from the judge's open incidents (series that emptied go to 0)."""
        counts: dict[tuple[str, str, str], int] = {}
        for inc in incidents:
            key: tuple[str, str, str] = (
                self.labels(inc.stream, inc.scope)[0],
                inc.kind,
                inc.localisation,
            )
            counts[key] = counts.get(key, 0) + 1
        for key in self._open_series | set(counts):
            self.incidents_open.labels(*key).set(counts.get(key, 0))
        self._open_series |= set(counts)

    def on_decision(self, decision: EncoderDecision) -> None:
        """monitor.encoding.EncodingHooks."""
        s, r = self.labels(decision.stream, decision.rendition)
        mode = "dry_run" if decision.dry_run else "applied"
        self.decisions.labels(s, r, decision.action, mode).inc()

    def on_bytes_saved(self, stream: str, rendition: str, saved_bytes: float) -> None:
        """monitor.encoding.EncodingHooks."""
        self.saved_bytes.labels(*self.labels(stream, rendition)).inc(saved_bytes)

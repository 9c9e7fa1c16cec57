"""The init-segment cache stays within its entry and byte bounds, least recently used first."""

from __future__ import annotations

import pytest

from ingest.decode import is_init_segment
from ingest.initcache import InitCache
from ingest.synth import EncodeSettings, clip, split_fmp4
from ingest.types import LimitExceeded


def test_bytes_bound_drops_least_recently_used() -> None:
    cache = InitCache(max_entries=100, max_bytes=1000, max_entry_bytes=400)
    for i in range(3):
        cache.put("s", f"r{i}", bytes(300))
    assert cache.bytes == 900 and len(cache) == 3
    assert cache.get("s", "r0") is not None  # r0 becomes the most recent
    cache.put("s", "r3", bytes(300))
    assert cache.get("s", "r1") is None and cache.get("s", "r0") is not None
    assert cache.bytes <= 1000


def test_entry_bound_and_replacement_keep_the_count_of_bytes() -> None:
    cache = InitCache(max_entries=2, max_bytes=10_000, max_entry_bytes=1000)
    cache.put("a", "r", bytes(100))
    cache.put("a", "r", bytes(50))
    assert cache.bytes == 50 and len(cache) == 1
    cache.put("b", "r", bytes(10))
    cache.put("c", "r", bytes(10))
    assert len(cache) == 2 and cache.get("a", "r") is None and cache.bytes == 20


def test_oversized_init_is_refused_and_the_previous_one_kept() -> None:
    init, _ = split_fmp4(clip("bars", seconds=2.0, settings=EncodeSettings(container="mp4-frag")))
    assert is_init_segment(init)
    cache = InitCache(max_bytes=10_000, max_entry_bytes=len(init) + 10)
    cache.put("s", "r", init)
    with pytest.raises(LimitExceeded, match="init_segment_max_bytes") as info:
        cache.put("s", "r", init + bytes(1000), source="t/0@5")
    assert info.value.reason == "limit_exceeded"
    assert cache.get("s", "r") == init


def test_bounds_are_checked_up_front() -> None:
    with pytest.raises(ValueError, match="must fit"):
        InitCache(max_bytes=10, max_entry_bytes=20)
    with pytest.raises(ValueError, match="positive"):
        InitCache(max_entries=0)

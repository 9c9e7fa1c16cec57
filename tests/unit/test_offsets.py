from monitor.offsets import OffsetTracker


def test_commits_only_the_contiguous_done_prefix() -> None:
    t = OffsetTracker()
    for off in (10, 11, 12, 13):
        t.track("p0", off)
    t.done("p0", 12)
    assert t.to_commit() == {}
    t.done("p0", 10)
    assert t.to_commit() == {"p0": 11}
    t.committed({"p0": 11})
    assert t.to_commit() == {}
    t.done("p0", 11)
    assert t.to_commit() == {"p0": 13}
    assert t.low_watermark("p0") == 13
    t.done("p0", 13)
    assert t.to_commit() == {"p0": 14}
    assert t.in_flight() == 0


def test_forgotten_partition_ignores_late_acks() -> None:
    t = OffsetTracker()
    t.track("p1", 0)
    t.forget(["p1"])
    t.done("p1", 0)
    assert t.to_commit() == {}

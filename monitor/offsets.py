"""Which offsets may be committed: offset + 1 of the contiguous fully-done prefix per partition.

Pure bookkeeping, no Kafka: the pipeline calls `track` when a record is polled and
`done` when every output of it has been acknowledged by the broker.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable


class PartitionOffsets:
    """Offsets in flight for one partition, in poll order."""

    def __init__(self) -> None:
        self._pending: dict[int, bool] = {}  # offset -> done; dicts keep insertion order
        self.committable: int | None = None
        """Offset + 1 of the last record of the fully-done prefix (what to commit)."""
        self.committed: int | None = None

    def track(self, offset: int) -> None:
        if offset not in self._pending:
            self._pending[offset] = False

    def done(self, offset: int) -> None:
        if offset not in self._pending:
            return  # from before a rebalance: forgotten on purpose
        self._pending[offset] = True
        for first, is_done in list(self._pending.items()):
            if not is_done:
                break
            del self._pending[first]
            self.committable = first + 1

    @property
    def in_flight(self) -> int:
        return len(self._pending)

    def low_watermark(self) -> int | None:
        """The first offset not done yet (or the next to commit when all are done)."""
        return next(iter(self._pending), self.committable)

    def needs_commit(self) -> bool:
        return self.committable is not None and self.committable != self.committed


class OffsetTracker:
    """PartitionOffsets for every assigned partition (keys are TopicPartitions in practice)."""

    def __init__(self) -> None:
        self.partitions: dict[Hashable, PartitionOffsets] = {}

    def track(self, tp: Hashable, offset: int) -> None:
        self.partitions.setdefault(tp, PartitionOffsets()).track(offset)

    def done(self, tp: Hashable, offset: int) -> None:
        p = self.partitions.get(tp)
        if p is not None:
            p.done(offset)

    def to_commit(self) -> dict[Hashable, int]:
        return {
            tp: p.committable
            for tp, p in self.partitions.items()
            if p.committable is not None and p.committable != p.committed
        }

    def committed(self, offsets: dict[Hashable, int]) -> None:
        for tp, off in offsets.items():
            p = self.partitions.get(tp)
            if p is not None:
                p.committed = off

    def low_watermark(self, tp: Hashable) -> int | None:
        p = self.partitions.get(tp)
        return None if p is None else p.low_watermark()

    def forget(self, tps: Iterable[Hashable]) -> None:
        for tp in tps:
            self.partitions.pop(tp, None)

    def in_flight(self, tps: Iterable[Hashable] | None = None) -> int:
        keys = self.partitions if tps is None else [t for t in tps if t in self.partitions]
        return sum(self.partitions[t].in_flight for t in keys)

"""The CMAF init segments of the renditions being screened, bounded by count and by bytes.

An init segment arrives once per rendition (header init=1) and is prepended to each of
its media fragments. Publishers choose both how many renditions there are and how big
an init segment is, so the cache is bounded twice: entries and total bytes, least
recently used dropped first; one init segment larger than `max_entry_bytes` is refused.
"""

from __future__ import annotations

import collections

from ingest.types import LimitExceeded


class InitCache:
    """The latest init segment per (stream, rendition); LRU within both bounds."""

    def __init__(
        self,
        max_entries: int = 10000,
        max_bytes: int = 64 * 1024 * 1024,
        max_entry_bytes: int = 1024 * 1024,
    ) -> None:
        if max_entries < 1 or max_bytes < 1 or max_entry_bytes < 1:
            raise ValueError(
                f"InitCache bounds must be positive, got max_entries={max_entries}, "
                f"max_bytes={max_bytes}, max_entry_bytes={max_entry_bytes}"
            )
        if max_entry_bytes > max_bytes:
            raise ValueError(
                f"max_entry_bytes={max_entry_bytes} is over max_bytes={max_bytes}: one init "
                "segment must fit in the cache"
            )
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.max_entry_bytes = max_entry_bytes
        self._items: collections.OrderedDict[tuple[str, str], bytes] = collections.OrderedDict()
        self._bytes = 0

    def put(self, stream: str, rendition: str, data: bytes, source: str = "") -> None:
        """Keep `data` as the init segment of stream/rendition (replacing the previous one).

        Raises LimitExceeded (reason limit_exceeded) for one larger than max_entry_bytes;
        the previous init segment of that rendition is kept then.
        """
        if len(data) > self.max_entry_bytes:
            raise LimitExceeded(
                f"init segment of {stream}/{rendition} is {len(data)} bytes, over "
                f"ingest.init_segment_max_bytes={self.max_entry_bytes}; a CMAF init segment "
                "(ftyp + moov) is normally a few kilobytes",
                source=source,
            )
        key = (stream, rendition)
        old = self._items.pop(key, None)
        if old is not None:
            self._bytes -= len(old)
        self._items[key] = data
        self._bytes += len(data)
        while len(self._items) > self.max_entries or self._bytes > self.max_bytes:
            _, dropped = self._items.popitem(last=False)
            self._bytes -= len(dropped)

    def get(self, stream: str, rendition: str) -> bytes | None:
        data = self._items.get((stream, rendition))
        if data is not None:
            self._items.move_to_end((stream, rendition))
        return data

    @property
    def bytes(self) -> int:
        """Total bytes of the init segments held."""
        return self._bytes

    def __len__(self) -> int:
        return len(self._items)

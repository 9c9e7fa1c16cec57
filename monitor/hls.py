"""`source: hls`: a `Consumer` (monitor.clients) that polls HLS playlists, so the same
runtime and screen role run on HLS as on the segments topic.

Each media playlist is a partition (topic = the playlist's URL) whose offsets count the
records made from it; a record carries the contract's headers (stream, rendition, seq =
the media sequence number, bitrate = the master playlist's BANDWIDTH) and the segment's
bytes, and an fMP4 rendition's init segment (EXT-X-MAP) comes first as an init record.
One thread per configured URL polls and fetches (bounded in bytes and time, ingest/hls.py);
each partition buffers at most `buffer_segments` records, so a paused partition stops its
fetching instead of buffering without bound. A segment that cannot be fetched becomes a
record marked with the error, which `SourceErrorStep` dead-letters with its reason (the
value is a JSON reference to the segment, so replaying the dead letter fetches it again).
Commits are kept in memory: a live playlist cannot be re-read from an offset anyway.
"""

from __future__ import annotations

import collections
import json
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from ingest.contract import SegmentMessage, segment_message
from ingest.hls import (
    Fetcher,
    Gone,
    HlsPlaylist,
    HlsSourceConfig,
    MediaState,
    NewSegment,
    content_type,
    load_playlist,
    media_name,
    new_segments,
    stream_name,
    top_resolution,
    variants,
)
from ingest.reference import UnsupportedReference
from ingest.types import IngestError
from monitor.clients import Partition, RebalanceCallback, Record
from monitor.runtime import Context, Forward, Message, Step

log = logging.getLogger(__name__)

ERROR_REASON = "vqmon-source-error-reason"
ERROR_TEXT = "vqmon-source-error"

Observe = Callable[[str, Mapping[str, str]], None]
"""Metrics hook: observe(event, labels), events "fetch" (kind, result) and "missed"."""


@dataclass
class _Partition:
    tp: Partition
    state: MediaState
    queue: collections.deque[Record] = field(default_factory=collections.deque)
    next_offset: int = 0
    committed: int | None = None


class HlsConsumer:
    """See the module docstring. Thread-safe between its fetch threads and the runtime."""

    def __init__(
        self,
        config: HlsSourceConfig,
        *,
        fetcher: Fetcher | None = None,
        observe: Observe | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.fetcher = fetcher or Fetcher(config.hosts(), config.timeout_s)
        self.observe = observe or (lambda _e, _l: None)
        self.clock = clock
        self._cond = threading.Condition()
        self._parts: dict[Partition, _Partition] = {}
        self._announced: set[Partition] = set()
        self._paused: set[Partition] = set()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._on_assigned: RebalanceCallback = lambda _p: None

    # ---- Consumer protocol -----------------------------------------------------------

    def subscribe(
        self, topics: Sequence[str], on_assigned: RebalanceCallback, on_revoked: RebalanceCallback
    ) -> None:
        self._on_assigned = on_assigned
        for entry in self.config.urls:
            t = threading.Thread(target=self._follow, args=(entry,), name="vqmon-hls", daemon=True)
            t.start()
            self._threads.append(t)

    def poll(self, timeout_s: float, max_records: int) -> list[Record]:
        with self._cond:
            if not self._ready():
                self._cond.wait(timeout_s)
            new = [tp for tp in self._parts if tp not in self._announced]
            self._announced.update(new)
            records = self._take(max_records)
            self._cond.notify_all()
        if new:
            self._on_assigned(new)
        return records

    def assignment(self) -> set[Partition]:
        with self._cond:
            return set(self._announced)

    def pause(self, partitions: Sequence[Partition]) -> None:
        with self._cond:
            self._paused.update(partitions)

    def resume(self, partitions: Sequence[Partition]) -> None:
        with self._cond:
            self._paused.difference_update(partitions)
            self._cond.notify_all()

    def paused(self) -> set[Partition]:
        with self._cond:
            return set(self._paused)

    def position(self, partition: Partition) -> int | None:
        with self._cond:
            p = self._parts.get(partition)
            if p is None:
                return None
            return p.queue[0].offset if p.queue else p.next_offset

    def seek(self, partition: Partition, offset: int) -> None:
        """Records made from a playlist cannot be read again: only skipping forward works."""
        with self._cond:
            p = self._parts.get(partition)
            while p is not None and p.queue and p.queue[0].offset < offset:
                p.queue.popleft()

    def highwater(self, partition: Partition) -> int | None:
        with self._cond:
            p = self._parts.get(partition)
            return None if p is None else p.next_offset

    def commit(self, offsets: Mapping[Partition, int], timeout_s: float) -> None:
        with self._cond:
            for tp, offset in offsets.items():
                if tp in self._parts:
                    self._parts[tp].committed = offset

    def close(self) -> None:
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        for t in self._threads:
            t.join(self.config.timeout_s * 2 + 1)

    # ---- beyond the protocol ---------------------------------------------------------

    def exhausted(self) -> bool:
        """Every playlist ended (EXT-X-ENDLIST) and every record made from them was polled."""
        with self._cond:
            return (
                bool(self._threads)
                and not any(t.is_alive() for t in self._threads)
                and not any(p.queue for p in self._parts.values())
            )

    def committed(self) -> dict[Partition, int]:
        with self._cond:
            return {tp: p.committed for tp, p in self._parts.items() if p.committed is not None}

    # ---- inside the lock -------------------------------------------------------------

    def _ready(self) -> bool:
        if any(tp not in self._announced for tp in self._parts):
            return True
        return any(p.queue for tp, p in self._parts.items() if tp not in self._paused)

    def _take(self, max_records: int) -> list[Record]:
        """Round-robin over unpaused partitions, so one rendition's backlog does not starve
        the others."""
        parts = [p for tp, p in self._parts.items() if tp not in self._paused and p.queue]
        out: list[Record] = []
        while parts and len(out) < max_records:
            for p in list(parts):
                if len(out) >= max_records:
                    break
                out.append(p.queue.popleft())
                if not p.queue:
                    parts.remove(p)
        return out

    # ---- fetch threads ---------------------------------------------------------------

    def _follow(self, entry: HlsPlaylist) -> None:
        """One configured URL's thread: it ends only when its playlists end (or at stop);
        whatever one server sends, the thread logs it and goes on polling."""
        parts: list[_Partition] = []  # kept across a failure: its renditions read on
        while not self._stop.is_set():
            try:
                self._follow_once(entry, parts)
                return
            except Exception:  # a bug meeting a server's answer: never a stream gone quiet
                log.exception("hls stream failed; polling it again", extra={"url": entry.url})
                self._stop.wait(self.config.poll_interval_s)

    def _follow_once(self, entry: HlsPlaylist, parts: list[_Partition]) -> None:
        while not self._stop.is_set():
            if not parts:
                parts += self._discover(entry)
                if not parts:
                    self._stop.wait(self.config.poll_interval_s)
                    continue
            for p in parts:
                state = p.state
                reload = not state.endlist and self.clock() >= state.next_poll
                if not state.ended and self._room(p):
                    if reload:
                        self._poll_media(p)
                    self._drain(p)
            if all(p.state.ended for p in parts):
                log.info("hls playlists ended", extra={"url": entry.url})
                return
            due = min(p.state.next_poll for p in parts if not p.state.ended)
            if any(p.state.backlog for p in parts):
                due = self.clock()  # look for room again soon: a check, not a fetch
            self._stop.wait(min(self.config.poll_interval_s, max(0.02, due - self.clock())))

    def _discover(self, entry: HlsPlaylist) -> list[_Partition]:
        """Read the configured URL: a master gives its variants, a media playlist itself."""
        try:
            text = self._get_text(entry.url, "master")
            playlist = load_playlist(text, entry.url)
            found = variants(playlist, entry.url) if playlist.is_variant else []
        except IngestError as exc:
            log.warning("hls playlist unavailable; retrying", extra={"error": str(exc)[:300]})
            return []
        if playlist.is_variant:
            stream = stream_name(entry, True)
            shown = top_resolution(found)  # every rung is judged as the player shows it
            states = [MediaState(v.url, stream, v.rendition, v.bitrate, shown) for v in found]
        else:
            stream = stream_name(entry, False)
            rendition = entry.rendition or media_name(entry.url)
            states = [MediaState(entry.url, stream, rendition, None)]
        with self._cond:
            made = []
            for state in states:
                tp = Partition(state.url, len(self._parts))
                made.append(self._parts.setdefault(tp, _Partition(tp, state)))
            self._cond.notify_all()
        log.info(
            "hls stream found",
            extra={"stream": stream, "renditions": [s.rendition for s in states]},
        )
        return made

    def _poll_media(self, p: _Partition) -> None:
        """Read the media playlist: what it lists after the last segment handed on becomes
        the backlog (replacing the last reading's)."""
        state = p.state
        state.next_poll = self.clock() + self.config.poll_interval_s
        try:
            playlist = load_playlist(self._get_text(state.url, "playlist"), state.url)
        except IngestError as exc:
            log.warning("hls media playlist unavailable", extra={"error": str(exc)[:300]})
            return
        next_seq, missed, restarts = state.next_seq, state.missed, state.restarts
        backlog = state.backlog
        try:
            state.backlog = collections.deque(new_segments(state, playlist, self.config.start))
        except IngestError as exc:
            # the reading changed nothing: the last reading's backlog drains on as it was
            state.next_seq, state.missed, state.restarts = next_seq, missed, restarts
            log.warning("hls media playlist unreadable", extra={"error": str(exc)[:300]})
            return
        state.endlist = bool(playlist.is_endlist)
        if state.restarts > restarts:
            state.missed += len(backlog)  # the old numbering's unfetched segments are gone
            log.warning(
                "hls media sequence went back: a restarted packager; reading its new numbering",
                extra={"stream": state.stream, "rendition": state.rendition},
            )
        if state.missed > missed:
            log.warning(
                "hls segments left the playlist before they were fetched",
                extra={
                    "stream": state.stream,
                    "rendition": state.rendition,
                    "missed": state.missed - missed,
                },
            )
            self.observe(
                "missed",
                {
                    "stream": state.stream,
                    "rendition": state.rendition,
                    "count": str(state.missed - missed),
                },
            )

    def _drain(self, p: _Partition) -> None:
        """Fetch and queue the backlog while the partition has room."""
        state = p.state
        while state.backlog and not self._stop.is_set() and self._room(p):
            seg = state.backlog.popleft()
            if self._emit(p, seg):
                state.next_seq = seg.seq + 1
        if state.endlist and not state.backlog:
            state.ended = True

    def _room(self, p: _Partition) -> bool:
        with self._cond:
            return len(p.queue) < self.config.buffer_segments

    def _emit(self, p: _Partition, seg: NewSegment) -> bool:
        """Fetch `seg` and queue its record, or a dead letter saying why it could not be
        fetched. False when it could not be fetched because it had left the live window
        (see _left_window): then it was counted missed, and the backlog read again."""
        state = p.state
        init: bytes | IngestError | None = None
        if seg.init_url is not None and seg.init_url != state.init_uri:
            try:
                init = self._get(seg.init_url, "init")
            except IngestError as exc:
                init = exc
        failed: IngestError | None = None
        if seg.unsupported is not None:
            failed = UnsupportedReference(seg.unsupported)
        else:
            try:
                data = self._get(seg.url, "segment")
            except IngestError as exc:
                if self._left_window(p, seg, exc):
                    return False  # its init's failure too is no dead letter: both are gone
                failed = exc
        if isinstance(init, IngestError):
            assert seg.init_url is not None
            self._push_error(p, seg.seq, seg.init_url, init, init=True)
        elif init is not None:
            m = segment_message(
                init,
                stream=state.stream,
                rendition=state.rendition,
                seq=seg.seq,
                content_type="video/mp4",
                init=True,
            )
            self._push(p, m)
            state.init_uri = seg.init_url
        if failed is not None:
            self._push_error(p, seg.seq, seg.url, failed)
            return True
        m = segment_message(
            data,
            stream=state.stream,
            rendition=state.rendition,
            seq=seg.seq,
            bitrate=state.bitrate,
            content_type=content_type(seg.url, None),
            display=state.display,
        )
        self._push(p, m, seg.timestamp_ms)
        return True

    def _left_window(self, p: _Partition, seg: NewSegment, exc: IngestError) -> bool:
        """Whether `seg`, which a live playlist listed but the origin says is gone (404,
        410), has left the playlist since: it is read again now, at most once a poll
        interval (a hostile origin cannot make it a loop). A backlog can be a poll interval
        old, and an origin that deletes segments as they leave the window (RFC 8216 asks
        it to keep them a while) answers 404 for them: they are missed (counted, as when
        the window passes segments unread, or a restarted packager's old numbering), not
        dead letters. Still listed, or not read again, it is a failed fetch."""
        state = p.state
        now = self.clock()
        if state.endlist or not isinstance(exc, Gone):
            return False
        if now < state.reread_at + self.config.poll_interval_s:
            return False
        state.reread_at = now
        restarts = state.restarts
        state.backlog.appendleft(seg)  # as it was when the reading listed it
        self._poll_media(p)  # counts what left the window; the backlog is read again
        if state.restarts > restarts or (state.next_seq or 0) > seg.seq:
            return True
        if state.backlog and state.backlog[0].seq == seg.seq:
            state.backlog.popleft()  # still listed (or the reading failed): a failed fetch
        return False

    def _get(self, url: str, kind: str) -> bytes:
        last: IngestError | None = None
        for attempt in range(self.config.retries + 1):
            if attempt:
                self._stop.wait(min(2.0, 0.2 * 2**attempt))
            try:
                data = self.fetcher.get(url, self.config.max_segment_bytes).data
            except IngestError as exc:
                self.observe("fetch", {"kind": kind, "result": exc.reason})
                last = exc
                if exc.reason == "limit_exceeded" or exc.reason == "unsupported_reference":
                    break
                continue
            self.observe("fetch", {"kind": kind, "result": "ok"})
            return data
        assert last is not None
        raise last

    def _get_text(self, url: str, kind: str) -> str:
        try:
            data = self.fetcher.get(url, self.config.max_playlist_bytes).data
        except IngestError as exc:
            self.observe("fetch", {"kind": kind, "result": exc.reason})
            raise
        self.observe("fetch", {"kind": kind, "result": "ok"})
        return data.decode("utf-8", "replace")

    def _push_error(
        self, p: _Partition, seq: int, url: str, exc: IngestError, *, init: bool = False
    ) -> None:
        """A record for a segment that could not be fetched: its value is a JSON reference
        (a replayed dead letter fetches it again), the error rides in two headers."""
        state = p.state
        m = segment_message(
            json.dumps({"uri": url}).encode(),
            stream=state.stream,
            rendition=state.rendition,
            seq=seq,
            bitrate=state.bitrate,
            content_type="application/json",
            init=init,
        )
        extra = [(ERROR_REASON, exc.reason.encode()), (ERROR_TEXT, str(exc).encode())]
        self._push(p, m, extra=extra)

    def _push(
        self,
        p: _Partition,
        m: SegmentMessage,
        timestamp_ms: int | None = None,
        extra: Sequence[tuple[str, bytes]] = (),
    ) -> None:
        """Queue a record at the partition's next offset (topic = the playlist's URL)."""
        ts = timestamp_ms if timestamp_ms is not None else int(time.time() * 1000)
        with self._cond:
            record = Record(
                p.tp.topic,
                p.tp.partition,
                p.next_offset,
                m.key,
                m.value,
                (*m.headers, *extra),
                ts,
            )
            p.next_offset += 1
            p.queue.append(record)
            self._cond.notify_all()


class SourceErrorStep(Forward):
    """First step for a source that marks records it could not fetch: dead-letters them with
    the source's reason; every other record goes on to `next_step` unchanged."""

    def __init__(self, ctx: Context, next_step: Step[Record]) -> None:
        self.ctx = ctx
        self.next = next_step

    def submit(self, message: Message[Record]) -> None:
        headers = dict(message.record.headers)
        reason = headers.get(ERROR_REASON)
        if reason is None:
            self.next.submit(message)
            return
        text = headers.get(ERROR_TEXT) or b""
        self.ctx.dead_letter(
            message.record, reason.decode("utf-8", "replace"), text.decode("utf-8", "replace")
        )

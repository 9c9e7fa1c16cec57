"""HLS input: the `source: hls` config, bounded HTTP fetches, and what is new in a playlist.

No Kafka and no threads here (monitor/hls.py turns this into a `Consumer` for the
runtime). Playlists are parsed with the `m3u8` library. Fetches follow
ingest/reference.py's rules and add two: a total time bound per fetch (not only per
socket operation) and a host allow-list, so a playlist cannot make the daemon fetch from
arbitrary hosts (its own cloud metadata endpoint, say): variant playlists, init and media
segments must be on a host of a configured URL, or one listed in `allow_hosts`, and
redirects are held to the same rule.
"""

from __future__ import annotations

import contextlib
import http.client
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any, Literal

import m3u8
from pydantic import Field, field_validator, model_validator

from ingest.config import StrictModel
from ingest.contract import MAX_BITRATE, largest_display
from ingest.reference import BadReference, UnsupportedReference
from ingest.types import LimitExceeded

GENERIC_NAMES = frozenset({"index", "playlist", "prog_index", "chunklist", "media", "stream"})
CONTENT_TYPES = {
    ".ts": "video/mp2t",
    ".m4s": "video/mp4",
    ".mp4": "video/mp4",
    ".cmfv": "video/mp4",
}


class HlsPlaylist(StrictModel):
    url: str = Field(description="http(s) URL of a master or a media playlist.")
    stream: str | None = Field(
        None,
        description="Stream name of its segments (default: the playlist's directory name, "
        "for a media playlist the directory above its own).",
    )
    rendition: str | None = Field(
        None,
        description="Rendition name, for a media playlist (default: its file or directory "
        "name); a master playlist names its variants after their directories or files.",
    )

    @field_validator("url")
    @classmethod
    def _http(cls, url: str) -> str:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"{url!r} must be an http:// or https:// URL with a host")
        return url


class HlsSourceConfig(StrictModel):
    """Poll HLS playlists directly instead of consuming the segments topic."""

    type: Literal["hls"] = "hls"
    urls: list[HlsPlaylist] = Field(
        min_length=1,
        description="Master or media playlists to follow, as URLs or {url, stream, rendition}.",
    )
    poll_interval_s: float = Field(
        1.0, gt=0, le=60, description="How often a live media playlist is reloaded."
    )
    max_segment_bytes: int = Field(
        32 * 1024 * 1024, gt=0, description="Largest init or media segment fetched, in bytes."
    )
    max_playlist_bytes: int = Field(
        1024 * 1024, gt=0, description="Largest playlist fetched, in bytes."
    )
    timeout_s: float = Field(
        10.0,
        gt=0,
        le=600,
        description="Time allowed for one fetch (connect, headers and body); a stalled read "
        "is cut after at most this long again.",
    )
    retries: int = Field(
        2, ge=0, le=10, description="Retries of a failed segment fetch before it is dead-lettered."
    )
    buffer_segments: int = Field(
        4,
        ge=1,
        le=1000,
        description="Segments fetched ahead of the pipeline per rendition. When the pipeline "
        "is full the source stops fetching; segments that leave a live playlist's window "
        "meanwhile are counted as missed (vqmon_hls_missed_segments_total).",
    )
    start: Literal["window", "live"] = Field(
        "window",
        description="window: every segment in the playlist at start; live: from the newest.",
    )
    allow_hosts: list[str] = Field(
        default_factory=list,
        description="Hosts besides those of `urls` that variant playlists and segments may be "
        "fetched from (e.g. a CDN).",
    )
    stop_at_end: bool = Field(
        True,
        description="Stop the daemon once every playlist has ended (EXT-X-ENDLIST) and every "
        "segment has been screened.",
    )

    @field_validator("urls", mode="before")
    @classmethod
    def _strings(cls, value: Any) -> Any:
        if isinstance(value, list):
            return [{"url": v} if isinstance(v, str) else v for v in value]
        return value

    @model_validator(mode="after")
    def _check(self) -> HlsSourceConfig:
        check_unique_streams(self)
        return self

    def hosts(self) -> frozenset[str]:
        own = {urllib.parse.urlsplit(p.url).hostname or "" for p in self.urls}
        return frozenset(h.lower() for h in own | set(self.allow_hosts))


def check_unique_streams(cfg: HlsSourceConfig) -> None:
    names = [p.stream for p in cfg.urls if p.stream]
    if len(names) != len(set(names)):
        raise ValueError(
            "two source.urls entries name the same stream; give each playlist its own stream"
        )


# ---- fetching ------------------------------------------------------------------------


class _Redirects(urllib.request.HTTPRedirectHandler):
    def __init__(self, hosts: frozenset[str]) -> None:
        self.hosts = hosts

    def redirect_request(
        self, req: Any, fp: Any, code: int, msg: str, headers: Any, newurl: str
    ) -> Any:
        check_host(newurl, self.hosts)
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def check_host(url: str, hosts: frozenset[str]) -> None:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise UnsupportedReference(f"{url}: only http(s) URLs are fetched from playlists")
    if (parts.hostname or "").lower() not in hosts:
        raise UnsupportedReference(
            f"{url}: host {parts.hostname!r} is not a configured playlist host; add it to "
            "source.allow_hosts if the playlist is right to point there"
        )


@dataclass(frozen=True, slots=True)
class Fetched:
    data: bytes
    content_type: str | None


class Gone(BadReference):
    """The server answered 404 or 410: not there (any more). Dead-lettered as bad_reference."""


class Fetcher:
    """GETs bounded in bytes and in total time; failures are IngestErrors with a reason."""

    def __init__(self, hosts: frozenset[str], timeout_s: float) -> None:
        self.hosts = hosts
        self.timeout_s = timeout_s
        self._opener = urllib.request.build_opener(_Redirects(hosts))

    def get(self, url: str, max_bytes: int) -> Fetched:
        check_host(url, self.hosts)
        deadline = time.monotonic() + self.timeout_s
        request = urllib.request.Request(url, headers={"User-Agent": "vqmon"})
        try:
            with self._opener.open(request, timeout=self.timeout_s) as response:
                length = response.headers.get("Content-Length")
                if length is not None and length.isdigit() and int(length) > max_bytes:
                    raise _too_large(url, max_bytes)
                data = _read(response, max_bytes, deadline, url)
                if length is not None and length.isdigit() and len(data) != int(length):
                    raise BadReference(
                        f"GET {url} ended after {len(data)} of the {length} bytes it announced"
                    )
                return Fetched(data, response.headers.get_content_type())
        except urllib.error.HTTPError as exc:
            kind = Gone if exc.code in (404, 410) else BadReference
            raise kind(f"GET {url} answered {exc.code} {exc.reason}") from exc
        except (urllib.error.URLError, OSError, ValueError, http.client.HTTPException) as exc:
            # HTTPException: a garbage status line, too many or too long headers, a bad
            # chunk, a URL http.client refuses (a space, a port that is not a number)
            raise BadReference(f"GET {url} failed: {type(exc).__name__}: {exc}") from exc


def _read(response: Any, max_bytes: int, deadline: float, url: str) -> bytes:
    # read1 returns after one socket read, so the deadline is checked while a slow server
    # trickles the body (each read is itself bounded by the socket timeout).
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = response.read1(64 * 1024)
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        if size > max_bytes:
            raise _too_large(url, max_bytes)
        chunks.append(chunk)
        if time.monotonic() > deadline:
            raise BadReference(f"GET {url} took longer than source.timeout_s")


def _too_large(url: str, max_bytes: int) -> LimitExceeded:
    return LimitExceeded(
        f"{url} holds more than {max_bytes} bytes (source.max_segment_bytes or "
        "max_playlist_bytes); raise the limit if that is right"
    )


# ---- playlists -----------------------------------------------------------------------


def load_playlist(text: str, url: str) -> m3u8.M3U8:
    if not text.lstrip("\ufeff").startswith("#EXTM3U"):
        raise BadReference(f"{url} is not an HLS playlist (no #EXTM3U header)")
    with malformed(url):
        return m3u8.loads(text, uri=url)


MALFORMED = (ValueError, TypeError, KeyError, IndexError, AttributeError, ArithmeticError)
"""What the m3u8 parser and reading its fields raise on a malformed tag or URI."""


@contextlib.contextmanager
def malformed(url: str) -> Iterator[None]:
    """A malformed playlist (a tag's value that is not a number, a date out of range, a URI
    that does not parse) is a BadReference naming it, not an error of the caller."""
    try:
        yield
    except MALFORMED as exc:
        raise BadReference(f"{url}: malformed playlist: {type(exc).__name__}: {exc}") from None


MAX_SEQ = 2**63 - 1
RESTART_GAP = 100
"""A media sequence this far below the next one expected is a restarted packager."""


@dataclass(frozen=True, slots=True)
class Variant:
    url: str
    rendition: str
    bitrate: int | None
    resolution: tuple[int, int] | None = None
    """The master's RESOLUTION of this variant, when it says."""


def stream_name(entry: HlsPlaylist, is_master: bool) -> str:
    if entry.stream:
        return entry.stream
    path = PurePosixPath(urllib.parse.urlsplit(entry.url).path)
    parent = path.parent if is_master else path.parent.parent
    return parent.name or urllib.parse.urlsplit(entry.url).hostname or "hls"


def media_name(url: str) -> str:
    path = PurePosixPath(urllib.parse.urlsplit(url).path)
    return path.parent.name if path.stem in GENERIC_NAMES and path.parent.name else path.stem


def top_resolution(found: list[Variant]) -> tuple[int, int] | None:
    """The ladder's top rung's size (the largest RESOLUTION the master lists), which is
    what a player shows every rendition at; None when the master lists none."""
    # a RESOLUTION out of range says nothing (and would make a header every segment fails)
    return largest_display(v.resolution for v in found if v.resolution)


def variants(master: m3u8.M3U8, url: str) -> list[Variant]:
    """The master's video variants, named after their directory or file (unique names)."""
    with malformed(url):
        return _variants(master, url)


def _variants(master: m3u8.M3U8, url: str) -> list[Variant]:
    out: list[Variant] = []
    master_dir = PurePosixPath(urllib.parse.urlsplit(url).path).parent
    for i, p in enumerate(master.playlists):
        info = p.stream_info
        codecs = (info.codecs or "").lower()
        if codecs and not any(c in codecs for c in ("avc", "hvc", "hev", "vp0", "av01", "mp4v")):
            continue  # an audio-only variant: nothing to screen
        absolute = urllib.parse.urljoin(url, p.uri)
        vdir = PurePosixPath(urllib.parse.urlsplit(absolute).path).parent
        name = vdir.name if vdir != master_dir else media_name(absolute)
        if not name or any(v.rendition == name for v in out):
            name = f"{info.resolution[1]}p" if info.resolution else f"v{i}"
        if any(v.rendition == name for v in out):
            name = f"v{i}"
        size = (int(info.resolution[0]), int(info.resolution[1])) if info.resolution else None
        bw = info.bandwidth
        bitrate = bw if isinstance(bw, int) and 1 <= bw <= MAX_BITRATE else None
        out.append(Variant(absolute, name.replace("/", "_")[:200], bitrate, size))
    return out


@dataclass
class MediaState:
    """Where reading one media playlist has got to."""

    url: str
    stream: str
    rendition: str
    bitrate: int | None
    display: tuple[int, int] | None = None
    """The size a player shows the stream at: the master's largest RESOLUTION."""
    next_seq: int | None = None
    """The first media sequence number not handed on yet (None: not read yet)."""
    init_uri: str | None = None
    ended: bool = False
    missed: int = 0
    next_poll: float = 0.0
    restarts: int = 0
    """Times its media sequence went back to a new numbering (a restarted packager)."""
    backlog: deque[NewSegment] = field(default_factory=deque)
    """Segments of the last reading not handed on yet (the buffer was full). They are
    fetched as room frees; the playlist itself is read again only at `next_poll` (a live
    playlist behind a slow pipeline was fetched at every free slot, up to 50 times a
    second) and never again once it carries EXT-X-ENDLIST (a long VOD playlist parsed
    again at every free slot cost a core)."""
    endlist: bool = False
    """The last reading carried EXT-X-ENDLIST: the playlist ends once its backlog does."""
    reread_at: float = float("-inf")
    """When a segment gone from the origin last had the playlist read again out of turn
    (at most once a poll interval)."""


@dataclass(frozen=True, slots=True)
class NewSegment:
    seq: int
    url: str
    init_url: str | None
    duration_s: float
    timestamp_ms: int | None
    unsupported: str | None
    """Why it cannot be fetched (encrypted, byte range), or None."""


def new_segments(state: MediaState, playlist: m3u8.M3U8, start: str) -> list[NewSegment]:
    """Segments of `playlist` after `state.next_seq`; counts those that left the window
    unread. A window RESTART_GAP or more below the next seq expected is a restarted
    packager numbering from the start again: read from its first segment."""
    with malformed(state.url):
        return _new_segments(state, playlist, start)


def _new_segments(state: MediaState, playlist: m3u8.M3U8, start: str) -> list[NewSegment]:
    first = int(playlist.media_sequence or 0)
    segs = list(playlist.segments)
    if not 0 <= first <= MAX_SEQ - len(segs):
        raise ValueError(f"EXT-X-MEDIA-SEQUENCE {str(first)[:30]} is out of 0-{MAX_SEQ}")
    if state.next_seq is not None and state.next_seq - (first + len(segs)) >= RESTART_GAP:
        state.next_seq, state.restarts = first, state.restarts + 1
    if state.next_seq is None:
        state.next_seq = first + max(0, len(segs) - 1) if start == "live" else first
    if first > state.next_seq:
        state.missed += first - state.next_seq
        state.next_seq = first
    out = []
    for i, seg in enumerate(segs):
        seq = first + i
        if seq < state.next_seq:
            continue
        init = seg.init_section
        why = None
        if seg.key is not None and (seg.key.method or "NONE").upper() != "NONE":
            why = f"encrypted segment (EXT-X-KEY METHOD={seg.key.method}) is not supported"
        elif seg.byterange:
            why = "byte-range segments (EXT-X-BYTERANGE) are not supported"
        pdt = seg.current_program_date_time
        out.append(
            NewSegment(
                seq,
                seg.absolute_uri,
                init.absolute_uri if init is not None else None,
                float(seg.duration or 0.0),
                int(pdt.timestamp() * 1000) if pdt is not None else None,
                why,
            )
        )
    return out


def content_type(url: str, served: str | None) -> str | None:
    suffix = PurePosixPath(urllib.parse.urlsplit(url).path).suffix.lower()
    return CONTENT_TYPES.get(suffix) or served

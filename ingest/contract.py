"""The segment message contract, both sides: parse a consumed record, build one to publish.

No Kafka client here (decode workers import this): a record is a key, a value and a list
of headers. Contract (docs/topics.md): value = segment bytes or a JSON reference
{"uri": ...}; headers `stream`, `rendition`, `seq`, `bitrate`, `init` ("1" marks a
CMAF init segment, cached per stream/rendition), `content-type`, `display` ("WxH": the
size the rendition is shown at, usually the ladder's top rung).
The key is "<stream>/<rendition>" and stands in for missing stream/rendition headers.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from ingest.reference import parse_reference
from ingest.types import IngestError, Segment

Headers = Sequence[tuple[str, bytes | None]]


class BadHeader(IngestError):
    reason = "bad_header"


@dataclass(frozen=True, slots=True)
class SegmentJob:
    """What a decode worker needs: the segment, or a reference it must fetch first."""

    segment: Segment
    uri: str | None = None


@dataclass(frozen=True, slots=True)
class InitSegment:
    """A CMAF init segment to cache for its stream/rendition (no verdict is made for it)."""

    stream: str
    rendition: str
    data: bytes


@dataclass(frozen=True, slots=True)
class SegmentMessage:
    """A record to publish on the segments topic (producer side of the contract)."""

    key: bytes
    value: bytes
    headers: list[tuple[str, bytes]]


def segment_message(
    data: bytes,
    *,
    stream: str,
    rendition: str,
    seq: int,
    bitrate: int | None = None,
    content_type: str | None = "video/mp2t",
    init: bool = False,
    display: tuple[int, int] | None = None,
) -> SegmentMessage:
    """The record that carries `data` (segment bytes, or a JSON reference) for one rendition."""
    for name, text in (("stream", stream), ("rendition", rendition)):
        _check_name(name, text, "")
    headers = [("stream", stream.encode()), ("rendition", rendition.encode())]
    if not init:
        headers.append(("seq", str(int(seq)).encode()))
    if bitrate is not None:
        headers.append(("bitrate", str(int(bitrate)).encode()))
    if content_type:
        headers.append(("content-type", content_type.encode()))
    if init:
        headers.append(("init", b"1"))
    if display is not None:
        headers.append(("display", f"{int(display[0])}x{int(display[1])}".encode()))
    return SegmentMessage(f"{stream}/{rendition}".encode(), data, headers)


def header_map(headers: Headers | None) -> dict[str, bytes]:
    return {k.lower(): v for k, v in (headers or []) if v is not None}


def _text(value: bytes, name: str, source: str) -> str:
    try:
        return value.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise BadHeader(f"header {name!r} is not UTF-8 text", source=source) from None


def _int(value: bytes, name: str, source: str) -> int:
    text = _text(value, name, source)
    try:
        return int(text)
    except ValueError:
        raise BadHeader(
            f"header {name!r} must be an integer, got {text[:40]!r}", source=source
        ) from None


MAX_DISPLAY_SIDE = 16384
MAX_BITRATE = 10**12
"""Bit/s beyond this (1 Tbit/s) are not a video bitrate."""


def is_display(size: tuple[int, int]) -> bool:
    """Whether a `display` header can carry this (width, height)."""
    return all(16 <= v <= MAX_DISPLAY_SIDE for v in size)


def largest_display(sizes: Iterable[tuple[int, int]]) -> tuple[int, int] | None:
    """The largest by area of the sizes a `display` header can carry (a ladder's top
    rung); None when there is none."""
    valid = [s for s in sizes if is_display(s)]
    return max(valid, key=lambda wh: wh[0] * wh[1]) if valid else None


def parse_display(text: str, source: str = "") -> tuple[int, int]:
    """'1920x1080' -> (1920, 1080); BadHeader for anything else."""
    w, sep, h = text.lower().partition("x")
    try:
        size = (int(w), int(h))
    except ValueError:
        size = (0, 0)
    if not sep or not is_display(size):
        raise BadHeader(
            f"display {text[:40]!r} must be WIDTHxHEIGHT with sides of 16-{MAX_DISPLAY_SIDE} "
            "pixels, e.g. 1920x1080",
            source=source,
        )
    return size


def _check_name(name: str, text: str, source: str) -> None:
    if len(text) > 200 or "/" in text:
        raise BadHeader(
            f"{name} {text[:40]!r} must be at most 200 chars without '/'", source=source
        )


def parse_message(
    key: bytes | None,
    value: bytes | None,
    headers: Headers | None,
    *,
    offset: int,
    source: str,
) -> SegmentJob | InitSegment:
    """Turn one consumed record into a decode job or an init segment.

    Bad input raises IngestError (and only that): the caller dead-letters the record.
    """
    h = header_map(headers)
    key_text = key.decode("utf-8", "replace") if key else ""
    key_stream, _, key_rendition = key_text.partition("/")
    stream = _text(h["stream"], "stream", source) if "stream" in h else key_stream
    rendition = _text(h["rendition"], "rendition", source) if "rendition" in h else key_rendition
    stream, rendition = stream or "default", rendition or "default"
    for name, text in (("stream", stream), ("rendition", rendition)):
        _check_name(name, text, source)
    # Without a seq header the offset stands in: a re-delivered message keeps its id.
    seq = _int(h["seq"], "seq", source) if "seq" in h else offset
    bitrate = _int(h["bitrate"], "bitrate", source) if "bitrate" in h else None
    content_type = _text(h["content-type"], "content-type", source) if "content-type" in h else None
    display = (
        parse_display(_text(h["display"], "display", source), source) if "display" in h else None
    )
    data = value or b""
    uri = parse_reference(data) if data else None
    is_init = "init" in h and _text(h["init"], "init", source) in ("1", "true")
    if is_init:
        if uri is not None:
            raise BadHeader("init segments must be sent inline, not as a reference", source=source)
        if not data:
            raise BadHeader("init segment (header init=1) with an empty value", source=source)
        return InitSegment(stream, rendition, data)
    segment = Segment(
        b"" if uri is not None else data,
        stream,
        rendition,
        seq,
        bitrate,
        content_type,
        None,
        source,
        display,
    )
    return SegmentJob(segment, uri)

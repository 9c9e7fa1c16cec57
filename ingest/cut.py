"""Cut a user's video file into contract segments: by stream copy at keyframes, or re-encoded
into a ladder of renditions with PyAV.

Pure media work (no Kafka, no files written): `cut_file` yields `Cut`s in publishing order
(for a ladder, every rendition of segment n before any of segment n + 1), each a complete
MPEG-TS file with its media start and duration, so a caller can publish them to Kafka,
write them as HLS, or both.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import av.error

from ingest.types import DecodeError, NoVideoStream

# Codecs MPEG-TS (and so HLS) carries: anything else is re-encoded.
TS_CODECS = frozenset({"h264", "hevc", "mpeg2video", "mpeg1video"})
_RATE = re.compile(r"^(\d+(?:\.\d+)?)([kKmM]?)$")


@dataclass(frozen=True, slots=True)
class Rung:
    """One rendition of a ladder: its name, picture size and target bitrate (bit/s)."""

    name: str
    width: int
    height: int
    bitrate: int | None
    """None: constant quality (CRF 23) instead of a bitrate."""


@dataclass(frozen=True, slots=True)
class Cut:
    """One segment of one rendition, ready to publish."""

    rendition: str
    seq: int
    data: bytes
    start_s: float
    """Media time of the segment's first frame, from the start of the file."""
    duration_s: float
    bitrate: int | None
    """Declared bitrate (the rung's target, or the source's overall bitrate when copied)."""
    width: int
    height: int


def parse_bitrate(text: str) -> int:
    """'3000k' -> 3000000, '2.5M' -> 2500000, '800000' -> 800000."""
    m = _RATE.match(text.strip())
    if m is None:
        raise ValueError(f"bitrate {text!r} must look like 800k, 3M or 800000 (bit/s)")
    scale = {"": 1, "k": 1000, "m": 1000000}[m.group(2).lower()]
    value = int(float(m.group(1)) * scale)
    if value < 10000:
        raise ValueError(f"bitrate {text!r} is below 10 kbit/s; write it like 800k")
    return value


def parse_ladder(text: str) -> list[Rung]:
    """'1280x720:3000k,640x360:800k' (optionally 'NAME=1280x720:3000k') -> rungs, named
    after their height ('720p') unless named."""
    rungs: list[Rung] = []
    for item in (i.strip() for i in text.split(",")):
        if not item:
            continue
        name, _, spec = item.rpartition("=")
        size, sep, rate = spec.partition(":")
        w, _, h = size.partition("x")
        if not (sep and w.isdigit() and h.isdigit()):
            raise ValueError(f"ladder rung {item!r} must look like 1280x720:3000k")
        width, height = int(w), int(h)
        if width < 16 or height < 16 or width % 2 or height % 2:
            raise ValueError(f"ladder rung {item!r}: width and height must be even and >= 16")
        rung = Rung(name or f"{height}p", width, height, parse_bitrate(rate))
        if "/" in rung.name or not rung.name:
            raise ValueError(f"ladder rung name {rung.name!r} must be non-empty without '/'")
        if any(r.name == rung.name for r in rungs):
            raise ValueError(
                f"two ladder rungs are named {rung.name!r}; name them (e.g. hi={spec})"
            )
        rungs.append(rung)
    if not rungs:
        raise ValueError("the ladder is empty; give at least one rung like 640x360:800k")
    return rungs


@dataclass(frozen=True, slots=True)
class SourceInfo:
    codec: str
    width: int
    height: int
    fps: Fraction
    bitrate: int | None
    duration_s: float


def probe(path: Path) -> SourceInfo:
    """What the file's first video stream is; DecodeError / NoVideoStream say why not."""
    with _open(path) as container:
        video = container.streams.video[0]
        return _info(container, video)


def _open(path: Path) -> av.container.InputContainer:
    if not path.is_file():
        raise DecodeError("no such file", source=str(path))
    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, OSError, UnicodeDecodeError) as exc:
        raise DecodeError(f"not a video file PyAV can read ({exc})", source=str(path)) from exc
    if not container.streams.video:
        container.close()
        raise NoVideoStream(
            "no video stream (audio-only or data-only); vqmon screens video",
            source=str(path),
        )
    return container


def _info(container: av.container.InputContainer, video: av.VideoStream) -> SourceInfo:
    rate = video.average_rate or video.guessed_rate
    fps = Fraction(rate) if rate and 1 <= rate <= 240 else Fraction(25)
    duration = float(container.duration / av.time_base) if container.duration else 0.0
    bitrate = video.bit_rate or container.bit_rate or None
    cc = video.codec_context
    return SourceInfo(cc.name, cc.width, cc.height, fps, bitrate, duration)


def cut_file(
    path: Path,
    segment_s: float = 2.0,
    *,
    ladder: list[Rung] | None = None,
    reencode: bool = False,
    rendition: str = "source",
    preset: str = "veryfast",
) -> Iterator[Cut]:
    """Segments of about `segment_s` seconds. Without a ladder the packets are copied and cut
    at keyframes (re-encoded at the source size when `reencode` or when MPEG-TS cannot
    carry the codec); with one every rung is encoded from the decoded frames, with a
    keyframe starting each segment, so segment n covers the same frames on every rung."""
    if segment_s <= 0:
        raise ValueError("the segment duration must be positive")
    info = probe(path)
    if ladder is None and not reencode and info.codec in TS_CODECS:
        yield from _cut_copy(path, segment_s, rendition, info)
        return
    even = Rung(rendition, info.width - info.width % 2, info.height - info.height % 2, None)
    rungs = ladder or [even]
    yield from _cut_encoded(path, segment_s, rungs, info, preset)


def _cut_copy(path: Path, segment_s: float, rendition: str, info: SourceInfo) -> Iterator[Cut]:
    with _open(path) as container:
        video = container.streams.video[0]
        tb = video.time_base or Fraction(1, 90000)
        seq, first, start, end = 0, None, 0.0, 0.0
        buf = io.BytesIO()
        out: av.container.OutputContainer | None = None
        out_stream = None
        try:
            for packet in container.demux(video):
                if packet.dts is None or packet.size == 0:
                    continue
                t = float((packet.pts if packet.pts is not None else packet.dts) * tb)
                first = t if first is None else first
                if packet.is_keyframe and (out is None or t - start >= segment_s):
                    if out is not None:
                        out.close()
                        yield _copied(buf, info, rendition, seq, start - first, t - start)
                        seq += 1
                    buf = io.BytesIO()
                    out = av.open(buf, mode="w", format="mpegts")
                    out_stream = out.add_stream_from_template(video)
                    start = t
                if out is None or out_stream is None:
                    continue  # leading packets before the first keyframe cannot decode alone
                end = max(end, t + float((packet.duration or 0) * tb))
                packet.stream = out_stream
                out.mux(packet)
        except av.error.FFmpegError as exc:
            raise DecodeError(f"reading failed: {exc}", source=str(path)) from exc
        if out is not None and first is not None:
            out.close()
            yield _copied(
                buf, info, rendition, seq, start - first, max(end - start, float(1 / info.fps))
            )


def _copied(
    buf: io.BytesIO, info: SourceInfo, rendition: str, seq: int, start: float, duration: float
) -> Cut:
    return Cut(
        rendition, seq, buf.getvalue(), start, duration, info.bitrate, info.width, info.height
    )


class _RungEncoder:
    """Encodes one rung, one MPEG-TS file per segment, timestamps running on across them."""

    def __init__(self, rung: Rung, fps: Fraction, gop: int, preset: str) -> None:
        self.rung, self.fps, self.gop, self.preset = rung, fps, gop, preset
        self._buf = io.BytesIO()
        self._out: av.container.OutputContainer | None = None
        self._stream: av.VideoStream | None = None

    def encode(self, frame: av.VideoFrame, index: int) -> None:
        if self._out is None:
            self._open()
        assert self._out is not None and self._stream is not None
        scaled = frame.reformat(self.rung.width, self.rung.height, format="yuv420p")
        scaled.pts, scaled.time_base = index, 1 / self.fps
        for packet in self._stream.encode(scaled):
            self._out.mux(packet)

    def _open(self) -> None:
        self._buf = io.BytesIO()
        # Timestamps run on from segment to segment: no per-file shift to make them >= 0.
        self._out = av.open(
            self._buf, mode="w", format="mpegts", options={"avoid_negative_ts": "disabled"}
        )
        stream = self._out.add_stream("libx264", rate=self.fps)
        stream.width, stream.height = self.rung.width, self.rung.height
        stream.pix_fmt = "yuv420p"
        stream.time_base = 1 / self.fps
        stream.codec_context.gop_size = self.gop
        options: dict[str, object] = {"preset": self.preset, "sc_threshold": "0"}
        if self.rung.bitrate is not None:
            stream.bit_rate = self.rung.bitrate
            # A live encoder's VBV: the rate holds over about a second, not the whole file.
            options["maxrate"] = str(int(self.rung.bitrate * 1.2))
            options["bufsize"] = str(self.rung.bitrate)
        else:
            options["crf"] = "23"
        stream.options = options
        self._stream = stream

    def finish(self) -> bytes:
        if self._out is None or self._stream is None:
            return b""
        for packet in self._stream.encode(None):
            self._out.mux(packet)
        self._out.close()
        self._out = self._stream = None
        return self._buf.getvalue()


def _cut_encoded(
    path: Path, segment_s: float, rungs: list[Rung], info: SourceInfo, preset: str
) -> Iterator[Cut]:
    per_segment = max(1, round(segment_s * info.fps))
    encoders = [_RungEncoder(r, info.fps, per_segment, preset) for r in rungs]
    index = 0
    with _open(path) as container:
        video = container.streams.video[0]
        video.thread_type = "AUTO"
        for frame in _frames(container, video, path):
            for enc in encoders:
                enc.encode(frame, index)
            index += 1
            if index % per_segment == 0:
                yield from _close_segment(encoders, index // per_segment - 1, per_segment, info)
    if index % per_segment:
        yield from _close_segment(encoders, index // per_segment, index % per_segment, info)
    if index == 0:
        raise DecodeError("no frame could be decoded", source=str(path))


def _frames(
    container: av.container.InputContainer, video: av.VideoStream, path: Path
) -> Iterator[av.VideoFrame]:
    """Decoded frames; a packet that does not decode is skipped (a damaged file still cuts)."""
    try:
        for packet in container.demux(video):
            try:
                yield from packet.decode()
            except av.error.InvalidDataError:
                continue
    except av.error.FFmpegError as exc:
        raise DecodeError(f"reading failed: {exc}", source=str(path)) from exc


def _close_segment(
    encoders: list[_RungEncoder], seq: int, frames: int, info: SourceInfo
) -> Iterator[Cut]:
    per_segment = encoders[0].gop
    start = float(seq * per_segment / info.fps)
    duration = float(frames / info.fps)
    for enc in encoders:
        r = enc.rung
        yield Cut(r.name, seq, enc.finish(), start, duration, r.bitrate, r.width, r.height)

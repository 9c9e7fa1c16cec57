"""Cut a long media file into segments by stream copy (no re-encode), at keyframes."""

from __future__ import annotations

import io
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import av
import av.error

from ingest.config import LimitsConfig
from ingest.types import DecodeError, DecoderFault, IngestError, NoDecoder, NoVideoStream, Segment

DEFAULT_MAX_PIXELS = LimitsConfig().max_pixels
_TS_CODECS = {"h264", "hevc", "mpeg2video", "mpeg1video"}


def probe_duration(path: Path, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> float:
    """Media duration in seconds, or 0.0 when the container does not say or is unreadable."""
    try:
        with av.open(str(path), options={"max_pixels": str(max_pixels)}) as container:
            if container.duration is not None:
                return float(container.duration / av.time_base)
            video = container.streams.video
            if video and video[0].duration is not None and video[0].time_base is not None:
                return float(video[0].duration * video[0].time_base)
    except (av.error.FFmpegError, OSError, ValueError, ArithmeticError, AttributeError):
        return 0.0
    return 0.0


def split_file(
    path: Path,
    segment_duration_s: float,
    *,
    stream: str | None = None,
    rendition: str = "source",
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> Iterator[Segment]:
    """Yield segments of about `segment_duration_s`, each starting on a keyframe.

    H.264/HEVC/MPEG-2 go into MPEG-TS (what live streaming sends); other codecs into Matroska.
    Raises only IngestError subclasses for a bad file (an unexpected exception from
    PyAV becomes DecoderFault). The file is opened with every FFmpeg demuxer: this is
    for local files the operator chose (`vqmon score`), never for published bytes.
    """
    try:
        yield from _split(path, segment_duration_s, stream, rendition, max_pixels)
    except (IngestError, GeneratorExit):
        raise
    except Exception as exc:
        raise DecoderFault(
            f"cutting it into segments failed ({type(exc).__name__}: {str(exc)[:200]})",
            source=str(path),
        ) from exc


def _split(
    path: Path, segment_duration_s: float, stream: str | None, rendition: str, max_pixels: int
) -> Iterator[Segment]:
    name = stream or path.stem
    try:
        # max_pixels: FFmpeg's probing must not decode a bomb at its claimed size.
        container = av.open(str(path), options={"max_pixels": str(max_pixels)})
    except (av.error.FFmpegError, OSError) as exc:
        raise DecodeError(f"cannot open {path}: {exc}", source=str(path)) from exc
    with container:
        if not container.streams.video:
            raise NoVideoStream(
                "no video stream (audio-only or data-only file); vqmon scores video",
                source=str(path),
            )
        video = container.streams.video[0]
        if video.codec_context is None:
            raise NoDecoder(
                "the video stream's codec has no decoder in this FFmpeg build", source=str(path)
            )
        fmt = "mpegts" if video.codec_context.name in _TS_CODECS else "matroska"
        time_base = video.time_base or Fraction(1, 90000)
        seq = 0
        out: av.container.OutputContainer | None = None
        buf = io.BytesIO()
        out_stream = None
        seg_start = 0.0
        try:
            for packet in container.demux(video):
                if packet.dts is None or packet.size == 0:
                    continue
                t = float((packet.pts if packet.pts is not None else packet.dts) * time_base)
                if packet.is_keyframe and (out is None or t - seg_start >= segment_duration_s):
                    if out is not None:
                        out.close()
                        yield Segment(buf.getvalue(), name, rendition, seq, source=f"{path}#{seq}")
                        seq += 1
                    buf = io.BytesIO()
                    out = av.open(buf, mode="w", format=fmt)
                    out_stream = out.add_stream_from_template(video)
                    seg_start = t
                if out is None or out_stream is None:
                    continue  # leading packets before the first keyframe cannot decode alone
                packet.stream = out_stream
                out.mux(packet)
        except av.error.FFmpegError as exc:
            raise DecodeError(f"reading {path} failed: {exc}", source=str(path)) from exc
        if out is not None:
            out.close()
            yield Segment(buf.getvalue(), name, rendition, seq, source=f"{path}#{seq}")

"""Decode one segment from memory with PyAV into stream info, sampled RGB frames and luma stats.

Contract of the public functions: for bad input (any bytes a publisher can send) only
an `IngestError` subclass escapes, with a stable `reason` and a sentence saying what is
wrong; never another exception type.

Only three container families are opened, each with its demuxer named explicitly
(`sniff_container` reads the magic bytes): MPEG-TS, ISO-BMFF (MP4, fMP4/CMAF) and
Matroska/WebM. FFmpeg never probes the bytes itself, so text formats that name other
files (ffconcat, HLS playlists), images and the other few hundred demuxers are never
reached, and nested opens (a demuxer opening another file) are refused.

Limits are checked as early as the information exists: size and container before
opening; FFmpeg's own `max_pixels` while it probes the stream at open (so a header that
claims 16000x16000 is refused before a picture is allocated: PyAV passes it only to the
streams the demuxer lists before the probe, so an MPEG-TS segment is first rebuilt as
the one programme its PAT and PMT declare, ingest/tsguard.py, and an ISO-BMFF one has
its boxes walked, ingest/bmff.py), resolution and the bytes the sampled frames would
take from the header before decoding, frame count and duration while demuxing, wall
time while decoding. A hang inside FFmpeg itself is beyond a
cooperative deadline; the daemon's decode workers are processes watched from outside
for that reason.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import av
import av.error
import av.logging
import numpy as np
import numpy.typing as npt
from av.sidedata.encparams import VideoEncParams, VideoEncParamsType
from av.sidedata.sidedata import Type as SideDataType
from av.video.reformatter import VideoReformatter

from ingest.bmff import bmff_problem
from ingest.config import DecodeConfig
from ingest.tsguard import TransportProblem, single_programme
from ingest.types import (
    DecodedSegment,
    DecodeError,
    DecoderFault,
    DecodeTimeout,
    EmptySegment,
    FrameStats,
    IngestError,
    LimitExceeded,
    MissingInitSegment,
    NoDecoder,
    NoVideoStream,
    PacketStats,
    SampledFrame,
    Segment,
    StreamInfo,
    UnsupportedContainer,
)

# Luma statistics are taken on a grid of every step-th row and column, the step growing
# with the picture so a frame of any size gives about as many samples as a 360p frame
# on a 1-in-4 grid (14,400): enough for black/freeze decisions (means and fractions over
# the grid), at a fraction of the cost of full planes. They run on every frame.
STATS_STEP = 4
STATS_ROWS = 360


def stats_step(height: int) -> int:
    return STATS_STEP * max(1, height // STATS_ROWS)


_FRAGMENT_BOXES = {b"moof", b"styp", b"sidx", b"emsg", b"prft"}

# Top-level ISO-BMFF boxes a segment or file can start with.
_BMFF_FIRST_BOXES = _FRAGMENT_BOXES | {
    b"ftyp",
    b"moov",
    b"mdat",
    b"free",
    b"skip",
    b"wide",
    b"uuid",
    b"pdin",
    b"meta",
}
_EBML_MAGIC = b"\x1a\x45\xdf\xa3"
_TS_PACKET = 188

# The only FFmpeg demuxers a segment may reach (FFmpeg's names).
DEMUXERS = ("mpegts", "mov", "matroska")
CONTAINER_NAMES = "MPEG-TS, ISO-BMFF (MP4, fMP4/CMAF) or Matroska/WebM"

# AVColorTransferCharacteristic values worth naming (libavutil/pixfmt.h).
_TRANSFER_NAMES = {
    1: "bt709",
    4: "gamma22",
    5: "gamma28",
    6: "smpte170m",
    7: "smpte240m",
    8: "linear",
    13: "iec61966-2-1",
    14: "bt2020-10",
    15: "bt2020-12",
    16: "smpte2084",
    18: "arib-std-b67",
}


def top_level_boxes(data: bytes) -> Iterator[bytes]:
    """ISO-BMFF top-level box types, stopping at the first malformed size."""
    pos = 0
    while pos + 8 <= len(data):
        size = int.from_bytes(data[pos : pos + 4], "big")
        kind = data[pos + 4 : pos + 8]
        if size == 1 and pos + 16 <= len(data):
            size = int.from_bytes(data[pos + 8 : pos + 16], "big")
        elif size == 0:
            size = len(data) - pos
        if size < 8 or not kind.isascii():
            return
        yield kind
        pos += size


def is_media_fragment(data: bytes) -> bool:
    """True for a CMAF/fMP4 media segment (moof/mdat without a moov)."""
    if len(data) < 8 or data[4:8] not in _FRAGMENT_BOXES | {b"moof"}:
        return False
    return b"moov" not in set(top_level_boxes(data))


def is_init_segment(data: bytes) -> bool:
    """True for a CMAF init segment: a moov and no media fragment."""
    boxes = set(top_level_boxes(data))
    return b"moov" in boxes and b"moof" not in boxes and b"mdat" not in boxes


def sniff_container(data: bytes) -> str | None:
    """The FFmpeg demuxer for `data` by its magic bytes (one of DEMUXERS), or None."""
    if data[:4] == _EBML_MAGIC:
        return "matroska"
    if len(data) >= 8 and data[4:8] in _BMFF_FIRST_BOXES:
        return "mov"
    if _looks_like_ts(data):
        return "mpegts"
    return None


def _looks_like_ts(data: bytes) -> bool:
    # Sync bytes 188 apart from the first byte on (up to four packets): a segment cut by a
    # packager starts on a packet boundary.
    if not data or data[0] != 0x47:
        return False
    checks = range(_TS_PACKET, min(len(data), 4 * _TS_PACKET), _TS_PACKET)
    return all(data[i] == 0x47 for i in checks)


def _refuse_nested_open(url: str, flags: int, options: dict[str, str]) -> None:
    raise PermissionError("vqmon opens no file or URL named inside a segment")


def open_container(
    data: bytes, max_pixels: int, source: str = "", cfg: DecodeConfig | None = None
) -> av.container.InputContainer:
    """Open segment bytes with an allow-listed demuxer; raise an IngestError subclass.

    The demuxer is chosen from the magic bytes, FFmpeg's `format_whitelist` holds it to
    DEMUXERS, nested opens are refused, and `max_pixels` reaches the decoders FFmpeg
    runs while probing the stream.
    """
    fmt = sniff_container(data)
    if fmt is None:
        raise UnsupportedContainer(
            f"not an {CONTAINER_NAMES} segment (first bytes {data[:8].hex() or 'none'}); "
            "publish one of those containers",
            source=source,
        )
    if fmt == "mov":
        problem = bmff_problem(data)
        if problem is not None:
            raise DecodeError(
                f"malformed ISO-BMFF: {problem}; the segment is corrupt", source=source
            )
    if fmt == "mpegts":
        try:
            data = single_programme(data)
        except TransportProblem as exc:
            raise DecodeError(f"malformed MPEG-TS: {exc}", source=source) from exc
    container_options = {"format_whitelist": ",".join(DEMUXERS), "protocol_whitelist": "none"}
    if fmt == "mov":
        container_options["enable_drefs"] = "0"  # data references name other files
    global hw_fallback_reason

    def open_with(hw: Any) -> av.container.InputContainer:
        return av.open(
            io.BytesIO(data),
            mode="r",
            format=fmt,
            # The probe (avformat_find_stream_info) decodes up to 7 frames of H.264 to
            # guess its reorder delay, which timestamps in TS and MP4 make needless:
            # skipping its decoding makes the open ~10x cheaper. Dimensions still come
            # from the parsers, the pixel format from the real decoder's first frame.
            options={"max_pixels": str(max_pixels), "skip_frame": "all"},
            container_options=container_options,
            io_open=_refuse_nested_open,
            **({} if hw is None else {"hwaccel": hw}),
        )

    try:
        hw = _hwaccel(cfg)
        if hw is not None:
            try:
                container = open_with(hw)
            except OSError as exc:  # the device cannot be opened: no GPU, no driver
                _hw_failed_at["cuda"] = time.monotonic()
                hw_fallback_reason = f"cuda device unavailable ({exc}); decoding in software"
            else:
                hw_fallback_reason = None
                return container
        return open_with(None)
    except (av.error.FFmpegError, ValueError, OSError) as exc:
        raise DecodeError(
            f"cannot open it as {fmt} ({_ffmpeg_reason(exc)}); expected a complete "
            f"{CONTAINER_NAMES} segment",
            source=source,
        ) from exc


def _ffmpeg_reason(exc: BaseException) -> str:
    # PyAV's messages end with the file name, which for bytes in memory says nothing.
    text = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
    return text.split(": '", 1)[0][:200]


def decode(segment: Segment, config: DecodeConfig | None = None) -> DecodedSegment:
    """Decode `segment` (bytes in memory) according to `config`.

    Raises only IngestError subclasses for bad input: an exception of another type from
    PyAV or FFmpeg on hostile bytes is turned into `DecoderFault`, so one input can never
    stop the caller.
    """
    cfg = config or DecodeConfig()
    started = time.monotonic()
    data = _assemble(segment, cfg)
    with _ffmpeg_errors() as logs:
        try:
            return _decode_bytes(data, segment, cfg, started)
        except LimitExceeded:
            raise
        except DecodeError:
            # FFmpeg refuses an oversized picture with EINVAL; its log says why.
            size = _refused_size(logs)
            if size is None:
                raise
            w, h = size
            _check_pixels(w, h, cfg.limits.max_pixels, segment.source)
            raise


@contextlib.contextmanager
def _ffmpeg_errors() -> Iterator[list[tuple[int, str, str]]]:
    """FFmpeg's error messages (from every thread: frame threads log too) while the block runs."""
    level = av.logging.get_level()
    if level is None or level < av.logging.ERROR:
        av.logging.set_level(av.logging.ERROR)
    try:
        with av.logging.Capture(local=False) as logs:
            yield logs
    finally:
        av.logging.set_level(level)


_MAX_PIXELS_LOG = re.compile(r"Picture size (\d+)x(\d+) exceeds specified max pixel count")


def _refused_size(logs: list[tuple[int, str, str]]) -> tuple[int, int] | None:
    for _, _, message in logs:
        m = _MAX_PIXELS_LOG.search(message)
        if m:
            return int(m.group(1)), int(m.group(2))
    return None


def _decode_bytes(
    data: bytes, segment: Segment, cfg: DecodeConfig, started: float
) -> DecodedSegment:
    container: av.container.InputContainer | None = None
    try:  # opening too: the checks before FFmpeg read hostile bytes as well
        container = open_container(data, cfg.limits.max_pixels, segment.source, cfg)
        try:
            return _decode_open(container, segment, cfg, started)
        except _DecodeInFull:
            # Skipping frames met damage or a timeline it could not place: decode every
            # frame, as a plain decode would, so nothing about the damage is lost.
            container.close()
            container = open_container(data, cfg.limits.max_pixels, segment.source, cfg)
            in_full = cfg.model_copy(update={"skip_nonref": False})
            return _decode_open(container, segment, in_full, started)
    except IngestError:
        raise
    except av.error.FFmpegError as exc:
        raise DecodeError(f"decoding failed: {_ffmpeg_reason(exc)}", source=segment.source) from exc
    except Exception as exc:  # hostile bytes can reach corners of PyAV that raise anything
        raise DecoderFault(
            f"the decoder failed on this input ({type(exc).__name__}: {str(exc)[:200]}); "
            "the segment is malformed",
            source=segment.source,
        ) from exc
    finally:
        if container is not None:
            container.close()


# Per process: once a hardware device has failed to open, software decoding is used
# without trying again on every segment; retried after this many seconds.
_HW_RETRY_S = 300.0
_hw_failed_at: dict[str, float] = {}
hw_fallback_reason: str | None = None
"""Why the last hwaccel attempt in this process fell back to software (None when it ran)."""


def _hwaccel(cfg: DecodeConfig | None) -> Any:
    """The HWAccel to open with, or None (software, or the device failed recently)."""
    kind = "cuda" if cfg is not None and cfg.hwaccel in ("cuda", "auto") else None
    if kind is None or time.monotonic() - _hw_failed_at.get(kind, -1e9) < _HW_RETRY_S:
        return None
    from av.codec.hwaccel import HWAccel

    return HWAccel(kind, device=cfg.hwaccel_device, allow_software_fallback=True)  # type: ignore[union-attr]


def _assemble(segment: Segment, cfg: DecodeConfig) -> bytes:
    data = segment.data
    if not data:
        raise EmptySegment(
            "segment is empty (0 bytes); the publisher sent no payload", source=segment.source
        )
    total = len(data) + len(segment.init or b"")
    if total > cfg.limits.max_bytes:
        raise LimitExceeded(
            f"segment is {total} bytes, over limits.max_bytes={cfg.limits.max_bytes}; "
            "send it as a JSON reference or raise the limit",
            source=segment.source,
        )
    if is_media_fragment(data):
        if segment.init is None:
            raise MissingInitSegment(
                "fMP4/CMAF media fragment without its init segment: publish the rendition's "
                "init segment (header init=1) before its media segments, or pass it with --init",
                source=segment.source,
            )
        return segment.init + data
    if segment.init is not None and _looks_like_ts(segment.init) and _looks_like_ts(data):
        return segment.init + data  # an init section (EXT-X-MAP) holding the PAT and PMT
    return data


def _decode_open(
    container: av.container.InputContainer, segment: Segment, cfg: DecodeConfig, started: float
) -> DecodedSegment:
    limits = cfg.limits
    deadline = started + limits.decode_timeout_s
    if not container.streams.video:
        raise NoVideoStream(
            "no video stream in the segment (audio-only or data-only); vqmon scores video "
            "renditions: publish the video rendition instead",
            source=segment.source,
        )
    decodable = [s for s in container.streams.video if s.codec_context is not None]
    if not decodable:
        raise NoDecoder(
            "the video stream's codec has no decoder in this FFmpeg build (or its codec "
            "parameters are damaged); publish H.264, HEVC or another codec FFmpeg decodes",
            source=segment.source,
        )
    stream = decodable[0]
    ctx = stream.codec_context
    width, height = int(ctx.width or 0), int(ctx.height or 0)
    _check_pixels(width, height, limits.max_pixels, segment.source)
    # The decoder opened for real decoding refuses bigger pictures by itself too.
    ctx.options = {**ctx.options, "max_pixels": str(limits.max_pixels)}
    if cfg.bitstream_qp:
        ctx.options = {**ctx.options, "export_side_data": "venc_params"}
    # Frame threads race with the exported quantiser (the same bytes read a mean QP up to 2
    # apart from one decode to the next with 3 or more of them), and slice threads lose
    # the corrupt-frame marks of concealed frames: with the quantiser on, one thread.
    threads = 1 if cfg.bitstream_qp else cfg.threads
    ctx.thread_count = threads
    ctx.thread_type = "AUTO" if threads != 1 else "SLICE"
    keyframes_only = cfg.sampling.mode == "keyframes"
    if keyframes_only:
        ctx.skip_frame = "NONKEY"

    packets = _demux(container, stream, segment, cfg, deadline)
    time_base = stream.time_base or Fraction(1, 90000)
    n_packets = len(packets)
    wanted = _wanted_indices(n_packets, cfg) if not keyframes_only else None
    plan = _skip_plan(packets, wanted, cfg, _fps(stream)) if wanted is not None else None
    kept_max = n_packets if wanted is None and not keyframes_only else cfg.sampling.count
    kept_max = min(kept_max, n_packets)
    _check_rgb_bytes(
        kept_max * width * height * 3,
        f"{kept_max} sampled {width}x{height} RGB frames",
        limits.max_decoded_bytes,
        segment,
    )
    kept_bytes = 0

    frames: list[SampledFrame] = []
    rows: list[Row] = []
    indices: list[int] = []  # each row's display index (skipping frames leaves holes)
    qps: list[float] = []
    prev: np.ndarray | None = None
    decode_errors = 0
    errors: list[str] = []
    first_frame: av.VideoFrame | None = None
    first_thumb: npt.NDArray[np.uint8] | None = None
    head_thumbs: dict[int, npt.NDArray[np.uint8] | None] = {}
    last: tuple[int, float, av.VideoFrame] | None = None
    # One converter for the segment: `frame.to_ndarray(format=...)` builds a new swscale
    # context for every frame (each frame carries its own reformatter), 0.7-2.5 ms a
    # sampled frame here, more than the conversion; this one keeps its context.
    to_rgb = VideoReformatter()

    tb = float(time_base)

    def consume(frame: av.VideoFrame) -> None:
        nonlocal prev, first_frame, first_thumb, kept_bytes, last
        if frame.width * frame.height > limits.max_pixels:
            _check_pixels(frame.width, frame.height, limits.max_pixels, segment.source)
        if first_frame is None:
            first_frame = frame
        index = len(rows) if plan is None else plan.display_index(frame.pts, indices)
        luma, scale = _luma(frame)
        mean, std, diff, dark, lumaf = _luma_stats(luma, scale, prev, cfg.dark_pixel_threshold)
        small = thumb(lumaf) if first_frame is frame or index < HEAD_FRAMES else None
        if first_frame is frame:
            first_thumb = small
        if index < HEAD_FRAMES:  # whether the segment's first frames show one picture
            head_thumbs[index] = small
        prev = lumaf
        pts = frame.pts * tb if frame.pts is not None else index / _fps(stream)
        last = (index, pts, frame)
        key = bool(frame.key_frame)
        rows.append((pts, mean, std, diff, dark, key, bool(frame.is_corrupt)))
        if cfg.bitstream_qp:
            qps.append(frame_qp(frame) if key or index % QP_EVERY == 0 else float("nan"))
        keep = (
            key and len(frames) < cfg.sampling.count
            if keyframes_only
            else (wanted is None or index in wanted)
        )
        if keep:
            kept_bytes += frame.width * frame.height * 3
            _check_rgb_bytes(
                kept_bytes,
                f"{len(frames) + 1} sampled RGB frames",
                limits.max_decoded_bytes,
                segment,
            )
            frames.append(SampledFrame(index, pts, key, _rgb(to_rgb, frame)))

    skipping = False
    for i, packet in enumerate([*packets, None]):
        if plan is not None and packet is not None and plan.skippable[i] != skipping:
            skipping = plan.skippable[i]
            ctx.skip_frame = "NONREF" if skipping else "DEFAULT"
        if time.monotonic() > deadline:
            raise DecodeTimeout(
                f"decoding took longer than limits.decode_timeout_s={limits.decode_timeout_s}s "
                f"({len(rows)} of {n_packets} frames done); the segment is too heavy for "
                "this node or malformed",
                source=segment.source,
            )
        try:
            decoded = ctx.decode(packet)
        except av.error.FFmpegError as exc:
            decode_errors += 1
            if len(errors) < 10:
                errors.append(f"packet {len(rows)}: {exc}")
            continue
        for frame in decoded:
            consume(frame)

    held = None
    if plan is not None:
        if decode_errors or any(r[6] for r in rows) or not (wanted or set()) <= set(indices):
            raise _DecodeInFull
        rows, qps, held = plan.hold(rows, indices, qps if cfg.bitstream_qp else None)
    if not rows:
        raise DecodeError(
            f"no frame could be decoded from {n_packets} video packets"
            + (f" ({errors[0]})" if errors else "")
            + "; the segment is corrupt or truncated",
            source=segment.source,
        )
    if not frames and last is not None:
        # The sampling indices come from the packet count; a decoder that drops pictures
        # (HEVC drops those whose references were lost) can decode fewer frames than
        # that and miss every index. Scorers then still get the last picture decoded.
        index, pts, frame = last
        frames.append(SampledFrame(index, pts, bool(frame.key_frame), _rgb(to_rgb, frame)))
    stats = _stats(rows, np.asarray(qps, dtype=np.float32) if cfg.bitstream_qp else None, held)
    last_thumb = None if keyframes_only or prev is None else thumb(prev)
    stats = dataclasses.replace(
        stats, first_thumb=first_thumb, last_thumb=last_thumb, head_thumbs=head_thumbs
    )
    info = _info(container, stream, packets, stats, first_frame, keyframes_only)
    packet_stats = _packet_stats(packets, time_base, info.fps)
    return DecodedSegment(
        segment=segment,
        info=info,
        frames=tuple(frames),
        stats=stats,
        decode_errors=decode_errors,
        corrupt_frames=int(stats.corrupt.sum()),
        decode_seconds=time.monotonic() - started,
        errors=tuple(errors),
        packets=packet_stats,
    )


THUMB = 8
"""Block means a side of a frame's thumbnail (FrameStats.first_thumb, last_thumb)."""
HEAD_FRAMES = 5
"""Decoded frames among a segment's first this many keep a thumbnail (FrameStats.head_thumbs)."""


def thumb(lumaf: np.ndarray) -> npt.NDArray[np.uint8] | None:
    """THUMB x THUMB block means of a 0-1 luma grid, on 0-255 (None for a grid smaller)."""
    h, w = lumaf.shape
    if h < THUMB or w < THUMB:
        return None
    rows = np.linspace(0, h, THUMB + 1).astype(int)
    cols = np.linspace(0, w, THUMB + 1).astype(int)
    sums = np.add.reduceat(np.add.reduceat(lumaf, rows[:-1], axis=0), cols[:-1], axis=1)
    means = sums / np.outer(np.diff(rows), np.diff(cols))
    return np.clip(np.rint(means * 255.0), 0, 255).astype(np.uint8)


def _luma_stats(
    luma: np.ndarray, scale: float, prev: np.ndarray | None, dark_threshold: float
) -> tuple[float, float, float, float, np.ndarray]:
    """(mean, std, mean |difference| to `prev`, dark fraction, the 0-1 float plane) of a luma
    grid, in few passes: this runs on every frame of every segment."""
    lumaf = luma.astype(np.float32)  # a contiguous copy of the strided grid
    lumaf *= np.float32(1.0 / scale)
    flat = lumaf.reshape(-1)
    n = flat.size
    mean = float(flat.sum(dtype=np.float64)) / n
    var = max(0.0, float(np.dot(flat, flat)) / n - mean * mean)
    if prev is None or prev.shape != lumaf.shape:
        diff = float("nan")
    else:
        d = np.subtract(lumaf, prev)
        np.abs(d, out=d)
        diff = float(d.sum(dtype=np.float64)) / n
    dark = np.count_nonzero(flat < dark_threshold) / n
    return mean, var**0.5, diff, dark, lumaf


def _packet_stats(packets: list[av.Packet], time_base: Fraction, fps: float) -> PacketStats:
    pts = sorted(float(p.pts * time_base) for p in packets if p.pts is not None)
    step = 1.0 / fps if fps > 0 else 0.04
    gaps = int((np.diff(np.asarray(pts)) > 1.5 * step).sum()) if len(pts) > 1 else 0
    return PacketStats(
        sizes=np.fromiter((p.size for p in packets), dtype=np.int64, count=len(packets)),
        keyframe=np.fromiter((p.is_keyframe for p in packets), dtype=bool, count=len(packets)),
        corrupt=sum(1 for p in packets if p.is_corrupt),
        pts_gaps=gaps,
    )


def _check_pixels(width: int, height: int, max_pixels: int, source: str) -> None:
    if width * height > max_pixels:
        raise LimitExceeded(
            f"resolution {width}x{height} ({width * height} pixels) is over "
            f"limits.max_pixels={max_pixels}; raise the limit if such renditions are expected",
            source=source,
        )


def _check_rgb_bytes(need: int, what: str, limit: int, segment: Segment) -> None:
    if need > limit:
        raise LimitExceeded(
            f"{what} take {need} bytes, over "
            f"limits.max_decoded_bytes={limit}; sample fewer frames (decode.sampling.count) "
            "or raise the limit",
            source=segment.source,
        )


def _demux(
    container: av.container.InputContainer,
    stream: av.VideoStream,
    segment: Segment,
    cfg: DecodeConfig,
    deadline: float,
) -> list[av.Packet]:
    limits = cfg.limits
    packets: list[av.Packet] = []
    first_pts: int | None = None
    time_base = stream.time_base or Fraction(1, 90000)
    try:
        for packet in container.demux(stream):
            if packet.size == 0:
                continue
            packets.append(packet)
            if len(packets) > limits.max_frames:
                raise LimitExceeded(
                    f"more than limits.max_frames={limits.max_frames} frames in one segment; "
                    "cut the stream into shorter segments or raise the limit",
                    source=segment.source,
                )
            if packet.pts is not None:
                first_pts = packet.pts if first_pts is None else min(first_pts, packet.pts)
                span = float((packet.pts - first_pts) * time_base)
                if span > limits.max_duration_s:
                    raise LimitExceeded(
                        f"segment spans more than limits.max_duration_s={limits.max_duration_s}s "
                        "of media time; cut it into shorter segments or raise the limit",
                        source=segment.source,
                    )
            if len(packets) % 64 == 0 and time.monotonic() > deadline:
                raise DecodeTimeout(
                    f"demuxing took longer than limits.decode_timeout_s={limits.decode_timeout_s}s",
                    source=segment.source,
                )
    except av.error.FFmpegError as exc:
        if not packets:
            raise DecodeError(
                f"no video packet could be read ({exc}); the segment is corrupt or truncated",
                source=segment.source,
            ) from exc
    if not packets:
        raise DecodeError(
            "the video stream has no packets; the segment is truncated or empty",
            source=segment.source,
        )
    return packets


def _wanted_indices(n: int, cfg: DecodeConfig) -> set[int] | None:
    if cfg.sampling.mode == "all":
        return None
    count = min(cfg.sampling.count, n)
    return {int((k + 0.5) * n / count) for k in range(count)}


def _luma(frame: av.VideoFrame) -> tuple[np.ndarray, float]:
    """A strided view of the luma plane and the full-scale code value."""
    fmt = frame.format
    name = fmt.name
    if name.startswith(("yuv", "yuvj", "nv", "gray", "p01", "p21")):
        bits = fmt.components[0].bits
        plane = frame.planes[0]
        dtype = np.uint8 if bits <= 8 else np.dtype("<u2")
        itemsize = np.dtype(dtype).itemsize
        buf = np.frombuffer(memoryview(plane), dtype=dtype)
        buf = buf.reshape(plane.height, plane.line_size // itemsize)[:, : plane.width]
        scale = float((1 << bits) - 1)
        if name.startswith(("p01", "p21")):
            # P010/P210 keep the 10 significant bits in the high bits of each word.
            scale = 65535.0
        step = stats_step(plane.height)
        return buf[::step, ::step], scale
    gray = frame.to_ndarray(format="gray")
    step = stats_step(gray.shape[0])
    return gray[::step, ::step], 255.0


def _rgb(reformatter: VideoReformatter, frame: av.VideoFrame) -> npt.NDArray[np.uint8]:
    """The frame as H x W x 3 RGB, through the segment's reformatter (its swscale context
    is reused while the frame size and format stay). One swscale thread, as the workers
    decode with one (a process per core): swscale's automatic threads doubled a 270p
    frame's conversion, 0.09 against 0.045 ms."""
    rgb = reformatter.reformat(frame, format="rgb24", threads=1)
    return np.asarray(rgb.to_ndarray(), dtype=np.uint8)


QP_EVERY = 4
"""The quantiser is read on every 4th frame and on keyframes: PyAV builds a frame's side
data in Python (about 0.2 ms a frame), and a segment's mean needs no more."""

PAIR_EVERY = 8
"""Frames 8k and 8k + 1 are always decoded when frames are skipped: a single-step luma
difference at least every 8 frames."""

Row = tuple[float, float, float, float, float, bool, bool]
"""One frame's statistics: pts (s), luma mean, std, mean |difference| to the frame before,
dark fraction, keyframe, corrupt."""


class _DecodeInFull(Exception):
    """Skipping frames met damage or a timeline it cannot place: decode every frame."""


@dataclass(frozen=True, slots=True)
class _SkipPlan:
    """Which packets may go undecoded: non-reference frames that nothing reads.

    A non-reference frame (H.264 nal_ref_idc 0, HEVC's sub-layer non-reference pictures,
    MPEG-2's B-frames) is never predicted from, so skipping it (FFmpeg's skip_frame=NONREF,
    set per packet) leaves every other picture bit-identical. A packet stays decoded when
    its frame is sampled, carries the quantiser (every QP_EVERY-th frame), is frame
    PAIR_EVERY k + 1 or is a keyframe; reference frames are decoded whatever the setting
    says.
    """

    skippable: list[bool]
    """Per packet, in decode order."""
    rank: dict[int, int]
    """Packet pts -> display index."""
    pts_s: list[float]
    """Display index -> presentation time (s)."""

    def display_index(self, pts: int | None, seen: list[int]) -> int:
        index = self.rank.get(pts, -1) if pts is not None else -1
        if index < 0 or (seen and index <= seen[-1]):
            raise _DecodeInFull  # a frame the packets do not account for, or out of order
        seen.append(index)
        return index

    def hold(
        self, rows: list[Row], indices: list[int], qps: list[float] | None
    ) -> tuple[list[Row], list[float], npt.NDArray[np.bool_]]:
        """Every packet's row in display order, the skipped frames' held from their decoded
        neighbours.

        A decoded frame after k skipped ones measured its difference across k + 1 frame
        steps, and the k + 1 rows it spans share it. How it divides depends on what moves:
        steady motion grows with the span, noise and grain do not. Single-step differences
        tell which: those of the decoded frames next to the span, else the segment's
        (its mean span against its mean single step, for spans of that length); the share
        stays between span / (k + 1) and span. So mean motion stays per frame and a freeze
        stays still.
        """
        decoded = dict(zip(indices, range(len(rows)), strict=True))
        # single[j]: row j's difference when it was measured across one frame step
        single = [
            row[3] if j and indices[j] == indices[j - 1] + 1 and np.isfinite(row[3]) else None
            for j, row in enumerate(rows)
        ]
        steps = [x for x in single if x is not None]
        spans: dict[int, list[float]] = {}
        for j in range(1, len(rows)):
            if single[j] is None and np.isfinite(rows[j][3]):
                spans.setdefault(indices[j] - indices[j - 1] - 1, []).append(rows[j][3])

        def share(j: int, k: int) -> float:
            span = rows[j][3]
            near = [
                x for i in (j - 1, j + 1) if 0 <= i < len(rows) and (x := single[i]) is not None
            ]
            if near:
                return min(span, max(span / (k + 1), float(np.mean(near))))
            step, across = float(np.mean(steps)) if steps else 0.0, spans.get(k)
            if step <= 0 or not across:
                return span / (k + 1)
            growth = min(float(k + 1), max(1.0, float(np.mean(across)) / step))
            return span / growth

        out: list[Row] = []
        out_qp: list[float] = []
        held: list[bool] = []
        pending: list[int] = []  # positions in `out` of skipped frames awaiting a share
        for d, pts in enumerate(self.pts_s):
            at = decoded.get(d)
            if at is None:
                src = out[-1] if out else rows[0]
                out.append((pts, src[1], src[2], float("nan"), src[4], False, False))
                out_qp.append(float("nan"))
                held.append(True)
                pending.append(len(out) - 1)
                continue
            row = rows[at]
            if pending and np.isfinite(row[3]):
                each = share(at, len(pending))
                for k in pending:
                    out[k] = (*out[k][:3], each, *out[k][4:])
                row = (*row[:3], each, *row[4:])
            pending = []
            out.append(row)
            out_qp.append(qps[at] if qps is not None else float("nan"))
            held.append(False)
        for k in pending:  # skipped frames after the last decoded one: the last motion seen
            out[k] = (*out[k][:3], out[k - 1][3], *out[k][4:])
        return out, out_qp, np.asarray(held, dtype=bool)


def _skip_plan(
    packets: list[av.Packet], wanted: set[int], cfg: DecodeConfig, fps: float
) -> _SkipPlan | None:
    """The packets that may be skipped, None when nothing may (or the timeline is unsure:
    missing or repeated timestamps, corrupt packets, gaps, which are decoded in full)."""
    if not cfg.skip_nonref or len(packets) < 3:
        return None
    if any(p.pts is None or p.is_corrupt for p in packets):
        return None
    stamps = [int(p.pts) for p in packets]  # type: ignore[arg-type]  # none is None (above)
    if len(set(stamps)) != len(stamps):
        return None
    order = sorted(stamps)
    time_base = packets[0].time_base or Fraction(1, 90000)
    tb = float(time_base)  # as the decoded frames' times are computed
    pts_s = [t * tb for t in order]
    step = 1.0 / fps if fps > 0 else 0.04
    if max(np.diff(pts_s)) > 1.5 * step:
        return None
    rank = {t: i for i, t in enumerate(order)}
    shown = [rank[t] for t in stamps]
    # Kept: sampled frames, quantiser frames, and every PAIR_EVERY-th frame after one
    # (a single-step difference now and then tells how differences grow across a skip).
    skippable = [
        not p.is_keyframe
        and d not in wanted
        and not (cfg.bitstream_qp and d % QP_EVERY == 0)
        and d % PAIR_EVERY != 1
        for p, d in zip(packets, shown, strict=True)
    ]
    if not any(skippable):
        return None
    return _SkipPlan(skippable, rank, pts_s)


def frame_qp(frame: av.VideoFrame) -> float:
    """The frame's mean quantiser on H.264's 0-51 scale, NaN when its codec exports none.

    H.264 gives a QP per macroblock (their mean follows adaptive quantisation), read
    straight from FFmpeg's AVVideoEncParams buffer (header, then blocks of x, y, w, h,
    delta_qp); VP9 a base q-index of 0-255, rescaled linearly; MPEG-2 a quantiser scale
    of 1-31, mapped by step size (H.264's step doubles every 6 QP).
    """
    try:
        sd = frame.side_data[SideDataType.VIDEO_ENC_PARAMS]  # type: ignore[typeddict-item]
    except KeyError:
        return float("nan")
    if not isinstance(sd, VideoEncParams):
        return float("nan")
    kind = int(sd.codec_type)
    if kind == int(VideoEncParamsType.H264):
        start, n, size = int(sd.blocks_offset), int(sd.nb_blocks), int(sd.block_size)
        raw = np.frombuffer(memoryview(sd), dtype=np.uint8)  # type: ignore[arg-type]
        if n == 0 or size < 20 or size % 4 or start + n * size > raw.size:
            return float(sd.qp)
        delta = raw[start : start + n * size].view(np.int32)[4 :: size // 4]
        return float(sd.qp) + float(delta.mean())
    if kind == int(VideoEncParamsType.VP9):
        return float(sd.qp) * 51.0 / 255.0
    if kind == int(VideoEncParamsType.MPEG2) and sd.qp > 0:
        return float(min(51.0, 4.0 + 6.0 * np.log2(float(sd.qp))))
    return float("nan")


def _stats(
    rows: list[Row],
    qp: npt.NDArray[np.float32] | None = None,
    held: npt.NDArray[np.bool_] | None = None,
) -> FrameStats:
    cols = list(zip(*rows, strict=True))
    return FrameStats(
        pts_s=np.asarray(cols[0], dtype=np.float64),
        luma_mean=np.asarray(cols[1], dtype=np.float32),
        luma_std=np.asarray(cols[2], dtype=np.float32),
        luma_diff=np.asarray(cols[3], dtype=np.float32),
        dark_fraction=np.asarray(cols[4], dtype=np.float32),
        keyframe=np.asarray(cols[5], dtype=bool),
        corrupt=np.asarray(cols[6], dtype=bool),
        qp=qp,
        held=held,
    )


def _fps(stream: av.VideoStream) -> float:
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    return float(rate) if rate else 25.0


def _info(
    container: av.container.InputContainer,
    stream: av.VideoStream,
    packets: list[av.Packet],
    stats: FrameStats,
    first: av.VideoFrame | None,
    keyframes_only: bool,
) -> StreamInfo:
    ctx = stream.codec_context
    fps = _fps(stream)
    n = len(packets)
    duration = n / fps
    bits = sum(p.size for p in packets) * 8
    fmt = first.format if first is not None else None
    transfer = _TRANSFER_NAMES.get(int(first.color_trc)) if first is not None else None
    return StreamInfo(
        codec=ctx.name,
        profile=ctx.profile,
        width=int(first.width if first is not None else ctx.width),
        height=int(first.height if first is not None else ctx.height),
        fps=fps,
        pix_fmt=fmt.name if fmt is not None else str(ctx.pix_fmt),
        bit_depth=int(fmt.components[0].bits) if fmt is not None else 8,
        color_transfer=transfer,
        duration_s=duration,
        bitrate=bits / duration if duration > 0 else 0.0,
        frame_count=n if keyframes_only else len(stats),
        keyframe_count=sum(1 for p in packets if p.is_keyframe),
        container=container.format.name,
        decoder=_hw_name(ctx) or "software",
    )


def _hw_name(ctx: av.codec.context.CodecContext) -> str | None:
    """The hwaccel device type that decoded, or None for software."""
    if not getattr(ctx, "is_hwaccel", False):
        return None
    hw = getattr(ctx, "hwaccel", None)
    device = getattr(getattr(hw, "config", None), "device_type", None)
    return str(getattr(device, "name", device or "hw"))

"""The messages ingest makes: a Segment as it arrives, a DecodedSegment after PyAV.

Everything downstream (scorers, monitor) imports these; nothing here imports them back.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float32]
BoolArray = npt.NDArray[np.bool_]


@dataclass(frozen=True, slots=True)
class Segment:
    """One encoded media segment and what its publisher said about it.

    `data` is a complete MPEG-TS / MP4 / Matroska file or a CMAF/fMP4 media
    fragment; a fragment needs the `init` segment of its rendition to decode.
    """

    data: bytes
    stream: str = "default"
    rendition: str = "default"
    seq: int = 0
    bitrate: int | None = None
    """Declared bitrate in bit/s (the `bitrate` header), if the publisher sent one."""
    content_type: str | None = None
    init: bytes | None = None
    source: str = ""
    """Where the segment came from (a path, or topic/partition@offset), for error messages."""
    display: tuple[int, int] | None = None
    """(width, height) the rendition is shown at (the `display` header, e.g. the ladder's
    top rung): the screen score judges the picture upscaled to it, as a player shows it."""

    @property
    def key(self) -> str:
        """The `<stream>/<rendition>` key used for partitioning and per-rendition state."""
        return f"{self.stream}/{self.rendition}"

    @property
    def segment_id(self) -> str:
        """Stable id: a re-delivered segment gets the same id, so duplicates are recognisable."""
        return f"{self.stream}/{self.rendition}/{self.seq}"


@dataclass(frozen=True, slots=True)
class StreamInfo:
    codec: str
    profile: str | None
    width: int
    height: int
    fps: float
    pix_fmt: str
    bit_depth: int
    color_transfer: str | None
    duration_s: float
    bitrate: float
    """Measured: bits of video packets over the segment's duration, in bit/s."""
    frame_count: int
    keyframe_count: int
    container: str
    decoder: str = "software"
    """What decoded it: "software", or the hwaccel device type (e.g. "cuda") when it ran."""


@dataclass(frozen=True, slots=True)
class FrameStats:
    """Cheap luma statistics for every decoded frame (index-aligned arrays).

    Values are on a 0-1 scale of the full code range, whatever the bit depth.
    `luma_diff[i]` is the mean absolute difference to frame i-1 (NaN for the first).
    """

    pts_s: npt.NDArray[np.float64]
    luma_mean: FloatArray
    luma_std: FloatArray
    luma_diff: FloatArray
    dark_fraction: FloatArray
    """Fraction of pixels darker than the configured black pixel threshold."""
    keyframe: BoolArray
    corrupt: BoolArray
    qp: FloatArray | None = None
    """The encoder's quantiser per frame on H.264's 0-51 scale (the mean of the H.264
    macroblock QP map; VP9/AV1 base q-index rescaled), NaN where the codec exports none
    (HEVC) or the frame carried none; None when reading it was off."""
    held: BoolArray | None = None
    """Frames the decoder skipped (non-reference, read by nothing: DecodeConfig.skip_nonref)
    whose statistics were held from their decoded neighbours; None when every frame was
    decoded."""
    first_thumb: npt.NDArray[np.uint8] | None = None
    """The first decoded frame's luma as THUMB x THUMB block means (0-255), to tell whether
    a segment begins on the picture its predecessor ended on (monitor.boundary)."""
    last_thumb: npt.NDArray[np.uint8] | None = None
    """The same of the last decoded frame; None when not every frame was decoded in order
    (keyframes only)."""
    head_thumbs: dict[int, npt.NDArray[np.uint8] | None] | None = None
    """Display index -> thumbnail of the decoded frames among the first HEAD_FRAMES."""

    def __len__(self) -> int:
        return len(self.pts_s)


@dataclass(frozen=True, slots=True)
class SampledFrame:
    index: int
    """Position of the frame in decode (presentation) order within the segment."""
    pts_s: float
    keyframe: bool
    rgb: npt.NDArray[np.uint8]
    """H x W x 3, native resolution."""


@dataclass(frozen=True, slots=True)
class PacketStats:
    """Bitstream-level facts of every video packet, read while demuxing (no decoding).

    The cheap screening mode judges a segment from these plus its keyframes: frozen and
    black pictures code to tiny predicted frames, lost packets leave timestamp gaps.
    """

    sizes: npt.NDArray[np.int64]
    """Bytes per packet, in demux order."""
    keyframe: BoolArray
    corrupt: int
    """Packets the demuxer flagged corrupt."""
    pts_gaps: int
    """Jumps in presentation time of more than 1.5 frame intervals (frames missing)."""

    def predicted_bytes(self, quantile: float = 0.1) -> float:
        """A quantile of the predicted (non-key) frames' sizes; of all frames without any."""
        sizes = self.sizes[~self.keyframe] if (~self.keyframe).any() else self.sizes
        return float(np.quantile(sizes, quantile)) if sizes.size else 0.0


@dataclass(frozen=True, slots=True)
class DecodedSegment:
    segment: Segment
    info: StreamInfo
    frames: tuple[SampledFrame, ...]
    stats: FrameStats
    decode_errors: int
    """Packets the decoder rejected outright."""
    corrupt_frames: int
    """Frames the decoder output but flagged corrupt (concealed errors)."""
    decode_seconds: float
    errors: tuple[str, ...] = field(default=())
    """Short descriptions of decode problems, for evidence and logs."""
    packets: PacketStats | None = None


class IngestError(Exception):
    """A segment that cannot be turned into a DecodedSegment.

    `reason` is a short stable code (a metric label and dead-letter reason);
    the message says what is wrong and how to fix it. Every public parse, fetch and
    decode function in ingest raises only this family for bad input.
    """

    reason = "ingest_error"

    def __init__(self, message: str, *, source: str = "") -> None:
        self.source = source
        super().__init__(f"{source}: {message}" if source else message)


class DecodeError(IngestError):
    reason = "decode_error"


class UnsupportedContainer(DecodeError):
    """Bytes that are not one of the allow-listed containers (decode.DEMUXERS)."""

    reason = "unsupported_container"


class DecoderFault(DecodeError):
    """PyAV or FFmpeg raised something unexpected on this input (a malformed segment)."""

    reason = "decoder_fault"


class EmptySegment(DecodeError):
    reason = "empty"


class NoVideoStream(DecodeError):
    reason = "no_video"


class NoDecoder(DecodeError):
    """A video stream whose codec FFmpeg cannot decode (PyAV gives it no codec context)."""

    reason = "no_decoder"


class MissingInitSegment(DecodeError):
    reason = "missing_init"


class LimitExceeded(IngestError):
    reason = "limit_exceeded"


class DecodeTimeout(LimitExceeded):
    reason = "decode_timeout"

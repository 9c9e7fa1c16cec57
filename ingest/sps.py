"""The picture size H.264 and HEVC sequence parameter sets claim, read before FFmpeg probes.

PyAV hands its decoder options (`max_pixels`, `skip_frame`) to the decoders FFmpeg opens
while probing a stream only when the demuxer has listed its streams before the probe. An
MPEG-TS segment whose PAT or PMT is damaged or missing lists none: its streams appear
during the probe, whose decoders then decode at whatever size the SPS claims. SPS bombs
with flipped bits (bench/fuzz.py) cost the probe 0.7-1.2 GB and 1-2.5 s that way before
decode.py's pixel check saw the size; a 96x64 HEVC segment spliced with such a bomb off
the 188-byte grid cost it 1.2 GB too (FFmpeg resyncs at the next sync byte, and so does
ts_video). So the sizes the SPS units of a TS segment's video PIDs claim are read here
first, and decode.py refuses a segment over `limits.max_pixels`
before FFmpeg sees it. Only the fields up to the size and its cropping are read; an SPS
that cannot be read is left to FFmpeg, which refuses or bounds it as before.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import numpy as np
import numpy.typing as npt

# H.264 profiles whose SPS carries chroma format, bit depths and scaling matrices
HIGH_PROFILES = {100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135}
TS_PACKET = 188
MOST_SPS = 64
"""SPS units read per segment at most (a keyframe carries one; a crafted segment may
carry thousands: the rest are left to FFmpeg's decode-time check)."""
SPS_BYTES = 256
"""Bytes after a start code read as one SPS (the fields up to the size fit in far fewer)."""
# A start code, then an H.264 SPS header byte (nal_unit_type 7, any nal_ref_idc) or the
# first of an HEVC SPS's two (nal_unit_type 33, layer id's top bit 0)
_SPS = re.compile(rb"\x00\x00\x01([\x07\x27\x47\x67]|\x42)")


class Bits:
    """MSB-first bit reader over an RBSP (emulation prevention removed); IndexError past
    the end, ValueError on an exp-Golomb code longer than 32 bits."""

    def __init__(self, data: bytes = b"") -> None:
        self.value = int.from_bytes(data, "big")
        self.size = 8 * len(data)
        self.pos = 0

    def u(self, n: int) -> int:
        if self.pos + n > self.size:
            raise IndexError("read past the end of the RBSP")
        self.pos += n
        return (self.value >> (self.size - self.pos)) & ((1 << n) - 1)

    def ue(self) -> int:
        zeros = 0
        while not self.u(1):
            zeros += 1
            if zeros > 32:
                raise ValueError("exp-Golomb code longer than 32 bits")
        return (1 << zeros) - 1 + self.u(zeros)

    def se(self) -> int:
        k = self.ue()
        return (k + 1) // 2 if k % 2 else -(k // 2)

    def rest(self) -> list[int]:
        """The bits not read yet, one int each."""
        return [(self.value >> (self.size - 1 - i)) & 1 for i in range(self.pos, self.size)]


def unescape(nal: bytes) -> bytes:
    """The RBSP of a NAL unit's payload: emulation prevention bytes removed."""
    return nal.replace(b"\x00\x00\x03", b"\x00\x00")


def h264_size(rbsp: bytes) -> tuple[int, int]:
    """(width, height) in pixels after frame cropping, from an H.264 SPS RBSP (after the
    NAL header byte)."""
    r = Bits(rbsp)
    profile = r.u(8)
    r.u(16)  # constraint flags, level
    r.ue()  # seq_parameter_set_id
    chroma = 1  # 4:2:0 unless a high profile says otherwise
    if profile in HIGH_PROFILES:
        chroma = r.ue()
        if chroma == 3:
            r.u(1)  # separate_colour_plane
        r.ue(), r.ue()  # bit depths
        r.u(1)  # qpprime_y_zero_transform_bypass
        if r.u(1):  # seq_scaling_matrix_present
            for i in range(8 if chroma != 3 else 12):
                if r.u(1):
                    _skip_scaling_list(r, 16 if i < 6 else 64)
    r.ue()  # log2_max_frame_num_minus4
    poc_type = r.ue()
    if poc_type == 0:
        r.ue()
    elif poc_type == 1:
        r.u(1)
        r.se(), r.se()
        for _ in range(min(r.ue(), 255)):
            r.se()
    r.ue()  # max_num_ref_frames
    r.u(1)  # gaps_in_frame_num_allowed
    width_mbs, height_units = r.ue() + 1, r.ue() + 1
    frame_mbs_only = r.u(1)
    width, height = 16 * width_mbs, 16 * height_units * (2 - frame_mbs_only)
    if not frame_mbs_only:
        r.u(1)  # mb_adaptive_frame_field
    r.u(1)  # direct_8x8_inference
    if r.u(1):  # frame cropping, in chroma sample units
        left, right, top, bottom = r.ue(), r.ue(), r.ue(), r.ue()
        unit_x = 2 if chroma in (1, 2) else 1
        unit_y = (2 if chroma == 1 else 1) * (2 - frame_mbs_only)
        width -= unit_x * (left + right)
        height -= unit_y * (top + bottom)
    return width, height


def _skip_scaling_list(r: Bits, size: int) -> None:
    last = following = 8
    for _ in range(size):
        if following:
            following = (last + r.se() + 256) % 256
        last = following or last


def hevc_size(rbsp: bytes) -> tuple[int, int]:
    """(width, height) in luma samples inside the conformance window, from an HEVC SPS
    RBSP (after the two NAL header bytes)."""
    r = Bits(rbsp)
    r.u(4)  # sps_video_parameter_set_id
    sub_layers = r.u(3)  # sps_max_sub_layers_minus1
    r.u(1)  # temporal_id_nesting
    r.u(88)  # general profile space, tier, profile, compatibility and constraint flags
    r.u(8)  # general_level_idc
    present = [(r.u(1), r.u(1)) for _ in range(sub_layers)]
    if sub_layers:
        r.u(2 * (8 - sub_layers))  # reserved_zero_2bits
    for profile, level in present:
        r.u(88 * profile + 8 * level)
    r.ue()  # sps_seq_parameter_set_id
    chroma = r.ue()
    if chroma == 3:
        r.u(1)  # separate_colour_plane
    width, height = r.ue(), r.ue()
    if r.u(1):  # conformance window, in chroma sample units
        left, right, top, bottom = r.ue(), r.ue(), r.ue(), r.ue()
        width -= (2 if chroma in (1, 2) else 1) * (left + right)
        height -= (2 if chroma == 1 else 1) * (top + bottom)
    return width, height


def ts_video(data: bytes) -> bytes:
    """The video elementary stream bytes of an MPEG-TS segment: the payloads of the PIDs
    whose PES packets carry a video stream id (0xE0-0xEF), PES headers left out, in
    order (the PIDs' streams interleaved, which only adds start codes between them).
    Where the 188-byte grid loses its sync byte (a splice, a cut), packets are found again
    at the next sync byte, as FFmpeg's demuxer resyncs."""
    a = _packets(data)
    n = len(a)
    if n == 0:
        return b""
    pid = (a[:, 1].astype(np.int32) & 0x1F) << 8 | a[:, 2]
    control = a[:, 3] >> 4
    start = np.where(control & 2, 5 + a[:, 4].astype(np.int32), 4)
    usable = (a[:, 0] == 0x47) & (control & 1 == 1) & (start < TS_PACKET)
    # a PES packet starts in this payload (with its fixed 9-byte header in the packet)
    unit = usable & (a[:, 1] & 0x40 != 0) & (start + 9 <= TS_PACKET)
    rows = np.arange(n)
    first = start[unit]
    pes = rows[unit]
    is_video = (
        (a[pes, first] == 0)
        & (a[pes, first + 1] == 0)
        & (a[pes, first + 2] == 1)
        & (a[pes, first + 3] & 0xF0 == 0xE0)
    )
    video = set(pid[pes[is_video]].tolist())
    if not video:
        return b""
    # a PES header: 00 00 01, stream id, length (2), flags (2), header data length (1)
    skip = start.copy()
    skip[pes] = first + 9 + a[pes, first + 8]
    rows = rows[usable & np.isin(pid, list(video)) & (skip < TS_PACKET)]
    if rows.size == 0:
        return b""
    skip = skip[rows]
    # runs of consecutive packets with a plain 4-byte header are copied as one block; a
    # packet with more to skip (a PES start, an adaptation field) is a run of its own
    odd = skip != 4
    cut = np.flatnonzero(np.r_[True, (np.diff(rows) != 1) | odd[1:] | odd[:-1]])
    pieces = []
    for first_, last in zip(cut.tolist(), [*cut[1:].tolist(), len(rows)], strict=True):
        row = int(rows[first_])
        pieces.append(a[row : row + last - first_, int(skip[first_]) :].tobytes())
    return b"".join(pieces)


def _packets(data: bytes) -> npt.NDArray[np.uint8]:
    """The segment's 188-byte packets as rows: the grid from the first byte when every row
    starts with the sync byte (a sound segment), else each packet from the next sync byte
    after the one before (rows of bytes that merely look like one included)."""
    buf = np.frombuffer(data, np.uint8)
    n = len(data) // TS_PACKET
    grid = buf[: n * TS_PACKET].reshape(n, TS_PACKET)
    if n == 0 or bool(np.all(grid[:, 0] == 0x47)):
        return grid
    offsets = []
    at = data.find(b"\x47")
    while 0 <= at <= len(data) - TS_PACKET:
        offsets.append(at)
        at = (
            at + TS_PACKET
            if data[at + TS_PACKET : at + TS_PACKET + 1] == b"\x47"
            else data.find(b"\x47", at + 1)
        )
    if not offsets:
        return grid[:0]
    return buf[np.array(offsets)[:, None] + np.arange(TS_PACKET)[None, :]]


def claimed_sizes(data: bytes) -> Iterator[tuple[int, int]]:
    """The picture sizes the H.264 and HEVC SPS units of an elementary stream claim (Annex
    B start codes; an MPEG-TS segment through ts_video first). Unreadable units are
    skipped; at most MOST_SPS are read."""
    for found, match in enumerate(_SPS.finditer(data)):
        if found == MOST_SPS:
            return
        hevc = match.group(1) == b"\x42"
        start = match.end() + hevc  # the HEVC NAL header's second byte
        try:
            size = (hevc_size if hevc else h264_size)(unescape(data[start : start + SPS_BYTES]))
        except (IndexError, ValueError):
            continue
        yield size

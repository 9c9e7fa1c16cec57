"""The picture sizes the H.264 and HEVC sequence parameter sets inside a segment's packets
claim, read after demuxing and before decoding.

FFmpeg's `max_pixels` refuses a picture over the limit when the decoder asks for its
buffer, but an SPS that grows mid-segment (64x64 keyframes, then 16000x16000 ones) makes
the H.264 decoder allocate its macroblock tables, and HEVC its picture arrays, first:
226 MB (H.264) and 337 MB (HEVC) for 150 tiny frames, in any container (a review's
crafted segments). `oversized` reads every SPS of the demuxed packets (Annex B or
length-prefixed NAL units, as the stream's extradata says), so decode.py refuses such a
segment before the decoder sees it.

Only the fields up to the size and its cropping are read, and the reading is trusted for a
stream only once it reads the stream's own first SPS as the size FFmpeg found: a stream
whose SPS this cannot read, or reads otherwise, is left to FFmpeg's own check, as before.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator

HIGH_PROFILES = {100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135}
"""H.264 profiles whose SPS carries chroma format, bit depths and scaling matrices."""
MOST_SPS = 256
"""Distinct SPS read per segment at most (a stream repeats one at each keyframe; the rest
of a crafted segment's thousands are left to FFmpeg's decode-time check)."""
SPS_BYTES = 4096
"""Bytes of one SPS read at most (scaling lists can take a kilobyte or two)."""
_START = re.compile(rb"\x00\x00\x01")


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


def _nal_units(packet: memoryview, length_size: int) -> Iterator[memoryview]:
    """The NAL units of one packet: after start codes (Annex B, length_size 0) or each
    after its big-endian length of length_size bytes."""
    if not length_size:
        starts = [m.end() for m in _START.finditer(packet)]
        for i, at in enumerate(starts):
            yield packet[at : starts[i + 1] - 3 if i + 1 < len(starts) else len(packet)]
        return
    pos = 0
    while pos + length_size <= len(packet):
        size = int.from_bytes(packet[pos : pos + length_size], "big")
        pos += length_size
        yield packet[pos : pos + size]
        pos += size


def _length_size(codec: str, extradata: bytes | None) -> int:
    """The NAL length field's size when the extradata is an avcC/hvcC record (MP4,
    Matroska), 0 for Annex B start codes (MPEG-TS)."""
    if not extradata or extradata[0] != 1:
        return 0
    at = 4 if codec == "h264" else 21
    return (extradata[at] & 3) + 1 if len(extradata) > at else 0


def _record_nals(codec: str, record: memoryview) -> Iterator[memoryview]:
    """The parameter-set NAL units of an avcC or hvcC record (MP4, Matroska extradata)."""
    try:
        if codec == "h264":
            pos, count = 6, record[5] & 0x1F  # the SPS list (the PPS list follows)
            for _ in range(count):
                size = int.from_bytes(record[pos : pos + 2], "big")
                yield record[pos + 2 : pos + 2 + size]
                pos += 2 + size
            return
        pos, arrays = 23, record[22]
        for _ in range(arrays):
            count = int.from_bytes(record[pos + 1 : pos + 3], "big")
            pos += 3
            for _ in range(count):
                size = int.from_bytes(record[pos : pos + 2], "big")
                yield record[pos + 2 : pos + 2 + size]
                pos += 2 + size
    except IndexError:
        return


def sps_sizes(
    packets: Iterable[memoryview], codec: str, extradata: bytes | None
) -> Iterator[tuple[int, int] | None]:
    """The size each distinct SPS claims, in order, those of the stream's extradata first;
    None for one this cannot read. Only H.264 and HEVC; at most MOST_SPS."""
    length_size = _length_size(codec, extradata)
    record = memoryview(extradata or b"")
    first = _record_nals(codec, record) if length_size else _nal_units(record, 0)
    seen: set[bytes] = set()
    for nals in (first, *(_nal_units(p, length_size) for p in packets)):
        for nal in nals:
            if not nal:
                continue
            if codec == "h264" and nal[0] & 0x1F == 7:
                body, read = bytes(nal[1:SPS_BYTES]), h264_size
            elif codec == "hevc" and len(nal) > 1 and (nal[0] >> 1) & 0x3F == 33:
                body, read = bytes(nal[2:SPS_BYTES]), hevc_size
            else:
                continue
            if body in seen:
                continue
            seen.add(body)
            if len(seen) > MOST_SPS:
                return
            try:
                yield read(unescape(body))
            except (IndexError, ValueError):
                yield None


def oversized(
    packets: Iterable[memoryview],
    codec: str,
    extradata: bytes | None,
    size: tuple[int, int],
    max_pixels: int,
) -> tuple[int, int] | None:
    """The first size over `max_pixels` an SPS of the packets claims, once the first SPS
    read gives the stream's own `size` (else None: the reading is not trusted)."""
    if codec not in ("h264", "hevc"):
        return None
    trusted = False
    for claimed in sps_sizes(packets, codec, extradata):
        if not trusted:
            if claimed != size:
                return None
            trusted = True
        elif claimed is not None and claimed[0] * claimed[1] > max_pixels:
            return claimed
    return None

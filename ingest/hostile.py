"""Hostile inputs for tests and the fuzzer: real encodes made to lie about themselves.

`sps_bomb` encodes a tiny H.264 stream with PyAV and rewrites its sequence parameter
set so the header claims a huge picture: a few tens of kilobytes that would make a
decoder allocate and conceal gigabytes of pixels if nothing stopped it first.
"""

from __future__ import annotations

import io
from fractions import Fraction

import av
import numpy as np

from ingest.synth import pattern_frames

_HIGH_PROFILES = {100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135}


class _Bits:
    """MSB-first bit reader/writer over an RBSP (emulation prevention removed)."""

    def __init__(self, data: bytes = b"") -> None:
        self.bits = [(byte >> (7 - i)) & 1 for byte in data for i in range(8)]
        self.pos = 0

    def u(self, n: int) -> int:
        value = 0
        for _ in range(n):
            value = (value << 1) | self.bits[self.pos]
            self.pos += 1
        return value

    def ue(self) -> int:
        zeros = 0
        while self.bits[self.pos] == 0:
            zeros += 1
            self.pos += 1
        self.pos += 1
        return (1 << zeros) - 1 + self.u(zeros)


def _put_u(out: list[int], value: int, n: int) -> None:
    out.extend((value >> (n - 1 - i)) & 1 for i in range(n))


def _put_ue(out: list[int], value: int) -> None:
    code = value + 1
    n = code.bit_length()
    out.extend([0] * (n - 1))
    _put_u(out, code, n)


def _unescape(nal: bytes) -> bytes:
    return nal.replace(b"\x00\x00\x03", b"\x00\x00")


def _escape(rbsp: bytes) -> bytes:
    out = bytearray()
    zeros = 0
    for byte in rbsp:
        if zeros >= 2 and byte <= 3:
            out.append(3)
            zeros = 0
        out.append(byte)
        zeros = zeros + 1 if byte == 0 else 0
    return bytes(out)


def patch_sps(nal: bytes, width: int, height: int) -> bytes:
    """An H.264 SPS NAL unit (header byte included) rewritten to claim width x height.

    Frame cropping is dropped; everything after the size fields is copied bit for bit.
    """
    rbsp = _unescape(nal[1:])
    r = _Bits(rbsp)
    out: list[int] = []
    profile = r.u(8)
    _put_u(out, profile, 8)
    _put_u(out, r.u(16), 16)  # constraint flags, level
    _put_ue(out, r.ue())  # seq_parameter_set_id
    if profile in _HIGH_PROFILES:
        chroma = r.ue()
        _put_ue(out, chroma)
        if chroma == 3:
            _put_u(out, r.u(1), 1)
        _put_ue(out, r.ue())  # bit depth luma
        _put_ue(out, r.ue())  # bit depth chroma
        _put_u(out, r.u(1), 1)  # qpprime_y_zero_transform_bypass
        if r.u(1):
            raise ValueError("SPS with scaling matrices is not supported by this patcher")
        _put_u(out, 0, 1)
    _put_ue(out, r.ue())  # log2_max_frame_num_minus4
    poc_type = r.ue()
    _put_ue(out, poc_type)
    if poc_type == 0:
        _put_ue(out, r.ue())
    elif poc_type == 1:
        raise ValueError("SPS with pic_order_cnt_type 1 is not supported by this patcher")
    _put_ue(out, r.ue())  # max_num_ref_frames
    _put_u(out, r.u(1), 1)  # gaps_in_frame_num_allowed
    r.ue(), r.ue()  # the real size, replaced
    _put_ue(out, (width + 15) // 16 - 1)
    _put_ue(out, (height + 15) // 16 - 1)
    frame_mbs_only = r.u(1)
    _put_u(out, frame_mbs_only, 1)
    if not frame_mbs_only:
        _put_u(out, r.u(1), 1)
    _put_u(out, r.u(1), 1)  # direct_8x8_inference
    if r.u(1):  # frame cropping: dropped
        r.ue(), r.ue(), r.ue(), r.ue()
    _put_u(out, 0, 1)
    # The rest (VUI, stop bit) verbatim, then byte alignment from the original stop bit.
    rest = r.bits[r.pos :]
    while rest and rest[-1] == 0:
        rest.pop()
    out.extend(rest)  # ends with the rbsp stop bit
    while len(out) % 8:
        out.append(0)
    data = bytes(int("".join(map(str, out[i : i + 8])), 2) for i in range(0, len(out), 8))
    return nal[:1] + _escape(data)


def _nal_units(data: bytes) -> list[bytes]:
    parts = data.split(b"\x00\x00\x01")
    return [p.rstrip(b"\x00") for p in parts[1:] if p]


def _annexb(nals: list[bytes]) -> bytes:
    return b"".join(b"\x00\x00\x00\x01" + n for n in nals)


def sps_bomb(width: int = 16000, height: int = 16000, *, frames: int = 25, size: int = 64) -> bytes:
    """MPEG-TS of `frames` tiny H.264 pictures whose SPS claims width x height."""
    ctx = av.CodecContext.create("libx264", "w")
    ctx.width = ctx.height = size
    ctx.pix_fmt = "yuv420p"
    ctx.time_base = Fraction(1, 25)
    ctx.framerate = Fraction(25)
    ctx.options = {"preset": "ultrafast", "tune": "zerolatency", "crf": "30", "g": "5"}
    packets: list[tuple[bytes, bool]] = []
    for i, rgb in enumerate(pattern_frames("bars", size, size, frames)):
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
        frame.pts = i
        packets.extend((bytes(p), p.is_keyframe) for p in ctx.encode(frame))
    packets.extend((bytes(p), p.is_keyframe) for p in ctx.encode(None))
    buf = io.BytesIO()
    with av.open(buf, "w", format="mpegts") as out:
        stream = out.add_stream("h264", rate=25)
        stream.width = stream.height = size
        stream.time_base = Fraction(1, 90000)
        for n, (data, key) in enumerate(packets):
            nals = [
                patch_sps(u, width, height) if u[0] & 0x1F == 7 else u for u in _nal_units(data)
            ]
            packet = av.Packet(_annexb(nals))
            packet.stream = stream
            packet.pts = packet.dts = n * 3600
            packet.time_base = Fraction(1, 90000)
            packet.is_keyframe = key
            out.mux(packet)
    return buf.getvalue()

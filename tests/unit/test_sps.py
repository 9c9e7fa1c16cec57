"""ingest/sps.py: an H.264 or HEVC SPS that grows mid-segment is refused before the decoder
allocates for it (it allocated its tables before max_pixels refused the picture:
226-337 MB, a review's crafted segments), and the SPS reader reads real encoders' SPS as
FFmpeg does, so the check is on for them."""

from __future__ import annotations

import io

import av
import pytest

import ingest.decode
from ingest.decode import decode
from ingest.hostile import sps_bomb
from ingest.sps import h264_size, hevc_size, oversized, sps_sizes
from ingest.synth import pattern_frames
from ingest.types import LimitExceeded, Segment


def _remux(data: bytes, fmt: str) -> bytes:
    """The video of a TS segment copied into `fmt` (length-prefixed NAL units, its SPS in
    the extradata's record and in band)."""
    out = io.BytesIO()
    with av.open(io.BytesIO(data)) as src, av.open(out, "w", format=fmt) as dst:
        stream = dst.add_stream_from_template(src.streams.video[0])
        for packet in src.demux(src.streams.video[0]):
            if packet.dts is not None:
                packet.stream = stream
                dst.mux(packet)
    return out.getvalue()


@pytest.mark.parametrize("container", ["mpegts", "mp4"])
@pytest.mark.parametrize("codec", ["h264", "hevc"])
def test_an_sps_that_grows_mid_segment_is_refused_before_decoding(
    codec: str, container: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """64x64 keyframes pass the header check; the third keyframe's SPS claims 16000x16000."""
    data = sps_bomb(frames=30, codec=codec, from_key=2)
    if container != "mpegts":
        data = _remux(data, container)
    with pytest.raises(LimitExceeded, match="16000x16000"):
        decode(Segment(data))
    # without the check, the decoder meets it (and the segment "decodes", with errors)
    monkeypatch.setattr(ingest.decode, "oversized", lambda *a: None)
    d = decode(Segment(data))
    assert d.info.width == 64 and d.decode_errors > 0


@pytest.mark.parametrize("codec", ["h264", "hevc"])
def test_an_honest_size_change_under_the_limit_decodes(codec: str) -> None:
    d = decode(Segment(sps_bomb(128, 96, frames=30, codec=codec, from_key=2)))
    assert (d.info.width, d.info.height, len(d.stats.pts_s)) == (64, 64, 30)


ENCODES = {
    "h264 baseline": ("libx264", 320, 180, "yuv420p", {"profile": "baseline"}),
    "h264 odd size, cropped": ("libx264", 322, 178, "yuv420p", {}),
    "h264 scaling matrices": ("libx264", 320, 240, "yuv420p", {"x264-params": "cqm=jvt"}),
    "h264 interlaced": ("libx264", 320, 240, "yuv420p", {"x264-params": "interlaced=1"}),
    "h264 4:4:4": ("libx264", 320, 180, "yuv444p", {}),
    "h264 10-bit 4:2:2": ("libx264", 320, 180, "yuv422p10le", {}),
    "hevc odd size": ("libx265", 330, 186, "yuv420p", {"x265-params": "log-level=error"}),
    "hevc 10-bit": ("libx265", 320, 180, "yuv420p10le", {"x265-params": "log-level=error"}),
    "hevc 4:4:4": ("libx265", 320, 180, "yuv444p", {"x265-params": "log-level=error"}),
    "hevc temporal layers": (
        "libx265",
        320,
        180,
        "yuv420p",
        {"x265-params": "log-level=error:temporal-layers=1"},
    ),
}


@pytest.mark.parametrize("container", ["mpegts", "mp4"])
@pytest.mark.parametrize("name", ENCODES)
def test_the_reader_reads_real_encoders_sps_as_ffmpeg_does(name: str, container: str) -> None:
    """The check is trusted for a stream only when its first SPS reads as the size FFmpeg
    found: it must, for what encoders write (TS: in band; MP4: in the avcC/hvcC record)."""
    encoder, width, height, pix_fmt, options = ENCODES[name]
    buf = io.BytesIO()
    with av.open(buf, "w", format=container) as out:
        stream = out.add_stream(encoder, rate=25)
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        stream.options = options
        for rgb in pattern_frames("scene", width, height, 10, seed=1):
            for p in stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                out.mux(p)
        for p in stream.encode(None):
            out.mux(p)
    with av.open(io.BytesIO(buf.getvalue())) as c:
        video = c.streams.video[0]
        ctx = video.codec_context
        packets = [memoryview(p) for p in c.demux(video) if p.size]
        first = next(sps_sizes(packets, ctx.name, ctx.extradata))
        assert first == (ctx.width, ctx.height) == (width, height)
        assert oversized(packets, ctx.name, ctx.extradata, first, 64 * 64) is None


def test_a_stream_whose_first_sps_reads_otherwise_is_left_to_ffmpeg() -> None:
    """Not trusted, not refused: a reading that disagrees with FFmpeg's on the stream's own
    first SPS says nothing about its later ones (FFmpeg's own check stays)."""
    data = sps_bomb(frames=30, from_key=2)
    with av.open(io.BytesIO(data)) as c:
        video = c.streams.video[0]
        ctx = video.codec_context
        packets = [memoryview(p) for p in c.demux(video) if p.size]
        assert oversized(packets, "h264", ctx.extradata, (64, 64), 10**6) == (16000, 16000)
        assert oversized(packets, "h264", ctx.extradata, (80, 64), 10**6) is None
        assert oversized(packets, "vp9", ctx.extradata, (64, 64), 10**6) is None


def _rbsp(fields: list[tuple[str, int]]) -> bytes:
    """An RBSP from (kind, value) fields: ("u<n>", v), ("ue", v), ("se", v); then the stop
    bit and byte alignment."""
    bits: list[int] = []
    for kind, value in fields:
        if kind == "se":
            kind, value = "ue", 2 * value - 1 if value > 0 else -2 * value
        if kind == "ue":
            code = value + 1
            bits += [0] * (code.bit_length() - 1) + [int(b) for b in bin(code)[2:]]
        else:
            n = int(kind[1:])
            bits += [(value >> (n - 1 - i)) & 1 for i in range(n)]
    bits.append(1)
    bits += [0] * (-len(bits) % 8)
    return bytes(int("".join(map(str, bits[i : i + 8])), 2) for i in range(0, len(bits), 8))


def test_h264_scaling_lists_and_poc_type_1_are_read_past() -> None:
    """Encoders here write neither (x264 puts its matrices in the PPS): SPS written by hand,
    with explicit and default scaling lists and a picture-order cycle, read to 320x240."""
    deltas = [("se", d) for d in (2, -1, 0, 3, -5, 7, 1, -2, 0, 4, -3, 1, 2, -1, 0, 1)]
    head = [("u8", 100), ("u16", 30), ("ue", 0), ("ue", 1), ("ue", 0), ("ue", 0), ("u1", 0)]
    wide = [("se", (-1) ** i) for i in range(64)]  # an 8x8 list: 64 entries
    lists = [("u1", 1), ("u1", 1), ("se", -8), ("u1", 1), *deltas] + [("u1", 0)] * 4
    lists += [("u1", 1), *wide, ("u1", 0)]
    poc = [("ue", 0), ("ue", 1), ("u1", 0), ("se", -3), ("se", 2), ("ue", 2), ("se", 1), ("se", -1)]
    refs = [("ue", 1), ("u1", 0)]
    size = [("ue", 19), ("ue", 14), ("u1", 1), ("u1", 1), ("u1", 0), ("u1", 0)]
    assert h264_size(_rbsp(head + lists + poc + refs + size)) == (320, 240)


def test_hevc_sub_layer_profiles_are_read_past() -> None:
    """Three sub-layers, the first two with their own profile and level: 1920x1080 inside a
    conformance window of 8 lines."""
    general = [("u4", 0), ("u3", 2), ("u1", 1), ("u32", 0x01600000), ("u32", 0), ("u24", 0)]
    flags = [("u1", 1), ("u1", 1), ("u1", 0), ("u1", 1), ("u12", 0)]  # 2 pairs, 6 reserved
    sub = [("u32", 0), ("u32", 0), ("u24", 0), ("u8", 90), ("u8", 60)]  # 88 + 8, then 8
    size = [("ue", 0), ("ue", 1), ("ue", 1920), ("ue", 1088), ("u1", 1)]
    window = [("ue", 0), ("ue", 0), ("ue", 0), ("ue", 4)]
    assert hevc_size(_rbsp([*general, ("u8", 93), *flags, *sub, *size, *window])) == (1920, 1080)

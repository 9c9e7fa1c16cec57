"""The decoder on real encodes made with PyAV: containers, codecs, stream info, sampling, limits."""

from __future__ import annotations

import io
from fractions import Fraction

import av
import numpy as np
import pytest

from ingest.config import DecodeConfig, LimitsConfig, SamplingConfig
from ingest.decode import decode, is_init_segment, is_media_fragment, open_container
from ingest.synth import EncodeSettings, clip, encode, pattern_frames, split_fmp4
from ingest.types import (
    DecodeError,
    DecodeTimeout,
    EmptySegment,
    IngestError,
    LimitExceeded,
    MissingInitSegment,
    NoVideoStream,
    Segment,
)

CONTAINERS = [
    ("libx264", "mpegts", "h264"),
    ("libx264", "mp4", "h264"),
    ("libx264", "matroska", "h264"),
    ("libx265", "mpegts", "hevc"),
    ("libx265", "mp4", "hevc"),
    ("libx265", "matroska", "hevc"),
]


@pytest.mark.parametrize(("encoder", "container", "codec"), CONTAINERS)
def test_every_container_decodes_with_right_info(encoder: str, container: str, codec: str) -> None:
    settings = EncodeSettings(codec=encoder, container=container, gop=25)
    data = clip("bars", width=256, height=144, seconds=2.0, settings=settings)
    d = decode(Segment(data))
    info = d.info
    assert info.codec == codec
    assert (info.width, info.height) == (256, 144)
    assert info.fps == pytest.approx(25.0)
    assert info.frame_count == 50
    assert len(d.stats) == 50
    assert info.keyframe_count == 2
    assert int(d.stats.keyframe.sum()) == 2
    assert info.pix_fmt == "yuv420p" and info.bit_depth == 8
    assert info.duration_s == pytest.approx(2.0)
    # Measured bitrate is the video payload only: below the file's rate, same order.
    assert 0.3 * len(data) * 8 / 2 < info.bitrate <= len(data) * 8 / 2
    assert d.decode_errors == 0 and d.corrupt_frames == 0
    assert info.profile in ("High", "Main")


@pytest.mark.parametrize(("encoder", "container", "codec"), CONTAINERS)
def test_the_open_decodes_nothing_and_the_decode_still_sees_everything(
    encoder: str, container: str, codec: str
) -> None:
    """The container's probe skips decoding (it cost a tenth of a bare decode): the
    dimensions come from the parsers, and the decode still yields every frame, with the
    pixel format of the first frame decoded."""
    settings = EncodeSettings(codec=encoder, container=container, gop=25)
    data = clip("bars", width=256, height=144, seconds=1.0, settings=settings)
    with open_container(data, max_pixels=1 << 24) as c:
        ctx = c.streams.video[0].codec_context
        if container == "mpegts" and codec == "h264":  # MP4 and MKV headers name it
            assert ctx.pix_fmt is None  # no picture was decoded while probing
        assert (ctx.width, ctx.height) == (256, 144)
    d = decode(Segment(data))
    assert len(d.stats) == 25 and d.info.pix_fmt == "yuv420p" and d.info.codec == codec
    with av.open(io.BytesIO(data)) as c:  # a plain open, probe and all
        plain = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    assert all(np.array_equal(f.rgb, plain[f.index]) for f in d.frames)


@pytest.mark.parametrize(("encoder", "container", "codec"), CONTAINERS)
def test_skipped_frames_leave_pictures_and_timeline_as_a_full_decode(
    encoder: str, container: str, codec: str
) -> None:
    """Non-reference frames nothing reads are not decoded: the sampled pictures and the
    quantiser are bit-identical to a full decode, every frame keeps its row, and the
    skipped rows' statistics are held from their neighbours."""
    settings = EncodeSettings(codec=encoder, container=container, gop=50)
    data = clip("scene", width=256, height=144, seconds=2.0, settings=settings)
    cfg = DecodeConfig(threads=1)
    skipped = decode(Segment(data), cfg)
    full = decode(Segment(data), cfg.model_copy(update={"skip_nonref": False}))
    assert full.stats.held is None
    held = skipped.stats.held
    assert held is not None and 0 < int(held.sum()) < len(held) // 2
    assert [f.index for f in skipped.frames] == [f.index for f in full.frames]
    assert all(
        np.array_equal(a.rgb, b.rgb) for a, b in zip(skipped.frames, full.frames, strict=True)
    )
    assert np.array_equal(skipped.stats.pts_s, full.stats.pts_s)
    assert skipped.info.frame_count == full.info.frame_count == 50
    if codec == "h264":  # the quantiser frames are never skipped
        assert np.array_equal(skipped.stats.qp, full.stats.qp, equal_nan=True)
    # Decoded rows are the full decode's; held ones are near their neighbours'.
    kept = ~held
    assert np.array_equal(skipped.stats.luma_mean[kept], full.stats.luma_mean[kept])
    assert np.allclose(skipped.stats.luma_mean, full.stats.luma_mean, atol=0.02)
    motion = float(np.nanmean(skipped.stats.luma_diff)), float(np.nanmean(full.stats.luma_diff))
    assert motion[0] == pytest.approx(motion[1], rel=0.15)


@pytest.mark.parametrize(("width", "height", "count"), [(256, 144, 8), (160, 90, 2)])
def test_held_rows_keep_the_motion_of_grain_and_of_steady_motion(
    width: int, height: int, count: int
) -> None:
    """A difference across a skipped frame grows with the span for motion, not for grain:
    the segment's mean frame difference stays near a full decode's for both, also where
    every other frame is skipped (a small rung, two sampled frames)."""
    from ingest.impair import noise

    frames = list(pattern_frames("texture", width, height, 50))
    cfg = DecodeConfig(threads=1, sampling=SamplingConfig(count=count))
    for content in (frames, noise(frames, 10.0, seed=2)):
        data = encode(content, EncodeSettings(gop=50, crf=None, bitrate=150_000))
        skipped = decode(Segment(data), cfg)
        full = decode(Segment(data), cfg.model_copy(update={"skip_nonref": False}))
        assert skipped.stats.held is not None and skipped.stats.held.any()
        mean = [float(np.nanmean(d.stats.luma_diff)) for d in (skipped, full)]
        assert mean[0] == pytest.approx(mean[1], rel=0.15)


def test_damage_decodes_every_frame() -> None:
    """Any sign of damage (here: transport loss the decoder conceals) makes the decoder
    see every frame, so a skipped frame never hides a concealed one."""
    from ingest.impair import corrupt_packets

    data = clip("scene", width=256, height=144, seconds=2.0)
    clean = decode(Segment(data), DecodeConfig(threads=1))
    assert clean.stats.held is not None and clean.stats.held.any()
    damaged = decode(Segment(corrupt_packets(data, 0.05, seed=3)), DecodeConfig(threads=1))
    assert damaged.stats.held is None
    assert damaged.corrupt_frames > 0 or damaged.decode_errors > 0


def test_ten_bit_hevc_reports_depth_and_normalised_stats() -> None:
    settings = EncodeSettings(codec="libx265", container="mp4", pix_fmt="yuv420p10le")
    d = decode(Segment(clip("gradient", width=256, height=144, seconds=0.4, settings=settings)))
    assert d.info.bit_depth == 10 and d.info.pix_fmt == "yuv420p10le"
    assert 0.0 < float(d.stats.luma_mean.mean()) < 1.0
    assert d.frames[0].rgb.dtype == np.uint8 and d.frames[0].rgb.shape == (144, 256, 3)


def test_frames_are_native_resolution_rgb(ts_h264: bytes) -> None:
    d = decode(Segment(ts_h264))
    assert all(f.rgb.shape == (180, 320, 3) for f in d.frames)
    assert [f.index for f in d.frames] == [3, 9, 15, 21, 28, 34, 40, 46]
    assert d.frames[0].pts_s == pytest.approx(d.stats.pts_s[3])


def test_sampling_is_deterministic(ts_h264: bytes) -> None:
    a, b = decode(Segment(ts_h264)), decode(Segment(ts_h264))
    assert [f.index for f in a.frames] == [f.index for f in b.frames]
    for fa, fb in zip(a.frames, b.frames, strict=True):
        assert np.array_equal(fa.rgb, fb.rgb)
    np.testing.assert_array_equal(a.stats.luma_diff, b.stats.luma_diff)


@pytest.mark.parametrize(("mode", "count", "expected"), [("all", 8, 50), ("uniform", 5, 5)])
def test_sampling_modes(ts_h264: bytes, mode: str, count: int, expected: int) -> None:
    cfg = DecodeConfig(sampling=SamplingConfig(mode=mode, count=count))  # type: ignore[arg-type]
    d = decode(Segment(ts_h264), cfg)
    assert len(d.frames) == expected
    assert len(d.stats) == 50


def test_keyframes_mode_decodes_only_keyframes() -> None:
    data = clip("scene", seconds=2.0, settings=EncodeSettings(gop=10))
    cfg = DecodeConfig(sampling=SamplingConfig(mode="keyframes", count=100))
    d = decode(Segment(data), cfg)
    assert len(d.frames) == 5 and all(f.keyframe for f in d.frames)
    assert d.info.frame_count == 50 and d.info.keyframe_count == 5


def test_luma_stats_see_black_and_frozen_frames() -> None:
    frames = list(pattern_frames("scene", 160, 96, 30))
    frames[10:20] = [np.zeros_like(frames[0])] * 10
    frames[20:30] = [frames[20]] * 10
    d = decode(Segment(encode(frames, EncodeSettings(crf=18))))
    assert (d.stats.dark_fraction[10:20] > 0.99).all()
    assert (d.stats.dark_fraction[:10] < 0.5).all()
    assert (d.stats.luma_diff[21:30] < 1e-3).all()
    assert (d.stats.luma_diff[1:10] > 1e-3).all()


def test_fmp4_fragment_decodes_with_init_and_fails_clearly_without() -> None:
    data = clip("scene", seconds=4.0, settings=EncodeSettings(container="mp4-frag"))
    init, fragments = split_fmp4(data)
    assert is_init_segment(init) and len(fragments) == 2
    assert all(is_media_fragment(f) for f in fragments)
    d = decode(Segment(fragments[1], init=init))
    assert d.info.frame_count == 50
    assert d.stats.pts_s[0] == pytest.approx(2.0, abs=0.1)
    with pytest.raises(MissingInitSegment, match="init segment"):
        decode(Segment(fragments[1]))


def test_hevc_fmp4_fragment_with_init() -> None:
    settings = EncodeSettings(codec="libx265", container="mp4-frag")
    init, fragments = split_fmp4(clip("bars", seconds=4.0, settings=settings))
    assert decode(Segment(fragments[0], init=init)).info.codec == "hevc"


# --- hostile input: each a typed error with a reason, never a crash --------------------


def _audio_only() -> bytes:
    buf = io.BytesIO()
    with av.open(buf, "w", format="mpegts") as out:
        stream = out.add_stream("mp2", rate=48000)
        for i in range(20):
            frame = av.AudioFrame.from_ndarray(
                np.zeros((1, 1152), dtype=np.int16), format="s16", layout="mono"
            )
            frame.sample_rate = 48000
            frame.pts = i * 1152
            frame.time_base = Fraction(1, 48000)
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return buf.getvalue()


def _huge_resolution() -> bytes:
    """One real frame whose stream header claims 5120x2880 (14.7 Mpixels)."""
    frame = np.zeros((2880, 5120, 3), dtype=np.uint8)
    settings = EncodeSettings(codec="mpeg2video", container="mpegts", crf=None, bitrate=10**6)
    return encode([frame], settings)


@pytest.mark.parametrize(
    ("name", "make", "error", "reason"),
    [
        ("random bytes", lambda ts: np.random.default_rng(1).bytes(50_000), DecodeError, None),
        ("zero bytes", lambda ts: b"", EmptySegment, "empty"),
        ("truncated", lambda ts: ts[:700], DecodeError, None),
        ("audio only", lambda ts: _audio_only(), NoVideoStream, "no_video"),
        ("huge resolution", lambda ts: _huge_resolution(), LimitExceeded, "limit_exceeded"),
    ],
)
def test_hostile_input_gets_a_typed_error(
    ts_h264: bytes, name: str, make: object, error: type[IngestError], reason: str | None
) -> None:
    data = make(ts_h264)  # type: ignore[operator]
    with pytest.raises(error) as info:
        decode(Segment(data, source=name))
    assert str(info.value).startswith(f"{name}: ")
    assert len(str(info.value)) > 30  # a sentence a person can act on
    if reason is not None:
        assert info.value.reason == reason


def test_truncated_mp4_is_a_decode_error() -> None:
    data = clip("scene", settings=EncodeSettings(container="mp4"))
    with pytest.raises(DecodeError):
        decode(Segment(data[: len(data) // 2]))


@pytest.mark.parametrize(
    ("limits", "match"),
    [
        (LimitsConfig(max_bytes=1000), "max_bytes"),
        (LimitsConfig(max_pixels=320 * 100), "max_pixels"),
        (LimitsConfig(max_frames=20), "max_frames"),
        (LimitsConfig(max_duration_s=1.0), "max_duration_s"),
    ],
)
def test_limits_raise_with_the_setting_to_change(
    ts_h264: bytes, limits: LimitsConfig, match: str
) -> None:
    with pytest.raises(LimitExceeded, match=match):
        decode(Segment(ts_h264), DecodeConfig(limits=limits))


def test_decode_timeout(ts_h264: bytes) -> None:
    cfg = DecodeConfig(limits=LimitsConfig(decode_timeout_s=1e-9))
    with pytest.raises(DecodeTimeout, match="decode_timeout_s") as info:
        decode(Segment(ts_h264), cfg)
    assert info.value.reason == "decode_timeout"


def test_hwaccel_falls_back_to_software_without_a_device(ts_h264: bytes) -> None:
    # No GPU here: asking for NVDEC must still decode, in software, and say so.
    from ingest import decode as decode_module

    decoded = decode(Segment(ts_h264), DecodeConfig(hwaccel="cuda", threads=1))
    assert decoded.info.frame_count == 50 and decoded.info.decoder == "software"
    assert decode_module.hw_fallback_reason is not None
    assert "software" in decode_module.hw_fallback_reason
    plain = decode(Segment(ts_h264), DecodeConfig(threads=1))
    assert plain.stats.luma_mean.tolist() == decoded.stats.luma_mean.tolist()


def _pyav_rgb(data: bytes) -> list[np.ndarray]:
    with av.open(io.BytesIO(data)) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]


@pytest.mark.parametrize(("width", "height"), [(416, 234), (320, 180), (1280, 720)])
def test_sampled_rgb_is_pyavs_own_conversion(width: int, height: int) -> None:
    """decode() converts through one reformatter a segment (its swscale context reused):
    every frame must be what PyAV's own per-frame `to_ndarray(format="rgb24")` gives."""
    data = encode(list(pattern_frames("scene", width, height, 12, seed=1)), EncodeSettings())
    d = decode(Segment(data), DecodeConfig(sampling=SamplingConfig(mode="all")))
    want = _pyav_rgb(data)
    assert len(d.frames) == len(want) == 12
    for f in d.frames:
        np.testing.assert_array_equal(f.rgb, want[f.index])


def test_sampled_rgb_follows_a_size_change_inside_the_segment() -> None:
    """The reused converter must rebuild its context when the picture size changes."""
    small = encode(list(pattern_frames("texture", 320, 180, 8, seed=2)), EncodeSettings(gop=8))
    large = encode(list(pattern_frames("scene", 640, 360, 8, seed=3)), EncodeSettings(gop=8))
    data = small + large
    want = _pyav_rgb(data)
    d = decode(Segment(data), DecodeConfig(sampling=SamplingConfig(mode="all")))
    sizes = {f.rgb.shape for f in d.frames}
    assert sizes == {(180, 320, 3), (360, 640, 3)}
    for f in d.frames:
        np.testing.assert_array_equal(f.rgb, want[f.index])

"""The picture size an SPS claims, read from an MPEG-TS segment before FFmpeg probes it."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import av
import pytest

from ingest.decode import decode
from ingest.hostile import sps_bomb
from ingest.sps import Bits, claimed_sizes, ts_video
from ingest.synth import EncodeSettings, clip
from ingest.types import LimitExceeded, Segment

CASES = [
    ("libx264", "yuv420p", (100, 58), ()),
    ("libx264", "yuv422p", (322, 182), ()),
    ("libx264", "yuv444p", (96, 64), (("x264-params", "cqm=jvt"),)),  # scaling matrices
    ("libx264", "gray", (100, 58), ()),
    ("libx264", "yuv420p", (640, 360), (("x264-params", "interlaced=1"),)),
    ("libx264", "yuv420p", (100, 58), (("cqm", "jvt"),)),
    ("libx265", "yuv420p", (100, 58), ()),
    ("libx265", "yuv420p10le", (322, 182), ()),
    ("libx265", "yuv444p", (96, 64), (("x265-params", "temporal-layers=3"),)),
]


@pytest.mark.parametrize(("codec", "pix_fmt", "size", "options"), CASES)
def test_the_size_read_is_the_size_ffmpeg_decodes(
    codec: str, pix_fmt: str, size: tuple[int, int], options: tuple[tuple[str, str], ...]
) -> None:
    settings = EncodeSettings(codec=codec, pix_fmt=pix_fmt, preset="ultrafast", options=options)
    data = clip("bars", width=size[0], height=size[1], seconds=0.2, settings=settings)
    assert set(claimed_sizes(ts_video(data))) == {size}
    d = decode(Segment(data))
    assert (d.info.width, d.info.height) == size


def test_ts_video_is_the_elementary_stream_ffmpeg_demuxes() -> None:
    data = clip("scene", width=96, height=64, seconds=1.0, settings=EncodeSettings(gop=5))
    with av.open(io.BytesIO(data), format="mpegts") as c:
        stream = b"".join(bytes(p) for p in c.demux(c.streams.video[0]) if p.size)
    assert ts_video(data) == stream
    assert ts_video(b"") == b"" and ts_video(b"\x47" * 100) == b""


def _packet(pid: int, payload: bytes, *, start: bool) -> bytes:
    header = bytes([0x47, (0x40 if start else 0) | pid >> 8, pid & 0xFF, 0x10])
    return (header + payload + b"\xff" * 184)[:188]


def test_an_sps_outside_the_video_stream_is_not_read() -> None:
    """A start code and SPS bytes inside another PID's payload (audio carries no emulation
    prevention; a table may hold anything) claim no size: the segment still decodes."""
    data = clip("bars", width=96, height=64, seconds=0.4)
    bomb_sps = next(u for u in sps_bomb(frames=2).split(b"\x00\x00\x01")[1:] if u[0] == 0x67)
    pes = b"\x00\x00\x01\xc0\x00\x00\x80\x00\x00" + b"\x00\x00\x01" + bomb_sps[:40]
    hostile = _packet(0x1FF, pes, start=True) + data
    assert (16000, 16000) in set(claimed_sizes(hostile))  # raw bytes would be refused
    assert set(claimed_sizes(ts_video(hostile))) == {(96, 64)}
    assert decode(Segment(hostile)).info.width == 96


def test_an_sps_split_across_ts_packets_is_read() -> None:
    """The start code and the SPS header byte in one packet, the fields in the next."""
    sps = next(u for u in sps_bomb(frames=2).split(b"\x00\x00\x01")[1:] if u[0] == 0x67)
    pes = b"\x00\x00\x01\xe0\x00\x00\x80\x00\x00"
    first = _packet(0x100, b"\xff" * (184 - len(pes) - 4), start=False)  # filler
    head = pes + b"\x00" * (184 - len(pes) - 4) + b"\x00\x00\x01\x67"
    data = first + _packet(0x100, head, start=True) + _packet(0x100, sps[1:60], start=False)
    assert list(claimed_sizes(ts_video(data))) == [(16000, 16000)]


def test_an_sps_bomb_the_probe_decodes_is_refused_before_ffmpeg_sees_it() -> None:
    """bench/fuzz.py: SPS bombs with flipped bits, which FFmpeg's TS probe decodes at the
    size claimed (0.7-1.2 GB, 1-2.5 s) with no max_pixels: PyAV hands options to the
    probe's decoders only for containers that list their streams before it."""
    code = (
        "import resource, sys\n"
        "from pathlib import Path\n"
        "from ingest.decode import decode\n"
        "from ingest.types import Segment, LimitExceeded\n"
        "base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "data = Path(sys.argv[1]).read_bytes()\n"
        "try:\n"
        "    decode(Segment(data))\n"
        "except LimitExceeded as e:\n"
        "    print(e)\n"
        "print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) // 1024)\n"
    )
    path = Path(__file__).resolve().parents[1] / "corpus" / "fuzz" / "decode-1d5fa830e922.bin"
    out = subprocess.run(
        [sys.executable, "-c", code, str(path)],
        capture_output=True,
        text=True,
        check=True,
        cwd=path.parents[3],
    ).stdout.splitlines()
    assert "16000x16000" in out[0] and "max_pixels" in out[0]
    assert int(out[1]) < 200, f"{out[1]} MB more peak memory than the imports"


def test_bits_read_what_is_there_and_refuse_the_rest() -> None:
    r = Bits(bytes([0b10100110, 0b10011000]))  # ue 0, 1, 2; se +1 (ue 1), se -1 (ue 2)
    assert (r.ue(), r.ue(), r.ue(), r.se()) == (0, 1, 2, 1)
    assert r.se() == -1
    with pytest.raises(IndexError):
        Bits(b"\x01").u(9)
    with pytest.raises(ValueError, match="longer than 32"):
        Bits(bytes(8)).ue()
    r = Bits(b"\xa5")
    r.u(3)
    assert r.rest() == [0, 0, 1, 0, 1]
    # unreadable SPS units are skipped, not guessed
    assert list(claimed_sizes(b"\x00\x00\x01\x67")) == []
    assert list(claimed_sizes(b"\x00\x00\x01\x42\x01" + bytes(8))) == []


def test_packets_after_a_splice_are_found_again_at_the_next_sync_byte() -> None:
    """bench/fuzz.py: a 96x64 HEVC TS spliced with an SPS bomb, off the 188-byte grid: the
    grid alone missed the bomb's SPS, and the probe spent 1.2 GB on it; FFmpeg resyncs."""
    sound = clip("bars", width=96, height=64, seconds=0.4)
    spliced = sound + b"\x00\x11\x22" + sps_bomb(frames=3)
    assert set(claimed_sizes(ts_video(sound + sps_bomb(frames=3)))) >= {(16000, 16000)}
    assert set(claimed_sizes(ts_video(spliced))) == {(96, 64), (16000, 16000)}
    with pytest.raises(LimitExceeded, match="16000x16000"):
        decode(Segment(spliced))
    assert ts_video(b"\x00" * 500) == b"" and ts_video(b"\x47" + b"\x00" * 300) == b""

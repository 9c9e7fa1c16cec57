"""`vqmon publish` without a broker: cutting (copy and ladder), the HLS writer, errors."""

from __future__ import annotations

import io
from pathlib import Path

import av
import m3u8
import numpy as np
import pytest

from ingest.cut import cut_file, parse_bitrate, parse_ladder
from ingest.hls_writer import HlsWriter, Variant
from ingest.synth import EncodeSettings, clip
from ingest.types import DecodeError, NoVideoStream
from monitor.cli import main
from monitor.publish import publish_cuts


@pytest.fixture(scope="module")
def mp4_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """5 s of H.264 in MP4 at 160x90, a keyframe every second."""
    path = tmp_path_factory.mktemp("src") / "talk.mp4"
    path.write_bytes(
        clip(
            "scene",
            width=160,
            height=90,
            seconds=5,
            settings=EncodeSettings("libx264", "mp4", gop=25),
        )
    )
    return path


def frames_of(data: bytes) -> list[av.VideoFrame]:
    with av.open(io.BytesIO(data)) as c:
        return list(c.decode(video=0))


def test_parse_ladder_and_bitrates() -> None:
    assert parse_bitrate("3000k") == 3_000_000
    assert parse_bitrate("2.5M") == 2_500_000
    rungs = parse_ladder("1280x720:3000k, hq=640x360:800k")
    assert [(r.name, r.width, r.height, r.bitrate) for r in rungs] == [
        ("720p", 1280, 720, 3_000_000),
        ("hq", 640, 360, 800_000),
    ]
    for bad, why in (
        ("1280x720", "must look like"),
        ("1281x720:1M", "even"),
        ("640x360:1M,640x360:2M", "named"),
        ("640x360:fast", "bitrate"),
    ):
        with pytest.raises(ValueError, match=why):
            parse_ladder(bad)


def test_copy_cuts_at_keyframes_with_durations(mp4_file: Path) -> None:
    cuts = list(cut_file(mp4_file, 2.0))
    assert [(c.rendition, c.seq) for c in cuts] == [("source", 0), ("source", 1), ("source", 2)]
    assert [round(c.duration_s, 2) for c in cuts] == [2.0, 2.0, 1.0]
    assert [c.start_s for c in cuts] == pytest.approx([0.0, 2.0, 4.0])
    for c in cuts:
        frames = frames_of(c.data)
        assert frames[0].key_frame and len(frames) == round(c.duration_s * 25)
        assert c.data[0] == 0x47  # MPEG-TS sync byte


def test_ladder_encodes_every_rung_per_segment(mp4_file: Path) -> None:
    rungs = parse_ladder("160x90:200k,96x54:60k")
    cuts = list(cut_file(mp4_file, 2.0, ladder=rungs))
    assert [(c.seq, c.rendition) for c in cuts] == [
        (0, "90p"), (0, "54p"), (1, "90p"), (1, "54p"), (2, "90p"), (2, "54p"),
    ]  # fmt: skip
    for c in cuts:
        frames = frames_of(c.data)
        assert frames[0].key_frame
        assert (frames[0].width, frames[0].height) == (c.width, c.height)
        assert len(frames) == round(c.duration_s * 25)
    assert {c.bitrate for c in cuts} == {200_000, 60_000}
    # timestamps run on across segments, as a live encoder's do
    first = [frames_of(c.data)[0].time for c in cuts if c.rendition == "90p"]
    assert first[1] - first[0] == pytest.approx(2.0, abs=0.05)


def test_non_ts_codec_is_reencoded(tmp_path: Path) -> None:
    path = tmp_path / "clip.mkv"
    s = EncodeSettings("libvpx-vp9", "matroska", crf=None, bitrate=200_000, gop=25)
    path.write_bytes(clip("bars", width=160, height=90, seconds=2, settings=s))
    cuts = list(cut_file(path, 1.0))
    assert len(cuts) == 2
    with av.open(io.BytesIO(cuts[0].data)) as c:
        assert c.streams.video[0].codec_context.name == "h264"


def test_unreadable_files_fail_clearly(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"not a video" * 100)
    with pytest.raises(DecodeError, match="not a video file"):
        list(cut_file(junk))
    with pytest.raises(DecodeError, match="no such file"):
        list(cut_file(tmp_path / "missing.mp4"))
    audio = tmp_path / "tone.wav"
    with av.open(str(audio), "w") as out:
        a = out.add_stream("pcm_s16le", rate=8000, layout="mono")
        tone = av.AudioFrame.from_ndarray(np.zeros((1, 800), np.int16), format="s16", layout="mono")
        tone.sample_rate = 8000
        for packet in [*a.encode(tone), *a.encode(None)]:
            out.mux(packet)
    with pytest.raises(NoVideoStream):
        list(cut_file(audio))
    assert main(["publish", str(junk), "--hls", str(tmp_path / "hls")]) == 1
    assert "junk.mp4: not a video file PyAV can read" in capsys.readouterr().err
    assert main(["publish", str(junk)]) == 2
    assert "nowhere to publish" in capsys.readouterr().err


def test_publish_writes_a_live_hls_ladder(
    mp4_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "hls"
    code = main(["publish", str(mp4_file), "--hls", str(out), "--ladder", "160x90:200k,96x54:60k"])
    assert code == 0, capsys.readouterr().err
    assert "6 segments of talk" in capsys.readouterr().out
    master = m3u8.load(str(out / "master.m3u8"))
    assert master.is_variant
    assert [(p.uri, p.stream_info.bandwidth) for p in master.playlists] == [
        ("90p/index.m3u8", 240_000),
        ("54p/index.m3u8", 72_000),
    ]
    media = m3u8.load(str(out / "90p" / "index.m3u8"))
    assert media.is_endlist and media.target_duration == 2
    assert [s.uri for s in media.segments] == [f"seg_0000{i}.ts" for i in range(3)]
    assert [s.duration for s in media.segments] == [2.0, 2.0, 1.0]


def test_hls_window_and_realtime_pacing(mp4_file: Path, tmp_path: Path) -> None:
    writer = HlsWriter(tmp_path, [Variant("source", 160, 90, 100_000)], segment_s=1, list_size=2)
    waited: list[float] = []
    now = [0.0]

    def sleep(s: float) -> None:
        waited.append(round(s, 3))
        now[0] += s

    cuts = list(cut_file(mp4_file, 1.0))
    done = publish_cuts(cuts, [writer.put], realtime=True, sleep=sleep, clock=lambda: now[0])
    assert done.segments["source"] == 5 and waited == [1.0] * 5
    text = (tmp_path / "source" / "index.m3u8").read_text()
    assert "#EXT-X-MEDIA-SEQUENCE:3" in text and "#EXT-X-ENDLIST" not in text
    # out of the window for another window: deleted; still listed or just left: kept
    assert sorted(p.name for p in (tmp_path / "source").glob("*.ts")) == [
        "seg_00001.ts", "seg_00002.ts", "seg_00003.ts", "seg_00004.ts",
    ]  # fmt: skip
    writer.close()
    assert (tmp_path / "source" / "index.m3u8").read_text().endswith("#EXT-X-ENDLIST\n")

"""`vqmon score` end to end on real files: table, JSON, long files, exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from ingest.decode import decode
from ingest.split import split_file
from ingest.synth import EncodeSettings, clip, encode, pattern_frames, split_fmp4
from monitor.cli import main


@pytest.fixture(scope="module")
def long_mp4(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("media") / "long.mp4"
    path.write_bytes(clip("scene", seconds=9.0, settings=EncodeSettings(container="mp4")))
    return path


def test_split_cuts_at_keyframes_and_keeps_every_frame(long_mp4: Path) -> None:
    segments = list(split_file(long_mp4, 2.0))
    assert [s.seq for s in segments] == [0, 1, 2, 3, 4]
    decoded = [decode(s) for s in segments]
    assert sum(d.info.frame_count for d in decoded) == 225
    assert all(d.stats.keyframe[0] for d in decoded)
    assert {d.info.container for d in decoded} == {"mpegts"}


def test_score_long_file_as_table(long_mp4: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["score", str(long_mp4), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "h264 320x180" in out
    assert len([line for line in out.splitlines() if line.strip().startswith(("0 ", "4 "))]) == 2


def test_score_json_one_object_per_input(
    long_mp4: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    short = tmp_path / "short.ts"
    short.write_bytes(clip("bars", seconds=1.0))
    assert main(["score", "--json", str(long_mp4), str(short)]) == 0
    objs = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [o["input"] for o in objs] == [str(long_mp4), str(short)]
    assert len(objs[0]["segments"]) == 5 and len(objs[1]["segments"]) == 1
    assert objs[0]["info"]["frame_count"] == 225
    assert all(s["scorers"] for s in objs[0]["segments"])


def test_score_flags_a_black_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    frames = list(pattern_frames("scene", 160, 96, 50))
    frames[10:40] = [np.zeros_like(frames[0])] * 30
    path = tmp_path / "black.ts"
    path.write_bytes(encode(frames))
    assert main(["score", "--json", str(path)]) == 0
    flags = json.loads(capsys.readouterr().out)["segments"][0]["flags"]
    black = [f for f in flags if f["kind"] == "black"]
    assert black and black[0]["duration_s"] == pytest.approx(1.2)


def test_score_fmp4_fragment_needs_init(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    init, fragments = split_fmp4(
        clip("scene", seconds=4.0, settings=EncodeSettings(container="mp4-frag"))
    )
    (tmp_path / "init.mp4").write_bytes(init)
    (tmp_path / "seg1.m4s").write_bytes(fragments[1])
    assert main(["score", str(tmp_path / "seg1.m4s")]) == 1
    assert "init segment" in capsys.readouterr().out
    args = ["score", "--json", "--init", str(tmp_path / "init.mp4"), str(tmp_path / "seg1.m4s")]
    assert main(args) == 0
    assert json.loads(capsys.readouterr().out)["info"]["frame_count"] == 50


@pytest.mark.parametrize(
    ("content", "reason"),
    [(b"", "empty"), (bytes(range(256)) * 100, "decode_error")],
)
def test_bad_input_exits_non_zero_with_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes, reason: str
) -> None:
    bad = tmp_path / "bad.ts"
    bad.write_bytes(content)
    good = tmp_path / "good.ts"
    good.write_bytes(clip("bars", seconds=0.5))
    assert main(["score", "--json", str(bad), str(good)]) == 1
    objs = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert objs[0]["ok"] is False and objs[0]["reason"] == reason and objs[0]["error"]
    assert objs[1]["ok"] is True


def test_missing_file_and_broken_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["score", str(tmp_path / "nope.ts")]) == 1
    assert "no such file" in capsys.readouterr().out
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("decode:\n  sampling:\n    mode: sometimes\n")
    assert main(["score", "--config", str(cfg), str(tmp_path / "nope.ts")]) == 2
    assert "decode.sampling.mode" in capsys.readouterr().err


def test_corrupt_inputs_are_reported_and_the_rest_still_scored(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from ingest.hostile import sps_bomb

    # A Matroska track whose codec id names no decoder (PyAV: no codec context).
    mkv = clip(
        "bars", width=64, height=64, seconds=0.4, settings=EncodeSettings(container="matroska")
    )
    nodec = tmp_path / "nodec.mkv"
    nodec.write_bytes(mkv.replace(b"V_MPEG4/ISO/AVC", b"V_MPEG4/ISO/XYZ"))
    # 9 s with one keyframe, the keyframe cut off: splitting yields no segment, which
    # was an IndexError in the summary.
    ts = clip("scene", width=64, height=64, seconds=9, settings=EncodeSettings(gop=1000))
    nokey = tmp_path / "nokey.ts"
    nokey.write_bytes(ts[188 * 40 :])
    bomb = tmp_path / "bomb.ts"
    bomb.write_bytes(sps_bomb(frames=10))
    good = tmp_path / "good.ts"
    good.write_bytes(clip("bars", seconds=1.0))
    paths = [nodec, nokey, bomb, tmp_path / "missing.ts", good]
    assert main(["score", "--json", *map(str, paths)]) == 1
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    objs = {Path(o["input"]).name: o for o in map(json.loads, captured.out.splitlines())}
    assert objs["nodec.mkv"]["reason"] == "no_decoder"
    assert objs["nokey.ts"]["reason"] == "decode_error"
    assert objs["bomb.ts"]["reason"] == "limit_exceeded"
    assert not objs["missing.ts"]["ok"]
    assert objs["good.ts"]["ok"] and objs["good.ts"]["segments"]

"""The FFmpeg adapter's arguments, run through a real FFmpeg encode (imageio-ffmpeg's binary)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from monitor.ffmpeg_adapter import FfmpegLadder, ffmpeg_args
from monitor.types import DecisionParams, EncoderDecision, EncoderSettings


def decision(action: str, params: DecisionParams, *, dry_run: bool = False) -> EncoderDecision:
    return EncoderDecision(
        id=f"news/720p/{action}/7",
        stream="news",
        rendition="720p",
        action=action,  # type: ignore[arg-type]
        params=params,
        settings=EncoderSettings(),
        dry_run=dry_run,
        made_at=0.0,
        seq=7,
        reason="test",
    )


def test_arguments_for_each_setting() -> None:
    s = EncoderSettings(bitrate=500_000, preset="fast", filters=("denoise", "deblock"))
    assert ffmpeg_args(s) == [
        "-c:v", "libx264", "-preset", "fast",
        "-b:v", "500000", "-maxrate", "500000", "-bufsize", "1000000",
        "-vf", "hqdn3d=4:3:6:4.5", "-deblock", "2:2",
    ]  # fmt: skip
    assert "-x265-params" in ffmpeg_args(s, "libx265")
    with pytest.raises(ValueError, match="dropped"):
        ffmpeg_args(EncoderSettings(enabled=False))


def test_ladder_folds_decisions_and_ignores_dry_run() -> None:
    ladder = FfmpegLadder()
    ladder.set("news", "720p", EncoderSettings(bitrate=300_000, preset="veryfast"))
    raise_ = decision("raise_bitrate", DecisionParams(from_bitrate=300_000, to_bitrate=360_000))
    assert ladder.apply(decision("raise_bitrate", raise_.params, dry_run=True)) is None
    args = ladder.apply(raise_)
    assert args is not None and args[args.index("-b:v") + 1] == "360000"
    assert ladder.apply(decision("drop_rung", DecisionParams())) is None


@pytest.fixture(scope="module")
def ffmpeg() -> str:
    imageio_ffmpeg = pytest.importorskip("imageio_ffmpeg", reason="needs the train extra")
    return str(imageio_ffmpeg.get_ffmpeg_exe())


def _encode(ffmpeg: str, out: Path, args: list[str]) -> int:
    src = ["-f", "lavfi", "-i", "testsrc2=size=320x180:rate=25:duration=2,noise=alls=20:allf=t"]
    cmd = [ffmpeg, "-hide_banner", "-loglevel", "error", "-y", *src, *args, "-f", "mpegts"]
    subprocess.run([*cmd, str(out)], check=True, timeout=60, capture_output=True)
    return out.stat().st_size


def test_real_encode_with_the_arguments(ffmpeg: str, tmp_path: Path) -> None:
    ladder = FfmpegLadder()
    ladder.set("news", "720p", EncoderSettings(bitrate=150_000, preset="veryfast"))
    low = _encode(ffmpeg, tmp_path / "low.ts", ffmpeg_args(ladder.rungs[("news", "720p")]))
    raised = ladder.apply(
        decision("raise_bitrate", DecisionParams(from_bitrate=150_000, to_bitrate=600_000))
    )
    assert raised is not None
    high = _encode(ffmpeg, tmp_path / "high.ts", raised)
    assert high > 2 * low  # the decision really reached the rate control
    for action, params in (
        ("enable_filter", DecisionParams(filter="denoise")),
        ("enable_filter", DecisionParams(filter="deblock")),
        ("set_preset", DecisionParams(from_preset="veryfast", to_preset="fast")),
    ):
        args = ladder.apply(decision(action, params))
        assert args is not None
        assert _encode(ffmpeg, tmp_path / f"{action}.ts", args) > 0  # FFmpeg accepts them
    final = ffmpeg_args(ladder.rungs[("news", "720p")])
    assert "-vf" in final and "-deblock" in final and "fast" in final

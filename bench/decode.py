"""Decode throughput and the cost of the artifact detectors, as ratios measured in one run.

    python bench/decode.py [--repeat 3] [--seconds 2] [--json out.json]

For 720p and 1080p H.264 and HEVC 2-second segments (25 fps, MPEG-TS, CRF 23) it times:
  raw       PyAV decode of every packet, nothing else (the floor)
  all       vqmon decode keeping every frame as RGB
  sampled   vqmon decode with the default sampling (stats of every frame, 8 RGB frames)
  keyframes vqmon decode of keyframes only
and the artifact detectors on the sampled result, as a ratio of full decode time.
The best of --repeat runs is kept (least disturbed by other load on the machine).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path

import av

from ingest.config import DecodeConfig, SamplingConfig
from ingest.decode import decode
from ingest.synth import EncodeSettings, clip
from ingest.types import Segment
from scorers.artifacts import ArtifactsConfig, ArtifactScorer

SIZES = {"720p": (1280, 720), "1080p": (1920, 1080)}
CODECS = {"h264": "libx264", "hevc": "libx265"}


def best_of(repeat: int, fn: Callable[[], object]) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def raw_decode(data: bytes) -> int:
    n = 0
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.video[0]
        stream.codec_context.thread_type = "AUTO"
        for packet in container.demux(stream):
            n += len(stream.codec_context.decode(packet))
    return n


def measure(name: str, data: bytes, frames: int, repeat: int) -> dict[str, float | str]:
    seg = Segment(data)
    modes = {
        "all": DecodeConfig(sampling=SamplingConfig(mode="all")),
        "sampled": DecodeConfig(),
        "keyframes": DecodeConfig(sampling=SamplingConfig(mode="keyframes")),
    }
    row: dict[str, float | str] = {"case": name}
    raw = best_of(repeat, lambda: raw_decode(data))
    row["raw_fps"] = frames / raw
    seconds = {m: best_of(repeat, lambda c=c: decode(seg, c)) for m, c in modes.items()}  # type: ignore[misc]
    for mode, s in seconds.items():
        row[f"{mode}_fps"] = frames / s
    scorer = ArtifactScorer(ArtifactsConfig())
    decoded = decode(seg)
    detect = best_of(repeat, lambda: scorer.score([decoded]))
    row["detectors_s"] = detect
    row["detectors_over_raw"] = detect / raw
    row["detectors_over_all"] = detect / seconds["all"]
    row["detectors_over_sampled"] = detect / seconds["sampled"]
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    rows = []
    for size, (w, h) in SIZES.items():
        for codec, encoder in CODECS.items():
            settings = EncodeSettings(codec=encoder, container="mpegts", crf=23, gop=50)
            data = clip("scene", width=w, height=h, seconds=args.seconds, settings=settings)
            frames = round(args.seconds * settings.fps)
            row = measure(f"{size} {codec}", data, frames, args.repeat)
            rows.append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, {platform.processor() or '?'}")
    print(f"PyAV {av.__version__}, FFmpeg {av.library_versions['libavcodec']}")
    print()
    print(
        "| segment | raw decode fps | decode all (RGB every frame) fps | decode sampled fps "
        "| keyframes only fps | detectors ms | detectors / raw decode | detectors / decode all "
        "| detectors / decode sampled |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['case']} | {r['raw_fps']:.0f} | {r['all_fps']:.0f} | {r['sampled_fps']:.0f} "
            f"| {r['keyframes_fps']:.0f} | {float(r['detectors_s']) * 1000:.1f} "
            f"| {float(r['detectors_over_raw']):.1%} "
            f"| {float(r['detectors_over_all']):.1%} | {float(r['detectors_over_sampled']):.1%} |"
        )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""A picture that stops at a segment boundary (monitor.boundary), on real pictures.

    python bench/boundary.py --pictures ASSETS [--split eval] [--sources 0] [--seeds 2]
                             [--json OUT]

For each real picture (realset's `--split`, every one by default) and seed, realset's
virtual camera films 4 s (640x360, 25 fps), coded as two 2-s H.264 segments at CRF 23.
A screen worker (decode, artifacts scorer: monitor.workers.screen_job) screens the first,
then the second in five forms, each given the first one's edge as the screen role gives a
job its rendition's previous segment:

- clean: the camera's next 2 s (a stop only where the camera itself holds from there);
- held: the first segment's last frame held for the whole segment (a feed lost, or an
  encoder stuck, at the boundary): a stop;
- held_2, held_4: the picture moves on for 2 or 4 frames, then holds: too early for the
  segment's own detector (motion before the hold, from frame 5) to judge;
- cut: a still of another picture from the boundary (a cut to a still shot): never a stop;
- cut_2: the picture moves on for 2 frames, then cuts to that still: never a stop;
- cut_end: the first segment cuts to that still 3 frames before its end, and the second
  holds it (the still shot going on): never a stop.

Reported per form: the segments with a freeze flag, those called stopped (by the segment
itself or across the boundary) and across the boundary alone, after a first segment that
moved up to its end (`first_moving` of them) and after one that did not (a still first
segment leaves nothing to stop). And the cost:
the thumbnails and the edges against a decode of a 720p30 2-s segment, in one run.
"""

from __future__ import annotations

import argparse
import collections
import json
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ingest.config import DecodeConfig
from ingest.contract import SegmentJob
from ingest.decode import HEAD_FRAMES, decode, stats_step, thumb
from ingest.reference import ReferenceConfig
from ingest.synth import EncodeSettings, encode, pattern_frames
from ingest.types import Segment
from monitor.boundary import edge_of
from monitor.workers import Screened, ScreenJob, WorkerSetup, screen_job
from scorers.artifacts import ArtifactsConfig, edges
from scorers.train import realset
from scorers.types import Verdict

W, H, FPS, N = 640, 360, 25, 50
FORMS = ("clean", "held", "held_2", "held_4", "cut", "cut_2", "cut_end")


def _screen(setup: WorkerSetup, frames: list[np.ndarray], seq: int, prev: Any = None) -> Verdict:
    data = encode(frames, EncodeSettings(fps=FPS, gop=N, crf=23))
    job = ScreenJob(SegmentJob(Segment(data, "bench", "360p", seq)), prev_edge=prev)
    out = screen_job(seq, job, setup)
    if not isinstance(out, Screened):
        raise RuntimeError(f"segment {seq} failed: {out}")
    return out.verdict


def _second(form: str, clip: list[np.ndarray], other: np.ndarray) -> list[np.ndarray]:
    if form == "clean":
        return clip[N:]
    if form == "held":
        return [clip[N - 1]] * N
    if form.startswith("held_"):
        moved = int(form.split("_")[1])
        return clip[N : N + moved] + [clip[N + moved - 1]] * (N - moved)
    if form == "cut_2":
        return clip[N : N + 2] + [other] * (N - 2)
    return [other] * N  # cut, cut_end


def cost(repeat: int = 2000) -> dict[str, float]:
    """The edges' cost (the thumbnails of the stats grid a decode makes, then `edges`)
    against the decode of a 720p30 2-s segment that made them, median of 5 decodes."""
    frames = list(pattern_frames("scene", 1280, 720, 60, seed=1))
    seg = Segment(encode(frames, EncodeSettings(fps=30, gop=60)), "bench", "720p", 1)
    times = []
    for _ in range(5):
        t0 = time.perf_counter()
        decoded = decode(seg)
        times.append(time.perf_counter() - t0)
    step = stats_step(720)  # the stats grid: every step-th row and column
    grid = np.random.default_rng(0).random((-(-720 // step), -(-1280 // step)))
    freeze = ArtifactsConfig().freeze
    t0 = time.perf_counter()
    for _ in range(repeat):
        for _ in range(1 + HEAD_FRAMES):  # the first HEAD_FRAMES frames' and the last
            thumb(grid)
        edges(decoded, freeze)
    each = (time.perf_counter() - t0) / repeat
    return {
        "decode_ms": 1000 * statistics.median(times),
        "edges_us": 1e6 * each,
        "share_of_decode": each / statistics.median(times),
    }


def run(assets: Path, split: realset.Split, sources: int, seeds: int) -> dict[str, Any]:
    pictures = dict(realset.spread_pictures(assets, split, sources or None, 0))
    names = list(pictures)
    setup = WorkerSetup(DecodeConfig(), ReferenceConfig(), [ArtifactsConfig()])
    counts: dict[str, collections.Counter[str]] = {f: collections.Counter() for f in FORMS}
    for i, name in enumerate(names):
        for seed in range(seeds):
            clip = realset.camera(pictures[name], f"{name}-boundary-{seed}", 2 * N, size=(W, H))
            other_name = names[(i + 1 + seed) % len(names)]
            other = realset.camera(pictures[other_name], f"{other_name}-still-{seed}", N, (W, H))
            first = _screen(setup, clip[:N], 10)
            ends_on_cut = _screen(setup, clip[: N - 3] + [other[N // 2]] * 3, 10)
            for form in FORMS:
                edge = edge_of(ends_on_cut if form == "cut_end" else first)
                c = counts[form]
                c["n"] += 1
                c["first_moving"] += bool(edge and edge.moving)
                v = _screen(setup, _second(form, clip, other[N // 2]), 11, edge)
                freeze = [f for f in v.flags if f.kind == "freeze"]
                c["freeze"] += bool(freeze)
                stopped = any(f.evidence.get("stopped") == 1.0 for f in freeze)
                across = any(f.evidence.get("held_across") == 1.0 for f in freeze)
                after = "after_moving" if edge and edge.moving else "after_still"
                c[f"stopped_{after}"] += stopped
                c[f"held_across_{after}"] += across
    return {
        "machine": f"{platform.machine()}, python {platform.python_version()}",
        "split": split,
        "pictures": len(names),
        "seeds": seeds,
        "forms": {f: dict(c) for f, c in counts.items()},
        "cost": cost(),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--pictures", type=Path, required=True, help="realset's assets folder")
    ap.add_argument("--split", choices=("eval", "train"), default="eval")
    ap.add_argument("--sources", type=int, default=0, help="pictures (0: every usable one)")
    ap.add_argument("--seeds", type=int, default=2, help="camera paths per picture")
    ap.add_argument("--json", type=Path, help="also write the result here")
    args = ap.parse_args(argv)
    out = run(args.pictures, args.split, args.sources, args.seeds)
    text = json.dumps(out, indent=1)
    print(text)
    if args.json:
        args.json.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

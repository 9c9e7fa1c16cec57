"""`vqmon eval`: measure the distilled scorer against labels: SRCC, PLCC, KRCC, RMSE.

Two kinds of labelled set:

- a CSV of `path,mos` rows (a header row is skipped; relative paths are taken from
  the CSV's folder): videos are decoded and scored per segment mean, stills
  (.png/.jpg/.bmp/.tif) are scored as one frame. KonIQ, KoNViD or your own streams.
- a directory of segments with references: `DIR/refs/NAME.EXT` are references and
  every other video `DIR/NAME__ANYTHING.EXT` is a distorted version of `refs/NAME.*`;
  labels come from the full-reference teacher (VMAF when FFmpeg has libvmaf, else
  SSIM; needs the train extra's imageio-ffmpeg / scikit-image).
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import numpy as np
import numpy.typing as npt

from ingest.config import DecodeConfig, SamplingConfig
from ingest.decode import decode
from ingest.types import IngestError, Segment
from scorers import metrics
from scorers.distilled import DistilledConfig, DistilledScorer
from scorers.types import ScorerError

IMAGE_EXT = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}
VIDEO_EXT = {".ts", ".mp4", ".m4s", ".mkv", ".webm", ".mov", ".avi", ".y4m", ".264", ".265"}


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "eval",
        help="SRCC/PLCC/KRCC/RMSE of the distilled scorer on a labelled set",
        description="Score a labelled set with the distilled scorer and print agreement: SRCC, "
        "PLCC (after a 4-parameter logistic fit), KRCC and RMSE.",
    )
    p.add_argument("labels", type=Path, help="CSV of path,mos or a directory with refs/")
    p.add_argument("--model", type=Path, help="ONNX student (default: the shipped one)")
    p.add_argument("--frames", type=int, default=8, help="frames sampled per video")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--teacher", choices=("auto", "vmaf", "ssim"), default="auto")
    p.set_defaults(func=run)


def _read_image(path: Path) -> npt.NDArray[np.uint8]:
    import av

    with av.open(str(path)) as container:
        frame = next(container.decode(video=0))
        return np.asarray(frame.to_ndarray(format="rgb24"), dtype=np.uint8)


def _video_frames(path: Path, count: int) -> list[npt.NDArray[np.uint8]]:
    cfg = DecodeConfig(sampling=SamplingConfig(mode="uniform", count=count))
    d = decode(Segment(path.read_bytes(), source=str(path)), cfg)
    return [f.rgb for f in d.frames]


def predict(scorer: DistilledScorer, path: Path, frames: int) -> float:
    rgb = [_read_image(path)] if path.suffix.lower() in IMAGE_EXT else _video_frames(path, frames)
    return float(scorer.predict_frames(rgb).mos.mean())


def read_csv(path: Path) -> list[tuple[Path, float]]:
    rows: list[tuple[Path, float]] = []
    with path.open(newline="") as fh:
        for i, row in enumerate(csv.reader(fh)):
            if len(row) < 2 or not row[0].strip() or row[0].startswith("#"):
                continue
            try:
                mos = float(row[1])
            except ValueError:
                if i == 0:
                    continue  # header
                raise ValueError(f"{path}:{i + 1}: mos {row[1]!r} is not a number") from None
            p = Path(row[0].strip())
            rows.append((p if p.is_absolute() else path.parent / p, mos))
    return rows


def label_directory(directory: Path, teacher_name: str) -> list[tuple[Path, float]]:
    """Teacher MOS of every distorted video in `directory` against `refs/NAME.*`."""
    from scorers.train.corpus import decode_all, rescale
    from scorers.train.teacher import default_teacher

    refs = {p.stem: p for p in (directory / "refs").iterdir() if p.suffix.lower() in VIDEO_EXT}
    teacher = default_teacher(teacher_name)
    rows = []
    for p in sorted(directory.iterdir()):
        if not p.is_file() or p.suffix.lower() not in VIDEO_EXT:
            continue
        name = p.stem.split("__")[0]
        if name not in refs:
            raise ValueError(f"{p}: no reference refs/{name}.* (name distorted files NAME__*.ext)")
        ref = decode_all(refs[name].read_bytes())
        dist = decode_all(p.read_bytes(), len(ref))
        if dist[0].shape != ref[0].shape:
            dist = rescale(dist, ref[0].shape[1], ref[0].shape[0], "BICUBIC")
        rows.append((p, float(teacher.label(ref, [dist])[0].mean())))
    return rows


def run(args: argparse.Namespace) -> int:
    try:
        rows = (
            label_directory(args.labels, args.teacher)
            if args.labels.is_dir()
            else read_csv(args.labels)
        )
        scorer = DistilledScorer(DistilledConfig(model_path=args.model))
    except (OSError, ValueError, ScorerError) as exc:
        print(f"vqmon eval: {exc}", file=sys.stderr)
        return 2
    preds, labels, failed = [], [], 0
    for path, mos in rows:
        try:
            preds.append(predict(scorer, path, args.frames))
            labels.append(mos)
        except (IngestError, OSError, StopIteration, ValueError) as exc:
            failed += 1
            print(f"vqmon eval: skipping {path}: {exc}", file=sys.stderr)
    if len(preds) < 3:
        print(f"vqmon eval: only {len(preds)} items scored; need at least 3", file=sys.stderr)
        return 1
    result = {"items": len(preds), "failed": failed, **metrics.summary(preds, labels)}
    if args.json:
        print(json.dumps(result))
    else:
        print(
            f"{result['items']} items ({failed} failed): SRCC {result['srcc']:.4f}  "
            f"PLCC {result['plcc']:.4f}  KRCC {result['krcc']:.4f}  RMSE {result['rmse']:.4f}"
        )
    return 0

"""`vqmon eval`: measure the distilled scorer against labels: SRCC, PLCC, KRCC, RMSE.

Two kinds of labelled set:

- a CSV of `path,mos` rows (a header row is skipped; relative paths are taken from
  the CSV's folder): videos are decoded and scored as the daemon scores a segment
  (the hybrid score, judged at --display), stills (.png/.jpg/.bmp/.tif) by the student
  as one frame. KonIQ, KoNViD or your own streams. A header row naming `source` and
  `kind` columns (as `vqmon train realset` writes) adds SRCC within source and per kind.
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
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from ingest.config import DecodeConfig, SamplingConfig
from ingest.contract import parse_display
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
    p.add_argument(
        "--display",
        default="auto",
        help="judge videos as shown at WxH (e.g. 1280x720), 'coded', or 'auto' (the CSV's "
        "display column, else the coded size)",
    )
    p.add_argument("--pixels-only", action="store_true", help="the student alone, no fusion")
    p.set_defaults(func=run)


def _read_image(path: Path) -> npt.NDArray[np.uint8]:
    import av

    with av.open(str(path)) as container:
        frame = next(container.decode(video=0))
        return np.asarray(frame.to_ndarray(format="rgb24"), dtype=np.uint8)


def predict(
    scorer: DistilledScorer, path: Path, frames: int, display: tuple[int, int] | None = None
) -> float:
    """A still by the student as one frame; a video as the daemon scores a segment."""
    if path.suffix.lower() in IMAGE_EXT:
        return float(scorer.predict_frames([_read_image(path)]).mos.mean())
    cfg = DecodeConfig(sampling=SamplingConfig(mode="uniform", count=frames))
    d = decode(Segment(path.read_bytes(), source=str(path), display=display), cfg)
    mos = scorer.score([d])[0].mos
    if mos is None:
        raise ValueError("no frame could be scored")
    return float(mos)


@dataclass(frozen=True)
class Row:
    path: Path
    mos: float
    source: str = ""
    kind: str = ""
    display: tuple[int, int] | None = None


def read_csv(path: Path) -> list[Row]:
    rows: list[Row] = []
    names: list[str] = []
    with path.open(newline="") as fh:
        for i, row in enumerate(csv.reader(fh)):
            if len(row) < 2 or not row[0].strip() or row[0].startswith("#"):
                continue
            try:
                mos = float(row[1])
            except ValueError:
                if i == 0:
                    names = [c.strip().lower() for c in row]
                    continue  # header
                raise ValueError(f"{path}:{i + 1}: mos {row[1]!r} is not a number") from None
            col = dict(zip(names, row, strict=False))
            p = Path(row[0].strip())
            shown = parse_display(col["display"], f"{path}:{i + 1}") if col.get("display") else None
            rows.append(
                Row(
                    p if p.is_absolute() else path.parent / p,
                    mos,
                    col.get("source", ""),
                    col.get("kind", ""),
                    shown,
                )
            )
    return rows


def label_directory(directory: Path, teacher_name: str) -> list[Row]:
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
        rows.append(Row(p, float(teacher.label(ref, [dist])[0].mean()), name))
    return rows


def _display(text: str, row: Row) -> tuple[int, int] | None:
    if text == "auto":
        return row.display
    if text == "coded":
        return None
    return parse_display(text)


def _groups(rows: list[Row], preds: list[float], labels: list[float]) -> dict[str, object]:
    """SRCC within each source (mean) and per kind (the kind's items with their source's
    clean ones), when the labelled set says which is which."""
    p, y = np.asarray(preds), np.asarray(labels)
    source = np.array([r.source for r in rows])
    kind = np.array([r.kind for r in rows])
    out: dict[str, object] = {}
    if len(set(source)) > 1:
        per = [
            metrics.srcc(p[source == s], y[source == s])
            for s in set(source)
            if (source == s).sum() >= 3
        ]
        out["srcc_within_source"] = float(np.nanmean(per))
    if len(set(kind)) > 1:
        out["srcc_by_kind"] = {
            k: metrics.srcc(p[(kind == k) | (kind == "clean")], y[(kind == k) | (kind == "clean")])
            for k in sorted(set(kind) - {"clean", ""})
        }
    return out


def run(args: argparse.Namespace) -> int:
    try:
        rows = (
            label_directory(args.labels, args.teacher)
            if args.labels.is_dir()
            else read_csv(args.labels)
        )
        if args.display not in ("auto", "coded"):
            parse_display(args.display)
        scorer = DistilledScorer(
            DistilledConfig(
                model_path=args.model,
                hybrid=not args.pixels_only,
                display="coded" if args.display == "coded" else "auto",
            )
        )
    except (OSError, ValueError, IngestError, ScorerError) as exc:
        print(f"vqmon eval: {exc}", file=sys.stderr)
        return 2
    preds, labels, scored, failed = [], [], [], 0
    for row in rows:
        try:
            preds.append(predict(scorer, row.path, args.frames, _display(args.display, row)))
            labels.append(row.mos)
            scored.append(row)
        except (IngestError, OSError, StopIteration, ValueError) as exc:
            failed += 1
            print(f"vqmon eval: skipping {row.path}: {exc}", file=sys.stderr)
    if len(preds) < 3:
        print(f"vqmon eval: only {len(preds)} items scored; need at least 3", file=sys.stderr)
        return 1
    result = {
        "items": len(preds),
        "failed": failed,
        **metrics.summary(preds, labels),
        **_groups(scored, preds, labels),
    }
    if args.json:
        print(json.dumps(result))
    else:
        print(
            f"{result['items']} items ({failed} failed): SRCC {result['srcc']:.4f}  "
            f"PLCC {result['plcc']:.4f}  KRCC {result['krcc']:.4f}  RMSE {result['rmse']:.4f}"
        )
        if "srcc_within_source" in result:
            print(f"SRCC within source (mean): {result['srcc_within_source']:.4f}")
        for k, v in dict(result.get("srcc_by_kind", {})).items():  # type: ignore[call-overload]
            print(f"  {k}: SRCC {v:.4f}")
    return 0

"""Label a segment set with the reasoning VLM: the no-reference teacher.

VMAF needs the pristine reference, so it can only label content made here. The VLM the
diagnose role runs (VisualQuality-R1, Q-Insight or the base Qwen2.5-VL, through
`transformers` or an OpenAI-compatible server) needs none: it scores any real footage,
so the student and the fusion head can learn from an operator's own streams. This is the
teacher the distilled scorer was named for (../shared/SEEDS.md, RALI).

    rows = read_rows(set_dir)          # a realset's labels.csv, or every .ts/.mp4 below
    summary = label(set_dir, rows, out_csv, Diagnoser(DiagnoseConfig(...)))

Each segment is decoded with the daemon's limits, `pictures` frames spread over it are
shown as displayed (upscaled to the display size, as a player would, then fitted to the
frames' `max_side`), and the score task runs on each (K samples from the config). The
label is the mean of every parsed score, on the 1-5 MOS scale the scorers use; `spread`
is their standard deviation. A segment none of whose texts parse is written with an
empty `mos` and the parser's reason in `failure`: never a default score. The output is a
labels.csv in the realset's format (plus `teacher`, `spread`, `parsed`, `failure`), so
`vqmon train fusion --train OUT.csv` and `vqmon train slim --targets labels` read it;
`vmaf` is copied from the input when it has one, to measure the teacher against it.
Rows are written as they are made, and a run resumes where the last one stopped.
"""

from __future__ import annotations

import csv
import logging
import math
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from ingest.config import DecodeConfig
from ingest.contract import parse_display
from ingest.decode import decode
from ingest.types import IngestError, Segment
from scorers.train.corpus import rescale
from scorers.train.fusion import read_labels
from scorers.vlm.diagnoser import Diagnoser
from scorers.vlm.images import encode_jpeg, spread
from scorers.vlm.types import Diagnosis, EscalationRequest

log = logging.getLogger(__name__)

T = TypeVar("T")
SEGMENT_SUFFIXES = (".ts", ".mp4", ".m2ts", ".mts")
FIELDS = (
    "path",
    "mos",
    "vmaf",
    "source",
    "kind",
    "variant",
    "display",
    "package",
    "teacher",
    "spread",
    "parsed",
    "failure",
)


@dataclass(frozen=True, slots=True)
class LabelConfig:
    pictures: int = 3
    """Frames of each segment the VLM scores (spread evenly over the sampled frames)."""
    max_side: int = 768
    """Longer side of each picture sent, after the upscale to the display."""
    qscale: int = 3
    batch: int = 4
    """Segments per diagnose call (their pictures go to the backend together)."""
    display: tuple[int, int] | None = None
    """Judge every segment at this size; None: each row's own `display`, else its coded
    size (a folder of footage)."""
    retry_failed: bool = False
    """On resume, label again the segments an earlier run wrote without a parsed score (a
    sampling teacher, K > 1 at a temperature, may parse the second time); the new row is
    appended after the old one, which stays as a record. Otherwise they are final."""


@dataclass
class Summary:
    labelled: int = 0
    failed: int = 0
    """Segments written with no parsed score (the reason is in their `failure`)."""
    undecodable: int = 0
    kept: int = 0
    """Rows already in the output from an earlier run."""
    seconds: float = 0.0
    teacher: str = ""
    failures: dict[str, int] = field(default_factory=dict)


def read_rows(root: Path) -> list[dict[str, str]]:
    """The segments to label: `root/labels.csv` when there is one (a realset), else every
    segment file below `root`, its source the first folder under root (or its stem)."""
    labels = root / "labels.csv"
    if labels.is_file():
        with labels.open(newline="") as fh:
            reader = csv.DictReader(fh)
            if "path" not in (reader.fieldnames or ()):
                raise LabelError(f"{labels} has no `path` column: not a segment set's labels")
            return list(reader)
    rows = []
    for p in sorted(root.rglob("*")):
        if p.suffix.lower() in SEGMENT_SUFFIXES and p.is_file():
            rel = p.relative_to(root)
            source = rel.parts[0] if len(rel.parts) > 1 else p.stem
            rows.append({"path": rel.as_posix(), "source": source, "package": source})
    return rows


def label(
    root: Path,
    rows: Sequence[dict[str, str]],
    out: Path,
    diagnoser: Diagnoser,
    config: LabelConfig | None = None,
    decode_config: DecodeConfig | None = None,
) -> Summary:
    """Label `rows` (paths relative to `root`) into `out`, resuming it. A VLMError (the
    server down, a timeout) propagates after the rows made so far are written."""
    cfg = config or LabelConfig()
    dcfg = decode_config or DecodeConfig()
    check_output(root, out)
    summary = Summary(teacher=diagnoser.model_id)
    done = _done(out, cfg.retry_failed)
    here = out.parent.resolve()
    todo = []
    for r in rows:
        # paths relative to the output's folder, where the trainers look for them
        moved = {**r, "path": Path(os.path.relpath((root / r["path"]).resolve(), here)).as_posix()}
        if moved["path"] in done:
            summary.kept += 1
        else:
            todo.append((r["path"], moved))
    new_file = not out.exists() or out.stat().st_size == 0
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("a", newline="") as fh:
        writer = csv.DictWriter(fh, FIELDS, extrasaction="ignore")
        if new_file:
            writer.writeheader()
        for batch in _batches(todo, cfg.batch):
            t0 = time.perf_counter()
            shown: list[tuple[dict[str, str], list[EscalationRequest]]] = []
            for given, row in batch:
                made = _requests(root, given, row, cfg, dcfg)
                if made is None:
                    summary.undecodable += 1
                    continue
                requests, (w, h) = made
                shown.append(({**row, "display": f"{w}x{h}"}, requests))
            flat = [r for _, rs in shown for r in rs]
            diagnoses = diagnoser.diagnose_batch(flat) if flat else []
            at = 0
            for row, requests in shown:
                mine = diagnoses[at : at + len(requests)]
                at += len(requests)
                written = _row(row, mine, summary.teacher)
                if written["mos"]:
                    summary.labelled += 1
                else:
                    summary.failed += 1
                    reason = written["failure"]
                    summary.failures[reason] = summary.failures.get(reason, 0) + 1
                writer.writerow(written)
            fh.flush()
            summary.seconds += time.perf_counter() - t0
            log.info(
                "labelled %d/%d (%d without a parsed score)",
                summary.labelled + summary.failed + summary.undecodable,
                len(todo),
                summary.failed,
            )
    return summary


class LabelError(ValueError):
    """A set or an output the labeller cannot use; says which and why."""


def check_output(root: Path, out: Path) -> None:
    """Refuse an output that would overwrite or be read as the set's own list, and one
    that exists but is not a labeller's CSV (resuming it would skip its paths)."""
    if out.is_dir():
        raise LabelError(f"--out {out} is a directory; name a CSV file")
    if out.resolve() == (root / "labels.csv").resolve():
        raise LabelError(
            f"--out {out} is the set's own labels.csv; write beside it (the default "
            f"{root / 'labels-vlm.csv'})"
        )
    if out.exists() and out.stat().st_size:
        with out.open(newline="") as fh:
            header = next(csv.reader(fh), [])
        if header != list(FIELDS):
            raise LabelError(
                f"--out {out} exists and is not a vlmlabel CSV (its header is not this "
                "version's: resumed rows would land under the wrong columns); name a new file"
            )


def _done(out: Path, retry_failed: bool = False) -> set[str]:
    """Paths the output already has; with `retry_failed`, only those whose last row has a
    parsed score: a failed row is then labelled again and its new row appended after it
    (the trainers skip rows without a score, so the older failure is only a record)."""
    if not out.exists() or out.stat().st_size == 0:
        return set()
    return {r["path"] for r in read_labels(out) if r.get("mos") or not retry_failed}


def _batches(rows: Sequence[T], size: int) -> Iterator[list[T]]:
    for i in range(0, len(rows), max(1, size)):
        yield list(rows[i : i + max(1, size)])


def _requests(
    root: Path, path: str, row: dict[str, str], cfg: LabelConfig, dcfg: DecodeConfig
) -> tuple[list[EscalationRequest], tuple[int, int]] | None:
    """One single-picture request per chosen frame of root/path, shown at the display size
    (the row's, else the coded size), and that size: the output's `display`, what the
    trainers judge the segment at."""
    try:  # one odd row or segment is not labelled; the run goes on
        given = parse_display(row["display"], path) if row.get("display") else None
        decoded = decode(Segment((root / path).read_bytes(), source=path), dcfg)
    except (IngestError, OSError) as exc:
        log.warning("not labelled: %s: %s", path, exc)
        return None
    frames = decoded.frames
    if not frames:
        log.warning("not labelled: %s: no frames decoded", path)
        return None
    h, w = frames[0].rgb.shape[:2]
    display = cfg.display or given or (w, h)
    chosen = spread(len(frames), min(cfg.pictures, len(frames)))
    # upscaled bicubically, as the realset's VMAF labels see a rung
    shown = rescale([frames[i].rgb for i in chosen], display[0], display[1], "BICUBIC")
    requests = [
        EscalationRequest(
            segment_id=f"{path}#{i}",
            stream=row.get("source", ""),
            rendition=row.get("variant", ""),
            seq=i,
            verdict={},
            frames=(encode_jpeg(picture, cfg.max_side, cfg.qscale),),
            reason="label",
        )
        for i, picture in zip(chosen, shown, strict=True)
    ]
    return requests, display


def _row(row: dict[str, str], diagnoses: Sequence[Diagnosis], teacher: str) -> dict[str, str]:
    """The output row: the mean and spread of every parsed sample of every picture (pooled
    from each picture's mean, spread and count), or the first parse failure's reason."""
    parts = [
        (t.parsed, t.score_mean, t.score_spread or 0.0)
        for d in diagnoses
        for t in d.tasks
        if t.task == "score" and t.score_mean is not None
    ]
    n = sum(k for k, _, _ in parts)
    failure = next((e for d in diagnoses for t in d.tasks for e in t.parse_errors if e), "")
    out = {k: row.get(k, "") for k in FIELDS}
    out.update(teacher=teacher, mos="", spread="", parsed=str(n), failure="")
    if not n:
        out["failure"] = failure or "no score task ran"
        return out
    mean = sum(k * m for k, m, _ in parts) / n
    var = sum(k * (s * s + (m - mean) ** 2) for k, m, s in parts) / n
    out.update(mos=f"{mean:.4f}", spread=f"{math.sqrt(max(0.0, var)):.4f}")
    return out

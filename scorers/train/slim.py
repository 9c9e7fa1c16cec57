"""Slim the shipped student: distil it into one convolutional student with no statistics branch.

The shipped model (two members sharing a fixed statistics branch, scorers.train.model) is
what the screen path spends most of its scoring time in: on one CPU thread, 8 mosaics
cost ~29 ms in ONNX Runtime, of which the statistics branch (MSCN moments, DCT
emptiness, block edges, as ~200 small tensor ops over 392 patches) is ~17 ms. A single
member of the same CNN without it costs ~6 ms. This module makes that member behave as
the whole model does:

- **data**: the mosaics the runtime would build (vqmon's own decode of each segment, the
  default frame sampling, fragments as displayed) from real-picture segments (the
  real-content set's *training* split: its evaluation split is never read here) and from
  procedural segments (ingest.synth patterns under the usual impairments), plus the same
  frames with jittered patch positions for variety;
- **targets**: the shipped model's outputs on each mosaic (frame MOS and the degradation
  distribution): a dense, exact target, so no new labels are needed;
- **warm start**: the slim student starts from one shipped member (its stem, encoder,
  projection on the CNN features, prototypes and heads; the ONNX graph's folded
  convolutions are unfolded into the torch layout), so training only has to move what
  the statistics branch supplied into the CNN;
- **training**: MSE on MOS + a pairwise rank term + KL on the degradation distribution,
  BatchNorm statistics frozen (the warm start's folded layers stay exact), sources held
  out for the agreement figures.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from ingest import impair
from ingest.contract import parse_display
from ingest.synth import PATTERNS, EncodeSettings, encode, pattern_frames
from ingest.types import IngestError, Segment

log = logging.getLogger(__name__)

RGB = npt.NDArray[np.uint8]

SYNTH_SIZES = ((640, 360), (1280, 720), (480, 270), (960, 540))


@dataclass(frozen=True)
class Job:
    name: str
    """Unique per segment; the source is the part before '#'."""
    path: str
    """A segment file, or 'synth:...' for a procedural segment the worker encodes."""
    display: tuple[int, int] | None
    jitter: int
    seed: int
    label: float | None = None
    """The segment's own MOS label (VMAF as displayed, from a realset labels.csv), if any."""


def synthetic_jobs(count: int, seed: int = 0, jitter: int = 4) -> list[Job]:
    """`count` procedural segments (ingest.synth patterns at ladder sizes) clean or impaired,
    described lazily: the worker encodes them (path 'synth:...')."""
    rng = np.random.default_rng(seed)
    jobs = []
    for i in range(count):
        kind = PATTERNS[i % len(PATTERNS)]
        w, h = SYNTH_SIZES[int(rng.integers(len(SYNTH_SIZES)))]
        impairment = ("clean", "crf", "crf", "blur", "noise", "banding", "loss", "scale")[
            int(rng.integers(8))
        ]
        strength = float(rng.random())
        src = int(rng.integers(40))  # 40 contents per pattern, several versions each
        spec = f"synth:{kind}:{w}x{h}:{impairment}:{strength:.3f}:{src}"
        # A lower rung shown on a 720p screen, as the runtime judges it (display size).
        display = (1280, 720) if w < 1280 and rng.random() < 0.4 else None
        jobs.append(Job(f"{kind}-{src}#{i}", spec, display, jitter, seed * 100_000 + i))
    return jobs


def _synthetic_segment(spec: str, seed: int) -> bytes:
    _, kind, size, impairment, strength_s, src_s = spec.split(":")
    w, h = (int(v) for v in size.split("x"))
    s, src = float(strength_s), int(src_s)
    speed = 0.5 + (src % 5)
    frames = list(pattern_frames(kind, w, h, 25, seed=src, speed=speed))
    crf = 23
    if impairment == "crf":
        crf = int(18 + s * 33)
    elif impairment == "blur":
        frames = impair.blur(frames, 0.8 + 3.5 * s)
    elif impairment == "noise":
        frames = impair.noise(frames, 3.0 + 22.0 * s, seed=seed)
    elif impairment == "banding":
        frames = impair.banding(frames, int(6 + 26 * (1 - s)))
    elif impairment == "scale":
        frames = impair.downscale_upscale(frames, 1.4 + 2.6 * s)
    settings = EncodeSettings(fps=25, gop=25, crf=crf)
    data = encode(frames, settings)
    if impairment == "loss":
        data = impair.corrupt_packets(data, 0.01 + 0.08 * s, seed=seed)
    return data


def real_jobs(labels: Path, jitter: int = 4, seed: int = 0) -> list[Job]:
    """Every segment of a real-content set (scorers.train.realset's labels.csv, or one
    `train vlmlabel` wrote)."""
    from scorers.train.fusion import read_labels

    rows = read_labels(labels)
    return [
        Job(
            f"{r['source']}#{r['path']}",
            str(labels.parent / r["path"]),
            parse_display(r["display"]),
            jitter,
            seed * 100_000 + i,
            float(r["mos"]) if r.get("mos") else None,
        )
        for i, r in enumerate(rows)
    ]


def _mosaics(job: Job) -> tuple[str, RGB | None]:
    """The runtime's mosaics of one segment (vqmon's decode, default sampling, as displayed),
    then `jitter` more with random patch positions; None when it does not decode."""
    from ingest.config import DecodeConfig
    from ingest.decode import decode
    from scorers import fragments

    try:
        if job.path.startswith("synth:"):
            data = _synthetic_segment(job.path, job.seed)
        else:
            data = Path(job.path).read_bytes()
        decoded = decode(Segment(data, source=job.name), DecodeConfig(threads=1))
    except (IngestError, ValueError) as exc:
        log.info("skipping %s: %s", job.name, exc)
        return job.name, None
    rgb = [f.rgb for f in decoded.frames]
    if not rgb:
        return job.name, None
    display = job.display or (rgb[0].shape[1], rgb[0].shape[0])
    out = [fragments.sample_batch(rgb, display=display)]
    if job.jitter:
        rng = np.random.default_rng(job.seed)
        picks = rng.choice(len(rgb), size=min(job.jitter, len(rgb)), replace=False)
        out.append(fragments.sample_batch([rgb[int(k)] for k in picks], rng, display=display))
    return job.name, np.concatenate(out)


@dataclass
class SlimData:
    mosaic: RGB
    mos: npt.NDArray[np.float32]
    """The teacher's frame MOS."""
    degradation: npt.NDArray[np.float32]
    """The teacher's degradation distribution (N x 7)."""
    source: npt.NDArray[np.str_]
    label: npt.NDArray[np.float32] | None = None
    """The segment's own MOS label per mosaic (NaN where there is none: procedural)."""

    def __len__(self) -> int:
        return len(self.mos)

    def subset(self, mask: npt.NDArray[np.bool_]) -> SlimData:
        label = None if self.label is None else self.label[mask]
        return SlimData(
            self.mosaic[mask], self.mos[mask], self.degradation[mask], self.source[mask], label
        )

    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        for k, v in asdict(self).items():
            if v is not None:
                np.save(directory / f"{k}.npy", v)

    @classmethod
    def load(cls, directory: Path) -> SlimData:
        arrays = {
            k: np.load(directory / f"{k}.npy", mmap_mode="r" if k == "mosaic" else None)
            for k in ("mosaic", "mos", "degradation", "source")
        }
        label = directory / "label.npy"  # absent in sets built before labels were kept
        return cls(**arrays, label=np.load(label) if label.is_file() else None)


def teacher_outputs(teacher: Path, mosaics: RGB, threads: int = 2) -> tuple[Any, Any]:
    """(frame MOS, degradation distribution) of the teacher ONNX model on every mosaic."""
    from scorers.distilled import DistilledConfig, DistilledScorer

    config = DistilledConfig(model_path=teacher, threads=threads, hybrid=False, batch_size=64)
    p = DistilledScorer(config).predict_mosaics(np.ascontiguousarray(mosaics))
    return p.mos, p.degradation


def build(jobs: list[Job], teacher: Path, out: Path, workers: int = 2) -> SlimData:
    """Mosaics of every job (in `workers` processes) labelled by the teacher; saved to `out`."""
    started = time.monotonic()
    names: list[str] = []
    labels: list[float] = []
    chunks: list[RGB] = []
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(workers) as pool:
        for i, (name, m) in enumerate(pool.imap(_mosaics, jobs, chunksize=4)):
            if m is not None:
                names += [name.split("#")[0]] * len(m)
                label = jobs[i].label
                labels += [np.nan if label is None else label] * len(m)
                chunks.append(m)
            if i % 200 == 0:
                log.info("mosaics %d/%d (%.0f s)", i, len(jobs), time.monotonic() - started)
    mosaic = np.concatenate(chunks)
    del chunks
    mos, deg = teacher_outputs(teacher, mosaic)
    data = SlimData(mosaic, mos, deg, np.asarray(names), np.asarray(labels, np.float32))
    data.save(out)
    (out / "build.json").write_text(
        json.dumps(
            {
                "segments": len(jobs),
                "mosaics": len(data),
                "seconds": time.monotonic() - started,
                "teacher": str(teacher),
            },
            indent=2,
        )
    )
    return data


def warm_start(teacher: Path, member: int = 0) -> Any:
    """A slim Student (the teacher's config without the statistics branch) holding member
    `member`'s stem, encoder, projection on the CNN features, prototypes and heads
    (scorers.train.onnx_weights: exact while its BatchNorm statistics stay frozen)."""
    from scorers.train.onnx_weights import member_from_onnx

    return member_from_onnx(teacher, member, stats=False)


@dataclass
class SlimConfig:
    """Loss: MSE to the teacher's MOS + rank_weight x pairwise rank term + class_weight x KL
    to its degradation distribution; OneCycle learning rate, AdamW on weight matrices."""

    epochs: int = 8
    batch_size: int = 48
    lr: float = 1e-3
    weight_decay: float = 0.01
    rank_weight: float = 0.5
    class_weight: float = 0.5
    val_fraction: float = 0.1
    """Share of the sources (real pictures and procedural contents) held out."""
    seed: int = 0
    threads: int = 1
    max_steps: int | None = None
    targets: Literal["teacher", "labels"] = "teacher"
    """labels: a mosaic with a label of its own (a real segment's VMAF as displayed) learns
    that MOS instead of the teacher's, so the student learns real content's quality rather
    than the teacher's opinion of it; the rest (procedural) keep the teacher's. The
    degradation distribution is the teacher's either way."""
    group: int = 0
    """Batches of `group` mosaics from each of batch_size // group sources (0: uniform), so
    the within-source rank term sees versions of one source against each other."""
    within_rank_weight: float = 0.0
    """Weight of the pairwise rank term over pairs of one source only."""


def _freeze_norms(model: Any) -> None:
    """BatchNorm layers in eval mode (frozen running statistics) while the rest trains."""
    import torch

    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d | torch.nn.BatchNorm1d):
            m.eval()


def agreement(model: Any, data: SlimData) -> dict[str, float]:
    """How closely the slim model follows the teacher on `data`, and, where mosaics carry
    labels, how well it ranks them (over all, and the mean within a source)."""
    from scorers import metrics
    from scorers.train.distill import predict

    mos, deg = predict(model, np.ascontiguousarray(data.mosaic))
    out = {
        "mosaics": len(data),
        "srcc": metrics.srcc(mos, data.mos),
        "plcc": float(np.corrcoef(mos, data.mos)[0, 1]),
        "mae": float(np.abs(mos - data.mos).mean()),
        "class_agreement": float((deg.argmax(1) == data.degradation.argmax(1)).mean()),
        "class_l1": float(np.abs(deg - data.degradation).sum(1).mean()),
    }
    if data.label is not None and np.isfinite(data.label).sum() > 2:
        has = np.isfinite(data.label)
        out["label_srcc"] = metrics.srcc(mos[has], data.label[has])
        out["label_srcc_within"] = metrics.within_group_srcc(
            mos[has], data.label[has], data.source[has]
        )
    return out


def train(model: Any, data: SlimData, out_dir: Path, config: SlimConfig) -> dict[str, Any]:
    """Distil the teacher's outputs (in `data`, or the mosaics' own labels: config.targets)
    into `model`; whole sources are held out."""
    import torch
    import torch.nn.functional as F

    from scorers.train.distill import _augment, _batches, rank_loss

    torch.manual_seed(config.seed)
    torch.set_num_threads(config.threads)
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(config.seed)
    names = np.unique(data.source)
    held = set(
        rng.choice(names, size=max(1, round(len(names) * config.val_fraction)), replace=False)
    )
    is_val = np.isin(data.source, list(held))
    train_idx = np.flatnonzero(~is_val)
    val = data.subset(is_val)
    before = agreement(model, val)
    log.info("held-out agreement before: %s", before)
    decay = [p for p in model.parameters() if p.ndim >= 2]
    rest = [p for p in model.parameters() if p.ndim < 2]
    groups: list[dict[str, Any]] = [{"params": decay}, {"params": rest, "weight_decay": 0.0}]
    opt = torch.optim.AdamW(
        groups,
        lr=config.lr,
        weight_decay=config.weight_decay,
    )
    steps = len(train_idx) // config.batch_size
    total = steps * config.epochs if config.max_steps is None else config.max_steps
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, config.lr, total_steps=total, pct_start=0.05)
    gen = torch.Generator().manual_seed(config.seed)
    mos_target = np.asarray(data.mos, np.float32)
    if config.targets == "labels":
        if data.label is None or not np.isfinite(data.label).any():
            raise ValueError("targets=labels needs mosaics with labels (a realset labels.csv)")
        mos_target = np.where(np.isfinite(data.label), data.label, mos_target).astype(np.float32)
    target = torch.from_numpy(mos_target)
    source_ids = torch.from_numpy(np.unique(np.asarray(data.source), return_inverse=True)[1])
    target_deg = torch.from_numpy(np.asarray(data.degradation))
    history: list[dict[str, Any]] = []
    started, step = time.monotonic(), 0
    for epoch in range(config.epochs):
        batches = _batches(data.source[train_idx], config.batch_size, steps, config.group, rng)
        losses = []
        for b in range(steps):
            if step >= total:
                break
            model.train()
            _freeze_norms(model)
            idx = np.sort(train_idx[batches[b]])
            x = _augment(torch.from_numpy(np.ascontiguousarray(data.mosaic[idx])), gen)
            mos, logits, _ = model.logits(x)
            y, yd = target[idx], target_deg[idx]
            loss = (
                F.mse_loss(mos, y)
                + config.rank_weight * rank_loss(mos, y)
                + config.class_weight
                * F.kl_div(F.log_softmax(logits, dim=1), yd.clamp_min(1e-6), reduction="batchmean")
            )
            if config.within_rank_weight:
                loss = loss + config.within_rank_weight * rank_loss(mos, y, group=source_ids[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            losses.append(loss.item())
            if step % 50 == 0:
                log.info(
                    "epoch %d step %d/%d loss %.4f (%.0f s)",
                    epoch,
                    step,
                    total,
                    np.mean(losses[-50:]),
                    time.monotonic() - started,
                )
        history.append(
            {
                "epoch": epoch,
                "loss": float(np.mean(losses)) if losses else None,
                **agreement(model, val),
            }
        )
        log.info("epoch %d: %s", epoch, history[-1])
        torch.save(
            {"state_dict": model.state_dict(), "model_config": model.config.to_json()},
            out_dir / "slim.pt",
        )
    report = {
        "config": asdict(config),
        "model_config": model.config.to_json(),
        "train_mosaics": len(train_idx),
        "heldout_sources": sorted(held),
        "heldout_before": before,
        "history": history,
        "seconds": round(time.monotonic() - started, 1),
        "steps": step,
    }
    (out_dir / "report.json").write_text(json.dumps(report, indent=2))
    return report

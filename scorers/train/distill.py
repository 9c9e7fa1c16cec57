"""Distil the teacher's labels into the student: deterministic given a seed, CPU-friendly.

Validation holds out whole SOURCES (content), never frames or versions of a source
that is also trained on, so the held-out figures say how the student does on
pictures it has never seen. Loss: smooth-L1 on MOS + a pairwise ranking term (the
screen path cares about order as much as level) + the same ranking term restricted to
pairs of one source (batches are drawn a few frames per source, so every batch has
such pairs: ranking versions of the same picture is what a no-reference model gets
wrong most) + cross-entropy on the degradation type. Writes the checkpoint, a JSON
report and a PNG of the loss curves.
"""

from __future__ import annotations

import copy
import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F

from scorers import metrics
from scorers.train import content
from scorers.train.corpus import Corpus
from scorers.train.export import round_to_fp16
from scorers.train.model import DEGRADATIONS, Ensemble, ModelConfig, Student, parameter_count

log = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    epochs: int = 16
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 0.05
    """AdamW decay of the weight matrices (not of biases, norms, prototype scores or the
    temperature, which decay would pull towards arbitrary values)."""
    dropout: float = 0.3
    """ModelConfig.dropout when train() is given no model_config (one given keeps its own)."""
    rank_weight: float = 0.5
    within_rank_weight: float = 0.3
    """Weight of a second rank term over pairs of frames of the SAME source only."""
    source_group: int = 4
    """Frames drawn per source in a batch (batch_size // source_group sources per batch), so
    the within-source rank term has pairs to learn from; 0 draws frames uniformly."""
    class_weight: float = 0.2
    val_fraction: float = 0.15
    seed: int = 0
    split_seed: int | None = None
    """Seed of the held-out split (None: `seed`); ensemble members share one split."""

    @property
    def held_out_seed(self) -> int:
        return self.seed if self.split_seed is None else self.split_seed

    threads: int = 2
    train_patches: int = 20
    """Patches (of 49) per mosaic seen in a training step: cheaper steps, and augmentation."""
    max_steps: int | None = None
    """Stop after this many optimiser steps (tests); None trains all epochs."""


@dataclass
class History:
    step_loss: list[float] = field(default_factory=list)
    epoch_train_loss: list[float] = field(default_factory=list)
    epoch_val_loss: list[float] = field(default_factory=list)
    epoch_val_srcc: list[float] = field(default_factory=list)


def split_sources(
    sources: npt.NDArray[np.str_], fraction: float, seed: int
) -> tuple[list[str], list[str]]:
    """(train, held-out) source names: a `fraction` of each content family held out whole.

    Sources made from one still (its plain clip, its photo histories, overlays on it) are
    one picture and go to the same side, so no held-out picture is also trained on."""
    names = sorted(set(sources.tolist()))
    if fraction <= 0:
        return names, []
    pictures: dict[str, list[str]] = {}
    for n in names:
        still = content.underlying_still(n)
        pictures.setdefault(f"still:{still}" if still else n, []).append(n)
    rng = np.random.default_rng(seed)
    held: list[str] = []
    for fam in sorted({p.split(":")[0] for p in pictures}):
        members = sorted(p for p in pictures if p.split(":")[0] == fam)
        k = round(len(members) * fraction)
        if k == 0 and len(members) >= 3:
            k = 1
        for i in rng.permutation(len(members))[:k]:
            held += pictures[members[i]]
    if not held and len(pictures) >= 2:
        keys = sorted(pictures)
        held = pictures[keys[int(rng.integers(len(keys)))]]
    return [n for n in names if n not in held], sorted(held)


def split_data(
    data: Corpus, config: TrainConfig
) -> tuple[list[str], list[str], Corpus, Corpus | None]:
    """(train sources, held-out sources, train subset, held-out subset or None)."""
    train_src, val_src = split_sources(data.source, config.val_fraction, config.held_out_seed)
    return train_src, val_src, *_subsets(data, train_src, val_src)


def _subsets(
    data: Corpus, train_src: list[str], held_src: list[str]
) -> tuple[Corpus, Corpus | None]:
    tr = data.subset(np.isin(data.source, train_src))
    return tr, data.subset(np.isin(data.source, held_src)) if held_src else None


def _metrics(model: Student | Ensemble, tr: Corpus, va: Corpus | None) -> dict[str, Any]:
    """The report's train and held-out metrics of `model`."""
    return {
        "train_metrics": evaluate(model, tr) if len(tr) >= 2 else None,
        "heldout_metrics": evaluate(model, va) if va is not None and len(va) >= 2 else None,
    }


def _augment(batch: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Flips and transposes of the whole mosaic: they flip/transpose every patch (and move
    patches, which the order-free pooling ignores), and quality does not care."""
    n = batch.shape[0]
    flip_h = torch.rand(n, generator=gen) < 0.5
    flip_v = torch.rand(n, generator=gen) < 0.25
    swap = torch.rand(n, generator=gen) < 0.5
    batch = torch.where(flip_h.view(n, 1, 1, 1), batch.flip(2), batch)
    batch = torch.where(flip_v.view(n, 1, 1, 1), batch.flip(1), batch)
    return torch.where(swap.view(n, 1, 1, 1), batch.transpose(1, 2), batch)


def _batches(
    sources: npt.NDArray[np.str_], batch_size: int, steps: int, group: int, rng: np.random.Generator
) -> list[npt.NDArray[np.int64]]:
    """Index batches for one epoch: uniform permutation (group 0), or `group` frames of each of
    batch_size // group random sources, so every batch holds same-source pairs to rank."""
    n = len(sources)
    if group <= 0:
        order = rng.permutation(n)
        return [order[b * batch_size : (b + 1) * batch_size] for b in range(steps)]
    names, inv = np.unique(sources, return_inverse=True)
    members = [np.flatnonzero(inv == k) for k in range(len(names))]
    per = min(group, batch_size)
    k = max(1, -(-batch_size // per))
    out = []
    for _ in range(steps):
        picked = rng.choice(len(names), size=k, replace=k > len(names))
        idx = [rng.choice(members[m], size=per, replace=per > len(members[m])) for m in picked]
        out.append(np.concatenate(idx)[:batch_size].astype(np.int64))
    return out


def rank_loss(
    pred: torch.Tensor,
    target: torch.Tensor,
    scale: float = 0.1,
    group: torch.Tensor | None = None,
) -> torch.Tensor:
    """Logistic pairwise loss over pairs whose targets differ by more than 0.05 MOS
    (and, given `group`, that share a group)."""
    dp = pred[:, None] - pred[None, :]
    dt = target[:, None] - target[None, :]
    mask = dt.abs() > 0.05
    if group is not None:
        mask = mask & (group[:, None] == group[None, :])
    if not bool(mask.any()):
        return pred.sum() * 0.0
    return F.softplus(-torch.sign(dt[mask]) * dp[mask] / scale).mean()


def predict(
    model: Student | Ensemble, mosaics: npt.NDArray[np.uint8], batch: int = 128
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    """(MOS, degradation probabilities) of uint8 mosaics, in eval mode."""
    model.eval()
    mos, deg = [], []
    with torch.no_grad():
        for s in range(0, len(mosaics), batch):
            m, d, _ = model(torch.from_numpy(mosaics[s : s + batch]))
            mos.append(m.numpy())
            deg.append(d.numpy())
    return np.concatenate(mos).astype(np.float32), np.concatenate(deg).astype(np.float32)


def evaluate(model: Student | Ensemble, data: Corpus) -> dict[str, Any]:
    """Frame-level and version-level (mean over a version's frames) agreement with the teacher."""
    mos, deg = predict(model, data.mosaic)
    keys = np.char.add(np.char.add(data.source, "#"), data.variant.astype(str))
    uniq, inv = np.unique(keys, return_inverse=True)
    v_pred = np.bincount(inv, mos) / np.bincount(inv)
    v_true = np.bincount(inv, data.mos) / np.bincount(inv)
    v_src = np.array([u.split("#")[0] for u in uniq])
    out: dict[str, Any] = {
        "frames": len(data),
        "versions": len(uniq),
        "sources": sorted(set(data.source.tolist())),
        "frame": metrics.summary(mos, data.mos),
        "version": metrics.summary(v_pred, v_true),
        "version_within_source_srcc": metrics.within_group_srcc(v_pred, v_true, v_src),
        "degradation_accuracy": float((deg.argmax(1) == data.degradation).mean()),
        "mae_mos": float(np.abs(mos - data.mos).mean()),
    }
    return out


def train(
    data: Corpus,
    out_dir: Path,
    config: TrainConfig,
    model_config: ModelConfig | None = None,
    progress: bool = True,
    position: int = 0,
) -> dict[str, Any]:
    """Train a student on `data`; returns the report (also written to out_dir/report.json).
    `position` is the progress bar's line (members trained side by side)."""
    from tqdm import tqdm

    torch.manual_seed(config.seed)
    torch.set_num_threads(config.threads)
    out_dir.mkdir(parents=True, exist_ok=True)
    train_src, val_src, tr, va = split_data(data, config)
    model = Student(model_config or ModelConfig(dropout=config.dropout))
    matrices = [p for p in model.parameters() if p.ndim >= 2]
    others = [p for p in model.parameters() if p.ndim < 2]
    groups: list[dict[str, Any]] = [
        {"params": matrices},
        {"params": others, "weight_decay": 0.0},
    ]
    opt = torch.optim.AdamW(
        groups,
        lr=config.lr,
        weight_decay=config.weight_decay,
    )
    steps_per_epoch = max(1, len(tr) // config.batch_size)
    total = steps_per_epoch * config.epochs
    if config.max_steps is not None:
        total = min(total, config.max_steps)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, config.lr, total_steps=total, pct_start=0.1)
    gen = torch.Generator().manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    mosaics = torch.from_numpy(tr.mosaic)
    target = torch.from_numpy(tr.mos)
    classes = torch.from_numpy(tr.degradation)
    source_id = torch.from_numpy(np.unique(tr.source, return_inverse=True)[1].astype(np.int64))
    hist = History()
    started = time.monotonic()
    step = 0
    desc = f"distill seed {config.seed}"
    with tqdm(total=total, desc=desc, unit="step", disable=not progress, position=position) as bar:
        for _epoch in range(config.epochs):
            if step >= total:
                break
            model.train()
            batches = _batches(
                tr.source, config.batch_size, steps_per_epoch, config.source_group, rng
            )
            losses = []
            for b in range(steps_per_epoch):
                if step >= total:
                    break
                idx = torch.from_numpy(batches[b])
                x = _augment(mosaics[idx], gen)
                keep = torch.randperm(49, generator=gen)[: config.train_patches]
                mos, logits, _ = model.logits(x, keep)
                y = target[idx]
                loss = (
                    F.smooth_l1_loss(mos, y, beta=0.25)
                    + config.rank_weight * rank_loss(mos, y)
                    + config.within_rank_weight * rank_loss(mos, y, group=source_id[idx])
                    + config.class_weight * F.cross_entropy(logits, classes[idx])
                )
                opt.zero_grad()
                loss.backward()
                opt.step()
                sched.step()
                step += 1
                losses.append(loss.item())
                hist.step_loss.append(losses[-1])
                bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}")
                bar.update(1)
            hist.epoch_train_loss.append(float(np.mean(losses)) if losses else float("nan"))
            if va is not None and len(va):
                vm, _ = predict(model, va.mosaic)
                hist.epoch_val_loss.append(
                    float(
                        F.smooth_l1_loss(torch.from_numpy(vm), torch.from_numpy(va.mos), beta=0.25)
                    )
                )
                hist.epoch_val_srcc.append(metrics.srcc(vm, va.mos))
                log.info(
                    "epoch %d: train %.4f, held-out SRCC %.4f",
                    _epoch,
                    hist.epoch_train_loss[-1],
                    hist.epoch_val_srcc[-1],
                )
    seconds = time.monotonic() - started
    report: dict[str, Any] = {
        "train_config": asdict(config),
        "model_config": model.config.to_json(),
        "parameters": parameter_count(model),
        "train_seconds": round(seconds, 1),
        "steps": step,
        "train_sources": train_src,
        "heldout_sources": val_src,
        "train_frames": len(tr),
        "degradations": list(DEGRADATIONS),
        # Metrics of the weights as exported (float16-rounded); the checkpoint keeps float32.
        **_metrics(round_to_fp16(copy.deepcopy(model)), tr, va),
        "history": asdict(hist),
    }
    torch.save(
        {"state_dict": model.state_dict(), "model_config": model.config.to_json()},
        out_dir / "student.pt",
    )
    (out_dir / "report.json").write_text(json.dumps(report, indent=2))
    plot_history(hist, out_dir / "loss.png")
    return report


def load_checkpoint(path: Path) -> Student:
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    cfg = dict(ckpt["model_config"])
    cfg["widths"] = tuple(cfg["widths"])
    model = Student(ModelConfig(**cfg))
    model.load_state_dict(ckpt["state_dict"])
    return model.eval()


def _train_member(
    corpus_dir: Path, out_dir: Path, config: TrainConfig, progress: bool, position: int
) -> dict[str, Any]:
    """One ensemble member in its own process (it loads the corpus itself)."""
    from scorers.train.corpus import load

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    return train(load(corpus_dir), out_dir, config, progress=progress, position=position)


def train_members(
    corpus_dir: Path,
    out_dir: Path,
    config: TrainConfig,
    members: int,
    *,
    jobs: int = 1,
    progress: bool = True,
) -> list[Path]:
    """Train `members` students alike but for their seeds (seed, seed+1, ...), on one
    held-out split (split_seed), `jobs` at a time in separate processes, into
    out_dir/member-<i>/ (returned, for assemble)."""
    import concurrent.futures as cf
    import multiprocessing as mp
    from dataclasses import replace

    configs = [
        replace(config, seed=config.seed + i, split_seed=config.held_out_seed)
        for i in range(members)
    ]
    dirs = [out_dir / f"member-{i}" for i in range(members)]
    started = time.monotonic()
    if jobs <= 1:
        for d, c in zip(dirs, configs, strict=True):
            _train_member(corpus_dir, d, c, progress, 0)
    else:
        # spawn, not fork: a forked child inherits torch's thread pools in a bad state.
        pool = cf.ProcessPoolExecutor(jobs, mp_context=mp.get_context("spawn"))
        try:
            futures = [
                pool.submit(_train_member, corpus_dir, d, c, progress, i % jobs)
                for i, (d, c) in enumerate(zip(dirs, configs, strict=True))
            ]
            # A member that fails stops the others at once, not after they finish.
            cf.wait(futures, return_when=cf.FIRST_EXCEPTION)
            for f in futures:
                if f.done() and (exc := f.exception()) is not None:
                    raise RuntimeError(f"an ensemble member failed: {exc}") from exc
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
    log.info("trained %d members in %.0f s", members, time.monotonic() - started)
    return dirs


def assemble(
    member_dirs: list[Path], data: Corpus, out_dir: Path, *, fp16: bool = True
) -> tuple[Ensemble, dict[str, Any]]:
    """Join trained members (directories of `train`) into an ensemble and write its report:
    the first member's report with the ensemble's parameters and metrics (on the members'
    recorded train and held-out sources in `data`), and each member's own figures under
    "members". With `fp16` the weights are rounded to float16 first (export's
    fp16_weights), so the metrics are those of the weights that ship."""
    reports = [json.loads((d / "report.json").read_text()) for d in member_dirs]
    for d, r in zip(member_dirs, reports, strict=True):
        for key in ("model_config", "train_sources", "heldout_sources"):
            if r[key] != reports[0][key]:
                raise ValueError(
                    f"ensemble member {d} differs from {member_dirs[0]} in {key}: members "
                    "must share the model layout and the held-out split (same corpus, "
                    "--holdout and --split-seed; only --seed differs)"
                )
    model = Ensemble([load_checkpoint(d / "student.pt") for d in member_dirs]).eval()
    if fp16:
        round_to_fp16(model)
    train_src, held_src = reports[0]["train_sources"], reports[0]["heldout_sources"]
    missing = sorted(set(train_src + held_src) - set(data.source.tolist()))
    if missing:
        raise ValueError(
            f"the corpus lacks {len(missing)} of the members' sources ({', '.join(missing[:3])}"
            "...): give --corpus the corpus the members were trained on"
        )
    tr, va = _subsets(data, train_src, held_src)
    first = {k: v for k, v in reports[0].items() if k != "history"}  # histories: member dirs
    report: dict[str, Any] = {
        **first,
        "parameters": parameter_count(model),
        "steps": sum(r["steps"] for r in reports),
        "train_seconds": sum(r["train_seconds"] for r in reports),
        **_metrics(model, tr, va),
        "members": [
            {
                "seed": r["train_config"]["seed"],
                "dir": str(d),
                "steps": r["steps"],
                "train_seconds": r["train_seconds"],
                "heldout_metrics": r["heldout_metrics"],
            }
            for d, r in zip(member_dirs, reports, strict=True)
        ],
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "report.json").write_text(json.dumps(report, indent=2))
    return model, report


def plot_history(hist: History, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    steps = np.arange(1, len(hist.step_loss) + 1)
    axes[0].plot(steps, hist.step_loss, lw=0.5, alpha=0.5, label="train (step)")
    if hist.epoch_train_loss:
        per = max(1, len(hist.step_loss) // len(hist.epoch_train_loss))
        ep = np.arange(1, len(hist.epoch_train_loss) + 1) * per
        axes[0].plot(ep, hist.epoch_train_loss, "o-", label="train (epoch mean)")
        if hist.epoch_val_loss:
            axes[0].plot(
                ep[: len(hist.epoch_val_loss)],
                hist.epoch_val_loss,
                "s-",
                label="held-out MOS smooth-L1",
            )
    axes[0].set_xlabel("step")
    axes[0].set_ylabel("loss")
    axes[0].set_yscale("log")
    axes[0].legend()
    axes[1].plot(np.arange(1, len(hist.epoch_val_srcc) + 1), hist.epoch_val_srcc, "o-")
    axes[1].set_xlabel("epoch")
    axes[1].set_ylabel("held-out SRCC (frames)")
    axes[1].grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)

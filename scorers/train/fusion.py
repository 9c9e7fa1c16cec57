"""Train the hybrid score's fusion head on a real-content segment set (scorers.train.realset).

Features come from the runtime's own path: each labelled segment is decoded by ingest
(with the per-frame quantiser), its sampled frames judged as displayed by the shipped
ONNX student, and turned into scorers.hybrid features, so what is trained on is exactly
what the daemon computes. The head is a small MLP ensemble (averaged into one set of
weights is not possible, so the members are stacked into one wider MLP whose output
layer averages them) plus a non-negative penalty per damaged fraction of the timeline.
"""

from __future__ import annotations

import csv
import logging
import math
import multiprocessing
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from ingest.config import DecodeConfig
from ingest.contract import parse_display
from ingest.decode import decode
from ingest.types import DecoderFault, DecodeTimeout, IngestError, Segment
from scorers import fragments, hybrid

log = logging.getLogger(__name__)


@dataclass
class SetFeatures:
    x: npt.NDArray[np.float32]
    damaged: npt.NDArray[np.float32]
    mos: npt.NDArray[np.float32]
    vmaf: npt.NDArray[np.float32]
    source: npt.NDArray[np.str_]
    kind: npt.NDArray[np.str_]
    coded_mos: npt.NDArray[np.float32]
    """The student's pooled MOS on the coded picture (the pre-hybrid screen score)."""
    path: npt.NDArray[np.str_]
    package: npt.NDArray[np.str_] | None = None
    """Each segment's picture package (labels.csv `package`); None for sets built before
    labels named it."""

    def subset(self, mask: npt.NDArray[np.bool_]) -> SetFeatures:
        cut: dict[str, Any] = {k: None if v is None else v[mask] for k, v in vars(self).items()}
        return SetFeatures(**cut)


def read_labels(path: Path) -> list[dict[str, str]]:
    """The rows of a labels CSV, one a segment: a later row for a path supersedes an
    earlier one (`train vlmlabel --retry-failed` appends a segment's new label after its
    failure), in the order the paths first appear."""
    with path.open(newline="") as fh:
        return list({r.get("path"): r for r in csv.DictReader(fh)}.values())


def _number(text: str | None) -> float:
    """A label column that may be empty (a VLM-labelled set has no VMAF): NaN then."""
    try:
        value = float(text) if text else math.nan
    except ValueError:
        return math.nan
    return value if math.isfinite(value) else math.nan


def labelled_rows(labels: Path) -> list[dict[str, str]]:
    """The rows of a labels CSV with a finite MOS. A row without one is a segment its
    teacher could not label (vlmlabel's parse failures) or an odd value: nothing to learn
    from, so it is left out, counted in the log."""
    rows = read_labels(labels)
    kept = [r for r in rows if math.isfinite(_number(r.get("mos")))]
    if len(kept) < len(rows):
        log.info("%d rows of %s have no usable mos and are left out", len(rows) - len(kept), labels)
    return kept


FEATURES_CACHE = 2
"""Version of the features cache beside labels.csv. 2: the quantiser read with one decoder
thread (version 1 read it with FFmpeg's frame threads, which raced with the exported
encoding parameters: noisy QP features)."""

_worker: dict[str, Any] = {}


def _init_worker(model_path: Path | None, frames: int) -> None:
    from scorers.distilled import DistilledConfig, DistilledScorer

    cfg = DecodeConfig()
    cfg.sampling.count = frames
    _worker["scorer"] = DistilledScorer(
        DistilledConfig(model_path=model_path, threads=1, hybrid=False)
    )
    _worker["decode"] = cfg


def _features(job: tuple[Path, dict[str, str]]) -> dict[str, Any]:
    """One labelled segment through the runtime path (in a worker: _init_worker first).
    A segment that does not decode gives {"failed": path, "lasting": bool}: lasting when
    the bytes themselves are at fault (a lost keyframe), not a timeout on a busy machine
    or a fault of the decoder, which are tried again next time."""
    root, row = job
    scorer, cfg = _worker["scorer"], _worker["decode"]
    data = (root / row["path"]).read_bytes()
    display = parse_display(row["display"])
    try:
        d = decode(Segment(data, source=row["path"]), cfg)
    except IngestError as exc:
        log.warning("skipping %s: %s", row["path"], exc)
        lasting = not isinstance(exc, (DecodeTimeout, DecoderFault))
        return {"failed": row["path"], "lasting": lasting}
    rgb = [f.rgb for f in d.frames]
    mosaics = fragments.sample_batch(rgb, display=display)
    shown = scorer.predict_mosaics(mosaics)
    coded = scorer.predict_mosaics(fragments.sample_batch(rgb))
    f = hybrid.features(d, shown.mos, shown.degradation.mean(axis=0), display, mosaics=mosaics)
    return {
        "x": f.values,
        "damaged": f.damaged,
        "mos": float(row["mos"]),
        "vmaf": _number(row.get("vmaf")),
        "source": row["source"],
        "kind": row.get("kind", ""),
        "coded_mos": float(coded.mos.mean()),
        "path": row["path"],
    }


def extract(
    labels: Path, model_path: Path | None = None, frames: int = 8, jobs: int = 1
) -> SetFeatures:
    """Features of every segment of a set, on `jobs` processes; cached beside labels.csv
    (features-N-vK.npz) for the shipped student, and only segments not yet in the cache
    are computed. Segments that do not decode (a lost keyframe) are cached as such, so a
    set's labels and cache alone, without its segments, give the whole SetFeatures."""
    # one cache per labels file: another file (vlmlabel's) may judge a segment at another
    # display, and the cache is keyed by path
    stem = "" if labels.name == "labels.csv" else f"{labels.stem}."
    cache = labels.with_name(f"{stem}features-{frames}-v{FEATURES_CACHE}.npz")
    known: dict[str, dict[str, Any]] = {}
    failed: set[str] = set()
    if cache.exists() and model_path is None:
        z = np.load(cache)
        cols = {k: z[k] for k in z.files if k != "failed"}
        failed = {str(p) for p in z["failed"]} if "failed" in z.files else set()
        for i, p in enumerate(cols["path"]):
            known[str(p)] = {k: v[i] for k, v in cols.items()}
    rows = labelled_rows(labels)
    todo = [(labels.parent, r) for r in rows if r["path"] not in known and r["path"] not in failed]
    if todo:
        ctx = multiprocessing.get_context("spawn")
        with ctx.Pool(max(1, jobs), _init_worker, (model_path, frames)) as pool:
            for i, got in enumerate(pool.imap(_features, todo, chunksize=4)):
                if "failed" not in got:
                    known[got["path"]] = got
                elif got["lasting"]:
                    failed.add(got["failed"])
                if i % 100 == 0:
                    log.info("features %d/%d", i, len(todo))
    # What was measured comes from the cache; what a segment is labelled, from labels.csv
    # as it is now (a relabelled set needs no new features).
    kept = [
        {
            **known[r["path"]],
            "mos": float(r["mos"]),
            "vmaf": _number(r.get("vmaf")),
            "source": r["source"],
            "kind": r.get("kind", ""),
        }
        for r in rows
        if r["path"] in known
    ]
    left_out = sum(r["path"] in failed for r in rows)
    if left_out:
        log.info("%d segments of %s do not decode and are left out", left_out, labels)
    named = all(r.get("package") for r in rows)
    result = SetFeatures(
        x=np.stack([k["x"] for k in kept]).astype(np.float32),
        damaged=np.asarray([k["damaged"] for k in kept], np.float32),
        mos=np.asarray([k["mos"] for k in kept], np.float32),
        vmaf=np.asarray([k["vmaf"] for k in kept], np.float32),
        source=np.asarray([str(k["source"]) for k in kept]),
        kind=np.asarray([str(k["kind"]) for k in kept]),
        coded_mos=np.asarray([k["coded_mos"] for k in kept], np.float32),
        path=np.asarray([str(k["path"]) for k in kept]),
        package=np.asarray([r["package"] for r in rows if r["path"] in known]) if named else None,
    )
    if model_path is None and todo:
        cols = {k: v for k, v in result.__dict__.items() if v is not None and k != "package"}
        np.savez_compressed(cache, failed=np.asarray(sorted(failed), dtype=str), **cols)
    return result


@dataclass(frozen=True)
class FusionConfig:
    hidden: int = 16
    members: int = 5
    epochs: int = 150
    lr: float = 3e-3
    weight_decay: float = 1e-3
    rank_weight: float = 1.0
    batch_sources: int = 6
    within_weight: float = 3.0
    seed: int = 0
    ignore: tuple[str, ...] = ()
    """Features the head may not use: their standardised column is zero in training and
    their first-layer weights zero in the spec, so the runtime's value of them changes
    nothing (the runtime still computes every FEATURE: the spec's contract)."""
    monotone: bool = False
    """Constrain the head to move with the features whose direction is known (MONOTONE):
    a higher student MOS never lowers the score, a coarser quantiser or a larger upscale
    never raises it, whatever the content. Half the hidden units add, half subtract, and
    the first layer's weights of those features carry the matching sign (a difference of
    two monotone sums of ReLUs), so the spec is an ordinary MLP the runtime runs as is."""


MONOTONE = {"mos_mean": 1, "mos_low": 1, "qp_mean": -1, "qp_p90": -1, "log2_upscale": -1}
"""Feature -> the sign of its effect on MOS, for FusionConfig.monotone (the standards'
bitstream models are monotone in the same quantities)."""


def _project_monotone(first: Any, last: Any) -> None:
    """Clamp the weights back into the monotone set after an optimiser step: output
    weights of the first half of the hidden units >= 0, of the second half <= 0; a
    monotone feature's input weights signed so each unit moves the output its way."""
    import torch

    half = first.weight.shape[0] // 2
    up, down = slice(0, half), slice(half, None)
    with torch.no_grad():
        last.weight[:, up].clamp_(min=0)
        last.weight[:, down].clamp_(max=0)
        for name, sign in MONOTONE.items():
            i = hybrid.FEATURES.index(name)
            for rows, s in ((up, sign), (down, -sign)):
                col = first.weight[rows, i]
                col.copy_(col.clamp(min=0) if s > 0 else col.clamp(max=0))


def _train_member(data: SetFeatures, cfg: FusionConfig, seed: int, mean: Any, scale: Any) -> Any:
    import torch

    torch.manual_seed(seed)
    x = torch.tensor(_standardise(data.x, mean, scale, cfg.ignore))
    dmg = torch.tensor(data.damaged)
    y = torch.tensor(data.mos)
    first, last = torch.nn.Linear(x.shape[1], cfg.hidden), torch.nn.Linear(cfg.hidden, 1)
    net = torch.nn.Sequential(first, torch.nn.ReLU(), last)
    k = torch.nn.Parameter(torch.tensor(0.5))
    opt = torch.optim.AdamW([*net.parameters(), k], lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.monotone:
        _project_monotone(first, last)
    gen = torch.Generator().manual_seed(seed)
    # Batches of whole sources, so every batch holds versions of one picture to order
    # against each other (the within-source rank term) besides pairs across pictures.
    _, src = np.unique(data.source, return_inverse=True)
    groups = [torch.tensor(np.flatnonzero(src == g)) for g in range(src.max() + 1)]
    per_batch = max(1, cfg.batch_sources)
    same_all = torch.tensor(src[:, None] == src[None, :])
    for _ in range(cfg.epochs):
        order = torch.randperm(len(groups), generator=gen).tolist()
        for s in range(0, len(order), per_batch):
            idx = torch.cat([groups[g] for g in order[s : s + per_batch]])
            pred = net(x[idx])[:, 0] - torch.nn.functional.softplus(k) * dmg[idx]
            loss = torch.nn.functional.smooth_l1_loss(pred, y[idx], beta=0.25)
            if cfg.rank_weight:
                dp = pred[:, None] - pred[None, :]
                dy = y[idx][:, None] - y[idx][None, :]
                hinge = torch.relu(0.05 - dp * torch.sign(dy)) * (dy.abs() > 0.02)
                same = same_all[idx][:, idx]
                loss = loss + cfg.rank_weight * (
                    hinge.mean() + cfg.within_weight * hinge[same].mean()
                )
            opt.zero_grad()
            loss.backward()
            opt.step()
            if cfg.monotone:
                _project_monotone(first, last)
    w1, b1 = first.weight.detach().numpy().T, first.bias.detach().numpy()
    w2, b2 = last.weight.detach().numpy().T, last.bias.detach().numpy()
    return w1, b1, w2, b2, float(torch.nn.functional.softplus(k).item())


def _standardise(x: Any, mean: Any, scale: Any, ignore: tuple[str, ...]) -> Any:
    out = (x - mean) / scale
    for name in ignore:
        out[:, hybrid.FEATURES.index(name)] = 0.0
    return out


def train(
    data: SetFeatures, cfg: FusionConfig | None = None, version: str = "1.0"
) -> dict[str, Any]:
    """Fit the head; returns the JSON spec hybrid.Fusion loads. The members are stacked
    side by side (hidden units concatenated, output weights divided by the count), which
    is exactly their average."""
    cfg = cfg or FusionConfig()
    mean = data.x.mean(axis=0)
    scale = data.x.std(axis=0) + 1e-3
    parts = [_train_member(data, cfg, cfg.seed + m, mean, scale) for m in range(cfg.members)]
    w1 = np.concatenate([p[0] for p in parts], axis=1)
    for name in cfg.ignore:
        w1[hybrid.FEATURES.index(name)] = 0.0
    b1 = np.concatenate([p[1] for p in parts])
    w2 = np.concatenate([p[2] for p in parts], axis=0) / cfg.members
    b2 = np.mean([p[3] for p in parts], axis=0)
    return {
        "version": version,
        "features": list(hybrid.FEATURES),
        "mean": mean.tolist(),
        "scale": scale.tolist(),
        "layers": [[w1.tolist(), b1.tolist()], [w2.tolist(), b2.tolist()]],
        "damage_per_fraction": float(np.mean([p[4] for p in parts])),
        "lo": data.x.min(axis=0).tolist(),
        "hi": data.x.max(axis=0).tolist(),
        "config": cfg.__dict__,
        "trained_on": {"segments": len(data.mos), "sources": len(set(data.source))},
    }


def predict(spec: dict[str, Any], data: SetFeatures) -> npt.NDArray[np.float32]:
    return hybrid.Fusion.from_spec(spec).predict(data.x, data.damaged)


def truth(data: SetFeatures) -> tuple[npt.NDArray[np.float64], str]:
    """What predictions are ranked against, and its name: VMAF when every segment has it,
    else the labels the head was fitted to (a VLM-labelled or a mixed set)."""
    if np.isnan(data.vmaf).any():
        return data.mos.astype(np.float64), "labels"
    return data.vmaf.astype(np.float64), "vmaf"


def report(pred: Sequence[float], data: SetFeatures) -> dict[str, Any]:
    """SRCC overall, mean within source, per impairment kind (each kind with the source's
    clean version, as the issue ranks them), PLCC."""
    from scorers import metrics

    p = np.asarray(pred, np.float64)
    y, against = truth(data)
    within = []
    for s in sorted(set(data.source)):
        m = data.source == s
        if m.sum() >= 3:
            within.append(metrics.srcc(p[m], y[m]))
    kinds: dict[str, float] = {}
    kinds_overall: dict[str, float] = {}
    for k in sorted(set(data.kind)):
        if k == "clean":
            continue
        m = (data.kind == k) | (data.kind == "clean")
        kinds_overall[k] = metrics.srcc(p[m], y[m])
        per = [
            metrics.srcc(p[m & (data.source == s)], y[m & (data.source == s)])
            for s in sorted(set(data.source))
            if (m & (data.source == s)).sum() >= 3
        ]
        kinds[k] = float(np.nanmean(per)) if per else float("nan")
    return {
        "segments": len(p),
        "sources": len(set(data.source)),
        "against": against,
        "srcc": metrics.srcc(p, y),
        "srcc_within_source": float(np.nanmean(within)),
        "plcc": metrics.summary(list(p), list(y))["plcc"],
        "by_kind": kinds_overall,
        "by_kind_within_source": kinds,
    }


def cv_folds(
    data: SetFeatures, folds: int = 5, seed: int = 0, by: str = "source"
) -> list[npt.NDArray[np.bool_]]:
    """Test masks of the folds: `folds` random groups of whole sources (`by="source"`), or
    one package per fold (`by="package"`: each fold holds out a whole package, the way
    the eval split holds out its package; related pictures of one package never sit on
    both sides)."""
    if by == "package":
        if data.package is None:
            raise ValueError(
                "these labels name no package: rebuild labels.csv with `vqmon train realset` "
                "(it resumes, adding the column), or cross-validate by source"
            )
        return [data.package == g for g in sorted(set(data.package))]
    sources = np.array(sorted(set(data.source)))
    order = np.random.default_rng(seed).permutation(len(sources))
    return [np.isin(data.source, list(sources[order[k::folds]])) for k in range(folds)]


def cross_validate(
    data: SetFeatures, cfg: FusionConfig | None = None, folds: int = 5, by: str = "source"
) -> dict[str, Any]:
    """Cross-validation on the training set: each fold is predicted by a head fitted on
    the others (see cv_folds). Design choices are made on this, not on the evaluation
    set. By package, the report adds each held-out package's own SRCC: the eval split is
    one package, so its figure compares with these, not with the pooled one."""
    from scorers import metrics

    cfg = cfg or FusionConfig()
    pred = np.zeros(len(data.mos), np.float32)
    masks = cv_folds(data, folds, cfg.seed, by)
    for test in masks:
        spec = train(data.subset(~test), cfg)
        pred[test] = predict(spec, data.subset(test))
    out = report(list(pred), data)
    out["folds"] = by
    if by == "package" and data.package is not None:
        out["by_package"] = {
            str(data.package[m][0]): metrics.srcc(pred[m], truth(data)[0][m]) for m in masks
        }
    return out

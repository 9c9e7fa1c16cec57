"""Build a labelled corpus: content x streaming impairments, labelled by a full-reference teacher.

For each source (scorers.train.content) a short reference clip is rendered, then a
random plan of impaired versions is made the way streams go wrong: an encoding
ladder (H.264 / HEVC at many CRFs), downscale -> encode -> upscale renditions, blur,
noise and banding under a light encode, and MPEG-TS packet loss decoded with
concealment. Every version is decoded back to RGB and labelled per frame by the
teacher against the reference. A few frames per version become samples: their
fragment mosaic (scorers.fragments, jittered), teacher MOS, raw teacher value and
degradation class. One .npz per source, so builds resume and splits go by source.

The 'train' split draws impairment parameters from even CRFs and one set of ranges;
the 'bench' split uses other content and other parameters (odd CRFs, other scales
and strengths), and also keeps the full frames so peers can score them.
"""

from __future__ import annotations

import io
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import av
import av.error
import numpy as np
import numpy.typing as npt

from ingest import impair
from ingest.synth import EncodeSettings, encode
from scorers import fragments
from scorers.train import content
from scorers.train.model import DEGRADATIONS
from scorers.train.teacher import Teacher, default_teacher

log = logging.getLogger(__name__)

RGB = npt.NDArray[np.uint8]
Split = Literal["train", "bench"]

CLIP_FRAMES = 12
"""Frames per reference clip (about half a second at 25 fps)."""
CLEAN_VMAF = 95.0
"""A compression/scaling/blur version whose mean teacher VMAF is at least this is 'clean'."""


@dataclass(frozen=True)
class Variant:
    kind: str
    codec: str = "libx264"
    crf: int = 23
    scale: float = 1.0
    strength: float = 0.0
    """blur sigma (px), noise sigma (code values), banding levels, or packet-loss fraction."""
    interp: str = "BICUBIC"

    def describe(self) -> str:
        s = f"{self.kind}/{self.codec}/crf{self.crf}"
        if self.scale != 1.0:
            s += f"/x{self.scale:.2f}/{self.interp.lower()}"
        if self.strength:
            s += f"/{self.strength:g}"
        return s


@dataclass
class Plan:
    variants: list[Variant] = field(default_factory=list)


def plan(source: str, split: Split, seed: int) -> list[Variant]:
    """The impaired versions made of one source (deterministic in source, split and seed)."""
    rng = np.random.default_rng(content.seed_of(source, seed))
    odd = split == "bench"

    def crf(lo: int, hi: int) -> int:
        values = [c for c in range(lo, min(hi, 51) + 1) if c % 2 == (1 if odd else 0)]
        return int(rng.choice(values))

    def codec() -> str:
        return "libx265" if rng.random() < 0.4 else "libx264"

    v: list[Variant] = [Variant("clean", "libx264", 8)]
    n_comp = 9 if split == "train" else 6
    for i in range(n_comp):
        # Spread CRFs over the ladder: one draw per band so every source spans the range.
        lo = 14 + i * (38 // n_comp)
        v.append(Variant("compression", codec(), crf(lo, lo + 38 // n_comp + 2)))
    scales = (0.25, 0.375, 0.5, 0.667, 0.75) if not odd else (0.33, 0.45, 0.6, 0.8)
    interps = ("BICUBIC", "BILINEAR") if not odd else ("LANCZOS", "BICUBIC")
    for _ in range(5 if split == "train" else 3):
        v.append(
            Variant(
                "scaling",
                codec(),
                crf(18, 40),
                scale=float(rng.choice(scales)),
                interp=str(rng.choice(interps)),
            )
        )
    blur = rng.uniform(0.5, 4.0, 3) if not odd else np.array([0.8, 1.7, 3.1])
    noise = rng.uniform(2.0, 30.0, 2) if not odd else np.array([7.0, 19.0])
    levels = rng.integers(6, 41, 2) if not odd else np.array([11, 23])
    loss = rng.uniform(0.005, 0.08, 2) if not odd else np.array([0.015, 0.05])
    v += [Variant("blur", codec(), crf(16, 24), strength=round(float(s), 2)) for s in blur]
    v += [Variant("noise", "libx264", crf(10, 18), strength=round(float(s), 1)) for s in noise]
    v += [Variant("banding", codec(), crf(14, 22), strength=int(s)) for s in levels]
    v += [Variant("packet_loss", "libx264", crf(18, 30), strength=round(float(s), 3)) for s in loss]
    return v


def rescale(frames: Sequence[RGB], width: int, height: int, interp: str) -> list[RGB]:
    out = []
    for f in frames:
        if f.shape[1] == width and f.shape[0] == height:
            out.append(f)
            continue
        vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")
        vf = vf.reformat(width=width, height=height, format="rgb24", interpolation=interp)
        out.append(np.asarray(vf.to_ndarray(), dtype=np.uint8))
    return out


def decode_all(data: bytes, count: int | None = None) -> list[RGB]:
    """Decode every frame, concealing what the decoder rejects; pad/trim to `count` frames
    if given (a lost frame shows as the previous one, as a player would show it)."""
    frames: list[RGB] = []
    with av.open(io.BytesIO(data), mode="r") as container:
        stream = container.streams.video[0]
        packets = list(container.demux(stream))
        for packet in [*packets, None]:
            try:
                decoded = stream.codec_context.decode(packet)
            except av.error.FFmpegError:
                continue
            for frame in decoded:
                frames.append(np.asarray(frame.to_ndarray(format="rgb24"), dtype=np.uint8))
    if not frames:
        raise ValueError("nothing decodable")
    if count is None:
        return frames
    while len(frames) < count:
        frames.append(frames[-1])
    return frames[:count]


def impaired(reference: Sequence[RGB], v: Variant, seed: int) -> list[RGB]:
    """Apply variant `v` to a reference clip; returns frames at the reference size."""
    h, w = reference[0].shape[:2]
    frames = impair.picture(reference, v.kind, v.strength, seed)
    if v.scale != 1.0:
        sw, sh = max(2, round(w * v.scale / 2) * 2), max(2, round(h * v.scale / 2) * 2)
        frames = rescale(frames, sw, sh, "AREA")
    data = encode(frames, EncodeSettings(codec=v.codec, container="mpegts", crf=v.crf))
    if v.kind == "packet_loss":
        data = impair.corrupt_packets(data, v.strength, seed=seed)
    try:
        out = decode_all(data, len(reference))
    except ValueError:  # loss so heavy that no frame decodes: the viewer sees black
        return [np.zeros_like(f) for f in reference]
    if v.scale != 1.0:
        out = rescale(out, w, h, v.interp)
    return out


def degradation_class(v: Variant, mean_vmaf: float | None) -> int:
    kind = v.kind
    if kind in ("compression", "scaling", "blur") and (mean_vmaf or 0.0) >= CLEAN_VMAF:
        kind = "clean"
    return DEGRADATIONS.index(kind)


def build_source(
    source: str,
    out_dir: Path,
    *,
    split: Split = "train",
    teacher: Teacher | None = None,
    seed: int = 0,
    frames_per_variant: int = 4,
    clip_frames: int = CLIP_FRAMES,
    variants: list[Variant] | None = None,
) -> Path:
    """Render, impair, label and sample one source; write `<out_dir>/<source>.npz`."""
    path = out_dir / f"{source.replace(':', '_')}.npz"
    if path.exists():
        return path
    teach = teacher or default_teacher()
    rng = np.random.default_rng(content.seed_of(source, seed + 1))
    reference = content.render(source, clip_frames)
    plan_ = variants if variants is not None else plan(source, split, seed)
    versions = [impaired(reference, v, seed=content.seed_of(v.describe(), seed)) for v in plan_]
    raw = teach.raw(reference, versions)
    mos = teach.label(reference, versions)
    # Away from the clip ends: VMAF's motion feature sees a cut there (see VmafTeacher).
    inner = np.arange(2, clip_frames - 2) if clip_frames > 6 else np.arange(clip_frames)
    mosaics, labels, values, classes, vid, frame_idx, full = [], [], [], [], [], [], []
    for i, (v, clip) in enumerate(zip(plan_, versions, strict=True)):
        picks = np.sort(rng.choice(inner, size=min(frames_per_variant, len(inner)), replace=False))
        cls = degradation_class(v, float(raw[i].mean()) if teach.name == "vmaf" else None)
        for k in picks:
            mosaics.append(fragments.sample(clip[k], rng))
            labels.append(mos[i][k])
            values.append(raw[i][k])
            classes.append(cls)
            vid.append(i)
            frame_idx.append(k)
            if split == "bench":
                full.append(clip[k])
    arrays: dict[str, npt.NDArray[np.generic]] = {
        "mosaic": np.stack(mosaics),
        "mos": np.asarray(labels, dtype=np.float32),
        "teacher_raw": np.asarray(values, dtype=np.float32),
        "degradation": np.asarray(classes, dtype=np.int64),
        "variant": np.asarray(vid, dtype=np.int64),
        "frame": np.asarray(frame_idx, dtype=np.int64),
        "variant_desc": np.asarray([v.describe() for v in plan_]),
        "source": np.asarray(source),
        "teacher": np.asarray(teach.name),
    }
    if full:
        arrays["full"] = np.stack(full)
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, **arrays)  # type: ignore[arg-type]
    os.replace(tmp, path)
    return path


@dataclass
class Corpus:
    mosaic: RGB
    mos: npt.NDArray[np.float32]
    teacher_raw: npt.NDArray[np.float32]
    degradation: npt.NDArray[np.int64]
    source: npt.NDArray[np.str_]
    variant: npt.NDArray[np.int64]
    """Index of the impaired version within its source (unique per source)."""

    def __len__(self) -> int:
        return len(self.mos)

    def subset(self, mask: npt.NDArray[np.bool_]) -> Corpus:
        return Corpus(
            self.mosaic[mask],
            self.mos[mask],
            self.teacher_raw[mask],
            self.degradation[mask],
            self.source[mask],
            self.variant[mask],
        )


def corpus_files(directory: Path, sources: Sequence[str] | None = None) -> list[Path]:
    """The .npz files of a corpus directory (all of them, or those of `sources`); raises
    FileNotFoundError when there are none."""
    files = sorted(f for f in directory.glob("*.npz") if not f.name.endswith(".tmp.npz"))
    if sources is not None:
        wanted = {s.replace(":", "_") for s in sources}
        files = [f for f in files if f.stem in wanted]
    if not files:
        raise FileNotFoundError(f"no corpus files (*.npz) in {directory}; run `vqmon train corpus`")
    return files


def load(directory: Path, sources: Sequence[str] | None = None) -> Corpus:
    """Load the .npz files of a corpus directory (all of them, or those of `sources`)."""
    parts = [np.load(f) for f in corpus_files(directory, sources)]
    src = [np.full(len(p["mos"]), str(p["source"])) for p in parts]
    return Corpus(
        np.concatenate([p["mosaic"] for p in parts]),
        np.concatenate([p["mos"] for p in parts]),
        np.concatenate([p["teacher_raw"] for p in parts]),
        np.concatenate([p["degradation"] for p in parts]),
        np.concatenate(src),
        np.concatenate([p["variant"] for p in parts]),
    )


def _worker(args: tuple[str, Path, Split, str, int, int]) -> str:
    source, out_dir, split, teacher_name, seed, fpv = args
    try:
        build_source(
            source,
            out_dir,
            split=split,
            teacher=default_teacher(teacher_name),
            seed=seed,
            frames_per_variant=fpv,
        )
    except Exception as exc:  # one bad source must not sink a long build
        return f"{source}: FAILED {type(exc).__name__}: {exc}"
    return f"{source}: ok"


def build(
    out_dir: Path,
    *,
    split: Split = "train",
    sources: Sequence[str] | None = None,
    teacher: str = "auto",
    seed: int = 0,
    workers: int = 1,
    frames_per_variant: int = 4,
    progress: bool = True,
) -> list[str]:
    """Build (or finish building) a corpus; returns one status line per source."""
    from tqdm import tqdm

    names = (
        list(sources)
        if sources is not None
        else (content.train_sources() if split == "train" else content.bench_sources())
    )
    jobs = [(s, out_dir, split, teacher, seed, frames_per_variant) for s in names]
    out_dir.mkdir(parents=True, exist_ok=True)
    results: list[str] = []
    with tqdm(total=len(jobs), desc=f"corpus {split}", unit="src", disable=not progress) as bar:
        if workers <= 1:
            for job in jobs:
                results.append(_worker(job))
                bar.update(1)
        else:
            import multiprocessing as mp

            with mp.get_context("spawn").Pool(workers) as pool:
                for line in pool.imap_unordered(_worker, jobs):
                    results.append(line)
                    bar.update(1)
    for line in results:
        if "FAILED" in line:
            log.warning(line)
    return results

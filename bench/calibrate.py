"""Picture-detector calibration on real content: false alarms on controls, recall on impairments.

    python bench/calibrate.py [--assets /work/data/x] [--cache /tmp/vqmon-calib] [--limit N]
                              [--module path/to/artifacts.py] [--json out.json] [--frames]
                              [--versions clean_x264,dim,...] [--build-only]

Sources are the pictures of the *train* wallpaper packages (Debian's plasma, ukui, gnome,
sway, debian-edu and lomiri wallpapers, and the photographs scikit-image and friends
ship); the eval package (mate-backgrounds) is never read. Each picture is filmed by a
virtual camera (a 1280x720 window panning, zooming, shaking or cutting over it, resampled
with Lanczos: small pictures come out soft, as upscaled footage does) for 24 frames at
25 fps, and every version is encoded to MPEG-TS and decoded with ingest.decode, as in
production. Versions (parameters drawn per source from a seeded generator):

    controls   clean_x264 (CRF 16-23), clean_x265 (CRF 16-23), dim (darkened to 0.2-0.4,
               x264 CRF 16-23), grain (light film grain, sigma 2-3 codes, x264 CRF 16-23);
               and clean_360, dim_360, grain_360: the same on a 640x360 rendition
    impaired   blur sigma 1.5 and 3, noise sigma 8 and 16, banding to 24 and 16 luma levels
               (x264 CRF 18), and heavy quantisation (x264 CRF 42 and 48); at 640x360 blur
               1.5, noise 8, banding 24 and CRF 42

A control raising any picture flag (blockiness, blur, noise, banding) is a false alarm;
an impaired version is caught when its own kind is flagged. Counts are printed for all
sources and for two halves split by index parity (fit, check): the banding constants
were chosen on the fit half, the others looking at all sources, so the check half is not
a held-out test (mate-backgrounds is). Encoded segments are cached under --cache, so a
re-run (another detector module via --module, e.g. the version before a change) only
decodes and detects. Building the cache takes ~15 s per source on 2 cores (x265 most).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
import zlib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import numpy.typing as npt

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ingest import impair
from ingest.config import DecodeConfig
from ingest.decode import decode
from ingest.synth import EncodeSettings, encode
from ingest.types import Segment
from scorers.train import realset
from scorers.train.corpus import rescale

RGB = npt.NDArray[np.uint8]
ADDED_AFTER_CALIBRATION = ("lomiri-wallpapers-16.04", "lomiri-wallpapers-20.04")
TRAIN_PACKAGES = tuple(p for p in realset.TRAIN_PACKAGES if p not in ADDED_AFTER_CALIBRATION)
"""The train split as it was when the detectors were calibrated (never mate-backgrounds:
it is the held-out evaluation set)."""
DISPLAY = (1280, 720)
FPS = 25
FRAMES = 24
PICTURE = ("blockiness", "blur", "noise", "banding")
CONTROLS = ("clean_x264", "clean_x265", "dim", "grain", "clean_360", "dim_360", "grain_360")
IMPAIRED = {
    "blur_1.5": "blur",
    "blur_3": "blur",
    "noise_8": "noise",
    "noise_16": "noise",
    "banding_24": "banding",
    "banding_16": "banding",
    "crf_42": "blockiness",
    "crf_48": "blockiness",
    "blur_1.5_360": "blur",
    "noise_8_360": "noise",
    "banding_24_360": "banding",
    "crf_42_360": "blockiness",
}
SMALL = (640, 360)
"""The rendition size of the *_360 versions: the clip downscaled (area average) first."""


# --- sources ----------------------------------------------------------------------------


def list_sources(assets: Path) -> list[Path]:
    """One picture per wallpaper of the calibration's packages (the train split's, as
    they were when it was calibrated), sorted."""
    return realset.list_sources(assets, "train", only=TRAIN_PACKAGES)


# --- versions ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Version:
    name: str
    codec: str
    crf: int
    note: str
    size: tuple[int, int] = DISPLAY


def versions(name: str) -> list[Version]:
    rng = np.random.default_rng(zlib.crc32(f"calib:{name}".encode()))

    def crf() -> int:
        return int(rng.integers(16, 24))

    out = [
        Version("clean_x264", "libx264", crf(), ""),
        Version("clean_x265", "libx265", crf(), ""),
        Version("dim", "libx264", crf(), f"darken={rng.uniform(0.2, 0.4):.2f}"),
        Version("grain", "libx264", crf(), f"noise={rng.uniform(2.0, 3.0):.2f}"),
    ]
    out += [
        Version("blur_1.5", "libx264", 18, "blur=1.5"),
        Version("blur_3", "libx264", 18, "blur=3"),
        Version("noise_8", "libx264", 18, "noise=8"),
        Version("noise_16", "libx264", 18, "noise=16"),
        Version("banding_24", "libx264", 18, "banding=24"),
        Version("banding_16", "libx264", 18, "banding=16"),
        Version("crf_42", "libx264", 42, ""),
        Version("crf_48", "libx264", 48, ""),
    ]
    # A 640x360 rendition of the same clip (drawn after the others: their parameters hold).
    out += [
        Version("clean_360", "libx264", crf(), "", SMALL),
        Version("dim_360", "libx264", crf(), f"darken={rng.uniform(0.2, 0.4):.2f}", SMALL),
        Version("grain_360", "libx264", crf(), f"noise={rng.uniform(2.0, 3.0):.2f}", SMALL),
        Version("blur_1.5_360", "libx264", 18, "blur=1.5", SMALL),
        Version("noise_8_360", "libx264", 18, "noise=8", SMALL),
        Version("banding_24_360", "libx264", 18, "banding=24", SMALL),
        Version("crf_42_360", "libx264", 42, "", SMALL),
    ]
    return out


def make(frames: Sequence[RGB], v: Version, seed: int) -> bytes:
    out = list(frames) if v.size == DISPLAY else rescale(frames, *v.size, "AREA")
    if v.note:
        what, value = v.note.split("=")
        x = float(value)
        out = impair.darken(out, x) if what == "darken" else impair.picture(out, what, x, seed)
    return encode(out, EncodeSettings(codec=v.codec, container="mpegts", fps=FPS, crf=v.crf))


def build(assets: Path, cache: Path, limit: int | None) -> list[tuple[str, list[Version]]]:
    """Film and encode every source's versions into the cache (skipping what is there)."""
    cache.mkdir(parents=True, exist_ok=True)
    listing = cache / "sources.json"
    if listing.exists():
        names: list[str] = json.loads(listing.read_text())
    else:
        names = []
        for path in list_sources(assets):
            name = realset.source_name(assets, path)
            if (cache / name).is_dir() or realset.usable(path) is not None:
                names.append(name)
                (cache / name).mkdir(exist_ok=True)
                (cache / name / "path").write_text(str(path))
        listing.write_text(json.dumps(names))
    names = names[:limit] if limit is not None else names
    out = []
    for n, name in enumerate(names):
        vs = versions(name)
        todo = [v for v in vs if not (cache / name / f"{v.name}.ts").exists()]
        if todo:
            t0 = time.time()
            picture = realset.usable(Path((cache / name / "path").read_text()))
            assert picture is not None
            frames = realset.camera(picture, name, FRAMES)
            for v in todo:
                seed = zlib.crc32(f"{name}:{v.name}".encode())
                (cache / name / f"{v.name}.ts").write_bytes(make(frames, v, seed))
            print(f"built {n + 1}/{len(names)} {name} in {time.time() - t0:.1f}s", file=sys.stderr)
        out.append((name, vs))
    return out


# --- scoring ----------------------------------------------------------------------------


def load_module(path: str | None) -> ModuleType:
    if path is None:
        from scorers import artifacts

        return artifacts
    spec = importlib.util.spec_from_file_location("artifacts_under_test", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def per_frame(artifacts: ModuleType, decoded: Any, cfg: Any) -> dict[str, list[Any]]:
    """Each picture detector's per-frame score and evidence (None: frame not judged)."""
    strips = artifacts.luma_strips(decoded, cfg.analysis)
    fns = {
        "blockiness": lambda s: artifacts.blockiness_score(s, cfg.blockiness),
        "blur": lambda s: artifacts.blur_score(s, cfg.blur),
        "noise": lambda s: artifacts.noise_score(s, cfg.noise),
        "banding": lambda s: artifacts.banding_score(s, cfg.banding),
    }
    out: dict[str, list[Any]] = {}
    for kind, fn in fns.items():
        out[kind] = []
        for s in strips:
            r = fn(s)
            ev = None if r is None else {k: round(float(v), 4) for k, v in r[1].items()}
            out[kind].append(None if r is None else [round(float(r[0]), 4), ev])
    return out


def score(
    artifacts: ModuleType, sources: list[tuple[str, list[Version]]], cache: Path, frames: bool
) -> list[dict[str, Any]]:
    scorer = artifacts.ArtifactScorer(artifacts.ArtifactsConfig())
    rows = []
    for i, (name, vs) in enumerate(sources):
        for v in vs:
            decoded = decode(Segment((cache / name / f"{v.name}.ts").read_bytes()), DecodeConfig())
            flags = scorer.detect(decoded)
            row: dict[str, Any] = {
                "source": name,
                "half": "fit" if i % 2 == 0 else "check",
                "version": v.name,
                "codec": v.codec,
                "crf": v.crf,
                "note": v.note,
                "flags": {f.kind: round(f.evidence.get("score", f.severity), 4) for f in flags},
            }
            if frames:
                row["frames"] = per_frame(artifacts, decoded, scorer.config)
            rows.append(row)
    return rows


def report(rows: list[dict[str, Any]]) -> str:
    lines = []
    for half in ("fit", "check", "all"):
        sel = [r for r in rows if half == "all" or r["half"] == half]
        n_src = len({r["source"] for r in sel})
        lines.append(f"== {half}: {n_src} sources")
        lines.append("  controls       clips  any  " + "  ".join(f"{k:>10}" for k in PICTURE))
        tot: Counter[str] = Counter()
        tot_n = tot_any = 0
        for c in CONTROLS:
            cs = [r for r in sel if r["version"] == c]
            by = Counter(k for r in cs for k in r["flags"] if k in PICTURE)
            anyf = sum(1 for r in cs if any(k in PICTURE for k in r["flags"]))
            tot += by
            tot_n += len(cs)
            tot_any += anyf
            counts = "  ".join(f"{by[k]:>10}" for k in PICTURE)
            lines.append(f"  {c:<14} {len(cs):>5} {anyf:>4}  {counts}")
        counts = "  ".join(f"{tot[k]:>10}" for k in PICTURE)
        lines.append(f"  {'total':<14} {tot_n:>5} {tot_any:>4}  {counts}")
        others = Counter(
            k for r in sel if r["version"] in CONTROLS for k in r["flags"] if k not in PICTURE
        )
        if others:
            listed = ", ".join(f"{k} {n}" for k, n in sorted(others.items()))
            lines.append(f"  (not picture flags, on controls: {listed})")
        lines.append("  impaired       clips  caught  also-flagged")
        for v, kind in IMPAIRED.items():
            vs = [r for r in sel if r["version"] == v]
            hit = sum(1 for r in vs if kind in r["flags"])
            other = Counter(k for r in vs for k in r["flags"] if k != kind)
            also = ", ".join(f"{k} {n}" for k, n in sorted(other.items()))
            lines.append(f"  {v:<14} {len(vs):>5} {hit:>7}  {also}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--assets", type=Path, default=Path("/work/data/x"))
    ap.add_argument("--cache", type=Path, default=Path("/tmp/vqmon-calib"))
    ap.add_argument("--limit", type=int, default=None, help="first N sources only")
    ap.add_argument(
        "--module", default=None, help="artifacts.py to test (default: scorers.artifacts)"
    )
    ap.add_argument("--json", type=Path, default=None, help="write every row here")
    ap.add_argument("--frames", action="store_true", help="also record per-frame scores")
    ap.add_argument("--build-only", action="store_true")
    ap.add_argument("--versions", default=None, help="comma-separated versions to score")
    args = ap.parse_args(argv)
    sources = build(args.assets, args.cache, args.limit)
    if args.build_only:
        return 0
    t0 = time.time()
    if args.versions:
        keep = set(args.versions.split(","))
        sources = [(n, [v for v in vs if v.name in keep]) for n, vs in sources]
    rows = score(load_module(args.module), sources, args.cache, args.frames)
    if args.json:
        args.json.write_text(json.dumps(rows))
    print(report(rows))
    print(f"({len(rows)} clips scored in {time.time() - t0:.0f}s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

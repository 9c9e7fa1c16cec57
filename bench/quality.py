"""Distilled scorer quality and speed: held-out SRCC against VMAF beside classic NR peers.

    python bench/quality.py [--corpus out/corpus/bench] [--model PATH] [--json OUT]

Quality: the bench corpus (`vqmon train corpus --split bench --out out/corpus/bench
--frames-per-variant 2`) is made of content NOT used in training (other stills, other
seeds of the procedural families) with other impairment parameters (odd CRFs, other
scales, interpolators and strengths). Each impaired version is scored by the student
(the runtime path: full frame -> deterministic fragments -> ONNX Runtime, mean over
the version's frames) and by each peer; SRCC against the mean VMAF of those frames,
overall and mean within source. Peers are sign-corrected so that higher means better.

Speed: student frames/s on ONNX Runtime CPU at batch 1 and 16 on 640x360 and
1280x720 frames, fragment sampling included; and the ratio of its cost per frame to
PyAV decoding the same frames (H.264, the decode path of ingest.decode).
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import numpy.typing as npt

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ingest.config import DecodeConfig, SamplingConfig
from ingest.decode import decode
from ingest.synth import EncodeSettings, clip
from ingest.types import Segment
from scorers import metrics
from scorers.distilled import DistilledConfig, DistilledScorer
from scorers.train import content

RGB = npt.NDArray[np.uint8]


def load_bench(directory: Path) -> list[dict[str, Any]]:
    """One record per impaired version: source, description, frames, VMAF per frame."""
    train = set(content.train_sources())
    records = []
    for f in sorted(directory.glob("*.npz")):
        z = np.load(f)
        source = str(z["source"])
        if source in train:
            raise SystemExit(f"{f}: source {source} is a training source; the bench must not be")
        if "full" not in z:
            raise SystemExit(f"{f}: no full frames; build with --split bench")
        for v in np.unique(z["variant"]):
            m = z["variant"] == v
            records.append(
                {
                    "source": source,
                    "variant": str(z["variant_desc"][v]),
                    "frames": list(z["full"][m]),
                    "vmaf": float(z["teacher_raw"][m].mean()),
                }
            )
    if not records:
        raise SystemExit(f"no bench corpus in {directory}; build it first (see --help)")
    return records


def ffmpeg_detect(frames: list[RGB], which: str) -> list[float]:
    """Per-frame FFmpeg blockdetect / blurdetect value (higher = worse)."""
    from scorers.train.teacher import find_ffmpeg

    exe = find_ffmpeg()
    if exe is None:
        raise RuntimeError("no FFmpeg")
    h, w = frames[0].shape[:2]
    key = {"blockdetect": "lavfi.block", "blurdetect": "lavfi.blur"}[which]
    cmd = [exe, "-v", "error", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{w}x{h}"]
    cmd += ["-r", "25", "-i", "-", "-vf", f"format=yuv420p,{which},metadata=print:file=-"]
    cmd += ["-f", "null", "-"]
    data = b"".join(np.ascontiguousarray(f).tobytes() for f in frames)
    out = subprocess.run(cmd, input=data, capture_output=True, check=True).stdout.decode()
    values = [float(line.split("=")[1]) for line in out.splitlines() if line.startswith(key + "=")]
    if len(values) != len(frames):
        raise RuntimeError(f"{which}: {len(values)} values for {len(frames)} frames")
    return values


def piqe(frame: RGB) -> float:
    from pypiqe import piqe as _piqe

    return float(_piqe(frame)[0])


def niqe_fn() -> Any:
    try:
        from skvideo.measure import niqe  # scikit-video; often broken on numpy 2
    except Exception:
        return None
    return niqe


def artifacts_peers() -> dict[str, Any]:
    """Our own deterministic detectors (scorers.artifacts), each as a per-frame badness."""
    try:
        from scorers import artifacts as a

        pairs = {
            "artifacts blockiness": (a.blockiness_score, a.BlockinessConfig()),
            "artifacts blur": (a.blur_score, a.BlurConfig()),
            "artifacts noise": (a.noise_score, a.NoiseConfig()),
            "artifacts banding": (a.banding_score, a.BandingConfig()),
        }
        luma_strips = a.luma_strips
    except (ImportError, AttributeError):
        return {}

    def make(fn: Any, cfg: Any) -> Any:
        def score(frame: RGB) -> float:
            fake = SimpleNamespace(frames=(SimpleNamespace(rgb=frame, index=0, pts_s=0.0),))
            scored = fn(luma_strips(fake)[0], cfg)
            return float("nan") if scored is None else float(scored[0])

        return score

    return {name: make(fn, cfg) for name, (fn, cfg) in pairs.items()}


class PeerCache:
    """Peer scores per (peer, source, version), kept in a JSON file: peers do not change
    between student runs, and PIQE is slow."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.data: dict[str, float] = {}
        if path is not None and path.is_file():
            self.data = json.loads(path.read_text())

    def get(self, peer: str, record: dict[str, Any], fn: Any) -> float:
        key = f"{peer}|{record['source']}|{record['variant']}"
        if key not in self.data:
            self.data[key] = fn(record)
        return self.data[key]

    def save(self) -> None:
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.write_text(json.dumps(self.data))


def quality(
    records: list[dict[str, Any]], scorer: DistilledScorer, cache: PeerCache | None = None
) -> dict[str, Any]:
    vmaf = np.array([r["vmaf"] for r in records])
    sources = [r["source"] for r in records]
    # name -> (per-version score, sign so that higher = better)
    scores: dict[str, tuple[list[float], float]] = {}
    scores["vqmon distilled"] = (
        [float(scorer.predict_frames(r["frames"]).mos.mean()) for r in records],
        1.0,
    )
    peers: dict[str, Any] = {"PIQE (pypiqe)": piqe, **artifacts_peers()}
    niqe = niqe_fn()
    if niqe is not None:
        peers["NIQE (scikit-video)"] = lambda f: float(
            np.asarray(niqe(f.mean(axis=2, keepdims=False)[None].astype(np.float64))).ravel()[0]
        )
    cache = cache or PeerCache(None)

    def per_frame(fn: Any) -> Any:
        return lambda r: float(np.nanmean([fn(f) for f in r["frames"]]))

    def per_clip(which: str) -> Any:
        return lambda r: float(np.mean(ffmpeg_detect(r["frames"], which)))

    jobs = {name: per_frame(fn) for name, fn in peers.items()}
    jobs.update({f"FFmpeg {w}": per_clip(w) for w in ("blockdetect", "blurdetect")})
    for name, job in jobs.items():
        try:
            scores[name] = ([cache.get(name, r, job) for r in records], -1.0)
        except Exception as exc:  # a peer that cannot run is reported, not fatal
            print(f"peer {name} skipped: {type(exc).__name__}: {exc}", file=sys.stderr)
        cache.save()
    table = {}
    for name, (vals, sign) in scores.items():
        v = np.nan_to_num(sign * np.asarray(vals), nan=-1e9)
        table[name] = {
            "srcc": metrics.srcc(v, vmaf),
            "srcc_within_source": metrics.within_group_srcc(v, vmaf, sources),
            "plcc": metrics.plcc(v, vmaf) if name == "vqmon distilled" else None,
        }
    # Where the student wins and loses: per impairment kind, SRCC inside the kind (across
    # sources and strengths) and the mean MOS error against the teacher's map.
    from scorers.train.teacher import vmaf_to_mos

    student = np.asarray(scores["vqmon distilled"][0])
    error = student - vmaf_to_mos(vmaf)
    kinds = np.array([r["variant"].split("/")[0] for r in records])
    by_kind = {}
    for k in np.unique(kinds):
        m = kinds == k
        by_kind[str(k)] = {
            "versions": int(m.sum()),
            "srcc": metrics.srcc(student[m], vmaf[m]),
            "mean_vmaf": float(vmaf[m].mean()),
            "mos_bias": float(error[m].mean()),
        }
    return {
        "by_kind": by_kind,
        "versions": len(records),
        "frames": sum(len(r["frames"]) for r in records),
        "sources": sorted(set(sources)),
        "vmaf_range": [float(vmaf.min()), float(vmaf.max())],
        "table": table,
    }


def _fps(fn: Any, n_frames: int, min_seconds: float = 3.0) -> float:
    fn()
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < min_seconds:
        fn()
        done += n_frames
    return done / (time.perf_counter() - started)


def speed(scorer: DistilledScorer) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for w, h in ((640, 360), (1280, 720)):
        data = clip("scene", width=w, height=h, seconds=2.0, settings=EncodeSettings(crf=23))
        cfg = DecodeConfig(sampling=SamplingConfig(mode="all"))
        frames = [f.rgb for f in decode(Segment(data), cfg).frames]
        decode_fps = _fps(lambda d=data, c=cfg: decode(Segment(d), c), len(frames))
        row: dict[str, Any] = {"decode_fps": decode_fps}
        for batch in (1, 16):
            scorer.config.batch_size = batch
            chunk = frames[:batch]
            row[f"batch{batch}_fps"] = _fps(lambda c=chunk: scorer.predict_frames(c), len(chunk))
        row["cost_vs_decode_b16"] = decode_fps / row["batch16_fps"]
        row["cost_vs_decode_b1"] = decode_fps / row["batch1_fps"]
        out[f"{w}x{h}"] = row
    scorer.config.batch_size = 16
    return out


def relative_speed(
    scorer: DistilledScorer, baseline: DistilledScorer, rounds: int = 3
) -> dict[str, Any]:
    """The model's frames/s over a baseline model's on the same 720p frames, the two
    alternated `rounds` times per batch size so that both see the same machine load."""
    data = clip("scene", width=1280, height=720, seconds=0.64, settings=EncodeSettings(crf=23))
    frames = [f.rgb for f in decode(Segment(data), DecodeConfig()).frames][:16]
    out: dict[str, Any] = {"baseline": baseline.version}
    for batch in (1, 16):
        chunk, pairs = frames[:batch], []
        for _ in range(rounds):
            row = []
            for s in (scorer, baseline):
                s.config.batch_size = batch
                row.append(_fps(lambda c=chunk, s=s: s.predict_frames(c), len(chunk)))
            pairs.append(row)
        ratios = sorted(a / b for a, b in pairs)
        out[f"batch{batch}"] = {
            "fps": [a for a, _ in pairs],
            "baseline_fps": [b for _, b in pairs],
            "ratio_median": ratios[len(ratios) // 2],
            "ratio_range": [ratios[0], ratios[-1]],
        }
    scorer.config.batch_size = baseline.config.batch_size = 16
    return out


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import os

    return f"{cpu}, {os.cpu_count()} cores, {platform.system()} {platform.release()}"


def render(result: dict[str, Any]) -> str:
    q = result["quality"]
    lines = [
        f"Held-out set: {q['versions']} impaired versions ({q['frames']} frames) of "
        f"{len(q['sources'])} sources never used in training; VMAF "
        f"{q['vmaf_range'][0]:.0f}-{q['vmaf_range'][1]:.0f}.",
        "",
        "| scorer | SRCC vs VMAF (overall) | SRCC within source (mean) |",
        "|---|---|---|",
    ]
    for name, row in sorted(q["table"].items(), key=lambda kv: -kv[1]["srcc"]):
        lines.append(f"| {name} | {row['srcc']:.3f} | {row['srcc_within_source']:.3f} |")
    lines += [
        "",
        "| impairment | versions | student SRCC within kind | mean VMAF | student MOS bias |",
        "|---|---|---|---|---|",
    ]
    for kind, row in q["by_kind"].items():
        lines.append(
            f"| {kind} | {row['versions']} | {row['srcc']:.3f} | {row['mean_vmaf']:.1f} "
            f"| {row['mos_bias']:+.2f} |"
        )
    lines += (
        []
        if "speed" not in result
        else [
            "",
            "| frames | decode fps (PyAV, all frames) | student fps batch 1 | student fps batch 16 "
            "| student cost / decode cost (b16) |",
            "|---|---|---|---|---|",
        ]
    )
    for res, row in result.get("speed", {}).items():
        lines.append(
            f"| {res} | {row['decode_fps']:.0f} | {row['batch1_fps']:.0f} | "
            f"{row['batch16_fps']:.0f} | {row['cost_vs_decode_b16']:.2f} |"
        )
    rel = result.get("speed_vs_baseline")
    if rel:
        lines += [
            "",
            f"Against {rel['baseline']} (720p, alternated): frames/s ratio "
            + "; ".join(
                f"batch {b}: {rel[f'batch{b}']['ratio_median']:.3f} "
                f"({rel[f'batch{b}']['ratio_range'][0]:.3f}-"
                f"{rel[f'batch{b}']['ratio_range'][1]:.3f})"
                for b in (1, 16)
            ),
        ]
    lines += ["", f"Machine: {result['machine']}; providers {result['providers']}."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--corpus", type=Path, default=Path("out/corpus/bench"))
    p.add_argument("--model", type=Path)
    p.add_argument("--json", type=Path, default=Path("bench/results/quality.json"))
    p.add_argument("--skip-quality", action="store_true")
    p.add_argument("--skip-speed", action="store_true")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument(
        "--baseline",
        type=Path,
        help="another student ONNX file: also measure --model's speed relative to it",
    )
    args = p.parse_args(argv)
    scorer = DistilledScorer(
        DistilledConfig(
            model_path=args.model, providers=["CPUExecutionProvider"], threads=args.threads
        )
    )
    result: dict[str, Any] = {"machine": machine(), "providers": scorer.providers}
    result["model"] = scorer.version
    if not args.skip_quality:
        cache = PeerCache(args.json.with_name("quality-peers.json"))
        result["quality"] = quality(load_bench(args.corpus), scorer, cache)
    if not args.skip_speed:
        result["speed"] = speed(scorer)
        if args.baseline:
            baseline = DistilledScorer(
                DistilledConfig(
                    model_path=args.baseline,
                    providers=["CPUExecutionProvider"],
                    threads=args.threads,
                )
            )
            result["speed_vs_baseline"] = relative_speed(scorer, baseline)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2))
    if "quality" in result:
        print(render(result))
    else:
        print(json.dumps({k: result.get(k) for k in ("speed", "speed_vs_baseline")}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

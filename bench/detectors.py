"""The artifact detectors on real content: flags on clean segments, recall on impaired ones.

    python bench/detectors.py --set out/realset/train [--json OUT] [--limit N]

Reads a real-content set (`vqmon train realset`: labels.csv beside the segments), decodes
every clean, blur, noise, banding, packet-loss and compression segment once, and runs the
artifact detectors of the default config and of `BEFORE` (the previous calibration) on
the same decode. Reported per config: the share of clean segments with any flag and with
each kind of flag (clean here is content: film grain, dark and flat grades, static
shots, graphics), and per impairment kind the share flagged with its own flag, by
strength. The training split is what the detectors are calibrated on; the evaluation
split measures them.
"""

from __future__ import annotations

import argparse
import collections
import csv
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ingest.decode import decode
from ingest.types import IngestError, Segment
from scorers.artifacts import ArtifactsConfig, ArtifactScorer

OWN_FLAG = {
    "blur": "blur",
    "noise": "noise",
    "banding": "banding",
    "packet_loss": "corruption",
    "compression": "blockiness",
}
"""The flag that names each impairment kind of the set."""

BEFORE: dict[str, Any] = {"banding": {"comb_mass": 0.0}}
"""The calibration before 2026-12-04: banding from band edges along lines alone, without
the posterised histogram (comb_mass 0)."""


def strength_bucket(kind: str, variant: str) -> str:
    """A coarse strength label from realset's variant string (kind/codec/size/crf[/strength])."""
    parts = variant.split("/")
    if kind == "compression":
        crf = int(parts[3].removeprefix("crf"))
        return "crf<30" if crf < 30 else "crf30-39" if crf < 40 else "crf40+"
    if len(parts) < 5:
        return "all"
    s = float(parts[4])
    cuts = {
        "blur": (1.5, 2.5, "sigma"),
        "noise": (6.0, 12.0, "sigma"),
        "banding": (12.0, 20.0, "levels"),
        "packet_loss": (0.02, 0.05, "loss"),
    }
    if kind not in cuts:
        return "all"
    lo, hi, name = cuts[kind]
    return f"{name}<={lo:g}" if s <= lo else f"{name}<={hi:g}" if s <= hi else f"{name}>{hi:g}"


def run(root: Path, limit: int | None) -> dict[str, Any]:
    rows = [
        r for r in csv.DictReader((root / "labels.csv").open()) if r["kind"] in {"clean", *OWN_FLAG}
    ]
    rows = rows[:limit] if limit else rows
    configs = {
        "default": ArtifactScorer(ArtifactsConfig()),
        "before": ArtifactScorer(ArtifactsConfig.model_validate(BEFORE)),
    }
    counts: dict[str, collections.Counter[str]] = {k: collections.Counter() for k in configs}
    totals: collections.Counter[str] = collections.Counter()
    undecodable = 0
    t0 = time.perf_counter()
    for r in rows:
        try:
            decoded = decode(Segment((root / r["path"]).read_bytes(), r["source"], "r", 0))
        except IngestError:
            undecodable += 1  # a dead letter in the daemon, not a detector's business
            continue
        kind = r["kind"]
        bucket = "clean" if kind == "clean" else f"{kind} {strength_bucket(kind, r['variant'])}"
        totals[kind] += 1
        totals[bucket] += 1 if kind != "clean" else 0
        for name, scorer in configs.items():
            flags = {f.kind for f in scorer.detect(decoded)}
            c = counts[name]
            if kind == "clean":
                c["clean any"] += bool(flags)
                for f in flags:
                    c[f"clean {f}"] += 1
            elif OWN_FLAG[kind] in flags:
                c[kind] += 1
                c[bucket] += 1
    out: dict[str, Any] = {
        "set": str(root),
        "segments": sum(totals[k] for k in ("clean", *OWN_FLAG)),
        "undecodable": undecodable,
        "seconds": round(time.perf_counter() - t0, 1),
        "machine": f"{platform.machine()}, {platform.python_version()}",
        "totals": dict(totals),
    }
    for name, c in counts.items():
        rates = {"clean with any flag": _rate(c["clean any"], totals["clean"])}
        rates |= {
            k: _rate(v, totals["clean"])
            for k, v in sorted(c.items())
            if k.startswith("clean ") and k != "clean any"
        }
        rates |= {f"{k} flagged": _rate(c[k], totals[k]) for k in sorted(totals) if k != "clean"}
        out[name] = rates
    return out


def _rate(n: int, of: int) -> str:
    return f"{n}/{of} ({100 * n / of:.0f}%)" if of else "0/0"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--set", type=Path, required=True, help="a realset folder with labels.csv")
    ap.add_argument("--limit", type=int, help="only the first N rows (a quick look)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    out = run(args.set, args.limit)
    text = json.dumps(out, indent=1)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Starved or pictured: does the judge tell a blurred or noisy picture from a starved encode?

    python bench/attribution.py --assets out/assets [--pictures 8] [--split train] [--json OUT]

A quality drop the judge cannot explain opens a starvation incident, and a starvation
incident on one rung makes the encoding policy raise that rung's bitrate. A picture that
was blurred or noised before the encoder also drops, and bits do not mend it; since
`judge.starvation.explained_by` a bad blur, noise or banding flag the degradation head
agrees with explains the drop, as black and freeze do. This measures both sides on real
photographs: starved encodes must still open starvation, blurred and noisy pictures should
open their own kind instead.

Pictures: every len/N-th usable picture of the split's packages present under `--assets`
(`vqmon train realset --fetch`, Debian's archive), filmed by realset's camera at 640x360;
the demo's ladder, 640x360 at 900 kbit/s and 320x180 at 300 kbit/s, 2-s 25-fps H.264
segments, each judged by the default screen chain at the 640x360 display, as the screen
role judges them. Per picture and rung: 10 clean segments (the camera's variants) and,
per fault, 4 segments (other variants): starved to 50 and 20 kbit/s, blurred (sigma 2, 3,
4.5) and noisy (sigma 12, 25) at the rung's bitrate. A fresh judge (default config) sees
10 clean rounds, then 4 rounds with the fault on that rung alone (the other rung clean),
then 4 clean ones; the kinds opened during the fault are counted, with the picture
explanations (the default), with new grain not read as starving the encoder
(`noise_starves: false`), and with neither (`explained_by: []` too, the judge before both).
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

from ingest import impair
from ingest.decode import decode
from ingest.synth import EncodeSettings, encode
from ingest.types import Segment
from monitor.config import Config
from monitor.judge import Judge, JudgeConfig
from monitor.types import FLAG_TO_KIND, FlagObs, Observation
from scorers.chain import Chain
from scorers.train import realset
from scorers.train.corpus import rescale

RUNGS = {"640x360": 900_000, "320x180": 300_000}
DISPLAY = (640, 360)
FRAMES = 50
CLEAN = 10
FAULT = 4
FAULTS: dict[str, tuple[str, float]] = {
    "starve-50k": ("starve", 50_000),
    "starve-20k": ("starve", 20_000),
    "blur-2": ("blur", 2.0),
    "blur-3": ("blur", 3.0),
    "blur-4.5": ("blur", 4.5),
    "noise-12": ("noise", 12.0),
    "noise-25": ("noise", 25.0),
}
EXPECTED = {"starve": "starvation", "blur": "blur", "noise": "noise"}


def pictures(assets: Path, split: realset.Split, count: int) -> list[tuple[str, np.ndarray]]:
    """realset.spread_pictures of the split's packages that are present."""
    present = [p for p in realset.packages(split) if (assets / p).is_dir()]
    if not present:
        raise SystemExit(f"{assets}: none of {split}'s packages; `vqmon train realset --fetch`")
    try:
        return realset.spread_pictures(assets, split, count, only=present)
    except ValueError as exc:
        raise SystemExit(str(exc)) from None


def screen(chain: Chain, config: Config, data: bytes, rendition: str, seq: int) -> Observation:
    seg = Segment(data, "s", rendition, seq, bitrate=RUNGS[rendition], display=DISPLAY)
    d = decode(seg, config.decode)
    v = chain.score([d])[0]
    return Observation(
        stream="s",
        rendition=rendition,
        seq=seq,
        segment_id=f"s/{rendition}/{seq}",
        mos=v.mos,
        mos_low=v.mos_low,
        flags=tuple(FlagObs(f.kind, f.severity, f.duration_s) for f in v.flags),
        bitrate=RUNGS[rendition],
        duration_s=2.0,
        degradation=v.degradation_class,
    )


def library(name: str, rgb: np.ndarray, chain: Chain, config: Config) -> dict[str, Any]:
    """Per rung: the clean observations and each fault's."""
    out: dict[str, Any] = {}
    for rung, rate in RUNGS.items():
        w, h = (int(x) for x in rung.split("x"))
        base = EncodeSettings(fps=25, gop=FRAMES, crf=None, bitrate=rate)
        clips = [
            rescale(realset.camera(rgb, f"{name}-{i}", FRAMES, size=DISPLAY), w, h, "AREA")
            for i in range(CLEAN + FAULT)
        ]
        clean = [
            screen(chain, config, encode(c, base), rung, i) for i, c in enumerate(clips[:CLEAN])
        ]
        faults: dict[str, list[Observation]] = {}
        for label, (kind, x) in FAULTS.items():
            obs = []
            for i, c in enumerate(clips[CLEAN:]):
                if kind == "starve":
                    data = encode(c, EncodeSettings(fps=25, gop=FRAMES, crf=None, bitrate=int(x)))
                else:
                    data = encode(impair.picture(c, kind, x, seed=i), base)
                obs.append(screen(chain, config, data, rung, CLEAN + i))
            faults[label] = obs
        out[rung] = {"clean": clean, "faults": faults}
    return out


def play(lib: dict[str, Any], rung: str, label: str, cfg: JudgeConfig) -> set[str]:
    """The kinds opened while `label` plays on `rung` (the other rung clean)."""
    judge = Judge(cfg)
    other = next(r for r in RUNGS if r != rung)
    opened: set[str] = set()
    seq = 0

    def round_(obs_here: Observation, obs_other: Observation, during: bool) -> None:
        nonlocal seq
        now = 1000.0 + 2 * seq
        events = []
        for o in (obs_here, obs_other):
            o = dataclasses.replace(o, seq=seq, segment_id=f"s/{o.rendition}/{seq}")
            events += judge.observe(o, now)
        events += judge.flush(now)
        if during:
            opened.update(e.kind for e in events if e.state == "open")
        seq += 1

    for i in range(CLEAN):
        round_(lib[rung]["clean"][i], lib[other]["clean"][i], False)
    for i, o in enumerate(lib[rung]["faults"][label]):
        round_(o, lib[other]["clean"][i % CLEAN], True)
    for i in range(FAULT):  # an incident opening on the fault's last segment shows here
        round_(lib[rung]["clean"][i], lib[other]["clean"][i], True)
    return opened


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--assets", type=Path, required=True)
    ap.add_argument("--split", choices=("train", "eval"), default="train")
    ap.add_argument("--pictures", type=int, default=8)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    config = Config()
    chain = Chain.from_configs(config.scorers)
    modes = {
        "explained": JudgeConfig(),
        "grain alone": JudgeConfig(noise_starves=False),
        "before": JudgeConfig.model_validate(
            {"starvation": {"explained_by": []}, "noise_starves": False}
        ),
    }
    counts: dict[str, dict[str, collections.Counter[str]]] = {m: {} for m in modes}
    heads: dict[str, collections.Counter[str]] = {}
    flagged: dict[str, int] = collections.Counter()
    started = time.time()
    chosen = pictures(args.assets, "eval" if args.split == "eval" else "train", args.pictures)
    for name, rgb in chosen:
        lib = library(name, rgb, chain, config)
        for rung in RUNGS:
            for label, (kind, _) in FAULTS.items():
                key = f"{label} {rung}"
                for o in lib[rung]["faults"][label]:
                    heads.setdefault(key, collections.Counter())[o.degradation or "-"] += 1
                    flagged[key] += any(FLAG_TO_KIND.get(f.kind) == kind for f in o.flags)
                for mode, cfg in modes.items():
                    got = play(lib, rung, label, cfg)
                    c = counts[mode].setdefault(key, collections.Counter())
                    c["runs"] += 1
                    for k in got:
                        c[k] += 1
                    c["expected"] += EXPECTED[kind] in got
        print(f"{name}: done ({time.time() - started:.0f} s)", file=sys.stderr, flush=True)
    chain.close()
    n = len(chosen)
    print(f"{n} pictures of the {args.split} split; runs per row: {n}")
    print(
        "fault rung | opened with the explanations | new grain not read as starving the "
        "encoder (noise_starves off) | neither explanation | head's class (segments)"
    )
    for key in counts["explained"]:
        row = []
        for mode in modes:
            c = counts[mode][key]
            kinds = ", ".join(
                f"{k} {c[k]}" for k in sorted(c) if k not in ("runs", "expected") and c[k]
            )
            row.append(kinds or "nothing")
        head = ", ".join(f"{k} {v}" for k, v in heads[key].most_common(3))
        print(f"{key:22s} | {' | '.join(row)} | {head}; its flag on {flagged[key]}")
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "pictures": [nm for nm, _ in chosen],
                    "split": args.split,
                    "counts": {m: {k: dict(c) for k, c in v.items()} for m, v in counts.items()},
                    "heads": {k: dict(v) for k, v in heads.items()},
                    "flagged": dict(flagged),
                    "machine": f"{platform.machine()}, Python {platform.python_version()}",
                    "seconds": round(time.time() - started),
                },
                indent=2,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

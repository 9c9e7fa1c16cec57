"""The closed loop, measured: bits saved at held quality, and onset-to-decision time.

    python bench/loop.py [--rounds 120] [--speed 1.0] [--target 4.3] [--rung-target WxH=MOS]
        [--baseline-drop D --lower-margin M] [--floor 0.8] [--frames 4] [--pictures ASSETS]
        [--save-presets 1] [--compare-preset faster]

Results and what they mean: docs/benchmarks.md ("Closed loop").

A local Tansu broker; the daemon `vqmon run --role all` (screen + judge, encoding on,
not dry-run) as a subprocess; in this process the closed-loop feed (monitor.feed.Feed):
live ladders of varied synthetic content (scene, texture, bars, zoneplate; 160x90 and
320x180, 1-s H.264 segments at a generous fixed ladder of 200 and 500 kbit/s), which
applies the encoder decisions it reads. With `--pictures ASSETS`, the four streams film
four real photographs instead (realset's held-out evaluation pictures, which the hybrid
score's fusion never trained on; every len/4-th usable one, chosen by that rule alone),
with realset's virtual camera at 640x360, scaled to each rung with an area filter.

1. Bits (phase 1, `--rounds` rounds, no impairment): the policy lowers a rung's bitrate
   by 20% when the median of its last `above_segments` segments is at or above target +
   lower_margin with none below target (distilled MOS; with `--save-presets`, a slower
   preset comes first), raises it below target. Every published segment is logged (content variant,
   encoder settings, bytes). The fixed ladder is the same segments encoded at the
   nominal settings. Quality of both: VMAF v0.6.1 (libvmaf in imageio-ffmpeg's FFmpeg,
   scorers/train/teacher.py) of each distinct encode against its pristine frames at the
   rung's own resolution, mean over frames, weighted by how often it was published.
   The encoder CPU of both (user + system time of one encode of each distinct encode,
   weighted the same way) shows what slower presets (`--save-presets`) cost; with
   `--compare-preset P` a second fixed ladder, every rung at P and its nominal bitrate,
   shows what that preset alone would have saved without the loop.
2. Latency (phase 2): the 320x180 and then the 160x90 rung of the scene and texture
   streams are starved (bitrate to 10 kbit/s) in turn; time from the publication of the
   first starved segment to the judge's raise decision (`made_at`) and to the feed
   applying it, p50 and p99, and the same in segments.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import av
import numpy as np
import yaml
from kafka import KafkaProducer

from ingest.broker import EmbeddedBroker, free_port
from ingest.kafka import KafkaConfig, ensure_topics
from ingest.synth import EncodeSettings, encode
from monitor.encoder_settings import to_encode_settings
from monitor.feed import Feed, KafkaDecisionSource
from monitor.sections import FeedConfig
from monitor.types import EncoderSettings
from scorers.train import corpus, realset
from scorers.train.teacher import VmafTeacher

ROOT = Path(__file__).resolve().parents[1]
STREAMS = ["scene", "texture", "bars", "zoneplate"]
RENDITIONS = ["160x90", "320x180"]
NOMINAL = {"160x90": 200_000, "320x180": 500_000}
STARVE = 10_000
LATENCY_STREAMS = ["scene", "texture"]
GAP = 10  # rounds between starvation onsets


def daemon_config(
    tmp: Path,
    bootstrap: str,
    port: int,
    target: float,
    floor: float,
    frames: int,
    rung_targets: dict[str, float] | None = None,
    baseline_drop: float | None = None,
    lower_margin: float = 0.3,
    save_presets: int = 0,
) -> Path:
    rung_targets = rung_targets or {}
    baseline = (
        {"target": "baseline", "baseline_drop": baseline_drop, "baseline_segments": 10}
        if baseline_drop is not None
        else {}
    )
    cfg: dict[str, Any] = {
        "kafka": {
            "bootstrap_servers": [bootstrap],
            "session_timeout_ms": 6000,
            "heartbeat_interval_ms": 1000,
        },
        "decode": {"threads": 1, "sampling": {"mode": "uniform", "count": frames}},
        "pipeline": {"decode_workers": 2},
        "http": {"port": port},
        "logging": {"level": "INFO", "format": "json"},
        "judge": {"ladder": {"enabled": False}, "round_wait_s": 5.0},
        "encoding": {
            "enabled": True,
            "dry_run": False,
            "cooldown_s": 6,
            "defaults": {
                "target_mos": target,
                **baseline,
                "lower_margin": lower_margin,
                "above_segments": 4,
                "below_segments": 3,
                "step": 0.2,
                "min_bitrate": 20_000,
                "save_presets": save_presets,
            },
            "policies": {
                f"*/{r}": {
                    "bitrate": b,
                    "min_bitrate": max(20_000, int(b * floor)),
                    **({"target_mos": rung_targets[r]} if r in rung_targets else {}),
                }
                for r, b in NOMINAL.items()
            },
        },
    }
    path = tmp / "vqmon.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


def schedule(rounds: int, latency_streams: list[str]) -> list[dict[str, Any]]:
    """Phase 2: starve each latency stream's rungs in turn, GAP rounds apart."""
    out = []
    seq = rounds
    for rendition in reversed(RENDITIONS):
        for stream in latency_streams:
            out.append(
                {
                    "kind": "starve",
                    "stream": stream,
                    "rendition": rendition,
                    "from_seq": seq,
                    "bitrate": STARVE,
                }
            )
            seq += GAP
    return out


class PictureFeed(Feed):
    """The closed-loop feed, each stream filming one real picture (see the module doc)."""

    def __init__(self, pictures: list[np.ndarray], *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.pictures = pictures
        self._filmed: dict[tuple[int, str, int], list[np.ndarray]] = {}

    def source_frames(self, s: int, rendition: str, variant: int) -> list[np.ndarray]:
        key = (s, rendition, variant)
        if key not in self._filmed:
            full = (s, "640x360", variant)
            if full not in self._filmed:
                name = f"{self.names[s]}-{variant}"
                self._filmed[full] = realset.camera(
                    self.pictures[s], name, self.frames, size=(640, 360)
                )
            w, h = (int(v) for v in rendition.split("x"))
            self._filmed[key] = corpus.rescale(self._filmed[full], w, h, "AREA")
        return list(self._filmed[key])


def load_pictures(assets: Path, count: int = 4) -> tuple[list[str], list[np.ndarray]]:
    """realset.spread_pictures of the evaluation split, as streams photo0, photo1, ..."""
    chosen = realset.spread_pictures(assets, "eval", count)
    names = [f"photo{i}" for i in range(count)]
    for n, (source, _) in zip(names, chosen, strict=True):
        print(f"{n}: {source}", file=sys.stderr)
    return names, [rgb for _, rgb in chosen]


def decode_rgb(data: bytes) -> list[np.ndarray]:
    with av.open(io.BytesIO(data)) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]


def cpu_seconds() -> float:
    """User + system time of this process and all its threads (x264 runs its own)."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


class Quality:
    """VMAF, bytes and encode CPU per distinct encode (cached): content variant x settings."""

    def __init__(self, feed: Feed) -> None:
        self.feed = feed
        self.teacher = VmafTeacher(threads=2)
        self.cache: dict[tuple[Any, ...], tuple[float, int, float]] = {}

    def of(
        self, s: int, rendition: str, variant: int, settings: EncodeSettings
    ) -> tuple[float, int, float]:
        key = (s, rendition, variant, settings)
        if key not in self.cache:
            frames = self.feed.source_frames(s, rendition, variant)
            t0 = cpu_seconds()
            data = encode(frames, settings)  # not the feed's cache: timed afresh
            cpu = cpu_seconds() - t0
            vmaf = float(np.mean(self.teacher.raw(frames, [decode_rgb(data)])[0]))
            self.cache[key] = (vmaf, len(data), cpu)
        return self.cache[key]


def bits_report(feed: Feed, rounds: int, compare_preset: str | None = None) -> dict[str, Any]:
    q = Quality(feed)
    index = {name: i for i, name in enumerate(feed.names)}
    rows: dict[str, dict[str, float]] = {}
    total = Counter[str]()
    half = Counter[str]()
    for p in feed.log:
        if p.seq >= rounds:
            continue
        s = index[p.stream]
        fixed = to_encode_settings(EncoderSettings(bitrate=NOMINAL[p.rendition]), feed.base)
        v_loop, b_loop, c_loop = q.of(s, p.rendition, p.variant, p.settings)
        v_fixed, b_fixed, c_fixed = q.of(s, p.rendition, p.variant, fixed)
        add = {
            "n": 1,
            "bytes_loop": b_loop,
            "bytes_fixed": b_fixed,
            "vmaf_loop": v_loop,
            "vmaf_fixed": v_fixed,
            "cpu_loop": c_loop,
            "cpu_fixed": c_fixed,
        }
        if compare_preset is not None:
            other = replace(fixed, preset=compare_preset)
            add["vmaf_preset"], add["bytes_preset"], add["cpu_preset"] = q.of(
                s, p.rendition, p.variant, other
            )
        key = f"{p.stream}/{p.rendition}"
        r = rows.setdefault(key, Counter())
        r.update(add)
        r["final_bitrate"] = p.settings.bitrate or 0
        for c in (total, half) if p.seq >= rounds // 2 else (total,):
            c.update(add)

    def summary(c: Any) -> dict[str, float]:
        n = max(1, c["n"])
        out = {
            "segments": int(c["n"]),
            "saved_pct": round(100 * (1 - c["bytes_loop"] / max(1, c["bytes_fixed"])), 1),
            "vmaf_loop": round(c["vmaf_loop"] / n, 2),
            "vmaf_fixed": round(c["vmaf_fixed"] / n, 2),
            "encode_cpu_loop_over_fixed": round(c["cpu_loop"] / max(1e-9, c["cpu_fixed"]), 2),
        }
        if compare_preset is not None:
            out["preset_alone_saved_pct"] = round(
                100 * (1 - c["bytes_preset"] / max(1, c["bytes_fixed"])), 1
            )
            out["vmaf_preset_alone"] = round(c["vmaf_preset"] / n, 2)
            out["encode_cpu_preset_alone_over_fixed"] = round(
                c["cpu_preset"] / max(1e-9, c["cpu_fixed"]), 2
            )
        return out

    return {
        "all": summary(total),
        "second_half": summary(half),
        "per_rung": {
            k: {**summary(v), "final_bitrate": int(v["final_bitrate"])}
            for k, v in sorted(rows.items())
        },
        "distinct_encodes_scored": len(q.cache),
    }


def first_decisions(feed: Feed, ev: dict[str, Any]) -> list[Any]:
    """Decisions for the starved rung made from its starved segments, first first."""
    return [
        (at, seq, d)
        for at, seq, d in feed.applied
        if (d.stream, d.rendition) == (ev["stream"], ev["rendition"]) and d.seq >= ev["from_seq"]
    ]


def latency_report(feed: Feed, events: list[dict[str, Any]]) -> dict[str, Any]:
    published = {(p.stream, p.rendition, p.seq): p.at for p in feed.log}
    decided: list[float] = []
    applied: list[float] = []
    segments: list[int] = []
    missed = []
    actions = Counter[str]()
    for ev in events:
        onset = published.get((ev["stream"], ev["rendition"], ev["from_seq"]))
        match = first_decisions(feed, ev)
        if onset is None or not match:
            missed.append(f"{ev['stream']}/{ev['rendition']}@{ev['from_seq']}")
            continue
        at, _seq, d = match[0]
        actions[d.action] += 1
        decided.append(d.made_at - onset)
        applied.append(at - onset)
        segments.append(d.seq - ev["from_seq"] + 1)

    def pct(xs: list[float], q: float) -> float | None:
        if not xs:
            return None
        return round(float(np.percentile(xs, q)), 2)

    return {
        "events": len(events),
        "decided": len(decided),
        "missed": missed,
        "first_action": dict(actions),
        "decision_s": {
            "p50": pct(decided, 50),
            "p99": pct(decided, 99),
            "all": [round(x, 2) for x in decided],
        },
        "applied_s": {"p50": pct(applied, 50), "p99": pct(applied, 99)},
        "segments_to_decision": {
            "p50": pct([float(x) for x in segments], 50),
            "max": max(segments, default=None),
        },
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=120, help="rounds of phase 1 (bits)")
    ap.add_argument("--speed", type=float, default=1.0, help="publishing rate x real time")
    ap.add_argument(
        "--drain", type=int, default=60, help="extra rounds at most, waiting for decisions"
    )
    ap.add_argument("--target", type=float, default=4.3, help="target MOS (1-5) of every rung")
    ap.add_argument(
        "--baseline-drop",
        type=float,
        help="hold each rung at its own MOS at the nominal settings less this "
        "(encoding target: baseline) instead of a fixed target",
    )
    ap.add_argument(
        "--lower-margin",
        type=float,
        default=0.3,
        help="lower a rung's bitrate only at or above target + this",
    )
    ap.add_argument(
        "--rung-target",
        action="append",
        default=[],
        metavar="WxH=MOS",
        help="target MOS of one rung (repeatable), e.g. 160x90=3.5: a rung judged as shown "
        "at the top rung's size looks softer than the top rung at its nominal bitrate",
    )
    ap.add_argument(
        "--floor",
        type=float,
        default=0.0,
        help="min_bitrate of every rung as a fraction of its nominal bitrate (0: 20 kbit/s)",
    )
    ap.add_argument("--frames", type=int, default=8, help="frames sampled per segment")
    ap.add_argument(
        "--save-presets",
        type=int,
        default=0,
        help="encoding save_presets: slower presets a rung may take before its bitrate is "
        "lowered (0: bitrate only)",
    )
    ap.add_argument(
        "--compare-preset",
        help="also measure a fixed ladder at this preset and the nominal bitrates: what the "
        "preset alone saves, without the loop",
    )
    ap.add_argument("--json", type=Path, help="also write the results here")
    ap.add_argument(
        "--pictures",
        type=Path,
        help="realset assets folder (vqmon train realset --fetch): film four held-out real "
        "pictures instead of the synthetic patterns",
    )
    args = ap.parse_args()
    if args.rung_target and args.baseline_drop is not None:
        ap.error("--rung-target sets fixed targets; --baseline-drop replaces them: pick one")
    rung_targets = {}
    for item in args.rung_target:
        rung, sep, value = item.partition("=")
        if not sep or rung not in NOMINAL:
            ap.error(f"--rung-target {item!r}: want WxH=MOS with WxH one of {list(NOMINAL)}")
        rung_targets[rung] = float(value)
    names, pictures = load_pictures(args.pictures) if args.pictures else (STREAMS, [])
    events = schedule(args.rounds, names[:2] if pictures else LATENCY_STREAMS)
    total_rounds = args.rounds + GAP * len(events) + GAP
    with tempfile.TemporaryDirectory(prefix="vqmon-bench-loop-") as tmp, EmbeddedBroker() as broker:
        bs = broker.bootstrap_servers
        cfg = KafkaConfig(partitions=4)
        compact = {"cleanup.policy": "compact"}
        ensure_topics(
            cfg,
            [bs],
            [
                "vqmon.segments",
                "vqmon.verdicts",
                "vqmon.dead-letter",
                "vqmon.alerts",
                "vqmon.incidents",
                "vqmon.encoder-decisions",
            ],
            {"vqmon.incidents": compact, "vqmon.encoder-decisions": compact},
        )
        port = free_port()
        config = daemon_config(
            Path(tmp),
            bs,
            port,
            args.target,
            args.floor,
            args.frames,
            rung_targets,
            args.baseline_drop,
            args.lower_margin,
            args.save_presets,
        )
        with (Path(tmp) / "daemon.log").open("wb") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "monitor", "run", "--role", "all", "--config", str(config)],
                cwd=ROOT,
                stdout=log,
                stderr=log,
            )
        try:
            deadline = time.monotonic() + 120
            while not ready(port):
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise SystemExit(
                        "the daemon did not get ready:\n"
                        + (Path(tmp) / "daemon.log").read_text()[-3000:]
                    )
                time.sleep(0.5)
            feed_cfg = FeedConfig(
                stream_names=names,
                patterns=["scene"] * len(names) if pictures else STREAMS,  # type: ignore[arg-type]
                renditions=RENDITIONS,
                bitrates=NOMINAL,
                segment_seconds=1.0,
                speed=args.speed,
                black_every=0,
                closed_loop=True,
                schedule=events,  # type: ignore[arg-type]
            )
            producer = KafkaProducer(bootstrap_servers=[bs], acks="all", linger_ms=5)
            decisions = KafkaDecisionSource(cfg, [bs], "vqmon.encoder-decisions")
            feed = (
                PictureFeed(
                    pictures,
                    feed_cfg,
                    producer,
                    "vqmon.segments",
                    decisions=decisions,
                    keep_log=True,
                )
                if pictures
                else Feed(feed_cfg, producer, "vqmon.segments", decisions=decisions, keep_log=True)
            )
            period = 1.0 / args.speed
            t0 = time.monotonic()
            i = 0
            # Go on past the schedule until every starved rung got its decision (the
            # daemon may lag the feed on a busy machine), at most `--drain` more rounds.
            while i < total_rounds or (
                i < total_rounds + args.drain
                and not all(first_decisions(feed, ev) for ev in events)
            ):
                feed.step()
                i += 1
                time.sleep(max(0.0, t0 + i * period - time.monotonic()))
            producer.flush()
        finally:
            proc.terminate()
            proc.wait(60)
        result = {
            "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}",
            "command": " ".join(sys.argv),
            "rounds": args.rounds,
            "speed": args.speed,
            "content": names if pictures else STREAMS,
            "target_mos": args.target,
            "rung_targets": rung_targets,
            "baseline_drop": args.baseline_drop,
            "lower_margin": args.lower_margin,
            "floor": args.floor,
            "save_presets": args.save_presets,
            "load_average_at_end": [round(x, 1) for x in os.getloadavg()],
            "published": feed.published,
            "rounds_run": feed.seq,
            "decisions": Counter(d.action for _, _, d in feed.applied),
            "decision_log": [
                {
                    "rung": f"{d.stream}/{d.rendition}",
                    "seq": d.seq,
                    "action": d.action,
                    "to": d.params.to_bitrate or d.params.to_preset or d.params.filter,
                    "reason": d.reason,
                    "incident": d.incident_id,
                }
                for _, _, d in feed.applied
            ],
            "bits": bits_report(feed, args.rounds, args.compare_preset),
            "latency": latency_report(feed, events),
        }
        decisions.close()
        producer.close()
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

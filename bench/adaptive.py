"""Adaptive screening: recall of black, freeze and loss events, detection delay, and cost.

    python bench/adaptive.py [--renditions 8] [--segments 30] [--height 360] [--full-every 8]

A live feed of `renditions` continuous renditions (procedural content, 2-s segments at
30 fps, H.264 in MPEG-TS, one keyframe per segment) carries events of 2 to 4 s placed at
random times: black, freeze, and transport loss (MPEG-TS packets dropped, 5%, for the
event's segments). Rounds of one segment per rendition go through the real worker pool
(the same screen_job as the daemon) under the AdaptivePlanner, in order, as a live feed
would. An event is caught when a verdict of a segment it overlaps flags its kind
(black, freeze, corruption). Detection delay: media seconds from the event's onset to the
end of the first segment that flagged it (the earliest a live monitor can know it).
The same feed is screened in full mode for the cost comparison (worker CPU seconds).
Bit errors that keep the timing intact (payload overwritten) inside predicted frames
are invisible to packet-level signals; --overwrite measures that case too.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ingest import impair
from ingest.config import DecodeConfig
from ingest.contract import SegmentJob
from ingest.reference import ReferenceConfig
from ingest.synth import EncodeSettings, encode, pattern_frames
from ingest.types import Segment, StreamInfo
from monitor.screen import AdaptivePlanner
from monitor.sections import ScreeningConfig
from monitor.workers import DecodeSummary, Failed, Screened, ScreenJob, WorkerPool, WorkerSetup
from scorers.artifacts import ArtifactsConfig
from scorers.distilled import DistilledConfig
from scorers.types import Flag, Verdict

FPS = 30
SEG_S = 2.0
KINDS = ("scene", "texture", "bars", "zoneplate")
KIND_FLAG = {"black": "black", "freeze": "freeze", "loss": "corruption"}


@dataclass
class Event:
    rendition: int
    kind: str
    start_s: float
    length_s: float

    def segments(self) -> range:
        first = int(self.start_s // SEG_S)
        last = int((self.start_s + self.length_s - 1e-6) // SEG_S)
        return range(first, last + 1)


def plan_events(renditions: int, segments: int, rng: np.random.Generator) -> list[Event]:
    events = []
    kinds = ("black", "freeze", "loss")
    for r in range(renditions):
        t = 8.0 + rng.uniform(0, 4)
        k = int(rng.integers(3))
        while True:
            length = float(rng.uniform(2.0, 4.0))
            if t + length > (segments - 1) * SEG_S:
                break
            events.append(Event(r, kinds[k % 3], round(t * FPS) / FPS, length))
            k += 1
            t += length + float(rng.uniform(8.0, 16.0))  # clean stretch between events
    return events


def make_feed(
    renditions: int, segments: int, height: int, events: list[Event], overwrite: bool
) -> list[list[bytes]]:
    width = height * 16 // 9
    frames_per_seg = round(FPS * SEG_S)
    settings = EncodeSettings(fps=FPS, gop=frames_per_seg, crf=23)
    kinds = KINDS
    feed: list[list[bytes]] = []
    for r in range(renditions):
        mine = [e for e in events if e.rendition == r]
        source = pattern_frames(
            kinds[r % len(kinds)], width, height, segments * frames_per_seg, seed=r, speed=2.0
        )
        out: list[bytes] = []
        held: np.ndarray | None = None
        for s in range(segments):
            frames = []
            for i in range(frames_per_seg):
                t = (s * frames_per_seg + i) / FPS
                frame = next(source)
                active = [e for e in mine if e.start_s <= t < e.start_s + e.length_s]
                kind = active[0].kind if active else None
                if kind == "black":
                    frame = np.zeros_like(frame)
                if kind == "freeze":
                    held = frame if held is None else held
                    frame = held
                else:
                    held = None
                frames.append(frame)
            data = encode(frames, settings)
            if any(e.kind == "loss" and s in e.segments() for e in mine):
                mode = "overwrite" if overwrite else "drop"
                data = impair.corrupt_packets(data, 0.05, seed=r * 1000 + s, mode=mode)
            out.append(data)
        feed.append(out)
    return feed


def screen(
    feed: list[list[bytes]], mode: str, full_every: int, workers: int
) -> tuple[list[list[Screened]], float, dict[str, int]]:
    setup = WorkerSetup(
        DecodeConfig(threads=1),
        ReferenceConfig(),
        [ArtifactsConfig(), DistilledConfig(threads=1)],
    )
    planner = AdaptivePlanner(ScreeningConfig(mode=mode, full_every=full_every))  # type: ignore[arg-type]
    pool = WorkerPool(workers, 2, setup, job_timeout_s=120, max_restarts=3, restart_window_s=60)
    results: list[list[Screened]] = [[] for _ in feed]
    modes: dict[str, int] = {}
    try:
        # Warm-up: each worker loads its scorers once.
        for i in range(workers):
            pool.submit(-1 - i, ScreenJob(SegmentJob(Segment(feed[0][0]))))
        got = 0
        while got < workers:
            got += len(pool.poll(0.5))
        started = time.perf_counter()
        ids = 0
        for s in range(len(feed[0])):
            owed: dict[int, int] = {}
            queue = list(range(len(feed)))
            while queue or owed:
                while queue and pool.free_slots() > 0:
                    r = queue.pop(0)
                    m, ref = planner.plan(f"r{r}", "main")
                    ids += 1
                    owed[ids] = r
                    seg = Segment(feed[r][s], f"r{r}", "main", s)
                    pool.submit(ids, ScreenJob(SegmentJob(seg), m, ref))
                for res in pool.poll(0.05):
                    r = owed.pop(res.job_id)
                    if isinstance(res, Failed):
                        # Undecodable (loss took the keyframe): in the daemon a dead letter
                        # with the decode reason, which the judge counts as transport damage.
                        results[r].append(_failed_verdict(r, s, res))
                        modes["dead_letter"] = modes.get("dead_letter", 0) + 1
                        continue
                    planner.learn(res.verdict, res.predicted_bytes)
                    results[r].append(res)
                    modes[res.verdict.mode] = modes.get(res.verdict.mode, 0) + 1
            for r in range(len(feed)):
                results[r].sort(key=lambda x: x.verdict.seq)
        seconds = time.perf_counter() - started
    finally:
        pool.close()
    return results, seconds, modes


def _failed_verdict(r: int, seq: int, failed: Failed) -> Screened:
    flag = Flag("corruption", 1.0, 0.0, SEG_S, {"dead_letter": 1.0})
    verdict = Verdict(f"r{r}/main/{seq}", f"r{r}", "main", seq, None, None, (), (flag,), ())
    info = StreamInfo("h264", None, 0, 0, FPS, "", 8, None, SEG_S, 0.0, 0, 0, "mpegts")
    return Screened(failed.job_id, verdict, info, DecodeSummary(1, 0, failed.seconds), 0.0)


def evaluate(events: list[Event], results: list[list[Screened]]) -> dict[str, object]:
    caught: dict[str, list[bool]] = {}
    misses: list[str] = []
    delays: list[float] = []
    for e in events:
        flag = KIND_FLAG[e.kind]
        hit = None
        for s in e.segments():
            v = results[e.rendition][s].verdict
            if any(f.kind == flag for f in v.flags):
                hit = s
                break
        caught.setdefault(e.kind, []).append(hit is not None)
        if hit is None:
            misses.append(
                f"{e.kind} on r{e.rendition} ({KINDS[e.rendition % len(KINDS)]}) "
                f"at {e.start_s:.1f} s"
            )
        if hit is not None:
            delays.append((hit + 1) * SEG_S - e.start_s)
    recall = {k: sum(v) / len(v) for k, v in caught.items()}
    all_hits = [h for v in caught.values() for h in v]
    return {
        "events": {k: len(v) for k, v in caught.items()},
        "recall": {k: round(r, 3) for k, r in recall.items()},
        "recall_all": round(sum(all_hits) / len(all_hits), 3),
        "delay_p50_s": round(statistics.median(delays), 2) if delays else None,
        "delay_max_s": round(max(delays), 2) if delays else None,
        "missed": misses,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--renditions", type=int, default=8)
    ap.add_argument("--segments", type=int, default=30)
    ap.add_argument("--height", type=int, default=360)
    ap.add_argument("--full-every", type=int, default=8)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--overwrite", action="store_true", help="loss as payload bit errors")
    args = ap.parse_args()
    events = plan_events(args.renditions, args.segments, np.random.default_rng(args.seed))
    feed = make_feed(args.renditions, args.segments, args.height, events, args.overwrite)
    out: dict[str, object] = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, no GPU",
        "feed": f"{args.renditions} renditions x {args.segments} segments, {args.height}p30 "
        f"H.264, 2-s segments, events of 2-4 s, loss as "
        + ("payload overwrite" if args.overwrite else "packet drop"),
        "full_every": args.full_every,
    }
    full, full_s, _ = screen(feed, "full", args.full_every, args.workers)
    adaptive, adaptive_s, modes = screen(feed, "adaptive", args.full_every, args.workers)
    out["full"] = {**evaluate(events, full), "seconds": round(full_s, 2)}
    out["adaptive"] = {**evaluate(events, adaptive), "seconds": round(adaptive_s, 2)}
    out["adaptive_modes"] = modes
    out["speedup"] = round(full_s / adaptive_s, 2)
    clean = [
        res.verdict
        for r, results in enumerate(adaptive)
        for res in results
        if not any(e.rendition == r and res.verdict.seq in e.segments() for e in events)
    ]
    out["adaptive_flags_on_clean_segments"] = sum(1 for v in clean if v.flags)
    out["clean_segments"] = len(clean)
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

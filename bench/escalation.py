"""Escalation policy on a mixed feed: escalated fraction, impairment recall, rules accuracy,
and the tiny VLM's generation latency on CPU.

    python bench/escalation.py [--json OUT] [--no-vlm] [--pictures ASSETS] [--vmaf] [--warmup S]
                              [--restart] [--shot-segments N [--twins]]

1. A library of real segments (2 s, 640x360, 25 fps, H.264 in MPEG-TS) from the
   procedural sources of ingest.synth (scene, texture, bars, gradient, zoneplate; several
   seeds and motion speeds; CRF 20-26), clean, and impaired with ingest.impair: black,
   freeze, blur, noise, banding, packet loss (corrupt_packets) and heavy compression
   (CRF 44-51). Each is decoded and screened by the default chain (artifacts + the
   shipped distilled model), exactly as the screen workers do. With `--pictures ASSETS`
   the sources are real photographs instead: every len/N-th usable picture of realset's
   held-out evaluation split (mate-backgrounds, which the hybrid score never trained on;
   N = `--sources`, 5 by default, 0 for all 18), filmed by realset's virtual camera at
   640x360 (seeds vary the motion); `--split train` takes realset's training pictures
   instead, to calibrate on.
2. A feed: `--streams` streams of 2-s segments at live pace (a simulated clock); stream
   s carries one source (a channel keeps its content), each segment a clean verdict of
   that source drawn from the library (with replacement, with a fresh segment id: the
   policy sees verdicts, not pixels, and the audit hash sees the id) or, at
   `--impaired-share`, one of that source's impaired verdicts (each used once per feed). The
   policy (monitor.escalation, the default config) decides every segment in order.
   Reported: trigger recall (a trigger fires), escalation recall (escalated after the
   limits), the escalated fraction of all segments, and why clean segments triggered.
   `--warmup S` first plays S seconds of clean segments on every stream, not counted, so
   the policy meets the feed in its steady state rather than as a daemon just started;
   with `--restart` that warm-up is decided by the daemon before a restart and read back
   by the measured one, as its warm start reads the published verdicts.
   With `--twins` (shots of real pictures), the shot an impaired segment falls in shows
   its picture going on around it: the camera's 2 s before the impaired frames, then the
   fault, then those frames clean (each screened once, kept in the cache). The fault is
   judged against the edge its lead-in ended on, as the screen role hands a worker its
   rendition's last edge (monitor.boundary): a picture held from the fault's first frames
   after one that moved is a stop, which the independent draws cannot show.
   With `--vmaf`, each impaired segment's VMAF drop against the clean CRF-23 encode of
   the same frames is measured (once, kept in the cache) and recall is also reported on
   the visible impairments (a drop of at least VISIBLE points). VMAF is made for natural
   video: on the synthetic gradient it scores added noise, banding and coarse
   quantisation higher than the clean encode, so on the procedural library that column
   is a curiosity, not a measure.
3. The rules diagnosis (scorers.vlm.rules) of each impaired verdict against its known
   impairment class: over the library from the verdict alone (`rules`), and over the
   feeds' escalated impairments given the escalation's reason, as the diagnose role
   receives it (`rules_accuracy_escalated`, per kind `diagnosed_right` of `escalated`).
4. The tiny offline Qwen2.5-VL (tests/unit/tiny_vlm.py: random weights) through the
   transformers backend on CPU: latency of a diagnose call (score + degradation) at
   batch 1 and 4 with real escalation requests; it measures the pipeline's overhead
   (image processing, prompt, generate loop), not a 7B model.
"""

from __future__ import annotations

import argparse
import collections
import json
import pickle
import platform
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ingest import impair
from ingest.config import DecodeConfig
from ingest.decode import decode
from ingest.synth import EncodeSettings, encode, pattern_frames
from ingest.types import DecodedSegment, IngestError, Segment
from monitor.boundary import edge_of, held_across
from monitor.escalation import (
    EscalationConfig,
    EscalationPolicy,
    is_soft,
    is_weak,
    reason_label,
    triggers,
)
from scorers.artifacts import ArtifactsConfig
from scorers.chain import Chain
from scorers.distilled import DistilledConfig, Variant
from scorers.train import realset
from scorers.train.corpus import decode_all
from scorers.types import Verdict
from scorers.vlm.request import make_request
from scorers.vlm.rules import RulesConfig, rules_degradation
from scorers.vlm.types import EscalationRequest

RGB = npt.NDArray[np.uint8]
VISIBLE = 6.0
"""An impairment is visible when it costs at least this many VMAF points against the clean
encode of the same frames: about one just-noticeable difference on VMAF's scale."""
W, H, FPS, SECONDS = 640, 360, 25, 2.0
PICTURES: dict[str, RGB] = {}
"""Real pictures by source name (--pictures); empty: the procedural sources."""
N = int(FPS * SECONDS)
CLEAN = EncodeSettings(fps=FPS, gop=N, crf=23)
"""The encode impairments are made at and judged against (VMAF, twins)."""
SOURCES: tuple[str, ...] = ("scene", "texture", "bars", "gradient", "zoneplate")
KINDS = ("black", "freeze", "blur", "noise", "banding", "packet_loss", "compression")
EXPECTED = {
    "black": {"black"},
    "freeze": {"freeze"},
    "blur": {"blur"},
    "noise": {"noise"},
    "banding": {"banding"},
    "packet_loss": {"packet_loss"},
    "compression": {"compression", "blocking"},
}
"""Rules classes counted right for each injected impairment (heavy compression shows as
blocking to the detectors and as compression to the distilled head: both are right)."""


@dataclass
class Item:
    kind: str  # "clean" or an impairment
    source: str
    verdict: Verdict
    request_ms: float | None = None
    request: EscalationRequest | None = None
    vmaf_drop: float | None = None
    """VMAF of the clean CRF-23 encode of the same frames less the impaired version's
    (--vmaf): how visible the impairment is, in VMAF points."""
    twins: Twins | None = None
    """The picture going on around the fault (--twins)."""


@dataclass
class Twins:
    """An impaired item's picture going on (--twins): the camera's 2 s before its frames
    and those frames, each encoded clean at CRF 23 and screened, and the fault screened
    again by today's chain (its verdict then carries the edges a boundary is judged on)."""

    before: Verdict
    fault: Verdict
    after: Verdict


def frames_of(source: str, seed: int, start: int = 0) -> list[RGB]:
    """A source's 2 s of a seed (with `start` -N, of a real picture: the camera's 2 s
    before them)."""
    if source in PICTURES:
        return realset.camera(PICTURES[source], f"{source}-{seed}", N, (W, H), None, start)
    if start:
        raise ValueError("the procedural sources have no camera to go back in time")
    speed = 1.0 + (seed % 4)
    return list(pattern_frames(source, W, H, N, seed=seed, speed=speed))


def _impaired_seed(kind_index: int, i: int) -> int:
    """The seed of a kind's i-th impaired build: other seeds than the clean library's."""
    return 5000 + 37 * kind_index + i


def impaired_frames(kind: str, frames: list[RGB], i: int) -> list[RGB] | None:
    """The impaired pictures of a kind that changes pictures (None: one that changes the
    encoding); strengths rotate with i so each kind spans a range."""
    if kind == "black":
        start = (0, 10, 25)[i % 3]  # whole segment, most, the second half
        return impair.black(frames, start, N - start)
    if kind == "freeze":
        start = (1, 10, 25)[i % 3]
        return impair.freeze(frames, start, N - start)
    if kind == "blur":
        return impair.blur(frames, (2.0, 3.0, 4.5)[i % 3])
    if kind == "noise":
        return impair.noise(frames, (12.0, 18.0, 25.0)[i % 3], seed=i)
    if kind == "banding":
        return impair.banding(frames, (8, 12, 16)[i % 3])
    return None


def unchanged(kind: str, frames: list[RGB], i: int) -> bool:
    """Whether the impairment leaves every pixel as it was: a freeze of a camera held
    still, whose segment is byte for byte the clean one. No measure could tell it from the
    clean segment it is, so the library does not count it as impaired."""
    pictures = impaired_frames(kind, frames, i)
    return pictures is not None and all(
        np.array_equal(a, b) for a, b in zip(frames, pictures, strict=True)
    )


def impaired(kind: str, frames: list[RGB], i: int) -> bytes:
    """One impaired segment (see impaired_frames)."""
    pictures = impaired_frames(kind, frames, i)
    if pictures is not None:
        return encode(pictures, CLEAN)
    if kind == "packet_loss":
        return impair.corrupt_packets(encode(frames, CLEAN), (0.02, 0.05, 0.1)[i % 3], seed=i)
    if kind == "compression":
        return encode(frames, EncodeSettings(fps=FPS, gop=N, crf=(44, 47, 51)[i % 3]))
    raise ValueError(kind)


def screen_chain(variant: Variant = "full") -> Chain:
    """The default chain the screen workers run: artifacts and the shipped student."""
    return Chain.from_configs([ArtifactsConfig(), DistilledConfig(threads=2, variant=variant)])


def build_library(
    clean_per_source: int, impaired_per_kind: int, variant: Variant = "full"
) -> tuple[list[Item], list[Item], dict[str, Any]]:
    chain = screen_chain(variant)
    dcfg = DecodeConfig()
    clean: list[Item] = []
    bad: list[Item] = []
    undecodable: collections.Counter[str] = collections.Counter()
    untouched: collections.Counter[str] = collections.Counter()
    t_decode = t_score = 0.0
    n = 0

    def screen(data: bytes, seq: int) -> tuple[DecodedSegment, Verdict]:
        nonlocal t_decode, t_score, n
        t0 = time.perf_counter()
        d = decode(Segment(data, "lib", "360p", seq), dcfg)
        t1 = time.perf_counter()
        v = chain.score([d])[0]
        t_decode += t1 - t0
        t_score += time.perf_counter() - t1
        n += 1
        return d, v

    seq = 0
    for si, source in enumerate(SOURCES):
        for j in range(clean_per_source):
            seed = 100 * si + j
            crf = (20, 23, 26)[j % 3]
            data = encode(frames_of(source, seed), EncodeSettings(fps=FPS, gop=N, crf=crf))
            seq += 1
            clean.append(Item("clean", source, screen(data, seq)[1]))
    for ki, kind in enumerate(KINDS):
        for i in range(impaired_per_kind):
            source = SOURCES[(ki + i) % len(SOURCES)]
            frames = frames_of(source, _impaired_seed(ki, i))
            if unchanged(kind, frames, i):
                untouched[kind] += 1
                continue
            data = impaired(kind, frames, i)
            seq += 1
            try:
                decoded, v = screen(data, seq)
            except IngestError as exc:  # a dead letter in the daemon, not an escalation
                undecodable[f"{kind}:{exc.reason}"] += 1
                continue
            t0 = time.perf_counter()
            req = make_request(decoded, v, "bench")
            bad.append(Item(kind, source, v, (time.perf_counter() - t0) * 1000, req))
    chain.close()
    cost: dict[str, Any] = {
        "decode_ms": 1000 * t_decode / n,
        "score_ms": 1000 * t_score / n,
        "segments": n,
        "undecodable_impaired": dict(undecodable),
        "unchanged_impaired": dict(untouched),
    }
    return clean, bad, cost


def run_feed(
    clean: list[Item],
    bad: list[Item],
    *,
    streams: int,
    segments: int,
    impaired_share: float,
    seed: int,
    config: EscalationConfig,
    shot_segments: int = 1,
    warmup_s: float = 0.0,
    restart: bool = False,
    twins: bool = False,
) -> dict[str, Any]:
    """Replay a feed through the policy on a simulated clock; impaired items once each.

    A stream's clean segments are drawn from its source's library; with `shot_segments`
    N > 1 a draw holds for N segments in a row (a shot, as a channel keeps one), else
    every segment is a fresh draw. With `twins` (shots only), a shot that an impaired item
    falls in shows its picture going on around it (Twins: the camera's lead-in, the fault,
    then its frames clean), instead of cutting to other content that is broken; the fault
    alone is judged across its boundary, after its own lead-in. With `warmup_s`, every
    stream first plays that long of clean segments through the policy, not counted: the
    measured feed then meets a policy in its steady state (histories, habits and budget
    window filled), as a monitor that has been running meets a fault, instead of one that
    started with the feed. With `restart`, the warm-up is decided by another policy (the
    daemon before a restart) and only remembered by the measured one
    (EscalationPolicy.remember, with whether it was escalated, as the daemon's warm start
    reads its verdicts back), as for a daemon restarted just before the feed."""
    rng = random.Random(seed)
    shot: dict[int, Item] = {}
    after: dict[int, Item] = {}  # with twins: what a shot shows once its fault has passed
    last: dict[int, tuple[Verdict, Verdict]] = {}  # each stream's last segment: drawn, shown
    n_bad = min(len(bad), round(segments * impaired_share))
    clean_of = {src: [c for c in clean if c.source == src] for src in SOURCES}
    bad_of = {src: [b for b in rng.sample(bad, n_bad) if b.source == src] for src in SOURCES}
    slots = {
        src: [k for k in range(segments) if SOURCES[(k % streams) % len(SOURCES)] == src]
        for src in SOURCES
    }
    place: dict[int, Item] = {}
    for src, items in bad_of.items():
        for k, item in zip(rng.sample(slots[src], len(items)), items, strict=True):
            place[k] = item
    t = [1000.0]
    policy = EscalationPolicy(config, clock=lambda: t[0])
    rules_cfg = RulesConfig()
    prior = EscalationPolicy(config, clock=lambda: t[0]) if restart else None
    per_stream_seq = [0] * streams
    esc_total = 0
    clean_triggered: collections.Counter[str] = collections.Counter()
    clean_escalated: collections.Counter[str] = collections.Counter()
    kinds: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    dropped: collections.Counter[str] = collections.Counter()
    warm = round(warmup_s / SECONDS) * streams
    for j in range(warm + segments):
        k = j - warm  # the measured feed's segment, negative in the warm-up
        stream = j % streams
        t[0] = 1000.0 + (j // streams) * SECONDS + stream * SECONDS / streams
        per_stream_seq[stream] += 1
        if shot_segments <= 1:
            item = place.get(k) or rng.choice(clean_of[SOURCES[stream % len(SOURCES)]])
        else:
            pos = (per_stream_seq[stream] - 1) % shot_segments  # in its shot
            if pos == 0:
                shot[stream] = rng.choice(clean_of[SOURCES[stream % len(SOURCES)]])
                if twins and (got := _lead(place, k, streams, 0, shot_segments)):
                    shot[stream], after[stream] = got
            item = place.get(k) or shot[stream]
            if twins and item.twins is not None:  # the picture goes on past the fault,
                shot[stream] = after.pop(stream, shot[stream])
                if got := _lead(place, k, streams, 1, shot_segments - pos):
                    shot[stream], after[stream] = got  # unless the shot's next one hits
        shown, edge_before = item.verdict, None
        if twins and item.twins is not None:
            shown = item.twins.fault
            drawn, was = last.get(stream, (None, None))
            if drawn is item.twins.before and was is not None and not (restart and k < streams):
                edge_before = edge_of(was)  # its own lead-in, in this daemon's life
        v = _renamed(shown, f"s{stream}", per_stream_seq[stream])
        # judged across the boundary where a picture goes on (a fault after its own
        # lead-in), as the screen role hands a worker its rendition's last edge; a clean
        # shot repeats one clip and a draw cuts to another, neither a picture going on
        v = held_across(v, edge_before)
        last[stream] = (item.verdict, v)
        if k < 0:
            if prior is not None:  # the daemon before the restart decided; the new one reads it
                policy.remember(v, 0.0, prior.decide(v).escalate)
            else:
                policy.decide(v)
            continue
        fired = triggers(v, config, policy.recent(v.stream, v.rendition))
        strong = bool(fired) and not is_weak(fired) and not is_soft(fired)
        d = policy.decide(v)
        esc_total += d.escalate
        if d.dropped:
            dropped[d.dropped] += 1
        if item.kind == "clean":
            if fired:
                clean_triggered[reason_label(",".join(fired))] += 1
            if d.escalate:
                clean_escalated[reason_label(d.reason)] += 1
        else:
            c = kinds[item.kind]
            c["n"] += 1
            c["triggered"] += bool(fired)
            c["strong"] += strong
            c["escalated"] += d.escalate
            if d.escalate:  # what the rules backend would answer, given why it was escalated
                cls, _sev, _why = rules_degradation(v.to_json(), rules_cfg, d.reason)
                c["diagnosed_right"] += cls in EXPECTED[item.kind]
            if not d.escalate:  # why an impaired segment was not escalated
                why = "untriggered" if not fired else f"{d.dropped}/{d.kind}/{d.reason[:40]}"
                c[f"missed:{why}"] += 1
            if item.vmaf_drop is not None:
                visible = item.vmaf_drop >= VISIBLE
                c["visible"] += visible
                c["visible_escalated"] += visible and d.escalate
    n_bad = len(place)
    n_clean = segments - n_bad
    trig = sum(c["triggered"] for c in kinds.values())
    strong_n = sum(c["strong"] for c in kinds.values())
    esc_bad = sum(c["escalated"] for c in kinds.values())
    return {
        "segments": segments,
        "warmup_s": warmup_s,
        # shorter than the budget's window after a warm-up, the measured feed can spend
        # what the warm-up left unspent (over 5% of its own segments, recall flattered)
        "measured_s": round(segments / streams * SECONDS, 1),
        "budget_window_s": config.budget_window_s,
        "restart": restart,
        "streams": streams,
        "impaired": n_bad,
        "impaired_share": round(n_bad / segments, 4),
        "escalated": esc_total,
        "escalated_fraction": round(esc_total / segments, 4),
        "trigger_recall": round(trig / n_bad, 4) if n_bad else None,
        "strong_trigger_recall": round(strong_n / n_bad, 4) if n_bad else None,
        "escalation_recall": round(esc_bad / n_bad, 4) if n_bad else None,
        "visible_escalation_recall": _share(kinds, "visible_escalated", "visible"),
        "rules_accuracy_escalated": _share(kinds, "diagnosed_right", "escalated"),
        "clean_trigger_rate": round(sum(clean_triggered.values()) / n_clean, 4),
        "clean_escalated_rate": round(sum(clean_escalated.values()) / n_clean, 4),
        "clean_triggers": dict(clean_triggered),
        "clean_escalations": dict(clean_escalated),
        "dropped": dict(dropped),
        "per_kind": {k: dict(c) for k, c in sorted(kinds.items())},
    }


def _lead(
    place: dict[int, Item], k: int, streams: int, first: int, stop: int
) -> tuple[Item, Item] | None:
    """The picture the first fault with twins among a stream's segments k + m * streams
    (first <= m < stop) hits: its lead-in and, once it has passed, its frames clean."""
    for m in range(first, stop):
        b = place.get(k + m * streams)
        if b is not None and b.twins is not None:
            return Item("clean", b.source, b.twins.before), Item("clean", b.source, b.twins.after)
    return None


def _share(kinds: dict[str, collections.Counter[str]], part: str, whole: str) -> float | None:
    n = sum(c[whole] for c in kinds.values())
    return round(sum(c[part] for c in kinds.values()) / n, 4) if n else None


def _builds(bad: list[Item]) -> Iterator[tuple[Item, int, list[RGB]]]:
    """Each impaired item with its strength index and the frames it was made from,
    replaying the library's impaired builds in order (the same sources, seeds and
    strengths), whatever --impaired-per-kind built it: a kind's builds go on while its
    items do. A build the library skipped (unchanged or undecodable) has no item: the next
    item is of another source. Fewer than len(SOURCES) skipped in a row pair right; as
    many in a row would pair a later item with the wrong build."""
    queue = list(bad)
    for ki, kind in enumerate(KINDS):
        i = missed = 0
        while queue and queue[0].kind == kind:
            source = SOURCES[(ki + i) % len(SOURCES)]
            if queue[0].source == source:
                yield queue.pop(0), i, frames_of(source, _impaired_seed(ki, i))
                missed = -1
            elif missed >= len(SOURCES):
                raise ValueError(f"a {kind} item of {queue[0].source!r} is of no source here")
            i += 1
            missed += 1


def add_vmaf_drops(bad: list[Item]) -> None:
    """Set each impaired item's `vmaf_drop` (see _builds)."""
    from scorers.train.teacher import VmafTeacher

    teacher = VmafTeacher(threads=2)

    def vmaf(frames: list[RGB], data: bytes) -> float:
        shown = decode_all(data, len(frames))  # lost frames show as the last one, as played
        return float(np.mean(teacher.raw(frames, [shown])[0]))

    for item, i, frames in _builds(bad):
        clean = vmaf(frames, encode(frames, CLEAN))
        item.vmaf_drop = clean - vmaf(frames, impaired(item.kind, frames, i))


def add_twins(bad: list[Item], variant: Variant = "full") -> None:
    """Set each impaired item's `twins` (see _builds), screened by the library's chain."""
    chain = screen_chain(variant)
    dcfg = DecodeConfig()

    def screen(data: bytes) -> Verdict:
        return chain.score([decode(Segment(data, "lib", "360p", 0), dcfg)])[0]

    for item, i, frames in _builds(bad):
        before = frames_of(item.source, _impaired_seed(KINDS.index(item.kind), i), -N)
        item.twins = Twins(
            screen(encode(before, CLEAN)),
            screen(impaired(item.kind, frames, i)),
            screen(encode(frames, CLEAN)),
        )
    chain.close()


def drop_unchanged(bad: list[Item]) -> dict[str, int]:
    """Drop the impaired items whose impairment left every pixel unchanged (see unchanged;
    for a cache made before the library left them out). How many of each kind went."""
    gone = [item for item, i, frames in _builds(bad) if unchanged(item.kind, frames, i)]
    bad[:] = [it for it in bad if all(it is not g for g in gone)]
    return dict(collections.Counter(it.kind for it in gone))


def _renamed(v: Verdict, stream: str, seq: int) -> Verdict:
    return Verdict(
        f"{stream}/360p/{seq}",
        stream,
        "360p",
        seq,
        v.mos,
        v.mos_low,
        v.frame_mos,
        v.flags,
        v.scorers,
        v.extra,
        v.degradation,
        v.mode,
    )


def rules_accuracy(bad: list[Item]) -> dict[str, Any]:
    cfg = RulesConfig()
    per: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    confusion: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    for item in bad:
        cls, _sev, _why = rules_degradation(item.verdict.to_json(), cfg)
        per[item.kind]["n"] += 1
        per[item.kind]["right"] += cls in EXPECTED[item.kind]
        confusion[item.kind][cls] += 1
    right = sum(c["right"] for c in per.values())
    return {
        "accuracy": round(right / len(bad), 4),
        "per_kind": {k: round(c["right"] / c["n"], 3) for k, c in sorted(per.items())},
        "confusion": {k: dict(c) for k, c in sorted(confusion.items())},
    }


def tiny_vlm(requests: list[EscalationRequest]) -> dict[str, Any]:
    """The tiny random-weight Qwen2.5-VL through the transformers backend on CPU."""
    from scorers.vlm.config import DiagnoseConfig
    from scorers.vlm.diagnoser import Diagnoser
    from scorers.vlm.transformers_backend import TransformersConfig
    from tests.unit import tiny_vlm as tiny

    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        path = tiny.build(Path(tmp) / "tiny")
        tiny.register()
        backend = TransformersConfig(
            model_path=path, device="cpu", batch_size=8, max_new_tokens=32, threads=2
        )
        diag = Diagnoser(DiagnoseConfig(backend=backend, tasks=["score", "degradation"]))
        diag.diagnose_batch(requests[:1])  # warm-up
        for batch in (1, 4):
            times, tps = [], []
            for r in range(3):
                chunk = [requests[(r * batch + i) % len(requests)] for i in range(batch)]
                t0 = time.perf_counter()
                ds = diag.diagnose_batch(chunk)
                times.append(time.perf_counter() - t0)
                tps.extend(d.tokens_per_s for d in ds[:1] if d.tokens_per_s)
            out[f"batch{batch}"] = {
                "seconds_per_call": round(statistics.median(times), 3),
                "seconds_per_escalation": round(statistics.median(times) / batch, 3),
                "tokens_per_s": round(statistics.median(tps), 1) if tps else None,
            }
        diag.close()
    return out


def use_pictures(
    assets: Path, split: realset.Split = "eval", count: int = 5, offset: int = 0
) -> None:
    """`count` real pictures of `split` as the sources (0: every usable one), chosen by the
    len/count-th rule alone (shifted `offset` pictures on)."""
    global SOURCES
    PICTURES.clear()
    PICTURES.update(realset.spread_pictures(assets, split, count or None, offset))
    SOURCES = tuple(PICTURES)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--clean-per-source", type=int, default=24)
    ap.add_argument("--impaired-per-kind", type=int, default=12)
    ap.add_argument("--streams", type=int, default=40)
    ap.add_argument("--segments", type=int, default=3000)
    ap.add_argument("--impaired-share", type=float, default=0.025)
    ap.add_argument("--seeds", type=int, default=5, help="feeds replayed (different draws)")
    ap.add_argument(
        "--shot-segments",
        type=int,
        default=1,
        help="a stream's clean draw holds this many segments in a row (1: every segment a "
        "fresh draw, the harder case)",
    )
    ap.add_argument(
        "--twins",
        action="store_true",
        help="with --shot-segments and --pictures: the shot an impaired segment falls in "
        "shows the camera's 2 s before it, the fault, then its frames clean (screened once "
        "and kept in --cache), so the fault hits the picture the channel is showing",
    )
    ap.add_argument(
        "--warmup",
        type=float,
        default=0.0,
        help="seconds of clean feed on every stream before the measured one, not counted "
        "(0: the policy starts cold with the feed)",
    )
    ap.add_argument(
        "--restart",
        action="store_true",
        help="with --warmup: the warm-up is decided by the daemon before a restart and only "
        "remembered by the measured one (its warm start)",
    )
    ap.add_argument("--no-vlm", action="store_true", help="skip the tiny VLM latency")
    ap.add_argument(
        "--variant", choices=("full", "slim"), default="full", help="packaged student screening"
    )
    ap.add_argument("--json", type=Path)
    ap.add_argument(
        "--cache", type=Path, help="keep the screened library here (pickle) and reuse it"
    )
    ap.add_argument(
        "--pictures",
        type=Path,
        help="realset assets folder: real photographs as the sources (see above)",
    )
    ap.add_argument(
        "--sources",
        type=int,
        default=5,
        help="with --pictures: how many pictures of the split, every len/N-th by name (0: "
        "every usable one); stream s carries source s mod N",
    )
    ap.add_argument(
        "--sources-offset",
        type=int,
        default=0,
        help="with --pictures: shift every pick this many pictures on, for a second set of "
        "the same size that shares no picture with the first (while under len // N)",
    )
    ap.add_argument(
        "--vmaf",
        action="store_true",
        help=f"measure each impaired segment's VMAF drop against the clean encode of its "
        f"frames (kept in --cache) and report recall on the visible ones (a drop of at least "
        f"{VISIBLE:g}, about one just-noticeable difference)",
    )
    ap.add_argument(
        "--split",
        choices=("eval", "train"),
        default="eval",
        help="with --pictures: realset's held-out eval pictures (the measurement) or its "
        "training pictures (to calibrate the policy on, never the eval ones)",
    )
    ap.add_argument(
        "--policy",
        type=json.loads,
        default={},
        help="escalation settings over the defaults, as JSON (a variant to compare: "
        '\'{"flag_kinds": {"freeze": 0.4}}\')',
    )
    args = ap.parse_args(argv)
    if args.twins and (args.shot_segments <= 1 or not args.pictures):
        ap.error("--twins needs --shot-segments above 1 and --pictures (a camera to film on)")
    if args.pictures:
        use_pictures(args.pictures, args.split, args.sources, args.sources_offset)

    t0 = time.perf_counter()
    if args.cache and args.cache.exists():
        clean, bad, cost = pickle.loads(args.cache.read_bytes())
        global SOURCES
        SOURCES = tuple(dict.fromkeys(it.source for it in clean))  # the cache's, whatever asked
    else:
        clean, bad, cost = build_library(
            args.clean_per_source, args.impaired_per_kind, args.variant
        )
        if args.cache:
            args.cache.write_bytes(pickle.dumps((clean, bad, cost)))
    if "unchanged_impaired" not in cost:  # a cache of a library that still had them
        cost["unchanged_impaired"] = drop_unchanged(bad)
        if args.cache:
            args.cache.write_bytes(pickle.dumps((clean, bad, cost)))
    if args.twins and any(it.twins is None for it in bad):
        add_twins(bad, args.variant)
        if args.cache:
            args.cache.write_bytes(pickle.dumps((clean, bad, cost)))
    if args.vmaf and any(it.vmaf_drop is None for it in bad):
        add_vmaf_drops(bad)
        if args.cache:
            args.cache.write_bytes(pickle.dumps((clean, bad, cost)))
    print(f"library: {len(clean)} clean, {len(bad)} impaired in {time.perf_counter() - t0:.0f} s")
    cfg = EscalationConfig.model_validate(args.policy)
    measured_s = args.segments / args.streams * SECONDS
    if args.warmup and measured_s < cfg.budget_window_s:
        print(
            f"note: {measured_s:.0f} s measured after a warm-up is less than the budget's "
            "window: the feed may spend what the warm-up left unspent; for a running "
            "monitor's figures measure a whole window (--segments "
            f"{round(cfg.budget_window_s / SECONDS * args.streams)})"
        )
    feeds = [
        run_feed(
            clean,
            bad,
            streams=args.streams,
            segments=args.segments,
            impaired_share=args.impaired_share,
            seed=s,
            config=cfg,
            shot_segments=args.shot_segments,
            warmup_s=args.warmup,
            restart=args.restart,
            twins=args.twins,
        )
        for s in range(args.seeds)
    ]
    # every impaired verdict once, on its own stream, against a warm clean history: the
    # trigger recall per kind over the whole impaired library
    library_trig = collections.Counter(it.kind for it in bad if triggers(it.verdict, cfg, None))
    library_strong = collections.Counter(
        it.kind for it in bad if (r := triggers(it.verdict, cfg, None)) and not is_weak(r)
    )
    missed = [
        f"{it.kind}/{it.source}: mos_low {it.verdict.mos_low:.2f}, head "
        f"{it.verdict.degradation_class}, flags "
        + (",".join(f"{f.kind}:{f.severity:.2f}" for f in it.verdict.flags) or "none")
        for it in bad
        if not ((r := triggers(it.verdict, cfg, None)) and not is_weak(r))
    ]
    per_kind_total = collections.Counter(it.kind for it in bad)
    clean_trig = collections.Counter(
        reason_label(",".join(r)) for it in clean if (r := triggers(it.verdict, cfg, None))
    )
    report: dict[str, Any] = {
        "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}, "
        f"python {platform.python_version()}",
        "sources": list(SOURCES),
        "library": {
            "clean": len(clean),
            "impaired": len(bad),
            # the library's own (a cache may have been built with other sizes than asked)
            "per_source_clean": round(len(clean) / len(SOURCES)),
            "per_kind_impaired": dict(collections.Counter(it.kind for it in bad)),
            **{k: round(v, 2) if isinstance(v, float) else v for k, v in cost.items()},
            "request_ms_median": round(statistics.median(i.request_ms or 0 for i in bad), 2),
            "request_kb_median": round(
                statistics.median((i.request.image_bytes if i.request else 0) for i in bad) / 1024,
                1,
            ),
        },
        "library_trigger_recall": {k: round(library_trig[k] / per_kind_total[k], 3) for k in KINDS},
        "library_trigger_recall_all": round(sum(library_trig.values()) / len(bad), 4),
        "library_strong_trigger_recall": {
            k: round(library_strong[k] / per_kind_total[k], 3) for k in KINDS
        },
        "library_strong_trigger_recall_all": round(sum(library_strong.values()) / len(bad), 4),
        "library_missed_by_strong_triggers": missed,
        "library_clean_trigger_rate": round(sum(clean_trig.values()) / len(clean), 4),
        "library_clean_triggers": dict(clean_trig),
        "feeds": feeds,
        "feed_mean": {
            k: round(statistics.fmean(x for f in feeds if (x := f[k]) is not None), 4)
            for k in (
                "escalated_fraction",
                "trigger_recall",
                "strong_trigger_recall",
                "escalation_recall",
                "clean_trigger_rate",
                "rules_accuracy_escalated",
            )
        },
        "rules": rules_accuracy(bad),
    }
    drops = [it for it in bad if it.vmaf_drop is not None]
    if drops:
        report["visible"] = {
            "vmaf_drop_at_least": VISIBLE,
            "share_per_kind": {
                k: round(
                    statistics.fmean(it.vmaf_drop >= VISIBLE for it in drops if it.kind == k), 3
                )
                for k in KINDS
                if any(it.kind == k for it in drops)
            },
            "invisible": [
                f"{it.kind}/{it.source}: VMAF drop {it.vmaf_drop:.1f}"
                for it in drops
                if it.vmaf_drop < VISIBLE
            ],
            "feed_mean_escalation_recall": round(
                statistics.fmean(f["visible_escalation_recall"] for f in feeds), 4
            ),
            "feed_per_kind": {
                k: round(
                    sum(f["per_kind"][k]["visible_escalated"] for f in feeds if k in f["per_kind"])
                    / max(1, sum(f["per_kind"][k]["visible"] for f in feeds if k in f["per_kind"])),
                    3,
                )
                for k in KINDS
            },
        }
    if not args.no_vlm:
        reqs = [i.request for i in bad if i.request is not None]
        report["tiny_vlm_cpu"] = tiny_vlm(reqs)
    print(json.dumps({k: v for k, v in report.items() if k != "feeds"}, indent=1))
    for f in feeds:
        print(json.dumps({k: v for k, v in f.items() if k != "per_kind"}))
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

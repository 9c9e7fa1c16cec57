"""Picture incidents on real content: standing false alarms and caught faults, with and
without the judge's look (monitor.judge.LookConfig).

    python bench/looks.py --set out/realset/eval [--json OUT] [--jobs 2]

A real-content set (scorers.train.realset: `vqmon train realset`) gives, per source, its
clean segment and its 720p ladder rungs (the controls: how the source looks when nothing
is wrong) and its blur, noise, banding and heavy-compression versions. Every segment is
decoded and judged by the artifacts scorer, as the screen workers do. Then, per source, a
rendition is played to the judge (monitor.judge.Judge, the default config) with MOS left
out, so only the picture flags speak:

- controls: 40 segments cycling through the controls. Any picture incident opened is a
  false alarm that stands as long as the content looks that way;
- faults: for each impaired version, a fresh judge sees 10 controls, the impaired segment
  4 times in a row (8 s of a fault), then 6 controls. Caught when an incident of the
  version's kind (blur, noise, banding; blocking for compression) opens during the fault.
  Versions whose segment raises no flag of their kind at min_severity cannot be caught by
  any judge and are counted apart;
- lasting faults: a fresh judge sees 10 controls, then for 80 s the source's versions of
  a kind that raise its flag, in turn (the severity varies from segment to segment, as a
  real fault's does). Held open when exactly one incident of the kind opens and none
  resolves while the fault lasts.

Both with the look (the default) and without it (look.enabled false, the judge before it).
"""

from __future__ import annotations

import argparse
import collections
import csv
import json
import multiprocessing
import platform
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from monitor.judge import Judge, JudgeConfig
from monitor.types import FLAG_TO_KIND, FlagObs, Observation

EXPECTED = {"blur": "blur", "noise": "noise", "banding": "banding", "compression": "blocking"}
PICTURE = ("blur", "noise", "banding", "blocking")
Flags = tuple[tuple[str, float], ...]

_worker: dict[str, Any] = {}


def _init() -> None:
    from ingest.config import DecodeConfig
    from scorers.artifacts import ArtifactsConfig, ArtifactScorer

    _worker["scorer"] = ArtifactScorer(ArtifactsConfig())
    _worker["decode"] = DecodeConfig()


def _flags(job: tuple[Path, dict[str, str]]) -> tuple[dict[str, str], Flags | None]:
    from ingest.decode import decode
    from ingest.types import IngestError, Segment

    root, row = job
    try:
        d = decode(
            Segment((root / row["path"]).read_bytes(), source=row["path"]), _worker["decode"]
        )
    except IngestError:
        return row, None
    v = _worker["scorer"].score([d])[0]
    return row, tuple((f.kind, round(f.severity, 4)) for f in v.flags)


def _obs(seq: int, flags: Flags) -> Observation:
    return Observation(
        stream="s",
        rendition="720p",
        seq=seq,
        segment_id=f"s/720p/{seq}",
        mos=None,
        mos_low=None,
        flags=tuple(FlagObs(k, s, 2.0) for k, s in flags),
        duration_s=2.0,
    )


def _play(cfg: JudgeConfig, segments: list[Flags]) -> list[tuple[int, str, str]]:
    """(seq, state, kind) of every picture incident event over the segments."""
    judge = Judge(cfg)
    out = []
    for seq, flags in enumerate(segments):
        for e in judge.observe(_obs(seq, flags), now=1000.0 + 2 * seq):
            if e.kind in PICTURE:
                out.append((seq, e.state, e.kind))
    return out


def judge_sources(by_source: dict[str, dict[str, list[Flags]]], cfg: JudgeConfig) -> dict[str, Any]:
    false_alarms: collections.Counter[str] = collections.Counter()
    alarmed: list[str] = []
    caught: collections.Counter[str] = collections.Counter()
    total: collections.Counter[str] = collections.Counter()
    flagged: collections.Counter[str] = collections.Counter()
    flagged_caught: collections.Counter[str] = collections.Counter()
    lasting: collections.Counter[str] = collections.Counter()
    held: collections.Counter[str] = collections.Counter()
    min_sev = {k: cfg.kinds.rule(k).min_severity for k in PICTURE}

    def raises(flags: Flags, want: str) -> bool:
        """The segment raises a flag of incident kind `want` at its min_severity."""
        return any(FLAG_TO_KIND.get(f) == want and s >= min_sev[want] for f, s in flags)

    for source, kinds in sorted(by_source.items()):
        controls = kinds.get("control", [])
        if not controls:
            continue
        feed = [controls[i % len(controls)] for i in range(40)]
        opened = {k for _, state, k in _play(cfg, feed) if state == "open"}
        for k in opened:
            false_alarms[k] += 1
        if opened:
            alarmed.append(f"{source}: {', '.join(sorted(opened))}")
        pre = feed[:10]  # the controls in turn, as the feed above
        post = feed[:6]
        for kind, want in EXPECTED.items():
            for flags in kinds.get(kind, []):
                events = _play(cfg, pre + [flags] * 4 + post)
                hit = any(
                    state == "open" and k == want and 10 <= seq < 14 for seq, state, k in events
                )
                total[kind] += 1
                caught[kind] += hit
                has_flag = raises(flags, want)
                flagged[kind] += has_flag
                flagged_caught[kind] += hit and has_flag
            # a fault that lasts: its flagged versions in turn for 80 s, severity varying
            faults = [f for f in kinds.get(kind, []) if raises(f, want)]
            if faults:
                events = _play(cfg, pre + [faults[i % len(faults)] for i in range(40)])
                ours = [(seq, state) for seq, state, k in events if k == want and seq >= 10]
                lasting[kind] += 1
                held[kind] += bool(ours) and ours[0][1] == "open" and len(ours) == 1
    return {
        "sources": len(by_source),
        "sources_with_standing_false_incidents": len(alarmed),
        "false_incidents_by_kind": dict(false_alarms),
        "alarmed": alarmed,
        "caught": {k: f"{caught[k]}/{total[k]}" for k in EXPECTED},
        "caught_of_flagged": {k: f"{flagged_caught[k]}/{flagged[k]}" for k in EXPECTED},
        "lasting_faults_held_open": {k: f"{held[k]}/{lasting[k]}" for k in EXPECTED},
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--set", type=Path, required=True, help="a realset split (labels.csv, seg/)")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    rows = list(csv.DictReader((args.set / "labels.csv").open(newline="")))
    picked = []
    for r in rows:
        part = r["variant"].split("/")
        if r["kind"] == "clean" or (r["kind"] == "ladder" and part[2] == "1280x720"):
            picked.append(("control", r))
        elif r["kind"] in EXPECTED:
            picked.append((r["kind"], r))
    t0 = time.perf_counter()
    by_source: dict[str, dict[str, list[Flags]]] = collections.defaultdict(
        lambda: collections.defaultdict(list)
    )
    kind_of = {r["path"]: k for k, r in picked}
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(max(1, args.jobs), _init) as pool:
        for row, flags in pool.imap(_flags, [(args.set, r) for _, r in picked], chunksize=4):
            if flags is not None:
                by_source[row["source"]][kind_of[row["path"]]].append(flags)
    took = time.perf_counter() - t0
    result = {
        "machine": f"{platform.machine()}, python {platform.python_version()}",
        "set": str(args.set),
        "segments": len(picked),
        "screening_s": round(took, 1),
        "with_look": judge_sources(by_source, JudgeConfig()),
        "without_look": judge_sources(
            by_source, JudgeConfig.model_validate({"look": {"enabled": False}})
        ),
    }
    for name in ("without_look", "with_look"):
        r = result[name]
        print(
            f"{name}: {r['sources_with_standing_false_incidents']}/{r['sources']} sources with a "
            f"standing false incident {r['false_incidents_by_kind']}; caught {r['caught']}; "
            f"of those flagged {r['caught_of_flagged']}; lasting faults held open for 80 s "
            f"{r['lasting_faults_held_open']}"
        )
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

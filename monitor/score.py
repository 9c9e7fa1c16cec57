"""`vqmon score PATH...`: score files or segments, print a table or JSON lines."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from ingest.contract import parse_display
from ingest.decode import decode, sniff_container
from ingest.split import probe_duration, split_file
from ingest.types import DecodedSegment, DecodeError, IngestError, Segment
from monitor.config import Config, ConfigError, load_config
from scorers.chain import Chain
from scorers.types import ScorerError, Verdict


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "score",
        help="score video files or segments",
        description="Decode and screen each PATH; exit 1 if any input cannot be decoded.",
    )
    p.add_argument("paths", nargs="+", type=Path, metavar="PATH")
    p.add_argument("--config", type=Path, help="YAML config (default: built-in defaults)")
    p.add_argument("--json", action="store_true", help="one JSON object per input on stdout")
    p.add_argument("--init", type=Path, help="CMAF init segment for fMP4 media fragments")
    p.add_argument(
        "--segment-duration", type=float, help="cut long files into segments of this many seconds"
    )
    p.add_argument(
        "--display",
        metavar="WxH",
        help="judge the picture as shown at this size (e.g. 1280x720, the ladder's top rung), "
        "upscaled as a player would; default: the scorer's `display` setting",
    )
    p.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress bar on stderr (default: when stderr is a terminal)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config)
        if args.segment_duration is not None:
            config.score.segment_duration_s = args.segment_duration
        display = parse_display(args.display) if args.display else None
        chain = Chain.from_configs(config.scorers)
    except (ConfigError, ScorerError, ValueError, IngestError) as exc:
        print(f"vqmon score: {exc}", file=sys.stderr)
        return 2
    try:
        init = args.init.read_bytes() if args.init else None
    except OSError as exc:
        print(f"vqmon score: cannot read --init {args.init}: {exc.strerror}", file=sys.stderr)
        return 2
    failed = 0
    show = sys.stderr.isatty() if args.progress is None else args.progress
    try:
        for path in args.paths:
            result = score_path(path, config, chain, init, show, display)
            failed += not result["ok"]
            if args.json:
                print(json.dumps(result), flush=True)
            else:
                print(render(result), flush=True)
    finally:
        chain.close()
    return 1 if failed else 0


def _segments(path: Path, config: Config, init: bytes | None) -> Iterator[Segment]:
    seg_dur = config.score.segment_duration_s
    if not path.is_file():
        raise IngestError(f"no such file: {path}", source=str(path))
    max_pixels = config.decode.limits.max_pixels
    duration = probe_duration(path, max_pixels=max_pixels)
    data = path.read_bytes()
    short = duration <= seg_dur * 1.5
    if init is not None or not data or (short and sniff_container(data) is not None):
        yield Segment(data, path.stem, "source", 0, init=init, source=str(path))
    else:
        # Long files, and local files in containers segments may not use (the decoder
        # opens only MPEG-TS, ISO-BMFF and Matroska), are cut into TS/Matroska segments.
        yield from split_file(path, seg_dur, max_pixels=max_pixels)


def score_path(
    path: Path,
    config: Config,
    chain: Chain,
    init: bytes | None,
    progress: bool,
    display: tuple[int, int] | None = None,
) -> dict[str, Any]:
    """Score one input; failures come back as {"ok": false, "reason", "error"}.

    Nothing one input does stops the others: an IngestError gives its reason, anything
    else (a corner of PyAV or a scorer that a corrupt file reaches) is reported as
    `internal_error` with the exception's type.
    """
    decoded: list[DecodedSegment] = []
    verdicts: list[Verdict] = []
    try:
        duration = probe_duration(path, max_pixels=config.decode.limits.max_pixels)
        total = max(1, round(duration / config.score.segment_duration_s))
        with tqdm(
            total=total, desc=path.name, unit="seg", disable=not progress, leave=False
        ) as bar:
            for segment in _segments(path, config, init):
                if display is not None:
                    segment = dataclasses.replace(segment, display=display)
                d = decode(segment, config.decode)
                decoded.append(d)
                verdicts.extend(chain.score([d]))
                bar.update(1)
        if not decoded:
            raise DecodeError(
                "no segment could be cut from it (no keyframe in the video stream?)",
                source=str(path),
            )
        return summarise(path, decoded, verdicts)
    except IngestError as exc:
        return _failure(path, exc.reason, str(exc))
    except OSError as exc:
        return _failure(path, "unreadable", f"{path}: {exc.strerror or exc}")
    except Exception as exc:
        return _failure(path, "internal_error", f"{path}: {type(exc).__name__}: {exc}")


def _failure(path: Path, reason: str, error: str) -> dict[str, Any]:
    return {"input": str(path), "ok": False, "reason": reason, "error": error}


def summarise(path: Path, decoded: list[DecodedSegment], verdicts: list[Verdict]) -> dict[str, Any]:
    info = asdict(decoded[0].info)
    info["duration_s"] = sum(d.info.duration_s for d in decoded)
    info["frame_count"] = sum(d.info.frame_count for d in decoded)
    info["keyframe_count"] = sum(d.info.keyframe_count for d in decoded)
    bits = sum(d.info.bitrate * d.info.duration_s for d in decoded)
    info["bitrate"] = bits / info["duration_s"] if info["duration_s"] > 0 else 0.0
    mos = [v.mos for v in verdicts if v.mos is not None]
    lows = [v.mos_low for v in verdicts if v.mos_low is not None]
    return {
        "input": str(path),
        "ok": True,
        "info": info,
        "mos": float(np.mean(mos)) if mos else None,
        "mos_low": float(np.min(lows)) if lows else None,
        "decode_errors": sum(d.decode_errors for d in decoded),
        "corrupt_frames": sum(d.corrupt_frames for d in decoded),
        "segments": [v.to_json() for v in verdicts],
    }


def render(result: dict[str, Any]) -> str:
    """A readable block per input: a header line, then one row per segment."""
    if not result["ok"]:
        return f"{result['input']}: cannot score ({result['reason']}): {result['error']}"
    info = result["info"]
    mos = "-" if result["mos"] is None else f"{result['mos']:.2f}"
    head = (
        f"{result['input']}: {info['codec']} {info['width']}x{info['height']} "
        f"{info['fps']:.3g} fps {info['pix_fmt']}, {info['duration_s']:.1f} s, "
        f"{info['bitrate'] / 1000:.0f} kbit/s, MOS {mos}"
    )
    judged = {v.get("extra", {}).get("judged_at") for v in result["segments"]} - {None}
    if judged:
        head += f" (judged at {', '.join(sorted(judged))})"
    rows = [f"  {'seg':>4}  {'mos':>5}  {'low':>5}  flags"]
    for v in result["segments"]:
        flags = ", ".join(
            f"{f['kind']} {f['severity']:.2f} @{f['start_s']:.1f}s+{f['duration_s']:.1f}s"
            for f in v["flags"]
        )
        m = "-" if v["mos"] is None else f"{v['mos']:.2f}"
        low = "-" if v["mos_low"] is None else f"{v['mos_low']:.2f}"
        rows.append(f"  {v['seq']:>4}  {m:>5}  {low:>5}  {flags or 'clean'}")
    return "\n".join([head, *rows])

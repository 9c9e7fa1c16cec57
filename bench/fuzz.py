"""Fuzz the ingest contract: mutated real segments into decode, the artifacts scorer and the
reference / message parsers; nothing but IngestError may come out, nothing may hang.

    python -m bench.fuzz --minutes 15 [--inputs N] [--seed 0] [--save tests/corpus/fuzz]

Hypothesis draws the mutation plans (its integers lean to boundaries: 0, 1, 2**32-1,
which is what absurd box/EBML/PES lengths want); every input runs in a worker process
with a per-input timeout, so a crash (the worker dies) or a hang (killed at the
timeout) is counted, not suffered. Seeds are real encodes made here with PyAV: H.264
and HEVC in MPEG-TS, MP4 and Matroska, fMP4 init + fragment (either one mutated), an
SPS bomb with drawn dimensions, JSON reference messages and Kafka headers.

Outcomes per input: ok (decoded and scored), rejected (an IngestError; counted by
reason), fault (DecoderFault: PyAV raised something unexpected that decode turned into
an IngestError; counted apart because each one is a corner worth a closer look),
crash (any other exception escaped), died (the worker process ended), hang (over the
timeout); and resource, counted besides its outcome, when one input raised the worker's
peak RSS by over 300 MB or took over 5 s. Every input that was a fault, crash, death,
hang or resource outlier is saved to --save; the CI test tests/unit/test_fuzz_corpus.py
replays that folder.
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import json
import multiprocessing as mp
import os
import platform
import resource
import sys
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

TARGETS = ("decode", "score", "reference", "message")
BAD = ("fault", "crash", "died", "hang")


# --- the worker: one input at a time --------------------------------------------------------


def run_target(target: str, data: bytes, init: bytes | None) -> tuple[str, str]:
    """(outcome, detail) of one input; the same function the corpus replay test calls."""
    from ingest.types import DecoderFault, IngestError

    try:
        _call(target, data, init)
    except DecoderFault as exc:
        return "fault", str(exc)[:300]
    except IngestError as exc:
        return "rejected", exc.reason
    except Exception as exc:
        return "crash", f"{type(exc).__name__}: {str(exc)[:300]}"
    return "ok", ""


_SCORER: Any = None


def _call(target: str, data: bytes, init: bytes | None) -> None:
    from ingest.config import DecodeConfig, LimitsConfig, SamplingConfig
    from ingest.decode import decode
    from ingest.types import Segment

    cfg = DecodeConfig(
        threads=1,
        sampling=SamplingConfig(count=4),
        limits=LimitsConfig(decode_timeout_s=10),
    )
    if target in ("decode", "score"):
        decoded = decode(Segment(data, init=init, source="fuzz"), cfg)
        if target == "score":
            global _SCORER
            if _SCORER is None:
                from scorers.artifacts import ArtifactsConfig, ArtifactScorer

                _SCORER = ArtifactScorer(ArtifactsConfig())
            _SCORER.score([decoded])
    elif target == "reference":
        from ingest.reference import parse_reference

        parse_reference(data)
    elif target == "message":
        from ingest.contract import parse_message

        headers = json.loads(init or b"[]")
        parse_message(
            data[:40] or None,
            data,
            [(str(k), bytes.fromhex(v) if v is not None else None) for k, v in headers],
            offset=0,
            source="fuzz",
        )
    else:
        raise ValueError(f"unknown target {target}")


def _worker(conn: Connection) -> None:
    while True:
        try:
            job = conn.recv()
        except EOFError:
            return
        target, data, init = job
        started = time.monotonic()
        outcome, detail = run_target(target, data, init)
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
        conn.send((outcome, detail, time.monotonic() - started, rss))


@dataclass
class Worker:
    ctx: Any
    proc: Any = None
    conn: Connection | None = None
    served: int = 0
    last_rss: int = 0

    def start(self) -> None:
        parent, child = self.ctx.Pipe()
        self.proc = self.ctx.Process(target=_worker, args=(child,), daemon=True)
        self.proc.start()
        child.close()
        self.conn, self.served, self.last_rss = parent, 0, 0

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.join()
        self.proc = None

    def run(
        self, job: tuple[str, bytes, bytes | None], timeout: float
    ) -> tuple[str, str, float, int]:
        if self.proc is None or not self.proc.is_alive():
            self.start()
        assert self.conn is not None
        started = time.monotonic()
        self.conn.send(job)
        if not self.conn.poll(timeout):
            self.stop()
            return "hang", f"no answer in {timeout}s", time.monotonic() - started, 0
        try:
            result = self.conn.recv()
        except (EOFError, OSError):
            code = self.proc.exitcode if self.proc is not None else None
            self.stop()
            return "died", f"worker exit code {code}", time.monotonic() - started, 0
        self.served += 1
        return result  # type: ignore[no-any-return]


# --- seeds and mutations ------------------------------------------------------------------


@dataclass
class Seed:
    name: str
    target: str
    data: bytes
    init: bytes | None = None
    family: str = ""  # ts, bmff, mkv, json, headers


def make_seeds() -> list[Seed]:
    from ingest.hostile import sps_bomb
    from ingest.synth import EncodeSettings, clip, split_fmp4

    seeds: list[Seed] = []
    for codec, short in (("libx264", "h264"), ("libx265", "hevc")):
        for container, family in (("mpegts", "ts"), ("mp4", "bmff"), ("matroska", "mkv")):
            s = EncodeSettings(codec=codec, container=container, gop=10, preset="ultrafast")
            data = clip("scene", width=96, height=64, seconds=0.8, settings=s)
            seeds.append(Seed(f"{short}-{container}", "decode", data, None, family))
            seeds.append(Seed(f"{short}-{container}-score", "score", data, None, family))
        s = EncodeSettings(codec=codec, container="mp4-frag", gop=10, preset="ultrafast")
        init, frags = split_fmp4(clip("bars", width=96, height=64, seconds=1.6, settings=s))
        seeds.append(Seed(f"{short}-fmp4", "decode", frags[1], init, "bmff"))
    seeds.append(Seed("sps-bomb", "decode", sps_bomb(frames=6), None, "ts"))
    seeds.append(
        Seed("ref", "reference", b'{"uri": "https://cdn.example/a/b.ts?sig=1"}', None, "json")
    )
    seeds.append(Seed("ref-nested", "reference", b'{"uri": [[[{"a": [1, 2]}]]]}', None, "json"))
    headers = [
        ["stream", b"s1".hex()],
        ["rendition", b"720p".hex()],
        ["seq", b"12".hex()],
        ["bitrate", b"3000000".hex()],
        ["init", b"0".hex()],
    ]
    seeds.append(
        Seed("message", "message", seeds[0].data[:4000], json.dumps(headers).encode(), "headers")
    )
    return seeds


_BMFF_TYPES = (
    b"ftyp",
    b"moov",
    b"trak",
    b"mdia",
    b"minf",
    b"stbl",
    b"stsd",
    b"avc1",
    b"hvc1",
    b"avcC",
    b"hvcC",
    b"moof",
    b"traf",
    b"trun",
    b"tfhd",
    b"mdat",
    b"stsz",
    b"stco",
    b"mvex",
    b"trex",
    b"tkhd",
    b"mdhd",
    b"hdlr",
    b"sidx",
    b"styp",
)
_EBML_IDS = (
    b"\x1a\x45\xdf\xa3",
    b"\x18\x53\x80\x67",
    b"\x1f\x43\xb6\x75",
    b"\x16\x54\xae\x6b",
    b"\xae",
    b"\xa3",
    b"\xa0",
    b"\xa1",
    b"\x63\xa2",
    b"\xe0",
    b"\x11\x4d\x9b\x74",
)


def _positions(data: bytes, needles: tuple[bytes, ...]) -> list[int]:
    out: list[int] = []
    for n in needles:
        start = 0
        while len(out) < 400:
            i = data.find(n, start)
            if i < 0:
                break
            out.append(i)
            start = i + 1
    return sorted(out)


def mutate(draw: Any, st: Any, seed: Seed, seeds: list[Seed]) -> tuple[bytes, bytes | None, str]:
    """Apply 1-4 drawn mutations to the seed (or to its fMP4 init); return data, init, plan."""
    data = bytearray(seed.data)
    init = bytearray(seed.init) if seed.init is not None else None
    if seed.family == "headers":
        return _mutate_headers(draw, st, seed)
    if init is not None and draw(st.booleans()):
        buf, which = init, "init"
    else:
        buf, which = data, "data"
    plan = [which]
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "trunc", "splice", "overwrite", "length", "dup"]))
        n = len(buf)
        if n == 0:
            break
        pos = draw(st.integers(0, n - 1))
        if kind == "flip":
            for _ in range(draw(st.integers(1, 16))):
                p = draw(st.integers(0, n - 1))
                buf[p] ^= 1 << draw(st.integers(0, 7))
        elif kind == "trunc":
            del buf[pos:]
        elif kind == "splice":
            other = draw(st.sampled_from(seeds)).data
            a = draw(st.integers(0, max(0, len(other) - 1)))
            b = a + draw(st.integers(1, 4096))
            buf[pos:pos] = other[a:b]
        elif kind == "overwrite":
            value = draw(st.sampled_from([b"\x00", b"\xff", b"\x7f", b"\x80", b"\x47", b"\x01"]))
            buf[pos : pos + draw(st.integers(1, 8))] = value * draw(st.integers(1, 8))
        elif kind == "dup":
            b = pos + draw(st.integers(1, 2048))
            buf[pos:pos] = buf[pos:b] * draw(st.integers(1, 8))
        else:
            kind = _absurd_length(draw, st, buf, seed.family)
        plan.append(kind)
    return bytes(data), (bytes(init) if init is not None else None), "+".join(plan)


def _absurd_length(draw: Any, st: Any, buf: bytearray, family: str) -> str:
    big = st.sampled_from([0, 1, 7, 8, 0x7FFFFFFF, 0xFFFFFFFF, 0xFFFFFFF0]) | st.integers(
        0, 2**32 - 1
    )
    if family == "bmff":
        spots = [p - 4 for p in _positions(bytes(buf), _BMFF_TYPES) if p >= 4]
        if spots:
            p = draw(st.sampled_from(spots))
            buf[p : p + 4] = draw(big).to_bytes(4, "big")
            return "box-size"
    elif family == "mkv":
        spots = [p for p in _positions(bytes(buf), _EBML_IDS)]
        if spots:
            p = draw(st.sampled_from(spots))
            idlen = next(len(i) for i in _EBML_IDS if buf[p : p + len(i)] == i)
            size = draw(
                st.sampled_from(
                    [
                        b"\x01\xff\xff\xff\xff\xff\xff\xff",
                        b"\xff",
                        b"\x80",
                        b"\x08" + b"\xff" * 4,
                        b"\x10\x00\x00\x00",
                    ]
                )
            )
            buf[p + idlen : p + idlen + len(size)] = size
            return "ebml-size"
    elif family == "ts":
        spots = _positions(bytes(buf), (b"\x00\x00\x01\xe0", b"\x00\x00\x01\xc0"))
        if spots and draw(st.booleans()):
            p = draw(st.sampled_from(spots))
            buf[p + 4 : p + 6] = (draw(big) & 0xFFFF).to_bytes(2, "big")
            return "pes-length"
        # adaptation field length of a TS packet
        packets = len(buf) // 188
        if packets:
            p = draw(st.integers(0, packets - 1)) * 188
            if p + 5 <= len(buf):
                buf[p + 3] |= 0x20
                buf[p + 4] = draw(st.integers(0, 255))
                return "af-length"
    return "none"


def _mutate_headers(draw: Any, st: Any, seed: Seed) -> tuple[bytes, bytes | None, str]:
    headers = json.loads(seed.init or b"[]")
    names = ["stream", "rendition", "seq", "bitrate", "init", "content-type", "x", ""]
    values = st.sampled_from(
        [b"\xff\xfe", b"", b"1", b"true", b"-1", b"9" * 400, b"a/b", b"\x00", "é".encode()]
    ) | st.binary(max_size=64)
    for _ in range(draw(st.integers(1, 4))):
        headers.append([draw(st.sampled_from(names)), draw(values).hex()])
    value = draw(
        st.sampled_from(
            [seed.data, b"", b'{"uri": "file:///etc/passwd"}', b"{" + b"[" * 3000, b'{"uri": 1}']
        )
    )
    return value, json.dumps(headers).encode(), "headers"


class _TimeUp(Exception):
    """Raised (and caught) to end the run when --minutes have passed."""


# --- the run ------------------------------------------------------------------------------


@dataclass
class Report:
    inputs: int = 0
    outcomes: collections.Counter[str] = field(default_factory=collections.Counter)
    reasons: collections.Counter[str] = field(default_factory=collections.Counter)
    by_target: collections.Counter[str] = field(default_factory=collections.Counter)
    max_rss_mb: int = 0
    max_rss_input: str = ""
    slowest_s: float = 0.0
    saved: list[str] = field(default_factory=list)
    details: collections.Counter[str] = field(default_factory=collections.Counter)


def save(folder: Path, target: str, data: bytes, init: bytes | None, outcome: str) -> str:
    digest = hashlib.sha256(target.encode() + data + (init or b"")).hexdigest()[:12]
    name = f"{target}-{digest}"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.bin").write_bytes(data)
    if init is not None:
        (folder / f"{name}.init").write_bytes(init)
    (folder / f"{name}.json").write_text(json.dumps({"target": target, "found": outcome}) + "\n")
    return name


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--minutes", type=float, default=15.0)
    ap.add_argument("--inputs", type=int, default=1_000_000, help="stop after this many")
    ap.add_argument("--timeout", type=float, default=20.0, help="per input, seconds")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--save", type=Path, default=Path("tests/corpus/fuzz"))
    ap.add_argument("--json", type=Path, help="write the report here too")
    args = ap.parse_args(argv)

    from hypothesis import HealthCheck, Phase, given, seed, settings
    from hypothesis import strategies as st

    seeds = make_seeds()
    ctx = mp.get_context("spawn")
    worker = Worker(ctx)
    report = Report()
    end = time.monotonic() + args.minutes * 60
    started = time.monotonic()

    @seed(args.seed)
    @settings(
        max_examples=args.inputs,
        deadline=None,
        database=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(st.data())
    def one(data_strategy: Any) -> None:
        if time.monotonic() > end:
            raise _TimeUp
        draw = data_strategy.draw
        s = draw(st.sampled_from(seeds))
        if s.name == "sps-bomb" and draw(st.booleans()):
            from ingest.hostile import sps_bomb

            w, h = draw(st.integers(16, 65535)), draw(st.integers(16, 65535))
            data, init, plan = sps_bomb(w, h, frames=4), None, f"sps {w}x{h}"
        else:
            data, init, plan = mutate(draw, st, s, seeds)
        outcome, detail, elapsed, rss = worker.run((s.target, data, init), args.timeout)
        report.inputs += 1
        report.outcomes[outcome] += 1
        report.by_target[s.target] += 1
        if outcome == "rejected":
            report.reasons[detail] += 1
        if rss > report.max_rss_mb:
            report.max_rss_mb, report.max_rss_input = rss, f"{s.name} {plan}"
        report.slowest_s = max(report.slowest_s, elapsed)
        # Resource outliers are findings too: the worker's peak RSS jumping by more than
        # 300 MB on one input, or an input taking over 5 s (bounded, but a cost to know).
        grew = rss - worker.last_rss > 300 and worker.last_rss > 0
        worker.last_rss = max(worker.last_rss, rss)
        if outcome not in BAD and (grew or elapsed > 5):
            report.outcomes["resource"] += 1
            detail = f"{outcome} {detail}: peak RSS {rss} MB, {elapsed:.1f} s"
            report.details[f"resource: {detail[:120]}"] += 1
            report.saved.append(save(args.save, s.target, data, init, f"resource: {detail}"))
        if outcome in BAD:
            report.details[f"{outcome}: {detail[:120]}"] += 1
            report.saved.append(save(args.save, s.target, data, init, f"{outcome}: {detail}"))
        # A fresh worker now and then: peak RSS is per process, so this keeps it per ~200.
        if worker.served >= 200:
            worker.stop()
        if report.inputs % 1000 == 0:
            print(
                f"{report.inputs} inputs, {dict(report.outcomes)}, max RSS "
                f"{report.max_rss_mb} MB, slowest {report.slowest_s:.2f} s",
                file=sys.stderr,
                flush=True,
            )

    try:
        one()
    except Exception as exc:
        # _TimeUp ends the run; hypothesis may report it wrapped (it replays the last
        # example to confirm it and finds that one stops drawing early).
        if time.monotonic() <= end:
            raise
        print(f"run ended at the time limit ({type(exc).__name__})", file=sys.stderr)
    finally:
        worker.stop()
    elapsed = time.monotonic() - started
    out = {
        "inputs": report.inputs,
        "seconds": round(elapsed, 1),
        "outcomes": dict(report.outcomes),
        "crashes": report.outcomes["crash"] + report.outcomes["died"],
        "hangs": report.outcomes["hang"],
        "faults": report.outcomes["fault"],
        "resource_outliers": report.outcomes["resource"],
        "rejection_reasons": dict(report.reasons.most_common()),
        "by_target": dict(report.by_target),
        "max_peak_rss_mb": report.max_rss_mb,
        "max_peak_rss_input": report.max_rss_input,
        "slowest_input_s": round(report.slowest_s, 2),
        "bad_details": dict(report.details.most_common(20)),
        "saved": sorted(set(report.saved)),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}",
    }
    text = json.dumps(out, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    return 1 if out["crashes"] or out["hangs"] else 0


if __name__ == "__main__":
    raise SystemExit(main())

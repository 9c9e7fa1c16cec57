"""Message contracts round-trip: the segment contract both sides, the output messages parse back,
and imports run only downstream (monitor -> scorers -> ingest)."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import numpy as np
import pytest

from ingest.contract import (
    BadHeader,
    InitSegment,
    SegmentJob,
    parse_message,
    segment_message,
)
from ingest.types import StreamInfo
from monitor.messages import (
    AlertRecord,
    DeadLetterRecord,
    SegmentFacts,
    Source,
    VerdictRecord,
    alert_messages,
    dead_letter_message,
    verdict_message,
)
from monitor.sections import AlertsConfig
from scorers.types import Flag, Verdict

ROOT = Path(__file__).resolve().parents[2]


def test_segment_message_round_trips_through_the_parser() -> None:
    m = segment_message(b"\x47" * 188, stream="news", rendition="720p", seq=42, bitrate=3_000_000)
    job = parse_message(m.key, m.value, m.headers, offset=7, source="t/0@7")
    assert isinstance(job, SegmentJob) and job.uri is None
    seg = job.segment
    assert (seg.stream, seg.rendition, seg.seq, seg.bitrate) == ("news", "720p", 42, 3_000_000)
    assert seg.content_type == "video/mp2t" and seg.data == m.value and m.key == b"news/720p"


def test_init_and_reference_messages_round_trip() -> None:
    init = segment_message(b"\x00\x00\x00\x08moov", stream="s", rendition="r", seq=0, init=True)
    parsed = parse_message(init.key, init.value, init.headers, offset=0, source="x")
    assert isinstance(parsed, InitSegment) and parsed.data == init.value
    ref = json.dumps({"uri": "https://cdn.invalid/seg.ts"}).encode()
    m = segment_message(ref, stream="s", rendition="r", seq=3)
    job = parse_message(m.key, m.value, m.headers, offset=0, source="x")
    assert isinstance(job, SegmentJob) and job.uri == "https://cdn.invalid/seg.ts"


def test_builder_refuses_what_the_parser_would() -> None:
    with pytest.raises(BadHeader):
        segment_message(b"x", stream="a/b", rendition="r", seq=0)


def _verdict() -> Verdict:
    return Verdict(
        "s/r/1",
        "s",
        "r",
        1,
        3.5,
        2.9,
        (3.4, 3.6),
        (Flag("blur", 0.8, 0.0, 2.0, {"ratio": 0.4}),),
        ("artifacts@1", "distilled@2.1"),
        {"distilled_provider": "CPUExecutionProvider"},
        {"clean": 0.2, "blur": 0.8},
        "promoted",
    )


def test_output_messages_parse_back() -> None:
    info = StreamInfo("h264", "High", 640, 360, 25.0, "yuv420p", 8, None, 2.0, 8e5, 50, 1, "mpegts")
    facts = SegmentFacts(info, 900_000, 0, 1, 0.12, ("packet 3: x",), ("tiny_frames",))
    src = Source("seg", 2, 99, 1700000000000)
    out = verdict_message("ver", _verdict(), facts, src)
    rec = VerdictRecord.parse(out.value)
    assert rec.schema_ == "vqmon.verdict/1" and rec.segment_id == "s/r/1"
    assert rec.degradation_class == "blur" and rec.mode == "promoted"
    assert rec.flags[0].kind == "blur" and rec.declared_bitrate == 900_000
    assert rec.source.offset == 99 and rec.decode.corrupt_frames == 1
    alerts = [AlertRecord.parse(a.value) for a in alert_messages("alr", _verdict(), AlertsConfig())]
    assert [a.kind for a in alerts] == ["blur"] and alerts[0].severity == pytest.approx(0.8)
    dl = dead_letter_message(
        "dlq",
        key=b"k",
        value=b"v" * 10,
        headers=[("stream", b"s"), ("x", None)],
        source=src,
        reason="decode_error",
        error="bad",
        max_value_bytes=4,
    )
    back = DeadLetterRecord.parse(dl.value)
    assert back.original_value() == b"vvvv" and back.value_truncated and back.value_bytes == 10
    assert dl.fallback is not None
    reduced = DeadLetterRecord.parse(dl.fallback.value)
    assert reduced.reduced and reduced.value == "" and reduced.reason == "decode_error"


def test_dead_letter_copies_are_capped_well_below_a_megabyte() -> None:
    headers = [(f"h{i}", b"x" * 5000) for i in range(100)]
    dl = dead_letter_message(
        "dlq",
        key=b"k" * 10_000,
        value=np.zeros(10_000_000, np.uint8).tobytes(),
        headers=headers,
        source=Source("t", 0, 0),
        reason="r",
        error="e" * 100_000,
        max_value_bytes=256 * 1024,
    )
    assert len(dl.value) < 400 * 1024 and len(dl.key) <= 1024


def test_imports_run_only_downstream() -> None:
    order = {"ingest": 0, "scorers": 1, "monitor": 2}
    for package, rank in order.items():
        for path in (ROOT / package).rglob("*.py"):
            tree = ast.parse(path.read_text())
            for node in ast.walk(tree):
                names = []
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                    names = [node.module]
                for name in names:
                    top = name.split(".")[0]
                    assert order.get(top, -1) <= rank, f"{path} imports {name} (upstream)"
    # Decode workers do not load the Kafka client.
    contract = ast.parse((ROOT / "ingest/contract.py").read_text())
    mods = {n.module for n in ast.walk(contract) if isinstance(n, ast.ImportFrom)}
    assert not any(m and m.startswith("kafka") for m in mods)

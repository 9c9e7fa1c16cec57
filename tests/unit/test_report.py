"""`vqmon report`: messages of a judged run in, HTML (inline SVG) and PNGs out; the page
opened in a real headless chromium and its screenshot checked."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from monitor.cli import main
from monitor.encoding import EncodingConfig, EncodingPolicy
from monitor.judge import Judge
from monitor.report import Collected, write_report
from monitor.types import Observation

pytest.importorskip("matplotlib")

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "tests" / "artifacts"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
LADDER = {"720p": (1280, 720, 3.0), "360p": (640, 360, 0.0)}


def verdict(stream: str, rendition: str, seq: int, mos: float, flags: list[str]) -> dict[str, Any]:
    w, h, _ = LADDER[rendition]
    return {
        "schema": "vqmon.verdict/1",
        "segment_id": f"{stream}/{rendition}/{seq}",
        "stream": stream, "rendition": rendition, "seq": seq,
        "mos": mos, "mos_low": mos - 0.3, "frame_mos": [mos],
        "flags": [{"kind": k, "severity": 1.0, "start_s": 0.0, "duration_s": 2.0,
                   "evidence": {}} for k in flags],
        "scorers": ["artifacts@1.1", "distilled@2.1"],
        "stream_info": {"codec": "h264", "width": w, "height": h, "duration_s": 2.0},
        "declared_bitrate": 3000000 if rendition == "720p" else 800000,
        "decode": {"errors": 0, "corrupt_frames": 0, "seconds": 0.1, "messages": []},
        "source": {"topic": "vqmon.segments", "partition": 0, "offset": seq},
        "screened_at": 1000.0 + seq * 2,
    }  # fmt: skip


def judged_run() -> list[dict[str, Any]]:
    """Two streams of a 2-rung ladder, 24 segments: 'news<&>' goes black on every rung at
    seq 8-11; 'sport' starves on 720p from seq 14. Judged by the real judge and policy."""
    rng = np.random.default_rng(0)
    judge = Judge()
    policy = EncodingPolicy(EncodingConfig(enabled=True, dry_run=False, cooldown_s=0))
    out: list[dict[str, Any]] = []
    for seq in range(24):
        for stream in ("news<&>", "sport"):
            for rendition in LADDER:
                mos = 3.6 + 0.4 * (rendition == "720p") + float(rng.normal(0, 0.05))
                flags = []
                if stream == "news<&>" and 8 <= seq <= 11:
                    mos, flags = 1.2, ["black"]
                if stream == "sport" and rendition == "720p" and seq >= 14:
                    mos -= 1.2
                v = verdict(stream, rendition, seq, mos, flags)
                out.append({"topic": "vqmon.verdicts", "value": v})
                obs = Observation.from_verdict_json(v)
                now = v["screened_at"]
                events = judge.observe(obs, now) + judge.tick(now)
                out += [{"topic": "vqmon.incidents", "value": e.to_json()} for e in events]
                for d in policy.observe(obs, judge.open_incidents(stream), now):
                    out.append({"topic": "vqmon.encoder-decisions", "value": d.to_json()})
    out.append({"topic": "vqmon.diagnoses", "value": {
        "schema": "vqmon.diagnosis/1", "segment_id": "news<&>/720p/9", "stream": "news<&>",
        "rendition": "720p", "seq": 9, "model": "rules", "escalation_reason": "flag:black>=0.50",
        "tasks": [{"task": "degradation", "degradation": "black", "severity": "catastrophic",
                   "raw_texts": ["<answer>black <script>alert(1)</script></answer>"]}],
    }})  # fmt: skip
    return out


@pytest.fixture(scope="module")
def messages() -> list[dict[str, Any]]:
    return judged_run()


def test_collects_every_kind_of_message(messages: list[dict[str, Any]]) -> None:
    c = Collected.of([*messages, "not json", {"schema": "vqmon.other/1"}])
    assert len(c.verdicts) == 2 * 2 * 24
    kinds = {(i.stream, i.kind, i.scope) for i in c.incidents.values()}
    assert ("news<&>", "black", "*") in kinds  # every rung: stream-wide
    assert ("sport", "starvation", "720p") in kinds
    assert any(d.action == "raise_bitrate" and d.rendition == "720p" for d in c.decisions)
    assert len(c.diagnoses) == 1 and c.unreadable == 2


def test_report_html_and_pngs(messages: list[dict[str, Any]], tmp_path: Path) -> None:
    out = write_report(messages, tmp_path / "r" / "report.html", tmp_path / "png")
    text = out.read_text()
    assert '<meta name="viewport"' in text
    assert text.count("<svg") == 2
    assert not re.search(r"(src|href)=[\"']?(https?:)?//|<link|@import|url\((?!#)", text)  # offline
    assert "news&lt;&amp;&gt;" in text and "<script>" not in text  # escaped, in HTML and SVG
    assert "starvation" in text and "raise_bitrate" in text and "catastrophic" in text
    pngs = sorted(p.name for p in (tmp_path / "png").iterdir())
    assert pngs == ["00-news___.png", "01-sport.png"]


def test_report_cli_reads_json_lines(
    messages: list[dict[str, Any]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = tmp_path / "m.jsonl"
    raw_verdicts = [m["value"] for m in messages if m["topic"] == "vqmon.verdicts"][:8]
    lines.write_text("\n".join(json.dumps(v) for v in raw_verdicts) + "\n\n")
    assert main(["report", "--input", str(lines), "--out", str(tmp_path / "x.html")]) == 0
    assert "news&lt;&amp;&gt;" in (tmp_path / "x.html").read_text()
    assert main(["report", "--out", str(tmp_path / "y.html")]) == 2
    assert "exactly one of" in capsys.readouterr().err


def test_report_cli_refuses_a_file_of_no_vqmon_messages(
    messages: list[dict[str, Any]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # It wrote an empty report and exited 0 for any file at all.
    junk, empty, some = tmp_path / "junk.txt", tmp_path / "empty.jsonl", tmp_path / "some.jsonl"
    junk.write_text('not json\n{"schema": "vqmon.other/1"}\n[1, 2]\n')
    empty.write_text("\n")
    some.write_text("not json\n" + json.dumps(messages[0]) + "\n")
    out = tmp_path / "r.html"
    assert main(["report", "--input", str(junk), "--out", str(out)]) == 1
    assert "none of its 3 messages is a vqmon output message" in capsys.readouterr().err
    assert main(["report", "--input", str(empty), "--out", str(out)]) == 1
    assert "holds no vqmon output message" in capsys.readouterr().err
    assert not out.exists()
    assert main(["report", "--input", str(some), "--out", str(out)]) == 0
    assert "1 messages not understood (skipped)" in capsys.readouterr().err and out.is_file()


def test_report_from_empty_topics_says_which_topics(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # A double for the consumer (the real one reads a broker: tests/integration): topics
    # that hold nothing are not a file of junk, and say what to check.
    import monitor.report as report

    monkeypatch.setattr(report, "read_topics", lambda servers, topics: iter(()))
    out = tmp_path / "r.html"
    assert main(["report", "--bootstrap", "127.0.0.1:9", "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "the output topics hold no vqmon message yet" in err and "--bootstrap" in err
    assert not out.exists()


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)")
def test_report_renders_in_headless_chromium(
    messages: list[dict[str, Any]], tmp_path: Path
) -> None:
    from PIL import Image

    page = write_report(messages, tmp_path / "report.html")
    shot = tmp_path / "report.png"
    assert CHROMIUM is not None
    # A phone-sized window: the plots must scale down and stay readable.
    for size, name in (("412,2400", "report-phone.png"), ("1280,2000", "report-desktop.png")):
        subprocess.run(
            [
                CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                "--no-first-run", "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--hide-scrollbars", f"--user-data-dir={tmp_path / 'profile'}",
                f"--screenshot={shot}", f"--window-size={size}", page.as_uri(),
            ],
            check=True, capture_output=True, timeout=120,
        )  # fmt: skip
        ARTIFACTS.mkdir(exist_ok=True)
        kept = ARTIFACTS / name
        shutil.copy(shot, kept)
        img = np.asarray(Image.open(shot).convert("L"), dtype=np.float32)
        width = int(size.split(",")[0])
        assert img.shape[1] == width, kept
        # the plot area: not blank (lines, bands, text), and it spans the page width
        assert img.std() > 20, f"blank-looking screenshot: {kept}"
        top = img[: img.shape[0] // 3]
        coloured = (top < 200).mean(axis=0)
        assert (coloured > 0.01).mean() > 0.6, f"plots do not fill the width: {kept}"
        os.remove(shot)

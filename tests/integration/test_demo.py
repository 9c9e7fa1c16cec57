"""`vqmon demo` end to end: every injected impairment found within its window, no incident
or alert on a clean segment, a report written."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(300)
def test_demo_finds_every_injected_impairment_and_raises_nothing_on_clean_segments(
    tmp_path: Path,
) -> None:
    out = tmp_path / "demo.json"
    report = tmp_path / "report.html"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "monitor",
            "demo",
            "--duration",
            "60",
            "--port",
            "0",
            "--json",
            str(out),
            "--report",
            str(report),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=280,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(out.read_text())
    kinds = {f["kind"] for f in result["findings"]}
    assert kinds == {"starve", "black", "freeze", "blur", "noise", "loss"}
    missed = [f for f in result["findings"] if not f["detected"]]
    assert not missed, (missed, proc.stdout[-3000:])
    assert result["false_incidents"] == [] and result["false_alerts"] == [], result
    # blur on one rung is a blur incident, not starvation with a bitrate raise; the noise
    # fault is denoised, not deblocked
    assert result["misdirected_decisions"] == [], result
    assert result["incidents"] >= 3 and result["decisions"] >= 1 and result["diagnoses"] >= 1
    # every fault reached the diagnose role, and the rules backend named what it is (a
    # starved rung shows blocks to the detectors and compression to the head: both right;
    # the noise starves the bitrate-capped lower rung, which is still noise)
    right = {
        "starve": {"compression", "blocking"},
        "black": {"black"},
        "noise": {"noise"},
        "freeze": {"freeze"},
        "blur": {"blur"},
        "loss": {"packet_loss"},
    }
    wrong = [f for f in result["findings"] if f["diagnosed_as"] not in right[f["kind"]]]
    assert not wrong, result["findings"]
    assert "NOT DETECTED" not in proc.stdout and "injected impairment" in proc.stdout
    html = report.read_text()
    assert all(name in html for name in ("news", "sport", "nature")) and "<svg" in html

"""systemd units pass `systemd-analyze verify`; sd_notify speaks the datagram protocol."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from monitor.sdnotify import Notifier

UNITS = Path(__file__).resolve().parents[2] / "systemd"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="needs systemd-analyze")
@pytest.mark.parametrize(
    ("source", "name"),
    [
        ("vqmon-screen.service", "vqmon-screen.service"),
        ("vqmon-screen@.service", "vqmon-screen@0.service"),
        ("vqmon-diagnose@.service", "vqmon-diagnose@0.service"),
    ],
)
def test_units_verify(tmp_path: Path, source: str, name: str) -> None:
    # The units point at /opt/vqmon; verify checks executables exist, so use this venv's.
    vqmon = Path(sys.executable).parent / "vqmon"
    if not vqmon.exists():
        pytest.skip("the vqmon console script is not installed in this environment")
    text = (UNITS / source).read_text().replace("/opt/vqmon/bin/vqmon", str(vqmon))
    (tmp_path / source).write_text(text)
    target = tmp_path / name
    if name != source:
        target.symlink_to(tmp_path / source)
    result = subprocess.run(
        ["systemd-analyze", "verify", str(target)],
        capture_output=True,
        text=True,
        env={**os.environ, "SYSTEMD_LOG_LEVEL": "warning"},
        check=False,
    )
    problems = [line for line in (result.stdout + result.stderr).splitlines() if "vqmon" in line]
    assert result.returncode == 0 and not problems, result.stdout + result.stderr
    for key in (
        "Type=notify",
        "WatchdogSec=",
        "Restart=on-failure",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "PrivateTmp=yes",
        "User=vqmon",
        "ExecStartPre=",
        "WorkingDirectory=/var/lib/vqmon",
        "TemporaryFileSystem=/var/lib/vqmon:ro",
        "MemoryMax=",
        "MemoryHigh=",
        "TasksMax=",
        "SystemCallFilter=@system-service",
        "SystemCallArchitectures=native",
        "ProtectProc=invisible",
        "ProcSubset=pid",
        "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6",
        "CapabilityBoundingSet=\n",
        "IPAddressAllow=",  # the drop-in guidance
    ):
        assert key in text, key


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="needs systemd-analyze")
@pytest.mark.parametrize(
    ("source", "name", "most"),
    [
        ("vqmon-screen.service", "vqmon-screen.service", 2.0),
        ("vqmon-screen@.service", "vqmon-screen@0.service", 2.5),
    ],
)
def test_units_sandbox_exposure(tmp_path: Path, source: str, name: str, most: float) -> None:
    """`systemd-analyze security` exposure (0 safest, 10 none): 3.8 / 4.1 before issue 15."""
    (tmp_path / source).write_text((UNITS / source).read_text())
    target = tmp_path / name
    if name != source:
        target.symlink_to(tmp_path / source)
    result = subprocess.run(
        ["systemd-analyze", "security", "--offline=yes", str(target)],
        capture_output=True,
        text=True,
        check=False,
    )
    match = re.search(r"Overall exposure level for \S+: ([0-9.]+)", result.stdout)
    if match is None:
        pytest.skip(f"this systemd-analyze has no offline security check: {result.stderr[:200]}")
    assert float(match.group(1)) <= most, result.stdout


def test_sd_notify_ready_and_watchdog(tmp_path: Path) -> None:
    path = str(tmp_path / "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind(path)
        server.settimeout(2)
        n = Notifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "2000000"})
        assert n.watchdog_interval_s == 1.0
        n.ready("screening")
        assert server.recv(100) == b"READY=1\nSTATUS=screening"
        n.watchdog()
        assert server.recv(100) == b"WATCHDOG=1"
        n.watchdog()  # within the half-interval: no second ping
        n.stopping()
        assert server.recv(100) == b"STOPPING=1"


def test_sd_notify_is_a_no_op_outside_systemd() -> None:
    n = Notifier({})
    assert not n.enabled and n.watchdog_interval_s is None
    n.ready()
    n.watchdog()

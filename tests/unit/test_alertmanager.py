"""Incidents pushed to Alertmanager: the payload, and a real Debian prometheus-alertmanager."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from monitor.alertmanager import (
    AlertmanagerClient,
    AlertmanagerConfig,
    AlertmanagerError,
    alerts_by_stream,
)
from monitor.types import Incident

BINARY = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
NOW = time.time()


def incident(stream: str, kind: str, *, scope: str = "*", resolved: bool = False) -> Incident:
    return Incident(
        id=f"{stream}/{scope}/{kind}/7",
        stream=stream,
        scope=scope,
        kind=kind,
        state="resolved" if resolved else "open",
        severity=0.8,
        localisation="source" if scope == "*" else "rendition",
        opened_seq=7,
        opened_at=NOW - 60,
        updated_at=NOW,
        resolved_at=NOW - 1 if resolved else None,
        renditions=("360p", "720p") if scope == "*" else (scope,),
    )


def test_alerts_are_grouped_per_stream_latest_event_wins() -> None:
    cfg = AlertmanagerConfig(labels={"team": "video"})
    a = incident("news", "black")
    groups = alerts_by_stream(
        [a, incident("news", "freeze"), incident("sport", "starvation", scope="720p"),
         a.evolve(state="resolved", resolved_at=NOW)],
        NOW, cfg,
    )  # fmt: skip
    assert sorted(groups) == ["news", "sport"] and len(groups["news"]) == 2
    black = next(x for x in groups["news"] if x["labels"]["kind"] == "black")
    assert black["labels"]["severity"] == "critical" and black["labels"]["team"] == "video"
    assert black["endsAt"].endswith("Z") and black["annotations"]["runbook_url"].endswith(
        "#vqmonsourceincident"
    )


def test_client_posts_once_per_stream_and_reports_failures() -> None:
    calls: list[tuple[str, list[Any]]] = []

    def post(url: str, body: bytes, timeout: float) -> int:
        calls.append((url, json.loads(body)))
        return 200

    client = AlertmanagerClient(AlertmanagerConfig(url="http://am:9093/"), post)
    n = client.push([incident("news", "black"), incident("sport", "black")], NOW)
    assert n == 2 and [u for u, _ in calls] == ["http://am:9093/api/v2/alerts"] * 2
    failing = AlertmanagerClient(AlertmanagerConfig(), lambda u, b, t: 500)
    with pytest.raises(AlertmanagerError, match="HTTP 500"):
        failing.push([incident("news", "black")], NOW)
    with pytest.raises(ValueError, match="http"):
        AlertmanagerClient(AlertmanagerConfig(url="am:9093"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return json.loads(resp.read())


@pytest.fixture
def alertmanager(tmp_path: Path) -> Iterator[str]:
    if BINARY is None:
        pytest.skip(
            "prometheus-alertmanager not installed (apt-get install prometheus-alertmanager)"
        )
    port = _free_port()
    conf = tmp_path / "am.yml"
    conf.write_text(
        "route:\n  receiver: 'null'\n  group_by: [alertname, stream]\n"
        "receivers:\n  - name: 'null'\n"
    )
    proc = subprocess.Popen(
        [BINARY, f"--config.file={conf}", f"--storage.path={tmp_path}",
         f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address="],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                urllib.request.urlopen(f"{url}/-/ready", timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    pytest.fail("alertmanager did not become ready")
                time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


def test_real_alertmanager_receives_groups_silences_and_resolves(alertmanager: str) -> None:
    client = AlertmanagerClient(AlertmanagerConfig(url=alertmanager))
    black, starved = incident("news", "black"), incident("sport", "starvation", scope="720p")
    assert client.push([black, starved], time.time()) == 2
    alerts = _get(f"{alertmanager}/api/v2/alerts")
    by_id = {a["labels"]["incident_id"]: a for a in alerts}
    assert set(by_id) == {black.id, starved.id}
    assert by_id[black.id]["labels"]["localisation"] == "source"
    assert by_id[black.id]["status"]["state"] == "active"
    groups = _get(f"{alertmanager}/api/v2/alerts/groups")
    assert sorted(g["labels"]["stream"] for g in groups) == ["news", "sport"]
    # an operator silences the stream: Alertmanager reports the alert suppressed
    silence = {
        "matchers": [{"name": "stream", "value": "sport", "isRegex": False, "isEqual": True}],
        "startsAt": "2000-01-01T00:00:00Z", "endsAt": "2100-01-01T00:00:00Z",
        "createdBy": "test", "comment": "maintenance",
    }  # fmt: skip
    req = urllib.request.Request(
        f"{alertmanager}/api/v2/silences", data=json.dumps(silence).encode(),
        method="POST", headers={"Content-Type": "application/json"},
    )  # fmt: skip
    urllib.request.urlopen(req, timeout=5).close()
    alerts = {a["labels"]["incident_id"]: a for a in _get(f"{alertmanager}/api/v2/alerts")}
    assert alerts[starved.id]["status"]["state"] == "suppressed"
    # resolving the incident ends the alert
    client.push([black.evolve(state="resolved", resolved_at=time.time() - 1)], time.time())
    active = _get(f"{alertmanager}/api/v2/alerts?active=true&silenced=false&inhibited=false")
    assert black.id not in {a["labels"]["incident_id"] for a in active}

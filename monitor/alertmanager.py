"""Optional push of incidents to an Alertmanager through its v2 API (POST /api/v2/alerts).

Each incident is one alert (alertname VqmonIncident) labelled with stream, scope, kind,
localisation, severity and incident_id; one POST per stream, so a route with
`group_by: [alertname, stream]` pages once per stream. Alertmanager does the rest:
grouping, inhibition, silences, receivers (pager, webhook, chat).

An open alert is sent with endsAt = now + `resolve_timeout_s`: the wiring re-pushes
the judge's open incidents about every `resolve_timeout_s / 3` (`push(open_incidents)`),
so an alert ends by itself if vqmon dies; a resolved incident is sent once with its
resolved_at as endsAt. Standard library HTTP only.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

from pydantic import Field

from ingest.config import StrictModel
from monitor.types import Incident

ALERT_NAME = "VqmonIncident"


class AlertmanagerConfig(StrictModel):
    enabled: bool = Field(False, description="Push incidents to an Alertmanager.")
    url: str = Field(
        "http://127.0.0.1:9093", description="Alertmanager base URL (the API is at /api/v2)."
    )
    timeout_s: float = Field(5.0, gt=0, le=60, description="HTTP timeout per request.")
    resolve_timeout_s: float = Field(
        300.0,
        gt=0,
        description="endsAt of an open incident's alert is now + this; re-push open incidents "
        "more often than this so they stay firing.",
    )
    runbook_url: str = Field(
        "docs/runbook.md", description="Base of the runbook_url annotation (an anchor is added)."
    )
    labels: dict[str, str] = Field(
        default_factory=dict, description="Static labels added to every alert (e.g. team)."
    )


class AlertmanagerError(Exception):
    """Alertmanager refused or could not be reached; the caller counts it and retries later."""


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


def incident_alert(inc: Incident, now: float, cfg: AlertmanagerConfig) -> dict[str, Any]:
    """One postable alert (Alertmanager v2 `postableAlert`). Pure."""
    where = "every rendition" if inc.scope == "*" else inc.scope
    anchor = {"source": "vqmonsourceincident", "packaging": "vqmonpackagingincident"}.get(
        inc.localisation, "vqmonrenditionincident"
    )
    ends = inc.resolved_at if inc.resolved_at is not None else now + cfg.resolve_timeout_s
    return {
        "labels": {
            **cfg.labels,
            "alertname": ALERT_NAME,
            "stream": inc.stream,
            "scope": inc.scope,
            "kind": inc.kind,
            "localisation": inc.localisation,
            "severity": inc.level,
            "incident_id": inc.id,
        },
        "annotations": {
            "summary": f"{inc.stream}: {inc.kind} on {where} ({inc.localisation})",
            "description": f"Incident {inc.id}, severity {inc.severity:.2f}, opened at segment "
            f"{inc.opened_seq}; renditions: {', '.join(inc.renditions) or inc.scope}.",
            "runbook_url": f"{cfg.runbook_url}#{anchor}",
        },
        "startsAt": _iso(inc.opened_at),
        "endsAt": _iso(ends),
    }


def alerts_by_stream(
    incidents: Iterable[Incident], now: float, cfg: AlertmanagerConfig
) -> dict[str, list[dict[str, Any]]]:
    """Latest event per incident id, as alerts grouped per stream. Pure."""
    latest: dict[str, Incident] = {}
    for inc in incidents:
        latest[inc.id] = inc
    out: dict[str, list[dict[str, Any]]] = {}
    for inc in latest.values():
        out.setdefault(inc.stream, []).append(incident_alert(inc, now, cfg))
    return out


Post = Callable[[str, bytes, float], int]


def _post(url: str, body: bytes, timeout: float) -> int:
    req = urllib.request.Request(
        url, data=body, method="POST", headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return int(resp.status)


class AlertmanagerClient:
    def __init__(self, cfg: AlertmanagerConfig, post: Post | None = None) -> None:
        if not cfg.url.startswith(("http://", "https://")):
            raise ValueError(f"alertmanager.url {cfg.url!r} must start with http:// or https://")
        self.cfg = cfg
        self._post = post or _post

    def push(self, incidents: Iterable[Incident], now: float) -> int:
        """POST the incidents, one request per stream; returns how many alerts were sent."""
        sent = 0
        url = self.cfg.url.rstrip("/") + "/api/v2/alerts"
        for stream, alerts in sorted(alerts_by_stream(incidents, now, self.cfg).items()):
            body = json.dumps(alerts).encode()
            try:
                status = self._post(url, body, self.cfg.timeout_s)
            except (urllib.error.URLError, OSError) as exc:
                raise AlertmanagerError(f"alertmanager {url}: {exc}") from exc
            if status // 100 != 2:
                raise AlertmanagerError(f"alertmanager {url}: HTTP {status} for stream {stream}")
            sent += len(alerts)
        return sent

"""Soak: the daemon under steady load for a long run; memory, threads, descriptors, throughput.

    python bench/soak.py [--minutes 30] [--rate 2] [--out docs/soak]

A local Tansu broker and the daemon as a subprocess (`vqmon run`, default scorers, 2
workers). A producer publishes `rate` segments per second of mixed 360p H.264 content,
and, every 50th message, a hostile one in turn (deeply nested JSON, random bytes, a
truncated segment, a segment with packet loss, a non-UTF-8 header value). Every 10 s
the bench samples, from /proc, the resident memory of the daemon and of its workers,
its threads and open descriptors, and, from /metrics, the segments finished. After a
warm-up (the first fifth of the run) it reports growth: memory (goal under 5%),
threads and descriptors (goal: none), throughput per window (flat). Writes soak.csv
and soak.png (the curves) into --out.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kafka import KafkaProducer

from ingest import impair
from ingest.broker import EmbeddedBroker, free_port
from ingest.contract import segment_message
from ingest.synth import EncodeSettings, clip

ROOT = Path(__file__).resolve().parents[1]


def proc_stats(pid: int) -> tuple[float, float, int, int]:
    """(parent RSS MB, children RSS MB, threads of the parent, descriptors of the parent)."""

    def rss(p: int) -> float:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        except OSError:
            pass
        return 0.0

    children = [
        int(c)
        for t in Path(f"/proc/{pid}/task").iterdir()
        for c in (t / "children").read_text().split()
    ]
    threads = len(list(Path(f"/proc/{pid}/task").iterdir()))
    fds = len(list(Path(f"/proc/{pid}/fd").iterdir()))
    return rss(pid), sum(rss(c) for c in children), threads, fds


def metric(port: int, name: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(name) and not line.startswith("#")
    )


def feed(bootstrap: str, topic: str, rate: float, stop: threading.Event) -> None:
    s = EncodeSettings(fps=25, gop=50, crf=23)
    kinds = ("scene", "texture", "bars", "zoneplate", "gradient")
    clips = [
        clip(k, width=640, height=360, seconds=2.0, seed=i, settings=s) for i, k in enumerate(kinds)
    ]
    rng = np.random.default_rng(0)
    hostile = [
        ("nested", b'{"uri": ' + b"[" * 5000 + b"]" * 5000 + b"}", []),
        ("random", rng.integers(0, 256, 5000, dtype=np.uint8).tobytes(), []),
        ("truncated", clips[0][:700], []),
        ("loss", impair.corrupt_packets(clips[1], 0.05, seed=1, mode="drop"), []),
        ("badheader", clips[2], [("seq", b"\xff\xfe")]),
    ]
    p = KafkaProducer(
        bootstrap_servers=[bootstrap], acks="all", linger_ms=5, max_request_size=16 << 20
    )
    i = 0
    next_at = time.monotonic()
    while not stop.is_set():
        if i % 50 == 49:
            name, value, extra = hostile[(i // 50) % len(hostile)]
            m = segment_message(value, stream=f"hostile-{name}", rendition="r", seq=i)
            headers = [h for h in m.headers if h[0] != "seq"] + (
                extra or [("seq", str(i).encode())]
            )
        else:
            m = segment_message(clips[i % len(clips)], stream=f"s{i % 8}", rendition="360p", seq=i)
            headers = m.headers
        p.send(topic, key=m.key, value=m.value, headers=headers)
        i += 1
        next_at += 1 / rate
        stop.wait(max(0.0, next_at - time.monotonic()))
    p.flush()
    p.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=30)
    ap.add_argument("--rate", type=float, default=2.0, help="segments per second")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "soak")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    port = free_port()
    rows: list[dict[str, float]] = []
    with EmbeddedBroker() as broker, tempfile.TemporaryDirectory() as tmp:
        cfg = {
            "kafka": {"bootstrap_servers": [broker.bootstrap_servers], "partitions": 4},
            "http": {"port": port},
            "logging": {"level": "WARNING"},
            "feed": {"enabled": False},
        }
        path = Path(tmp) / "soak.yaml"
        path.write_text(yaml.safe_dump(cfg))
        log = open(Path(tmp) / "daemon.log", "wb")  # noqa: SIM115
        daemon = subprocess.Popen(
            [sys.executable, "-m", "monitor", "run", "--config", str(path)],
            cwd=ROOT,
            stdout=log,
            stderr=log,
        )
        stop = threading.Event()
        try:
            deadline = time.monotonic() + 120
            while True:
                try:
                    urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2)
                    break
                except OSError:
                    if time.monotonic() > deadline or daemon.poll() is not None:
                        raise RuntimeError("the daemon did not become ready") from None
                    time.sleep(0.5)
            producer = threading.Thread(
                target=feed, args=(broker.bootstrap_servers, "vqmon.segments", args.rate, stop)
            )
            producer.start()
            started = time.monotonic()
            end = started + args.minutes * 60
            while time.monotonic() < end:
                time.sleep(10)
                if daemon.poll() is not None:
                    raise RuntimeError(f"the daemon exited with {daemon.returncode}")
                parent, children, threads, fds = proc_stats(daemon.pid)
                rows.append(
                    {
                        "t_s": round(time.monotonic() - started, 1),
                        "parent_rss_mb": round(parent, 1),
                        "workers_rss_mb": round(children, 1),
                        "threads": threads,
                        "fds": fds,
                        "finished": metric(port, "vqmon_segments_processed_total"),
                        "dead_letters": metric(port, "vqmon_dead_letters_total"),
                    }
                )
                print(json.dumps(rows[-1]), flush=True)
        finally:
            stop.set()
            daemon.terminate()
            daemon.wait(60)
    with (args.out / "soak.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    summary = summarise(rows, args)
    plot(rows, args.out / "soak.png")
    print(json.dumps(summary, indent=2))
    return 0


def summarise(rows: list[dict[str, float]], args: argparse.Namespace) -> dict[str, object]:
    warm = rows[len(rows) // 5 :]
    first, last = warm[0], warm[-1]
    rates = np.diff([r["finished"] for r in warm]) / np.diff([r["t_s"] for r in warm])
    half = len(rates) // 2
    return {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, no GPU",
        "minutes": args.minutes,
        "rate_seg_per_s": args.rate,
        "parent_rss_growth": round(last["parent_rss_mb"] / first["parent_rss_mb"] - 1, 4),
        "workers_rss_growth": round(last["workers_rss_mb"] / first["workers_rss_mb"] - 1, 4),
        "parent_rss_mb": [first["parent_rss_mb"], last["parent_rss_mb"]],
        "workers_rss_mb": [first["workers_rss_mb"], last["workers_rss_mb"]],
        "threads": [first["threads"], last["threads"], max(r["threads"] for r in warm)],
        "fds": [first["fds"], last["fds"], max(r["fds"] for r in warm)],
        "throughput_first_half_seg_per_s": round(float(rates[:half].mean()), 3),
        "throughput_second_half_seg_per_s": round(float(rates[half:].mean()), 3),
        "finished": last["finished"],
        "dead_letters": last["dead_letters"],
    }


def plot(rows: list[dict[str, float]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = np.array([r["t_s"] for r in rows]) / 60
    fig, ax = plt.subplots(2, 2, figsize=(10, 6), sharex=True)
    ax[0, 0].plot(t, [r["parent_rss_mb"] for r in rows], label="daemon")
    ax[0, 0].plot(t, [r["workers_rss_mb"] for r in rows], label="workers (sum)")
    ax[0, 0].set_ylabel("resident MB")
    ax[0, 0].legend()
    ax[0, 1].plot(t, [r["threads"] for r in rows], label="threads")
    ax[0, 1].plot(t, [r["fds"] for r in rows], label="descriptors")
    ax[0, 1].legend()
    fin = np.array([r["finished"] for r in rows])
    ax[1, 0].plot(t[1:], np.diff(fin) / np.diff(t * 60))
    ax[1, 0].set_ylabel("segments/s")
    ax[1, 1].plot(t, [r["dead_letters"] for r in rows])
    ax[1, 1].set_ylabel("dead letters (total)")
    for a in ax[1]:
        a.set_xlabel("minutes")
    fig.tight_layout()
    fig.savefig(path, dpi=80)


if __name__ == "__main__":
    raise SystemExit(main())

"""End-to-end throughput against the machine's physical limit, and per-segment latency.

    python bench/pipeline.py [--segments 48] [--height 720] [--fps 30] [--mode full|adaptive]
        [--pictures ASSETS] [--bitrate BPS] [--frames N]

1. bare decode (the physical limit): the same segments decoded by plain PyAV, one
   process per core, one decoder thread each, nothing else: segments per second.
2. pipeline (backlog): segments published to a local Tansu broker first; the daemon (default
   config: 2 workers, 8 uniformly sampled frames, artifacts + distilled scorers) consumes,
   decodes, scores and publishes a verdict for each (acknowledged by the broker):
   segments per second from the moment it holds its partitions to the last
   acknowledged verdict.
   The ratio pipeline / bare decode is the figure of merit (issue floor 0.7).
   Real-time capacity: renditions of this size and frame rate screened live =
   pipeline segments/s x segment seconds.
3. pipeline (paced): segments published at half the measured pipeline rate; latency per
   segment = verdict time - publish time (p50, p99).
4. `--mode vlm`: full screening with every segment escalated (a hostile worst case, far
   above the 5% budget) and the diagnose role running beside it in the same process, as
   `vqmon run --role all` does: once with the rules diagnosis (answers at once), once
   with an OpenAI-compatible VLM that accepts connections and never answers (timeout 3 s,
   queue 2). The ratio stalled / rules is the figure: a stalled VLM must not slow
   screening; drops are counted by reason.
"""

from __future__ import annotations

import argparse
import io
import json
import multiprocessing
import os
import platform
import socket
import statistics
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import av
from kafka import KafkaConsumer, KafkaProducer
from kafka.structs import TopicPartition
from prometheus_client import CollectorRegistry

from ingest import kafka as kafka_io
from ingest.broker import EmbeddedBroker
from ingest.contract import segment_message
from ingest.synth import EncodeSettings, clip, encode
from monitor.config import Config
from monitor.metrics import Metrics
from monitor.pipeline import Daemon, DiagnoseDaemon
from scorers.distilled import DistilledConfig, Variant
from scorers.vlm.openai_backend import OpenAIConfig

PARTITIONS = 4


def make_segments(
    n_distinct: int,
    height: int,
    fps: int,
    seconds: float,
    pictures: Path | None = None,
    bitrate: int | None = None,
) -> list[bytes]:
    width = height * 16 // 9
    gop = round(fps * seconds)  # one keyframe per segment, and its frame count
    s = EncodeSettings(fps=fps, gop=gop, crf=None if bitrate else 23, bitrate=bitrate)
    if pictures is not None:  # real photographs, filmed by the real-content set's camera
        from scorers.train import realset

        chosen = realset.spread_pictures(pictures, "eval", n_distinct)
        return [encode(realset.film(rgb, name, gop, (width, height)), s) for name, rgb in chosen]
    kinds = ("scene", "texture", "bars", "zoneplate")
    return [
        clip(kinds[i % len(kinds)], width=width, height=height, seconds=seconds, seed=i, settings=s)
        for i in range(n_distinct)
    ]


def _bare_decode(data: bytes) -> float:
    """Decode every frame of one segment; the CPU seconds it took."""
    started = time.process_time()
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.video[0]
        stream.codec_context.thread_count = 1
        for packet in container.demux(stream):
            stream.codec_context.decode(packet)
    return time.process_time() - started


def bare_decode(segments: list[bytes], n: int, processes: int) -> tuple[float, float]:
    """Segments per second of plain PyAV decoding on `processes` processes, one thread each,
    and the CPU milliseconds a segment took."""
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(processes) as pool:
        pool.map(_bare_decode, segments[:processes])  # warm-up (imports)
        started = time.perf_counter()
        cpu = pool.map(_bare_decode, [segments[i % len(segments)] for i in range(n)], chunksize=1)
        return n / (time.perf_counter() - started), 1000 * sum(cpu) / n


def bench_config(
    bootstrap: str,
    workers: int,
    model: Path | None = None,
    distilled: bool = True,
    mode: str = "full",
    variant: Variant = "full",
) -> Config:
    config = Config()
    config.pipeline.screening.mode = mode  # type: ignore[assignment]
    if not distilled:
        config.scorers = [s for s in config.scorers if not isinstance(s, DistilledConfig)]
    for scorer in config.scorers:
        if isinstance(scorer, DistilledConfig):
            scorer.variant = variant
            scorer.model_path = model
    config.kafka.bootstrap_servers = [bootstrap]
    config.kafka.heartbeat_interval_ms = 1000
    config.kafka.session_timeout_ms = 6000
    config.kafka.partitions = PARTITIONS
    config.http.enabled = False
    config.decode.threads = 1
    config.pipeline.decode_workers = workers
    return config


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of one process (Linux /proc), 0 when it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _machine_s() -> dict[str, float]:
    """The machine's idle and steal seconds so far, all cores (Linux /proc/stat): steal is
    time the host gave this virtual machine's cores to someone else."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()
    except OSError:
        return {"idle": 0.0, "steal": 0.0}
    tick = os.sysconf("SC_CLK_TCK")
    return {"idle": (int(fields[4]) + int(fields[5])) / tick, "steal": int(fields[8]) / tick}


def cpu_snapshot(broker_pid: int | None) -> dict[str, float]:
    """CPU seconds so far of this process (the daemon's runtime thread, its Kafka client
    and outputs), of its worker processes (decode + scoring) and of the broker; and the
    machine's idle and steal time."""
    return {
        "main": _cpu_s(os.getpid()),
        "workers": sum(_cpu_s(c.pid) for c in multiprocessing.active_children() if c.pid),
        "broker": _cpu_s(broker_pid) if broker_pid else 0.0,
        **_machine_s(),
    }


def escalate_everything(config: Config, vlm_port: int | None) -> None:
    """Every segment escalated; the diagnose role uses the rules, or a VLM at `vlm_port`."""
    e = config.escalation
    e.audit_fraction = 1.0
    e.audit_budget_share = 1.0
    e.budget_fraction = 1.0
    e.budget_floor = 1_000_000
    e.stream_burst = 1_000_000
    e.stream_rate_per_s = 1_000.0
    config.diagnose.group_id = f"{config.kafka.group_id}-diagnose"
    if vlm_port is not None:
        config.diagnose.backend = OpenAIConfig(
            base_url=f"http://127.0.0.1:{vlm_port}/v1", model="stalled", timeout_s=3, retries=0
        )
        config.diagnose.queue = 2
        config.diagnose.batch_size = 1


def publish(p: KafkaProducer, topic: str, data: bytes, i: int, renditions: int = 4) -> None:
    m = segment_message(data, stream=f"bench{i % renditions}", rendition="main", seq=i)
    p.send(topic, key=m.key, value=m.value, headers=m.headers)


def wait_count(metrics: Metrics, n: int, timeout_s: float = 600) -> None:
    counter = metrics.segments.labels("ok")
    deadline = time.monotonic() + timeout_s
    while counter._value.get() < n:
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {counter._value.get()} of {n} segments screened")
        time.sleep(0.01)


def verdict_latencies(bootstrap: str, topic: str, seqs: set[int]) -> list[float]:
    c = KafkaConsumer(bootstrap_servers=[bootstrap], enable_auto_commit=False)
    tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
    c.assign(tps)
    c.seek_to_beginning(*tps)
    out: dict[int, float] = {}
    deadline = time.monotonic() + 60
    while len(out) < len(seqs) and time.monotonic() < deadline:
        for batch in c.poll(500).values():
            for r in batch:
                v = json.loads(r.value)
                if v["seq"] in seqs:
                    # broker-side time the verdict was appended - producer time of the segment
                    out[v["seq"]] = r.timestamp / 1000 - v["source"]["timestamp_ms"] / 1000
    c.close()
    return sorted(out.values())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--segments", type=int, default=48, help="segments in the burst run")
    ap.add_argument("--paced", type=int, default=24, help="segments in the paced run")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--height", type=int, default=720)
    ap.add_argument("--fps", type=int, default=30)
    ap.add_argument("--seconds", type=float, default=2.0, help="media seconds per segment")
    ap.add_argument(
        "--mode",
        choices=("full", "adaptive", "both", "vlm", "skip"),
        default="both",
        help="skip: full screening decoding every frame, then skipping the unread "
        "non-reference frames (decode.skip_nonref), in one run",
    )
    ap.add_argument("--renditions", type=int, default=4, help="renditions the segments belong to")
    ap.add_argument("--distinct", type=int, default=4, help="distinct encodes reused")
    ap.add_argument("--model", type=Path, help="distilled scorer ONNX (default: the shipped one)")
    ap.add_argument(
        "--variant", choices=("full", "slim"), default="full", help="packaged student to run"
    )
    ap.add_argument(
        "--no-distilled", action="store_true", help="drop the distilled scorer from the chain"
    )
    ap.add_argument(
        "--pictures",
        type=Path,
        metavar="ASSETS",
        help="realset assets folder (vqmon train realset --fetch): segments film --distinct "
        "real pictures (the evaluation split's, every len/n-th) with camera motion, grain "
        "and grades, instead of procedural patterns",
    )
    ap.add_argument(
        "--bitrate",
        type=int,
        help="encode at this bitrate (bit/s, x264 ABR, as a ladder rung) instead of CRF 23",
    )
    ap.add_argument(
        "--frames",
        type=int,
        help="frames sampled per segment for the scorers (decode.sampling.count; default: "
        "the config's); the scorers' accuracy must be measured at the same count",
    )
    args = ap.parse_args()

    segments = make_segments(
        args.distinct, args.height, args.fps, args.seconds, args.pictures, args.bitrate
    )
    mbps = sum(len(d) for d in segments) * 8 / args.seconds / len(segments) / 1e6
    modes = {
        "both": ["full", "adaptive"],
        "vlm": ["vlm-rules", "vlm-stalled"],
        "skip": ["full-every-frame", "full"],
    }.get(args.mode, [args.mode])
    ratios: dict[str, float] = {}
    silent = socket.socket()  # a "VLM" that accepts connections and never answers
    silent.bind(("127.0.0.1", 0))
    silent.listen(64)
    result: dict[str, object] = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, no GPU",
        "segments": f"{args.height}p H.264 (libx264 "
        f"{f'{args.bitrate} bit/s' if args.bitrate else 'crf 23'}, veryfast), {args.seconds} s at "
        f"{args.fps} fps, MPEG-TS, {args.distinct} distinct "
        f"{'filmed real pictures' if args.pictures else 'procedural'} encodes, "
        f"mean {mbps:.2f} Mbit/s",
        "workers": args.workers,
        "frames_sampled": args.frames or Config().decode.sampling.count,
        "student": str(args.model or args.variant),
    }
    with EmbeddedBroker() as broker:
        proc = getattr(broker, "_proc", None)
        args.broker_pid = proc.pid if proc is not None else None
        # The machine's load drifts: bare decode is measured before and after each mode's
        # run, and each ratio uses the mean of the two measurements around it.
        rate, cpu = bare_decode(segments, args.segments, args.workers)
        bare, bare_cpu = [rate], [cpu]
        for mode in modes:
            config = bench_config(
                broker.bootstrap_servers,
                args.workers,
                args.model,
                not args.no_distilled,
                "full" if mode.startswith(("vlm", "full")) else mode,
                args.variant,
            )
            config.decode.skip_nonref = mode != "full-every-frame"
            if args.frames:
                config.decode.sampling.count = args.frames
            config.kafka.topics.segments += f".{mode}"
            config.kafka.topics.verdicts += f".{mode}"
            config.kafka.group_id += f".{mode}"
            if mode.startswith("vlm"):
                config.kafka.topics.escalations += f".{mode}"
                config.kafka.topics.diagnoses += f".{mode}"
                escalate_everything(
                    config, silent.getsockname()[1] if mode == "vlm-stalled" else None
                )
            out = run_daemon(broker.bootstrap_servers, config, segments, args)
            rate, cpu = bare_decode(segments, args.segments, args.workers)
            bare.append(rate)
            bare_cpu.append(cpu)
            decode_fps = (bare[-1] + bare[-2]) / 2
            # CPU a segment costs the bare decode over what it costs the daemon (workers,
            # runtime, broker): time the host takes from this machine moves neither.
            spent = out["cpu_ms_per_segment"]
            daemon_cpu = spent["main"] + spent["workers"] + spent["broker"]  # type: ignore[index]
            out["bare_decode_cpu_ms"] = round((bare_cpu[-1] + bare_cpu[-2]) / 2, 1)
            out["ratio_cpu"] = round(out["bare_decode_cpu_ms"] / daemon_cpu, 3)  # type: ignore[operator]
            out["bare_decode_seg_per_s"] = round(decode_fps, 2)
            out["ratio"] = round(out["pipeline_seg_per_s"] / decode_fps, 3)  # type: ignore[operator]
            out["ratio_steady"] = round(out["steady_seg_per_s"] / decode_fps, 3)  # type: ignore[operator]
            out["live_renditions_real_time"] = round(
                out["pipeline_seg_per_s"] * args.seconds,  # type: ignore[operator]
                1,
            )
            result[mode] = out
            ratios[mode] = float(out["ratio"])  # type: ignore[arg-type]
        result["scorers"] = [s.type for s in config.scorers]
        result["bare_decode_runs_seg_per_s"] = [round(b, 2) for b in bare]
    silent.close()
    if args.mode == "vlm":
        # each arm against the bare decode measured around it: the machine's drift cancels
        result["stalled_over_rules"] = round(ratios["vlm-stalled"] / ratios["vlm-rules"], 3)
    if args.mode == "skip":
        result["skipping_over_every_frame"] = round(ratios["full"] / ratios["full-every-frame"], 3)
    if args.mode == "both":
        full, adaptive = result["full"], result["adaptive"]
        result["adaptive_over_full"] = round(
            adaptive["pipeline_seg_per_s"] / full["pipeline_seg_per_s"],  # type: ignore[index]
            2,
        )
    print(json.dumps(result, indent=2))
    return 0


def run_daemon(
    bootstrap: str, config: Config, segments: list[bytes], args: argparse.Namespace
) -> dict[str, object]:
    # The burst is published before the daemon starts: a backlog, as after an outage or
    # for a consumer that cannot keep up, so the producer's own CPU (a Python client here,
    # a C one at real publishers) is not charged to the daemon.
    producer = KafkaProducer(
        bootstrap_servers=[bootstrap], acks="all", linger_ms=5, max_request_size=16 * 1024 * 1024
    )
    topic = config.kafka.topics.segments
    kafka_io.ensure_topics(config.kafka, [bootstrap], [topic])
    for i in range(args.segments):
        publish(producer, topic, segments[i % len(segments)], i, args.renditions)
    producer.flush()
    metrics = Metrics(CollectorRegistry())
    daemon = Daemon(config, [bootstrap], metrics)
    thread = threading.Thread(target=daemon.run, name="daemon")
    diagnose = None
    if config.escalation.audit_fraction >= 1.0:  # the vlm arms: the diagnose role beside it
        names = [config.kafka.topics.escalations, config.kafka.topics.diagnoses]
        kafka_io.ensure_topics(config.kafka, [bootstrap], names)
        diagnose = DiagnoseDaemon(config, [bootstrap], metrics)
        diagnose_thread = threading.Thread(target=diagnose.run, name="diagnose")
        diagnose_thread.start()
    thread.start()
    while not daemon.health.ready:
        time.sleep(0.01)
    started = time.perf_counter()
    # CPU is counted from the first verdict on: by then every worker has loaded its models.
    wait_count(metrics, 1)
    before = cpu_snapshot(args.broker_pid)
    counted_from = time.perf_counter()
    wait_count(metrics, args.segments)
    done_at = time.perf_counter()
    pipeline_fps = args.segments / (done_at - started)
    after = cpu_snapshot(args.broker_pid)
    n = args.segments - 1
    cpu_ms = {k: round(1000 * (after[k] - before[k]) / n, 1) for k in before}
    wall_ms = 1000 * (done_at - counted_from) * (os.cpu_count() or 1) / n

    period = 1.0 / (pipeline_fps / 2)
    paced = set(range(args.segments, args.segments + args.paced))
    next_at = time.perf_counter()
    for i in sorted(paced):
        publish(producer, topic, segments[i % len(segments)], i, args.renditions)
        producer.flush()
        next_at += period
        time.sleep(max(0.0, next_at - time.perf_counter()))
    wait_count(metrics, args.segments + args.paced)
    producer.close()
    daemon.stop()
    thread.join()
    extra: dict[str, object] = {}
    if diagnose is not None:
        deadline = time.monotonic() + 30  # let the diagnose role account for what it holds
        while time.monotonic() < deadline and diagnose_backlog(metrics) > 0:
            time.sleep(0.2)
        diagnose.stop()
        diagnose_thread.join()
        extra = diagnose_counts(metrics)
    lat = verdict_latencies(bootstrap, config.kafka.topics.verdicts, paced)
    p99 = lat[min(len(lat) - 1, round(0.99 * (len(lat) - 1)))]
    return {
        "pipeline_seg_per_s": round(pipeline_fps, 2),
        # from the first verdict on, when every worker has loaded its models, as the bare
        # decode's rate is measured after its pool's warm-up
        "steady_seg_per_s": round(n / (done_at - counted_from), 2),
        "first_verdict_s": round(counted_from - started, 2),
        # CPU per segment after the first verdict, by process; the machine's idle and steal
        # time (cores the host lent elsewhere); "other" is the rest of the cores' time
        "cpu_ms_per_segment": {**cpu_ms, "other": round(wall_ms - sum(cpu_ms.values()), 1)},
        "screened": dict(daemon.summary.modes),
        "paced_rate_seg_per_s": round(1 / period, 2),
        "latency_p50_s": round(statistics.median(lat), 3),
        "latency_p99_s": round(p99, 3),
        # escalation requests the screen role made (each costs its frames' JPEG encoding)
        "escalations_made": sum(_samples(metrics, "vqmon_escalations_total").values()),
        **extra,
    }


def _samples(metrics: Metrics, name: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for family in metrics.registry.collect():
        for s in family.samples:
            if s.name == name:
                out[",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))] = s.value
    return out


def diagnose_counts(metrics: Metrics) -> dict[str, object]:
    return {
        "escalations": sum(_samples(metrics, "vqmon_escalations_total").values()),
        "diagnoses": _samples(metrics, "vqmon_diagnoses_total"),
        "dropped": _samples(metrics, "vqmon_diagnoses_dropped_total"),
    }


def diagnose_backlog(metrics: Metrics) -> float:
    """Escalations made that the diagnose role has not yet answered or dropped."""
    made = sum(_samples(metrics, "vqmon_escalations_total").values())
    done = sum(_samples(metrics, "vqmon_diagnoses_total").values())
    dropped = sum(_samples(metrics, "vqmon_diagnoses_dropped_total").values())
    return made - done - dropped


if __name__ == "__main__":
    raise SystemExit(main())

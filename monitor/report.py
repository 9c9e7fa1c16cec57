"""`vqmon report`: a self-contained HTML report (and PNGs) from the output topics or from a
JSON-lines file of their messages.

    vqmon report --bootstrap localhost:9092 --out report.html --png-dir report-png
    vqmon report --input messages.jsonl --out report.html

One panel per stream: MOS and mos_low over media time, one line per rendition (the
ladder side by side), flags as coloured ticks in a lane per rendition, incidents as
shaded bands, encoder decisions as markers; below it the tables (renditions, incidents,
decisions) and the diagnoses' text. Plots are inline SVG drawn by matplotlib (text kept
as text), so the page needs nothing from the network and reads on a phone.
`write_report(messages, out_path, png_dir=None)` is the same for code (the demo).
"""

from __future__ import annotations

import argparse
import html
import io
import json
import re
import statistics
import sys
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from monitor.types import EncoderDecision, Incident, MessageError, Observation

DEFAULT_TOPICS = {
    "verdicts": "vqmon.verdicts",
    "incidents": "vqmon.incidents",
    "decisions": "vqmon.encoder-decisions",
    "diagnoses": "vqmon.diagnoses",
    "alerts": "vqmon.alerts",
    "dead_letter": "vqmon.dead-letter",
}
FLAG_COLOURS = {
    "black": "#222222",
    "freeze": "#1f77b4",
    "corruption": "#d62728",
    "blockiness": "#ff7f0e",
    "blur": "#9467bd",
    "noise": "#8c564b",
    "banding": "#e377c2",
}
MARKERS = {
    "raise_bitrate": "^",
    "lower_bitrate": "v",
    "set_preset": "s",
    "enable_filter": "D",
    "drop_rung": "X",
}


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "report",
        help="write an HTML report (with PNGs) from the output topics or a JSON-lines file",
        description="Read verdicts, incidents, encoder decisions and diagnoses from the Kafka "
        "output topics (--bootstrap) or a JSON-lines file (--input: one message per line, "
        'either {"topic": ..., "value": {...}} or the message itself) and write a '
        "self-contained HTML report.",
    )
    p.add_argument("--input", type=Path, help="JSON-lines file of output messages")
    p.add_argument("--bootstrap", help="Kafka brokers, host:port[,host:port]")
    for name, topic in DEFAULT_TOPICS.items():
        p.add_argument(
            f"--{name.replace('_', '-')}-topic",
            dest=f"{name}_topic",
            default=topic,
            help=f"(default {topic})",
        )
    p.add_argument("--out", type=Path, default=Path("report.html"), help="(default report.html)")
    p.add_argument("--png-dir", type=Path, help="also write one PNG per stream here")
    p.add_argument("--title", default="vqmon report")
    p.set_defaults(func=run)


# ---- input -----------------------------------------------------------------------------


def read_jsonl(path: Path) -> Iterator[Any]:
    """Each line a message value, or {"topic": ..., "value": ...}; blank lines skipped."""
    with path.open(encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if line:
                try:
                    yield json.loads(line)
                except ValueError:
                    yield None  # counted as unreadable


def read_topics(bootstrap: list[str], topics: list[str], idle_s: float = 2.0) -> Iterator[Any]:
    """Every message of `topics` from the beginning up to their current end."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, consumer_timeout_ms=1000
    )
    try:
        tps = [
            TopicPartition(t, p)
            for t in topics
            for p in sorted(consumer.partitions_for_topic(t) or ())
        ]
        if not tps:
            return
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        end = consumer.end_offsets(tps)
        last = time.monotonic()
        while any(consumer.position(tp) < end[tp] for tp in tps):
            batches = consumer.poll(timeout_ms=500)
            for batch in batches.values():
                for r in batch:
                    yield {"topic": r.topic, "value": r.value}
            if batches:
                last = time.monotonic()
            elif time.monotonic() - last > idle_s:
                break
    finally:
        consumer.close()


def _value(message: Any) -> dict[str, Any] | None:
    if isinstance(message, bytes | str):
        try:
            message = json.loads(message)
        except (ValueError, RecursionError):  # RecursionError: nested deeper than JSON goes
            return None
    if isinstance(message, Mapping) and "value" in message and "schema" not in message:
        return _value(message["value"])
    return dict(message) if isinstance(message, Mapping) else None


def _check_verdict(v: dict[str, Any]) -> None:
    """What the report reads from a verdict is there, of its type (else ValueError)."""
    Observation.from_verdict_json(v)
    info = v.get("stream_info") or {}
    for key in ("width", "height"):
        if key in info and (not isinstance(info[key], int) or isinstance(info[key], bool)):
            raise ValueError(f"verdict stream_info.{key} is not an integer")


def _check_diagnosis(d: dict[str, Any]) -> None:
    tasks = d.get("tasks") or []
    if not isinstance(tasks, list) or not all(isinstance(t, dict) for t in tasks):
        raise ValueError("diagnosis tasks must be a list of objects")
    if not isinstance(d.get("seq", 0), int) or any(
        not isinstance(t.get("raw_texts") or [], list) for t in tasks
    ):
        raise ValueError("diagnosis seq or raw_texts of the wrong type")


@dataclass
class Collected:
    verdicts: list[dict[str, Any]] = field(default_factory=list)
    incidents: dict[str, Incident] = field(default_factory=dict)
    decisions: list[EncoderDecision] = field(default_factory=list)
    diagnoses: list[dict[str, Any]] = field(default_factory=list)
    alerts: int = 0
    dead_letters: Counter[str] = field(default_factory=Counter)
    unreadable: int = 0

    @classmethod
    def of(cls, messages: Iterable[Any]) -> Collected:
        c = cls()
        verdicts: dict[str, dict[str, Any]] = {}
        for message in messages:
            v = _value(message)
            schema = str(v.get("schema", "")) if v else ""
            try:
                if schema.startswith("vqmon.verdict/") and v is not None:
                    _check_verdict(v)
                    verdicts[str(v["segment_id"])] = v  # a redelivery: the latest wins
                elif schema.startswith("vqmon.incident/") and v is not None:
                    inc = Incident.from_json(v)
                    c.incidents[inc.id] = _merge(c.incidents.get(inc.id), inc)
                elif schema.startswith("vqmon.encoder-decision/") and v is not None:
                    c.decisions.append(EncoderDecision.from_json(v))
                elif schema.startswith("vqmon.diagnosis/") and v is not None:
                    _check_diagnosis(v)
                    c.diagnoses.append(v)
                elif schema.startswith("vqmon.alert/"):
                    c.alerts += 1
                elif schema.startswith("vqmon.dead-letter/") and v is not None:
                    c.dead_letters[str(v.get("reason"))] += 1
                else:
                    c.unreadable += 1
            except (MessageError, KeyError, TypeError, ValueError, ArithmeticError, RecursionError):
                c.unreadable += 1
        c.verdicts = sorted(
            verdicts.values(), key=lambda v: (v["stream"], v["rendition"], v["seq"])
        )
        return c

    @property
    def understood(self) -> int:
        """How many messages were read as vqmon output messages."""
        found = len(self.verdicts) + len(self.incidents) + len(self.decisions)
        return found + len(self.diagnoses) + self.alerts + sum(self.dead_letters.values())

    def streams(self) -> list[str]:
        names = {str(v["stream"]) for v in self.verdicts}
        names |= {i.stream for i in self.incidents.values()}
        return sorted(names)


def _merge(old: Incident | None, new: Incident) -> Incident:
    """The latest event per incident id (events can arrive out of order across partitions)."""
    if old is None or new.updated_at >= old.updated_at or new.state == "resolved":
        return new
    return old


# ---- per-stream model ------------------------------------------------------------------


@dataclass
class StreamView:
    name: str
    verdicts: list[dict[str, Any]]
    incidents: list[Incident]
    decisions: list[EncoderDecision]
    diagnoses: list[dict[str, Any]]
    segment_s: float

    @property
    def renditions(self) -> list[str]:
        """Highest resolution first: the ladder from the top."""
        sizes: dict[str, int] = {}
        for v in self.verdicts:
            info = v.get("stream_info") or {}
            sizes[v["rendition"]] = int(info.get("width", 0)) * int(info.get("height", 0))
        return sorted(sizes, key=lambda r: (-sizes[r], r))

    def t(self, seq: float) -> float:
        return seq * self.segment_s

    def seq_at(self, wall: float | None) -> float | None:
        """The first segment screened at or after wall-clock `wall` (maps resolve times)."""
        if wall is None:
            return None
        later = [v["seq"] for v in self.verdicts if v.get("screened_at", 0) >= wall]
        return float(min(later)) if later else None

    def span(self, inc: Incident) -> tuple[float, float]:
        seqs = [int(s.rsplit("/", 1)[1]) for s in inc.segments if s.rsplit("/", 1)[-1].isdigit()]
        last = max((v["seq"] for v in self.verdicts), default=inc.opened_seq) + 1
        start = min([inc.opened_seq, *seqs])
        end = self.seq_at(inc.resolved_at) if inc.state == "resolved" else last
        end = max(end if end is not None else last, max(seqs, default=start) + 1, start + 1)
        return self.t(start), self.t(end)


def views(c: Collected) -> list[StreamView]:
    out = []
    for name in c.streams():
        vs = [v for v in c.verdicts if v["stream"] == name]
        durations = [
            float(v["stream_info"]["duration_s"])
            for v in vs
            if (v.get("stream_info") or {}).get("duration_s")
        ]
        out.append(
            StreamView(
                name,
                vs,
                sorted(
                    (i for i in c.incidents.values() if i.stream == name),
                    key=lambda i: i.opened_seq,
                ),
                sorted((d for d in c.decisions if d.stream == name), key=lambda d: d.seq),
                [d for d in c.diagnoses if d.get("stream") == name],
                statistics.median(durations) if durations else 2.0,
            )
        )
    return out


# ---- plots -----------------------------------------------------------------------------


def _safe(text: str) -> str:
    """Matplotlib reads $...$ as math: keep user text literal."""
    return text.replace("$", r"\$")


def plot(view: StreamView) -> Any:
    """One figure: MOS / mos_low per rendition, flag lanes, incident bands, decision markers."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 4.8), dpi=100, layout="constrained")
    ax = fig.add_subplot()
    colours = [f"C{i}" for i in range(10)]
    renditions = view.renditions
    for k, inc in enumerate(view.incidents):
        x0, x1 = view.span(inc)
        colour = "#d62728" if inc.level == "critical" else "#e07b00"
        ax.axvspan(x0, x1, color=colour, alpha=0.13, lw=0)
        scope = "all" if inc.scope == "*" else inc.scope
        y = 4.95 - 0.22 * (k % 4)  # incidents opened together get their own label line
        ax.text(x0, y, _safe(f" {inc.kind} ({scope})"), fontsize=8, va="top", color=colour)
    lanes = max(1, len(renditions))
    for i, rendition in enumerate(renditions):
        vs = [v for v in view.verdicts if v["rendition"] == rendition]
        xs = [view.t(v["seq"]) + view.segment_s / 2 for v in vs]
        colour = colours[i % len(colours)]
        ax.plot(xs, [_num(v.get("mos")) for v in vs], "-o", ms=3, lw=1.6, color=colour,
                label=_safe(f"{rendition} MOS"))  # fmt: skip
        ax.plot(xs, [_num(v.get("mos_low")) for v in vs], "--", lw=1, color=colour, alpha=0.7,
                label=_safe(f"{rendition} mos_low"))  # fmt: skip
        lane = (0.01 + i * 0.05 / lanes * 2, 0.01 + (i + 1) * 0.05 / lanes * 2)
        for v in vs:
            for flag in v.get("flags") or ():
                kind = str(flag.get("kind"))
                x = view.t(v["seq"])
                ax.axvspan(x, x + view.segment_s, ymin=lane[0], ymax=lane[1],
                           color=FLAG_COLOURS.get(kind, "#7f7f7f"), lw=0)  # fmt: skip
        mos_at = {v["seq"]: _num(v.get("mos")) for v in vs}
        for d in (d for d in view.decisions if d.rendition == rendition):
            at = mos_at.get(d.seq, float("nan"))
            ax.plot([view.t(d.seq) + view.segment_s / 2], [at if at == at else 1.3],
                    MARKERS.get(d.action, "o"), ms=9, mec="black", mfc=colour,
                    alpha=0.5 if d.dry_run else 1.0)  # fmt: skip
    for kind in sorted({str(f.get("kind")) for v in view.verdicts for f in v.get("flags") or ()}):
        ax.plot([], [], lw=6, color=FLAG_COLOURS.get(kind, "#7f7f7f"), label=_safe(f"flag: {kind}"))
    for action in sorted({d.action for d in view.decisions}):
        ax.plot([], [], MARKERS.get(action, "o"), mec="black", mfc="white", label=action)
    ax.set_ylim(1, 5)
    ax.set_xlabel("media time (s)")
    ax.set_ylabel("MOS (1-5)")
    ax.set_title(_safe(view.name), loc="left", fontweight="bold")
    ax.grid(alpha=0.3)
    fig.legend(fontsize=8, loc="outside lower center", ncols=4, frameon=False)
    return fig


def _num(x: Any) -> float:
    return float(x) if isinstance(x, int | float) else float("nan")


def svg_of(fig: Any) -> str:
    """Inline SVG, text kept as text, sized by CSS (width 100%) rather than in points."""
    import matplotlib

    buf = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "none"}):
        fig.savefig(buf, format="svg")
    text = buf.getvalue()
    text = text[text.index("<svg") :]
    text = re.sub(r"<metadata>.*?</metadata>", "", text, count=1, flags=re.S)  # date, creator
    return re.sub(
        r'<svg([^>]*?) width="[^"]*" height="[^"]*"',
        r'<svg\1 class="plot" preserveAspectRatio="xMinYMin meet"',
        text,
        count=1,
    )


# ---- HTML ------------------------------------------------------------------------------

CSS = """
:root { color-scheme: light; }
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 0;
       color: #1b1b1b; background: #fafafa; }
main { max-width: 1100px; margin: 0 auto; padding: 12px; }
h1 { font-size: 1.4em; margin: .4em 0; } h2 { font-size: 1.2em; margin: 1.2em 0 .4em; }
section.stream { background: #fff; border: 1px solid #e3e3e3; border-radius: 8px;
                 padding: 10px; margin: 14px 0; }
svg.plot { width: 100%; min-width: 560px; height: auto; display: block; }
.scroll { overflow-x: auto; -webkit-overflow-scrolling: touch; }
table { border-collapse: collapse; font-size: .9em; min-width: 100%; }
th, td { text-align: left; padding: 4px 8px; border-bottom: 1px solid #eee; white-space: nowrap; }
td.wrap { white-space: normal; min-width: 14em; }
.muted { color: #666; } .crit { color: #b00020; } .warn { color: #a65e00; }
details { margin: 4px 0; } pre { white-space: pre-wrap; word-break: break-word; font-size: .85em;
        background: #f4f4f4; padding: 6px; border-radius: 4px; }
@media (max-width: 600px) { body { font-size: 14px; } main { padding: 6px; } }
"""


def _e(x: Any) -> str:
    return html.escape(str(x), quote=True)


def _fmt(x: Any, digits: int = 2) -> str:
    return f"{x:.{digits}f}" if isinstance(x, int | float) else "–"


def _table(head: list[str], rows: list[list[str]], wrap: int | None = None) -> str:
    """`rows` cells are already HTML; column `wrap` may wrap."""
    th = "".join(f"<th>{_e(h)}</th>" for h in head)
    body = "".join(
        "<tr>"
        + "".join(
            f'<td class="wrap">{c}</td>' if i == wrap else f"<td>{c}</td>" for i, c in enumerate(r)
        )
        + "</tr>"
        for r in rows
    )
    table = f"<table><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>"
    return f'<div class="scroll">{table}</div>'


def _renditions_table(view: StreamView) -> str:
    rows = []
    for r in view.renditions:
        vs = [v for v in view.verdicts if v["rendition"] == r]
        mos = [float(v["mos"]) for v in vs if isinstance(v.get("mos"), int | float)]
        low = [float(v["mos_low"]) for v in vs if isinstance(v.get("mos_low"), int | float)]
        flags = Counter(str(f.get("kind")) for v in vs for f in v.get("flags") or ())
        info = vs[-1].get("stream_info") or {}
        rows.append(
            [
                _e(r),
                _e(f"{info.get('width', '?')}x{info.get('height', '?')}"),
                _e(len(vs)),
                _fmt(statistics.fmean(mos) if mos else None),
                _fmt(min(low) if low else None),
                _e(", ".join(f"{k} x{n}" for k, n in sorted(flags.items())) or "none"),
            ]
        )
    return _table(["rendition", "size", "segments", "mean MOS", "worst mos_low", "flags"], rows, 5)


def _incidents_table(view: StreamView) -> str:
    if not view.incidents:
        return '<p class="muted">No incidents.</p>'
    rows = []
    for i in view.incidents:
        cls = "crit" if i.level == "critical" else "warn"
        rows.append(
            [
                f'<span class="{cls}">{_e(i.level)}</span>',
                _e(i.kind),
                _e("all renditions" if i.scope == "*" else i.scope),
                _e(i.localisation),
                _e(i.opened_seq),
                _e(i.state),
                _fmt(i.severity),
                _e(i.id),
            ]
        )
    return _table(
        ["level", "kind", "scope", "localisation", "opened at seq", "state", "severity", "id"],
        rows,
    )


def _decisions_table(view: StreamView) -> str:
    if not view.decisions:
        return ""
    rows = [
        [
            _e(d.seq),
            _e(d.rendition),
            _e(d.action) + (' <span class="muted">(dry run)</span>' if d.dry_run else ""),
            _e(", ".join(f"{k}={v}" for k, v in d.params.to_json().items())),
            _e(d.reason),
        ]
        for d in view.decisions
    ]
    return "<h3>Encoder decisions</h3>" + _table(
        ["seq", "rendition", "action", "parameters", "reason"], rows, 4
    )


def _diagnoses_html(view: StreamView) -> str:
    if not view.diagnoses:
        return ""
    items = []
    for d in sorted(view.diagnoses, key=lambda d: (d.get("seq", 0), str(d.get("rendition")))):
        parts = []
        for task in d.get("tasks") or ():
            bits = [f"{k}={task[k]}" for k in ("degradation", "severity") if task.get(k)]
            if isinstance(task.get("score_mean"), int | float):
                bits.append(f"score {task['score_mean']:.2f}")
            if bits:
                parts.append(f"{task.get('task')}: " + ", ".join(bits))
        summary = "; ".join(parts) or "no task parsed"
        texts = [t for task in d.get("tasks") or () for t in (task.get("raw_texts") or ())[:1]]
        raw = "".join(f"<pre>{_e(str(t)[:2000])}</pre>" for t in texts)
        items.append(
            f"<details><summary><b>{_e(d.get('segment_id'))}</b> · {_e(d.get('model'))} · "
            f'{_e(summary)} <span class="muted">({_e(d.get("escalation_reason", ""))})</span>'
            f"</summary>{raw}</details>"
        )
    return "<h3>Diagnoses</h3>" + "".join(items)


def render_html(c: Collected, stream_views: list[StreamView], svgs: list[str], title: str) -> str:
    counts = (
        f"{len(c.verdicts)} verdicts, {len(c.incidents)} incidents, {len(c.decisions)} encoder "
        f"decisions, {len(c.diagnoses)} diagnoses, {c.alerts} alerts"
    )
    dead = ", ".join(f"{k} x{n}" for k, n in sorted(c.dead_letters.items()))
    notes = [counts]
    if dead:
        notes.append(f"dead letters: {dead}")
    if c.unreadable:
        notes.append(f"{c.unreadable} messages not understood (skipped)")
    sections = []
    for view, svg in zip(stream_views, svgs, strict=True):
        sections.append(
            f'<section class="stream" id="stream-{_e(view.name)}"><h2>{_e(view.name)}</h2>'
            f'<div class="scroll">{svg}</div>{_renditions_table(view)}'
            f"<h3>Incidents</h3>{_incidents_table(view)}"
            f"{_decisions_table(view)}{_diagnoses_html(view)}</section>"
        )
    if not sections:
        sections.append('<p class="muted">No verdicts or incidents in the input.</p>')
    legend = (
        "Lines: MOS (solid) and mos_low (dashed) per rendition, 1-5, over media time. "
        "Coloured ticks at the bottom: flags, one lane per rendition. Shaded bands: incidents "
        "(red critical, orange warning). Markers: encoder decisions (faded: dry run)."
    )
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e(title)}</title><style>{CSS}</style></head><body><main>"
        f'<h1>{_e(title)}</h1><p class="muted">{_e(" · ".join(notes))}</p>'
        f'<p class="muted">{_e(legend)}</p>{"".join(sections)}'
        f'<p class="muted">Generated {_e(time.strftime("%Y-%m-%d %H:%M:%S %Z"))} by vqmon.</p>'
        "</main></body></html>\n"
    )


def write_report(
    messages: Iterable[Any],
    out_path: Path,
    png_dir: Path | None = None,
    *,
    title: str = "vqmon report",
) -> Path:
    """Write the HTML report of `messages` (output message values: dicts, JSON text or bytes,
    or {"topic", "value"} wrappers) to `out_path`, and one PNG per stream into `png_dir`."""
    return write_collected(Collected.of(messages), out_path, png_dir, title=title)


def write_collected(
    c: Collected, out_path: Path, png_dir: Path | None = None, *, title: str = "vqmon report"
) -> Path:
    """write_report of messages already collected."""
    stream_views = views(c)
    svgs = []
    if png_dir is not None:
        png_dir.mkdir(parents=True, exist_ok=True)
    for i, view in enumerate(stream_views):
        fig = plot(view)
        svgs.append(svg_of(fig))
        if png_dir is not None:
            safe = re.sub(r"[^A-Za-z0-9_.-]", "_", view.name)
            fig.savefig(png_dir / f"{i:02d}-{safe}.png", dpi=110)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(render_html(c, stream_views, svgs, title), encoding="utf-8")
    return out_path


def run(args: argparse.Namespace) -> int:
    if (args.input is None) == (args.bootstrap is None):
        print("vqmon report: give exactly one of --input FILE or --bootstrap HOST:PORT",
              file=sys.stderr)  # fmt: skip
        return 2
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        print("vqmon report: needs matplotlib: pip install 'vqmon[report]'", file=sys.stderr)
        return 2
    if args.input is not None:
        if not args.input.is_file():
            print(f"vqmon report: {args.input}: no such file", file=sys.stderr)
            return 2
        messages: Iterable[Any] = read_jsonl(args.input)
    else:
        servers = [s.strip() for s in args.bootstrap.split(",") if s.strip()]
        topics = [getattr(args, f"{n}_topic") for n in DEFAULT_TOPICS]
        try:
            messages = list(read_topics(servers, topics))
        except Exception as exc:  # kafka-python: no brokers, auth, ...
            print(f"vqmon report: cannot read {args.bootstrap}: {exc}", file=sys.stderr)
            return 1
    c = Collected.of(messages)
    where = args.input or args.bootstrap
    if not c.understood and args.input is None:
        print(
            f"vqmon report: {where}: the output topics hold no vqmon message yet "
            f"({c.unreadable} not understood); check --bootstrap and the --*-topic names "
            "(the daemon's kafka.topics); no report written",
            file=sys.stderr,
        )
        return 1
    if not c.understood:
        held = f"none of its {c.unreadable} messages is a" if c.unreadable else "it holds no"
        print(
            f"vqmon report: {where}: {held} vqmon output message (one JSON value per line: "
            'a verdict, incident, encoder decision, diagnosis, alert or dead letter, or {"topic": '
            '..., "value": ...} around one); no report written',
            file=sys.stderr,
        )
        return 1
    if c.unreadable:
        print(f"vqmon report: {where}: {c.unreadable} messages not understood (skipped)",
              file=sys.stderr)  # fmt: skip
    out = write_collected(c, args.out, args.png_dir, title=args.title)
    print(f"vqmon report: wrote {out}" + (f" and PNGs in {args.png_dir}" if args.png_dir else ""))
    return 0

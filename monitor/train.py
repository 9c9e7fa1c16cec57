"""`vqmon train ...`: build a teacher-labelled corpus, train and export the student.

Needs the train extra (`pip install vqmon[train]`): torch, onnx, scikit-image, scipy,
imageio-ffmpeg, matplotlib. Imported lazily so the daemon never loads torch.
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
from pathlib import Path
from typing import Any


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "train",
        help="build a training corpus or train the distilled scorer",
        description="Train the distilled no-reference scorer (needs the 'train' extra).",
    )
    tsub = p.add_subparsers(dest="train_command", metavar="STEP", required=True)

    c = tsub.add_parser(
        "corpus",
        help="render content, impair it, label it with a full-reference teacher",
        description="Build a corpus directory: one .npz of labelled fragment mosaics per source "
        "(resumable: existing sources are skipped).",
    )
    c.add_argument("--out", type=Path, default=Path("out/corpus/train"), help="corpus directory")
    c.add_argument("--split", choices=("train", "bench"), default="train")
    c.add_argument("--teacher", choices=("auto", "vmaf", "ssim"), default="auto")
    c.add_argument("--sources", nargs="*", help="source names (default: the split's list)")
    c.add_argument("--frames-per-variant", type=int, default=4)
    c.add_argument("--workers", type=int, default=1, help="processes (one source each)")
    c.add_argument("--seed", type=int, default=0)
    c.set_defaults(func=run_corpus)

    r = tsub.add_parser(
        "realset",
        help="build a real-content segment set (Debian wallpapers filmed by a virtual camera)",
        description="Film pictures from Debian's wallpaper packages into 1280x720 clips, make "
        "the versions a stream goes through (ladder rungs at their coded size, compression, "
        "scaling, blur, noise, banding, packet loss), and label each by VMAF as displayed. "
        "The eval split is mate-backgrounds and nothing else; train is every other package "
        "(resumable: finished sources are kept).",
    )
    r.add_argument("--assets", type=Path, default=Path("out/assets"), help="unpacked packages")
    r.add_argument("--out", type=Path, required=True, help="set directory")
    r.add_argument("--split", choices=("train", "eval"), required=True)
    r.add_argument("--fetch", action="store_true", help="download the packages first (apt)")
    r.add_argument(
        "--footage",
        type=Path,
        help="a folder of pristine video masters (.mp4, .mov, .mkv, .ts, ...) to use as the "
        "sources instead of the packages' pictures: a clip is cut from each, then versioned "
        "and labelled by VMAF as the pictures are (package = each master's first folder)",
    )
    r.add_argument("--jobs", type=int, default=1, help="processes (one source each)")
    r.add_argument("--limit", type=int, help="only the first N sources (a quick look)")
    r.add_argument(
        "--shard", default="0/1", help="K/N: build every N-th source from the K-th (0-based)"
    )
    r.set_defaults(func=run_realset)

    f = tsub.add_parser(
        "fusion",
        help="train the hybrid score's fusion head on a real-content training set",
        description="Decode every segment of a `train realset --split train` set through the "
        "runtime path, judge it with the student as displayed, read its bitstream features, "
        "and fit the fusion head (scorers.hybrid) to VMAF as displayed. Writes the JSON the "
        "distilled scorer loads as fusion_path.",
    )
    f.add_argument(
        "--train",
        type=Path,
        required=True,
        help="training set directory, or a labels CSV beside its segments (train vlmlabel's)",
    )
    f.add_argument("--out", type=Path, required=True, help="fusion JSON to write")
    f.add_argument("--model", type=Path, help="student ONNX (default: the shipped one)")
    f.add_argument("--members", type=int, default=5)
    f.add_argument("--hidden", type=int, default=16)
    f.add_argument("--epochs", type=int, default=400)
    f.add_argument("--seed", type=int, default=0)
    f.add_argument("--version", default="1.0")
    f.add_argument(
        "--monotone",
        action="store_true",
        help="constrain the head to be monotone in the student MOS (up), the quantiser and "
        "the upscale (down)",
    )
    f.add_argument(
        "--ignore",
        default="",
        help="comma-separated features the head may not use (e.g. detail,motion,luma)",
    )
    f.add_argument("--jobs", type=int, default=1, help="processes extracting features")
    f.add_argument(
        "--cv",
        action="store_true",
        help="also print a cross-validation on the training set (see --cv-by)",
    )
    f.add_argument(
        "--cv-by",
        choices=("source", "package"),
        default="package",
        help="folds of the cross-validation: one picture package per fold (default; the "
        "eval split is a package never trained on) or 5 folds of whole sources",
    )
    f.set_defaults(func=run_fusion)

    d = tsub.add_parser(
        "distill",
        help="train the student on a corpus and export it to ONNX",
        description="Train (deterministic given --seed), write report.json, loss.png, "
        "student.pt and student.onnx into --out; check ONNX Runtime against torch.",
    )
    d.add_argument("--corpus", type=Path, default=Path("out/corpus/train"))
    d.add_argument("--out", type=Path, default=Path("out/distill"))
    d.add_argument("--epochs", type=int, default=16)
    d.add_argument("--batch-size", type=int, default=64)
    d.add_argument("--lr", type=float, default=2e-3)
    d.add_argument("--weight-decay", type=float, default=0.05, help="AdamW decay of weights")
    d.add_argument(
        "--dropout", type=float, default=0.3, help="projection-MLP dropout while training"
    )
    d.add_argument("--seed", type=int, default=0)
    d.add_argument(
        "--split-seed",
        type=int,
        help="seed of the held-out split (default: --seed); give members trained apart "
        "for `train ensemble` the same one",
    )
    d.add_argument(
        "--holdout",
        type=float,
        default=0.15,
        help="fraction of each content family's sources held out whole for the report's "
        "held-out metrics (0: train on all, e.g. for the shipped model)",
    )
    d.add_argument("--threads", type=int, default=2, help="torch CPU threads (per member)")
    d.add_argument(
        "--members",
        type=int,
        default=1,
        help="students to train (seeds --seed, --seed+1, ...) and export as one averaging "
        "ensemble; the shipped model is 2",
    )
    d.add_argument(
        "--jobs", type=int, default=1, help="members trained at once, each in its own process"
    )
    d.add_argument("--max-steps", type=int, help="stop after this many steps (smoke runs)")
    d.add_argument("--version", default="1.0", help="model version written into the ONNX file")
    d.add_argument("--no-progress", action="store_true")
    d.set_defaults(func=run_distill)

    e = tsub.add_parser(
        "ensemble",
        help="join students trained apart (train distill --seed N) into one ONNX model",
        description="Load the members' student.pt, evaluate the ensemble on their shared "
        "held-out split, write report.json and student.onnx into --out. `train distill "
        "--members N` does the same after training the members itself.",
    )
    e.add_argument("members", type=Path, nargs="+", help="train distill output directories")
    e.add_argument("--corpus", type=Path, default=Path("out/corpus/train"))
    e.add_argument("--out", type=Path, default=Path("out/ensemble"))
    e.add_argument("--version", default="1.0", help="model version written into the ONNX file")
    e.set_defaults(func=run_ensemble)

    s = tsub.add_parser(
        "slim",
        help="distil the shipped student into one CNN without the statistics branch",
        description="Build the runtime's mosaics of a real-content training set (and of "
        "procedural segments), label each with the teacher model's outputs, train a slim "
        "student warm-started from one of its members, and export it. Several times cheaper "
        "per segment than the teacher; report.json gives its agreement with the teacher on "
        "held-out sources.",
    )
    s.add_argument(
        "--train",
        type=Path,
        required=True,
        help="realset --split train directory, or a labels CSV (train vlmlabel's)",
    )
    s.add_argument("--teacher", type=Path, help="ONNX model to slim (default: the shipped one)")
    s.add_argument("--out", type=Path, default=Path("out/slim"))
    s.add_argument("--synthetic", type=int, default=600, help="procedural segments to add")
    s.add_argument("--epochs", type=int, default=8)
    s.add_argument("--threads", type=int, default=1)
    s.add_argument("--workers", type=int, default=2, help="processes building the mosaics")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--version", default="3.0", help="model version written into the ONNX file")
    s.add_argument(
        "--targets",
        choices=("teacher", "labels"),
        default="teacher",
        help="labels: real segments learn their own VMAF-as-displayed MOS from labels.csv "
        "(procedural ones keep the teacher's); teacher: every mosaic learns the teacher's MOS",
    )
    s.add_argument(
        "--group", type=int, default=0, help="mosaics per source in a batch (0: uniform batches)"
    )
    s.add_argument(
        "--within-rank", type=float, default=0.0, help="weight of the within-source rank term"
    )
    s.add_argument("--lr", type=float, default=1e-3)
    s.set_defaults(func=run_slim)

    v = tsub.add_parser(
        "vlmlabel",
        help="label a segment set with the VLM (no reference needed: any real footage)",
        description="Score every segment of a set with the VLM of the config's `diagnose` "
        "section (transformers weights or an OpenAI-compatible server): a few frames of "
        "each, shown as displayed, K samples each. Writes a labels.csv that `train fusion "
        "--train` and `train slim --targets labels` read; a segment whose texts do not parse "
        "is written without a score and with the reason. Resumes an interrupted run.",
    )
    v.add_argument(
        "set", type=Path, help="a realset directory (its labels.csv) or any folder of .ts/.mp4"
    )
    v.add_argument("--config", type=Path, required=True, help="vqmon config naming the VLM")
    v.add_argument(
        "--out",
        type=Path,
        help="labels CSV to write, resumed if it exists (default: SET/labels-vlm.csv); its "
        "paths are relative to its own folder, as the trainers read them",
    )
    v.add_argument("--pictures", type=positive, default=3, help="frames scored per segment")
    v.add_argument("--batch", type=positive, default=4, help="segments per diagnose call")
    v.add_argument("--max-side", type=positive, default=768, help="longer side of each picture")
    v.add_argument(
        "--display", help="judge every segment at WxH (default: each row's display, else coded)"
    )
    v.add_argument("--limit", type=positive, help="only the first N segments (a quick look)")
    v.add_argument(
        "--retry-failed",
        action="store_true",
        help="on resume, label again the rows written without a parsed score (worth it with "
        "a sampling teacher; a greedy one answers the same)",
    )
    v.set_defaults(func=run_vlmlabel)

    x = tsub.add_parser(
        "reexport",
        help="write a trained ONNX student again through the current graph",
        description="Load the weights of an exported student (or ensemble) back into torch "
        "and export them through this version's graph: the same model, computed more "
        "cheaply. Prints the largest output differences from the source file on mosaics of "
        "procedural segments.",
    )
    x.add_argument("--model", type=Path, help="ONNX student (default: the shipped one)")
    x.add_argument("--out", type=Path, required=True, help="ONNX file to write")
    x.set_defaults(func=run_reexport)


def positive(text: str) -> int:
    """An argparse type: a whole number of at least 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of at least 1")
    return value


def labels_of(given: Path) -> Path:
    """A set directory means its labels.csv; a file is a labels CSV itself (`vlmlabel`'s)."""
    return given if given.is_file() else given / "labels.csv"


def run_vlmlabel(args: argparse.Namespace) -> int:
    from ingest.contract import parse_display
    from ingest.types import IngestError
    from monitor.config import ConfigError, load_config
    from scorers.train import vlmlabel
    from scorers.vlm.diagnoser import Diagnoser
    from scorers.vlm.rules import RulesConfig
    from scorers.vlm.types import VLMError

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        config = load_config(args.config)
        display = parse_display(args.display, "--display") if args.display else None
    except (ConfigError, IngestError) as exc:
        print(f"vqmon train vlmlabel: {exc}", file=sys.stderr)
        return 2
    if isinstance(config.diagnose.backend, RulesConfig):
        print(
            f"vqmon train vlmlabel: {args.config} names no VLM (diagnose.backend is 'rules', "
            "which reads the screen's own outputs and cannot teach it); set diagnose.backend "
            "to 'transformers' with a local model_path, or 'openai' with a server's base_url",
            file=sys.stderr,
        )
        return 2
    if not args.set.is_dir():
        print(f"vqmon train vlmlabel: {args.set} is not a directory", file=sys.stderr)
        return 2
    out = args.out or args.set / "labels-vlm.csv"
    try:
        rows = vlmlabel.read_rows(args.set)[: args.limit]
        vlmlabel.check_output(args.set, out)
    except vlmlabel.LabelError as exc:
        print(f"vqmon train vlmlabel: {exc}", file=sys.stderr)
        return 2
    if not rows:
        listed = (args.set / "labels.csv").is_file()
        what = "its labels.csv lists none" if listed else "no labels.csv and no .ts/.mp4 below it"
        print(f"vqmon train vlmlabel: no segment to label in {args.set}: {what}", file=sys.stderr)
        return 2
    scoring = config.diagnose.model_copy(update={"tasks": ["score"]})
    cfg = vlmlabel.LabelConfig(
        pictures=args.pictures,
        max_side=args.max_side,
        batch=args.batch,
        display=display,
        retry_failed=args.retry_failed,
    )
    try:
        diagnoser = Diagnoser(scoring)
    except (VLMError, OSError) as exc:
        print(f"vqmon train vlmlabel: cannot load the VLM: {exc}", file=sys.stderr)
        return 2
    try:
        summary = vlmlabel.label(args.set, rows, out, diagnoser, cfg, config.decode)
    except VLMError as exc:
        print(
            f"vqmon train vlmlabel: the VLM failed: {exc}; the rows made so far are in "
            f"{out}, run the same command again to resume",
            file=sys.stderr,
        )
        return 1
    finally:
        diagnoser.close()
    print(json.dumps(vars(summary), indent=2))
    if not (summary.labelled or summary.failed or summary.kept):
        print(f"vqmon train vlmlabel: no segment of {args.set} decoded", file=sys.stderr)
        return 1
    return 0


def run_slim(args: argparse.Namespace) -> int:
    import numpy as np

    from scorers.distilled import default_model_path
    from scorers.train import slim
    from scorers.train.export import compare, export

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    labels = labels_of(args.train)
    teacher = args.teacher or default_model_path()
    for path, how in (
        (labels, "build it with `vqmon train realset --split train`"),
        (teacher, "pass --teacher PATH to an ONNX student"),
    ):
        if not path.is_file():
            print(f"vqmon train slim: {path} not found; {how}", file=sys.stderr)
            return 2
    data_dir = args.out / "data"
    if (data_dir / "mos.npy").is_file():
        data = slim.SlimData.load(data_dir)
    else:
        jobs = slim.real_jobs(labels, seed=args.seed)
        jobs += slim.synthetic_jobs(args.synthetic, seed=args.seed)
        data = slim.build(jobs, teacher, data_dir, workers=args.workers)
    model = slim.warm_start(teacher)
    cfg = slim.SlimConfig(
        epochs=args.epochs,
        threads=args.threads,
        seed=args.seed,
        lr=args.lr,
        targets=args.targets,
        group=args.group,
        within_rank_weight=args.within_rank,
    )
    report = slim.train(model, data, args.out, cfg)
    onnx_path = export(
        model,
        args.out / "student.onnx",
        version=args.version,
        extra_metadata={"teacher": f"{teacher.name} (slimmed: vqmon train slim)"},
        fp16_weights=True,
    )
    report["onnx_vs_torch_max_abs_diff"] = compare(
        model, onnx_path, np.ascontiguousarray(data.mosaic[:16])
    )
    (args.out / "report.json").write_text(json.dumps(report, indent=2))
    last = report["history"][-1] if report["history"] else report["heldout_before"]
    print(
        f"{onnx_path}: {report['steps']} steps in {report['seconds']:.0f} s; held-out sources "
        f"agree with the teacher at SRCC {last['srcc']:.3f}, MAE {last['mae']:.3f}, "
        f"class {last['class_agreement']:.3f}"
    )
    return 0


def run_reexport(args: argparse.Namespace) -> int:
    import numpy as np

    from scorers import fragments
    from scorers.distilled import default_model_path
    from scorers.train.corpus import decode_all
    from scorers.train.export import reexport
    from scorers.train.slim import _synthetic_segment

    src = args.model or default_model_path()
    if not src.is_file():
        print(f"vqmon train reexport: {src} not found", file=sys.stderr)
        return 2
    if args.out.resolve() == src.resolve():
        print("vqmon train reexport: --out must differ from the source file", file=sys.stderr)
        return 2
    frames = []
    for k, spec in enumerate(("scene", "texture", "zoneplate", "bars")):
        segment = _synthetic_segment(f"synth:{spec}:640x360:crf:0.5:{k}", k)
        frames += decode_all(segment)[::15]
    mosaics = fragments.sample_batch([np.ascontiguousarray(f) for f in frames])
    diff = reexport(src, args.out, mosaics)
    print(json.dumps({"wrote": str(args.out), "mosaics": len(mosaics), **diff}, indent=2))
    return 0


def run_corpus(args: argparse.Namespace) -> int:
    from scorers.train.corpus import build

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    lines = build(
        args.out,
        split=args.split,
        sources=args.sources or None,
        teacher=args.teacher,
        seed=args.seed,
        workers=args.workers,
        frames_per_variant=args.frames_per_variant,
    )
    failed = [line for line in lines if "FAILED" in line]
    print(f"corpus {args.out}: {len(lines) - len(failed)} sources ok, {len(failed)} failed")
    for line in failed:
        print(line, file=sys.stderr)
    return 1 if failed else 0


def run_realset(args: argparse.Namespace) -> int:
    from scorers.train import realset

    try:
        if args.fetch and not args.footage:
            realset.fetch_assets(args.assets, args.split)
        k, _, n = args.shard.partition("/")
        shard = (int(k), int(n or 1))
        assets = args.footage or args.assets
        footage = args.footage is not None
        path = realset.build(assets, args.out, args.split, args.jobs, args.limit, shard, footage)
    except (OSError, ValueError, subprocess.CalledProcessError) as exc:
        print(f"vqmon train realset: {exc}", file=sys.stderr)
        return 2
    print(f"{path}: {sum(1 for _ in path.open()) - 1} labelled segments")
    return 0


def run_fusion(args: argparse.Namespace) -> int:
    from scorers.train import fusion

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    labels = labels_of(args.train)
    if not labels.is_file():
        print(
            f"vqmon train fusion: {labels} not found; build it with `vqmon train realset "
            "--split train`",
            file=sys.stderr,
        )
        return 2
    from scorers import hybrid

    ignore = tuple(n for n in args.ignore.split(",") if n)
    unknown = [n for n in ignore if n not in hybrid.FEATURES]
    if unknown:
        print(
            f"vqmon train fusion: --ignore {','.join(unknown)}: not a feature of the head; "
            f"choose from {','.join(hybrid.FEATURES)}",
            file=sys.stderr,
        )
        return 2
    data = fusion.extract(labels, args.model, jobs=args.jobs)
    if args.cv and args.cv_by == "package" and data.package is None:
        print(
            f"vqmon train fusion: {labels} names no package (built before the column); "
            "rebuild it with `vqmon train realset --split train` (it resumes) or pass "
            "--cv-by source",
            file=sys.stderr,
        )
        return 2
    cfg = fusion.FusionConfig(
        hidden=args.hidden,
        members=args.members,
        epochs=args.epochs,
        seed=args.seed,
        monotone=args.monotone,
        ignore=ignore,
    )
    spec = fusion.train(data, cfg, args.version)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(spec))
    fit = fusion.report(list(fusion.predict(spec, data)), data)
    print(
        f"{args.out}: fitted on {fit['segments']} segments of {fit['sources']} sources; "
        f"training-set SRCC {fit['srcc']:.3f} (says little: held-out figures come from "
        "bench/realquality.py)"
    )
    if args.cv:
        cv = fusion.cross_validate(data, cfg, by=args.cv_by)
        print(json.dumps(cv, indent=1))
    return 0


def run_distill(args: argparse.Namespace) -> int:
    from scorers.train.corpus import corpus_files, load
    from scorers.train.distill import (
        TrainConfig,
        assemble,
        load_checkpoint,
        train,
        train_members,
    )
    from scorers.train.model import Ensemble, Student

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.members < 1 or args.jobs < 1:
        print("vqmon train distill: --members and --jobs must be at least 1", file=sys.stderr)
        return 2
    cfg = TrainConfig(
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        weight_decay=args.weight_decay,
        dropout=args.dropout,
        seed=args.seed,
        split_seed=args.split_seed,
        val_fraction=args.holdout,
        threads=args.threads,
        max_steps=args.max_steps,
    )
    try:
        corpus_files(args.corpus)  # before training members that would each fail on it
        # Members train in their own processes, each loading the corpus itself; this
        # process loads it once, after them, to evaluate the ensemble.
        dirs = (
            train_members(
                args.corpus,
                args.out,
                cfg,
                args.members,
                jobs=args.jobs,
                progress=not args.no_progress,
            )
            if args.members > 1
            else []
        )
        data = load(args.corpus)
    except FileNotFoundError as exc:
        print(f"vqmon train distill: {exc}", file=sys.stderr)
        return 2
    model: Student | Ensemble
    if dirs:
        model, report = assemble(dirs, data, args.out)
    else:
        report = train(data, args.out, cfg, progress=not args.no_progress)
        model = load_checkpoint(args.out / "student.pt")
    return _export(model, report, args, data)


def run_ensemble(args: argparse.Namespace) -> int:
    from scorers.train.corpus import load
    from scorers.train.distill import assemble

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    missing = [str(d) for d in args.members if not (d / "student.pt").is_file()]
    if missing:
        print(
            f"vqmon train ensemble: no student.pt in {', '.join(missing)}; give the --out "
            "directories of `vqmon train distill` runs",
            file=sys.stderr,
        )
        return 2
    try:
        data = load(args.corpus)
        model, report = assemble(list(args.members), data, args.out)
    except (FileNotFoundError, ValueError) as exc:
        print(f"vqmon train ensemble: {exc}", file=sys.stderr)
        return 2
    except KeyError as exc:
        print(f"vqmon train ensemble: a member's report.json lacks {exc}", file=sys.stderr)
        return 2
    return _export(model, report, args, data)


def _export(model: Any, report: dict[str, Any], args: argparse.Namespace, data: Any) -> int:
    """Export to out/student.onnx (float16-stored weights), check it against torch, print."""
    from scorers.train.export import compare, export

    onnx_path = export(
        model,
        args.out / "student.onnx",
        version=args.version,
        extra_metadata={"teacher": str(_teacher_name(args.corpus))},
        fp16_weights=True,
    )
    report["onnx_vs_torch_max_abs_diff"] = compare(model, onnx_path, data.mosaic[:16])
    (args.out / "report.json").write_text(json.dumps(report, indent=2))
    print(_summary(report))
    return 0


def _teacher_name(corpus: Path) -> str:
    import numpy as np

    first = next(iter(sorted(corpus.glob("*.npz"))), None)
    return str(np.load(first)["teacher"]) if first else "unknown"


def _summary(report: dict[str, Any]) -> str:
    lines = [
        f"trained {report['steps']} steps in {report['train_seconds']:.0f} s, "
        f"{report['parameters']} parameters",
    ]
    held = report.get("heldout_metrics")
    if held:
        f, v = held["frame"], held["version"]
        lines.append(
            f"held-out sources {', '.join(held['sources'])}: frames SRCC {f['srcc']:.3f} "
            f"PLCC {f['plcc']:.3f}; versions SRCC {v['srcc']:.3f}, within-source "
            f"{held['version_within_source_srcc']:.3f}; degradation acc "
            f"{held['degradation_accuracy']:.3f}"
        )
    for m in report.get("members", []):
        h = m["heldout_metrics"]
        if h:
            lines.append(
                f"  member seed {m['seed']}: held-out versions SRCC {h['version']['srcc']:.3f}, "
                f"within-source {h['version_within_source_srcc']:.3f}"
            )
    lines.append(f"ONNX vs torch max |diff|: {report['onnx_vs_torch_max_abs_diff']}")
    return "\n".join(lines)

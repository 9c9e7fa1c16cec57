"""Export a trained student to one self-contained ONNX file (dynamic batch) and check it.

Graph: input `fragments` N x 224 x 224 x 3 uint8 (scorers.fragments mosaics);
outputs `mos` N (1-5), `degradation` N x 7 (probabilities, order in the metadata),
`embedding` N x D (unit length). Metadata (custom_metadata_map) carries the model
name, version, degradation names, input layout and the teacher, so the runtime
needs nothing but the file.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt
import torch

from scorers.fragments import SIZE
from scorers.train.model import DEGRADATIONS, Ensemble, Student

INPUT = "fragments"
OUTPUTS = ("mos", "degradation", "embedding")
FP16_MIN_SIZE = 1024
"""Weight tensors at least this large are stored as float16 when export(fp16_weights=True)."""


M = TypeVar("M", bound=torch.nn.Module)


def round_to_fp16(model: M) -> M:
    """Round the model's large float32 parameters to the nearest float16 value, in place.

    The rounded model is the model: export(fp16_weights=True) then stores those weights
    losslessly in half the bytes, and torch and ONNX Runtime still compute in float32."""
    with torch.no_grad():
        for p in model.parameters():
            if p.dtype == torch.float32 and p.numel() >= FP16_MIN_SIZE:
                p.copy_(p.half().float())
    return model


def _store_fp16(proto: Any) -> int:
    """Store every large float32 initializer that float16 holds exactly as float16, behind a
    Cast to float32 (ONNX Runtime folds the Cast when it loads the session, so inference is
    unchanged). Returns how many tensors were stored so."""
    import onnx
    from onnx import helper, numpy_helper

    graph = proto.graph
    casts, kept = [], []
    for init in graph.initializer:
        arr = numpy_helper.to_array(init)
        half = arr.astype(np.float16)
        if (
            init.data_type == onnx.TensorProto.FLOAT
            and arr.size >= FP16_MIN_SIZE
            and np.array_equal(half.astype(np.float32), arr)
        ):
            kept.append(numpy_helper.from_array(half, f"{init.name}.fp16"))
            casts.append(
                helper.make_node(
                    "Cast", [f"{init.name}.fp16"], [init.name], to=onnx.TensorProto.FLOAT
                )
            )
        else:
            kept.append(init)
    del graph.initializer[:]
    graph.initializer.extend(kept)
    nodes = list(graph.node)
    del graph.node[:]
    graph.node.extend(casts + nodes)
    return len(casts)


def export(
    model: Student | Ensemble,
    path: Path,
    *,
    version: str,
    extra_metadata: dict[str, str] | None = None,
    fp16_weights: bool = False,
) -> Path:
    """Write `model` (eval mode) to one ONNX file. With `fp16_weights` the large weights are
    first rounded to float16 in the model itself (round_to_fp16) and stored so, halving
    the file; compare() against the same, rounded model stays exact."""
    import onnx

    model = model.eval()
    if fp16_weights:
        round_to_fp16(model)
    example = torch.zeros(2, SIZE, SIZE, 3, dtype=torch.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (example,),
            str(path),
            input_names=[INPUT],
            output_names=list(OUTPUTS),
            dynamic_axes={INPUT: {0: "batch"}, **{o: {0: "batch"} for o in OUTPUTS}},
            opset_version=17,
            dynamo=False,
        )
    proto = onnx.load(str(path))
    members = len(model.students()) if isinstance(model, Ensemble) else 1
    meta = {
        "name": "vqmon-student",
        "version": version,
        "degradations": json.dumps(list(DEGRADATIONS)),
        "input": f"{INPUT}: N x {SIZE} x {SIZE} x 3 uint8 RGB fragment mosaic",
        "model_config": json.dumps(model.config.to_json()),
        "members": str(members),
        "embedding_dim": str(members * model.config.embed),
        "weights": "float16 storage, float32 compute" if fp16_weights else "float32",
        **(extra_metadata or {}),
    }
    del proto.metadata_props[:]
    for k, v in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = k, v
    if fp16_weights:
        _store_fp16(proto)
    onnx.checker.check_model(proto)
    onnx.save(proto, str(path))  # one file: the weights are small enough to stay inline
    return path


def compare(
    model: Student | Ensemble, path: Path, mosaics: npt.NDArray[np.uint8]
) -> dict[str, Any]:
    """Largest absolute differences between torch and ONNX Runtime (CPU) on `mosaics`."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = sess.run(list(OUTPUTS), {INPUT: mosaics})
    with torch.no_grad():
        want = [t.numpy() for t in model.eval()(torch.from_numpy(mosaics))]
    return {
        name: float(np.abs(np.asarray(g) - w).max())
        for name, g, w in zip(OUTPUTS, got, want, strict=True)
    }


EXPORT_KEYS = frozenset(
    (
        "name",
        "version",
        "degradations",
        "input",
        "model_config",
        "members",
        "embedding_dim",
        "weights",
    )
)
"""Metadata export() writes itself; reexport() carries every other entry over."""


def reexport(src: Path, dst: Path, mosaics: npt.NDArray[np.uint8]) -> dict[str, Any]:
    """Write the model at `src` again through this version's graph (the same weights, the
    same version), and measure it: the largest output differences from `src` on `mosaics`
    and from the torch model. A new graph for old weights needs no retraining."""
    import onnx
    import onnxruntime as ort

    from scorers.train.onnx_weights import ensemble_from_onnx

    meta = {p.key: p.value for p in onnx.load(str(src)).metadata_props}
    model = ensemble_from_onnx(src)
    extra = {k: v for k, v in meta.items() if k not in EXPORT_KEYS}
    extra["graph"] = f"re-exported from {src.name} (vqmon train reexport)"
    half = meta.get("weights", "").startswith("float16")  # rounding float16 values is exact
    export(model, dst, version=meta.get("version", "0"), extra_metadata=extra, fp16_weights=half)
    before, after = (
        ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]).run(
            list(OUTPUTS), {INPUT: mosaics}
        )
        for p in (src, dst)
    )
    return {
        "vs_source": {
            name: float(np.abs(np.asarray(a) - np.asarray(b)).max())
            for name, a, b in zip(OUTPUTS, after, before, strict=True)
        },
        "vs_torch": compare(model, dst, mosaics),
    }


def _heldout_lines(report: dict[str, Any], bench: dict[str, Any] | None) -> list[str]:
    """The card's held-out section: the training run's held-out sources if it had any,
    and the benchmark (bench/quality.py output) if given."""

    def f(d: dict[str, float], k: str) -> str:
        return f"{d[k]:.3f}" if k in d else "-"

    lines: list[str] = []
    held = report.get("heldout_metrics")
    if held:
        frame, version = held.get("frame", {}), held.get("version", {})
        lines += [
            "Whole sources held out of training (never frames of a trained source): "
            + ", ".join(report.get("heldout_sources") or [])
            + ".",
            "",
            "| level | SRCC | PLCC | KRCC | RMSE (MOS) |",
            "|---|---|---|---|---|",
            f"| frame | {f(frame, 'srcc')} | {f(frame, 'plcc')} | {f(frame, 'krcc')} "
            f"| {f(frame, 'rmse')} |",
            f"| version (mean of its frames) | {f(version, 'srcc')} | {f(version, 'plcc')} | "
            f"{f(version, 'krcc')} | {f(version, 'rmse')} |",
            "",
            f"Mean SRCC within a held-out source: {held.get('version_within_source_srcc', 0):.3f}"
            f"; degradation-type accuracy {held.get('degradation_accuracy', 0):.3f}.",
            "",
        ]
    else:
        lines += [
            "This model was trained on every training source (`--holdout 0`); its held-out "
            "figures are the benchmark's below, on sources and impairment parameters it "
            "never saw.",
            "",
        ]
    if bench:
        q = bench["quality"]
        row = q["table"]["vqmon distilled"]
        lines += [
            f"Benchmark (bench/quality.py): {q['versions']} impaired versions of "
            f"{len(q['sources'])} held-out sources ({', '.join(q['sources'])}), target VMAF: "
            f"SRCC {row['srcc']:.4f} overall, {row['srcc_within_source']:.3f} mean within "
            f"source, PLCC {row['plcc']:.3f} (after the 4-parameter logistic fit).",
            "",
            "| impairment | versions | SRCC within kind | MOS bias |",
            "|---|---|---|---|",
            *(
                f"| {k} | {r['versions']} | {r['srcc']:.3f} | {r['mos_bias']:+.2f} |"
                for k, r in q["by_kind"].items()
            ),
            "",
        ]
    lines.append(
        "The peers side by side (PIQE, FFmpeg blockdetect/blurdetect, our detectors) are "
        "in docs/benchmarks.md."
    )
    return lines


def _run_line(report: dict[str, Any]) -> str:
    tc, members = report["train_config"], report.get("members") or []
    if len(members) < 2:
        return (
            f"seed {tc['seed']}, {tc['epochs']} epochs, {report['steps']} steps, "
            f"{report['train_seconds'] / 60:.1f} min, {tc['threads']} torch thread(s) on a "
            "shared 2-core CPU"
        )
    times = " and ".join(f"{m['train_seconds'] / 60:.1f}" for m in members)
    return (
        f"seeds {', '.join(str(m['seed']) for m in members)}, {tc['epochs']} epochs, "
        f"{members[0]['steps']} steps each, {times} min with {tc['threads']} torch thread(s) "
        "each on a shared 2-core CPU"
    )


def _ensemble_lines(report: dict[str, Any]) -> list[str]:
    members = report.get("members") or []
    if len(members) < 2:
        return []
    seeds = ", ".join(str(m["seed"]) for m in members)
    return [
        f"**Ensemble of {len(members)} students** trained alike but for their seeds ({seeds}): "
        "MOS and the degradation distribution are the members' means, the embedding their "
        f"unit embeddings joined and scaled by 1/sqrt({len(members)}). The statistics branch "
        "is computed once and shared. Large weights are stored as float16 (rounded before "
        "export, so torch and ONNX Runtime agree) and computed in float32. `vqmon train "
        f"distill --members {len(members)} --jobs {len(members)}` trains the members side "
        "by side and joins them in one command; `vqmon train ensemble` joins members "
        "trained apart.",
        "",
    ]


def write_card(
    report: dict[str, Any],
    path: Path,
    *,
    command: str,
    onnx_path: Path,
    bench: dict[str, Any] | None = None,
    notes: list[str] | None = None,
) -> Path:
    """The model card (markdown) shipped beside the ONNX file; `bench` is bench/quality.py's
    JSON result for this model, if measured; `notes` are paragraphs added to the held-out
    section (how the model was chosen, checks made outside the training run)."""
    size_mb = onnx_path.stat().st_size / 1e6
    lines = [
        "# vqmon-student: the distilled no-reference scorer",
        "",
        f"File `{onnx_path.name}` ({size_mb:.2f} MB, {report['parameters']:,} parameters), "
        "ONNX opset 17, dynamic batch. Input `fragments`: N x 224 x 224 x 3 uint8, a 7x7 "
        "grid of native-resolution 32-px patches (scorers/fragments.py). Outputs `mos` (N, "
        "1-5), `degradation` (N x 7: " + ", ".join(report["degradations"]) + ") and "
        "`embedding` (N x D, unit length).",
        "",
        "## Model",
        "",
        "Per patch: 4x4 patchify stem (a reshape + 1x1 conv), depthwise-separable blocks at "
        "8x8, 4x4, 2x2; patch features pooled over the 49 patches (mean and std). Beside "
        "it a fixed statistics branch per patch (BRISQUE-style MSCN moments and neighbour "
        "products at native and half resolution, gradient energy across scales, 8/4-px "
        "block-edge ratios, emptied high-frequency DCT coefficients on the 8x8/4x4 "
        "block grid), pooled by mean, std and 10/50/90th percentiles, normalised "
        "and mapped by one learned layer. An MLP over both gives the embedding z. "
        "Quality head after RALI: MOS = sum_k softmax_k(cos(z, P_k) / "
        "tau) * s_k over K learned prototypes P_k with learned scores s_k in [1, 5]. A linear "
        "head on z gives the degradation distribution. Config: "
        f"`{json.dumps(report['model_config'])}`.",
        "",
        *_ensemble_lines(report),
        "## Data",
        "",
        f"{report['train_frames']} training frames from {len(report['train_sources'])} sources, "
        "all made offline: the sample photographs of scikit-image, matplotlib, PyWavelets "
        "and scikit-learn as panning/zooming clips, the same photographs with a capture "
        "history (JPEG source, sensor grain, in-camera sharpening, a JPEG contribution feed) "
        "that the teacher "
        "still counts as pristine, ingest.synth patterns "
        "and procedural scenes, fractal zooms, noise textures, scrolling text, flat "
        "graphics and broadcast overlays (lower-third bars and logos over stills), at "
        "384x216 to 1280x720. Impairments: H.264/HEVC CRF ladder (even CRFs "
        "14-51), downscale (AREA) -> encode -> upscale (bicubic/bilinear) at 0.25-0.75, "
        "gaussian blur, gaussian noise and banding under a light encode, MPEG-TS packet "
        "corruption decoded with concealment (ingest.impair).",
        "",
        "## Teacher",
        "",
        "VMAF v0.6.1 per frame (FFmpeg libvmaf, imageio-ffmpeg's static binary) against the "
        "pristine clip, mapped to MOS by MOS = 1 + 4 * clip(VMAF, 0, 100) / 100 "
        "(scorers/train/teacher.py; SSIM with MOS = 1 + 4 * clip((SSIM - 0.5) / 0.5, 0, 1) "
        "when no libvmaf is available).",
        "",
        "## Training",
        "",
        f"`{command}` ({_run_line(report)}). Loss: smooth-L1 on "
        "MOS + pairwise logistic rank loss over the batch and, weighted "
        f"{report['train_config'].get('within_rank_weight', 0)}, over pairs of the same "
        "source (batches of 4 frames per source) + degradation cross-entropy. "
        f"Regularisation: dropout {report['model_config'].get('dropout', 0)} in the "
        f"projection MLP, AdamW decay {report['train_config']['weight_decay']} on weight "
        "matrices.",
        "",
        "## Held-out metrics",
        "",
        *_heldout_lines(report, bench),
        "",
        *(line for note in notes or [] for line in (note, "")),
        "## Limits",
        "",
        "Trained on synthetic and still-image content only: natural video with camera noise, "
        "film grain, HDR, or screen content unlike the corpus may be judged less well. It "
        "learns VMAF's view of quality, including VMAF's blind spots (banding, some noise). "
        "Measure it on your own streams with `vqmon eval`.",
    ]
    path.write_text("\n".join(lines) + "\n")
    return path

"""Students back from an exported ONNX file: the weights the runtime ships, as torch modules.

Used to warm-start a slim student from one shipped member (scorers.train.slim) and to
re-export the shipped ensemble in a cheaper graph without retraining (`vqmon train
reexport`). ONNX export folds each encoder BatchNorm into the convolution before it, so
the folded weights go into the convolution and the BatchNorm becomes an exact identity
plus the folded bias (weight 1, running mean 0, running variance 1 - eps): the module
computes what the member did as long as those BatchNorm statistics stay frozen.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

STEM_SCALE = 0.25 * 255.0
STEM_SHIFT = 0.45 * 255.0
"""The input normalisation the stem folds in: (x - STEM_SHIFT) / STEM_SCALE."""


def onnx_tensors(path: Path) -> tuple[dict[str, Any], list[Any], dict[str, Any]]:
    """Every initializer of an ONNX model as float32 (float16-stored ones under the name
    their Cast gives them), the graph's nodes, and the model config in its metadata."""
    import onnx
    from onnx import numpy_helper

    proto = onnx.load(str(path))
    arrays = {i.name: numpy_helper.to_array(i) for i in proto.graph.initializer}
    for node in proto.graph.node:
        if node.op_type == "Cast" and node.input[0] in arrays:
            arrays[node.output[0]] = arrays[node.input[0]]
    meta = {p.key: p.value for p in proto.metadata_props}
    cfg: dict[str, Any] = json.loads(meta["model_config"])
    cfg["widths"] = tuple(cfg["widths"])
    cfg["members"] = int(meta.get("members", "1"))
    tensors = {k: np.array(v, np.float32) for k, v in arrays.items()}
    return tensors, list(proto.graph.node), cfg


def _computed(path: Path, names: list[str]) -> dict[str, Any]:
    """Values of tensors the graph computes from its weights alone (a folded bias), read
    by running the graph once with them as outputs."""
    import onnx
    import onnxruntime as ort

    proto = onnx.load(str(path))
    for name in names:
        proto.graph.output.append(onnx.helper.make_tensor_value_info(name, 1, None))
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(proto.SerializeToString(), options, ["CPUExecutionProvider"])
    dummy = np.zeros((1, 224, 224, 3), dtype=np.uint8)
    values = session.run(names, {session.get_inputs()[0].name: dummy})
    return {n: np.asarray(v, np.float32) for n, v in zip(names, values, strict=True)}


def _stem(path: Path, tensors: dict[str, Any], node: Any, prefix: str) -> dict[str, Any]:
    """The stem convolution's weight and the BatchNorm after it (weight, bias, running
    mean; running_var None for an identity). A graph that folds the input normalisation
    and the BatchNorm into the convolution has a bias input instead: its weight is
    W / STEM_SCALE x gain and its bias the rest, so the module gets W = weight x
    STEM_SCALE, an identity BatchNorm and the bias that gives back the same output."""
    missing = [n for n in node.input[1:] if n and n not in tensors]
    if missing:  # computed from weights in the graph (a folding the export left unfolded)
        tensors.update(_computed(path, missing))
    w = tensors[node.input[1]]
    if len(node.input) < 3 or not node.input[2]:
        norm = {k: tensors[f"{prefix}stem.1.{k}"] for k in ("weight", "bias")}
        stats = {k: tensors[f"{prefix}stem.1.{k}"] for k in ("running_mean", "running_var")}
        return {"conv": w, "norm_weight": norm["weight"], "norm_bias": norm["bias"], **stats}
    bias = tensors[node.input[2]]
    c = w.shape[0]
    return {
        "conv": w * STEM_SCALE,
        "norm_weight": np.ones(c, np.float32),
        "norm_bias": bias + STEM_SHIFT * w.reshape(c, -1).sum(axis=1),
        "running_mean": np.zeros(c, np.float32),
        "running_var": None,
    }


def member_from_onnx(path: Path, member: int = 0, *, stats: bool) -> Any:
    """Member `member` of the ONNX model at `path` as a Student. With `stats` it keeps the
    statistics branch's learned head (the model must have one); without, it is the
    member's CNN alone (the statistics' columns of the projection are left out)."""
    import torch
    from torch import nn

    from scorers.train.model import ModelConfig, Student

    tensors, nodes, meta_cfg = onnx_tensors(path)
    members = meta_cfg.pop("members")
    if not 0 <= member < members:
        raise ValueError(f"{path} has {members} member(s), not a member {member}")
    if stats and not meta_cfg["stats"]:
        raise ValueError(f"{path} has no statistics branch to load")
    # The configured dropout keeps the exported layout of the projection (and its names).
    cfg = ModelConfig(**{**meta_cfg, "stats": stats})
    model = Student(cfg)
    suffix = "" if member == 0 else f"_{member}"
    prefix = f"members.{member}." if members > 1 else ""
    convs = {n.name: n for n in nodes if n.op_type == "Conv"}
    with torch.no_grad():
        stem = _stem(path, tensors, convs[f"/Conv{suffix}"], prefix)
        stem_conv, norm = model.stem.get_submodule("0"), model.stem.get_submodule("1")
        assert isinstance(stem_conv, nn.Conv2d) and isinstance(norm, nn.BatchNorm2d)
        assert norm.running_mean is not None and norm.running_var is not None
        stem_conv.weight.copy_(torch.from_numpy(stem["conv"]).reshape(stem_conv.weight.shape))
        norm.weight.copy_(torch.from_numpy(stem["norm_weight"]))
        norm.bias.copy_(torch.from_numpy(stem["norm_bias"]))
        norm.running_mean.copy_(torch.from_numpy(stem["running_mean"]))
        if stem["running_var"] is None:
            norm.running_var.fill_(1.0 - norm.eps)
        else:
            norm.running_var.copy_(torch.from_numpy(stem["running_var"]))
        for i, block in enumerate(model.encoder):
            for j in (0, 3):
                node = convs[f"/encoder/encoder.{i}/encoder.{i}.{j}{suffix}/Conv"]
                conv = block.get_submodule(str(j))
                norm = block.get_submodule(str(j + 1))
                assert isinstance(conv, nn.Conv2d) and isinstance(norm, nn.BatchNorm2d)
                conv.weight.copy_(torch.from_numpy(tensors[node.input[1]]))
                norm.weight.fill_(1.0)
                norm.bias.copy_(torch.from_numpy(tensors[node.input[2]]))
                assert norm.running_mean is not None and norm.running_var is not None
                norm.running_mean.zero_()
                norm.running_var.fill_(1.0 - norm.eps)
        # Everything else is stored under its own name.
        for name, value in [*model.named_parameters(), *model.named_buffers()]:
            if name.startswith(("stem.", "encoder.", "stats.")) or "num_batches" in name:
                continue  # loaded above, or the fixed statistics' matrices (rebuilt, not stored)
            # torch's export stores equal tensors once, under the first member's name.
            names = [f"members.{k}.{name}" for k in (member, *range(member))] if prefix else [name]
            stored = next((tensors[n] for n in names if n in tensors), None)
            if stored is None:
                raise ValueError(f"{path} has no weight {prefix + name}")
            if name.startswith("project.") and stored.shape != tuple(value.shape):
                stored = stored[:, : value.shape[1]]  # the CNN's pooled features come first
            value.copy_(torch.from_numpy(stored).reshape(value.shape))
    return model


def ensemble_from_onnx(path: Path) -> Any:
    """The whole model at `path`: an Ensemble of its members (or the single Student), in
    eval mode, computing what the file computes."""
    from scorers.train.model import Ensemble

    _, _, cfg = onnx_tensors(path)
    members = [member_from_onnx(path, k, stats=bool(cfg["stats"])) for k in range(cfg["members"])]
    return (members[0] if len(members) == 1 else Ensemble(members)).eval()

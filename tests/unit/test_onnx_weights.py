"""Weights back from an exported ONNX file: a re-export through the current graph computes
what the file did, whatever graph wrote it, and the statistics branch is exact where a
runtime's rounding used to decide."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")

import onnxruntime as ort  # noqa: E402
import torch  # noqa: E402

from scorers import fragments  # noqa: E402
from scorers.distilled import default_model_path  # noqa: E402
from scorers.train.export import OUTPUTS, export, reexport  # noqa: E402
from scorers.train.model import Ensemble, ModelConfig, PatchStats, Student  # noqa: E402
from scorers.train.onnx_weights import ensemble_from_onnx, member_from_onnx  # noqa: E402


def _mosaics(n: int = 4, seed: int = 0) -> np.ndarray:
    """Smooth pictures with edges and flat areas, not noise: what the statistics are for."""
    rng = np.random.default_rng(seed)
    frames = []
    for _ in range(n):
        y, x = np.mgrid[0:180, 0:320].astype(np.float32)
        base = 60 + 120 * (np.sin(x / rng.uniform(9, 40)) * np.cos(y / rng.uniform(9, 40)) > 0)
        base[:, : rng.integers(40, 200)] = rng.integers(16, 235)  # a flat region
        rgb = np.stack([base, base * 0.9, base * 0.8], axis=-1) + rng.normal(0, 2, (180, 320, 3))
        frames.append(np.clip(rgb, 0, 255).astype(np.uint8))
    return fragments.sample_batch(frames)


def _run(path: Path, mosaics: np.ndarray) -> list[np.ndarray]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return [np.asarray(o) for o in session.run(list(OUTPUTS), {"fragments": mosaics})]


def _random_ensemble() -> Ensemble:
    torch.manual_seed(3)
    cfg = ModelConfig(widths=(8, 16, 32), embed=32, hidden=64, prototypes=8, dropout=0.3)
    members = [Student(cfg), Student(cfg)]
    with torch.no_grad():  # BatchNorm statistics that are not an identity
        for m in members:
            for mod in m.modules():
                if isinstance(mod, torch.nn.BatchNorm2d | torch.nn.BatchNorm1d):
                    assert mod.running_mean is not None and mod.running_var is not None
                    mod.running_mean.uniform_(-0.5, 0.5)
                    mod.running_var.uniform_(0.5, 2.0)
    return Ensemble(members).eval()


def test_an_ensemble_comes_back_from_its_file_and_again_from_its_reexport(
    tmp_path: Path,
) -> None:
    """Export, load back, export again (a graph whose stem has the normalisation and the
    BatchNorm folded in), load back again: every file computes the same outputs."""
    model = _random_ensemble()
    mosaics = _mosaics()
    first = export(model, tmp_path / "a.onnx", version="t")
    with torch.no_grad():
        want = [t.numpy() for t in model(torch.from_numpy(mosaics))]
    loaded = ensemble_from_onnx(first)
    assert isinstance(loaded, Ensemble) and len(loaded.students()) == 2
    assert loaded.students()[0].stats is not None
    second = tmp_path / "b.onnx"
    diff = reexport(first, second, mosaics)
    assert max(diff["vs_source"].values()) < 1e-4
    assert max(diff["vs_torch"].values()) < 1e-4
    again = ensemble_from_onnx(second)  # the folded stem unfolds again
    with torch.no_grad():
        got = [t.numpy() for t in again(torch.from_numpy(mosaics))]
    for g, w, o in zip(got, want, _run(second, mosaics), strict=True):
        np.testing.assert_allclose(g, w, atol=1e-4)
        np.testing.assert_allclose(o, w, atol=1e-4)
    meta = {p.key: p.value for p in onnx.load(str(second)).metadata_props}
    assert meta["version"] == "t" and "re-exported from a.onnx" in meta["graph"]


def test_a_member_without_its_statistics_is_the_cnn_of_the_shipped_model() -> None:
    member = member_from_onnx(default_model_path(), 1, stats=False)
    assert member.stats is None
    with pytest.raises(ValueError, match="not a member 2"):
        member_from_onnx(default_model_path(), 2, stats=False)


def test_the_shipped_model_is_what_its_weights_compute(tmp_path: Path) -> None:
    """The shipped file, loaded into torch, computes what ONNX Runtime computes from it."""
    mosaics = _mosaics(3, seed=1)
    model = ensemble_from_onnx(default_model_path())
    with torch.no_grad():
        want = [t.numpy() for t in model(torch.from_numpy(mosaics))]
    for got, w in zip(_run(default_model_path(), mosaics), want, strict=True):
        np.testing.assert_allclose(got, w, atol=1e-3)


def test_a_flat_patch_has_exactly_no_local_contrast() -> None:
    """The local variance is E[y^2] - E[y]^2; at code value 200 both terms are ~40,000, and
    uncentred float32 left a runtime-dependent residue of ~0.01 as sigma. Centred, a flat
    patch is exactly flat at any level."""
    stats = PatchStats()
    for level in (16.0, 200.0, 235.0):
        y = torch.full((2, 1, 32, 32), level)
        f = stats(y)
        assert torch.all(f[:, 7] == 0) and torch.all(f[:, 16] == 0)  # log1p(sigma), 2 scales
        assert torch.all(f[:, 8] == 1) and torch.all(f[:, 17] == 1)  # every pixel flat


def test_the_reexport_command_writes_the_same_model_and_refuses_its_source(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from monitor.cli import main

    src = default_model_path(variant="slim")
    out = tmp_path / "slim.onnx"
    assert main(["train", "reexport", "--model", str(src), "--out", str(out)]) == 0
    report = json.loads(capsys.readouterr().out)
    # Unfolding the folded stem and folding it again cancels a bias of ~100 in float32: the
    # slim student, which has no statistics branch to steady it, moves by ~5e-4 of MOS.
    assert report["mosaics"] == 8 and max(report["vs_source"].values()) < 2e-3
    mosaics = _mosaics(2)
    for got, want in zip(_run(out, mosaics), _run(src, mosaics), strict=True):
        np.testing.assert_allclose(got, want, atol=1e-3)
    assert main(["train", "reexport", "--model", str(src), "--out", str(src)]) == 2
    assert main(["train", "reexport", "--model", str(tmp_path / "no.onnx"), "--out", "x"]) == 2

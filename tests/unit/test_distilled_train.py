"""Training side of the distilled scorer: tiny corpus, a few steps, export, ONNX vs torch."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("onnx")

from scorers.distilled import DistilledConfig, DistilledScorer
from scorers.train import content, teacher
from scorers.train.corpus import Variant, build_source, load, plan
from scorers.train.model import DEGRADATIONS

if TYPE_CHECKING:
    import torch


@pytest.fixture(scope="module")
def tiny_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("corpus")
    variants = [
        Variant("clean", "libx264", 8),
        Variant("compression", "libx264", 44),
        Variant("blur", "libx264", 20, strength=2.5),
    ]
    for source in ("graphics:0", "texture:fbm:2"):
        build_source(
            source,
            out,
            teacher=teacher.SsimTeacher(),
            variants=variants,
            clip_frames=4,
            frames_per_variant=2,
        )
    return out


def test_corpus_files_are_labelled_and_split_by_source(tiny_corpus: Path) -> None:
    data = load(tiny_corpus)
    assert len(data) == 2 * 3 * 2
    assert data.mosaic.shape[1:] == (224, 224, 3)
    assert set(data.source.tolist()) == {"graphics:0", "texture:fbm:2"}
    assert np.all((data.mos >= 1) & (data.mos <= 5))
    clean = data.mos[data.variant == 0].mean()
    worst = data.mos[data.variant == 1].mean()
    assert clean > worst  # the teacher sees the CRF 44 damage
    assert set(data.degradation.tolist()) <= set(range(len(DEGRADATIONS)))


def test_train_and_bench_content_and_parameters_are_disjoint() -> None:
    assert not set(content.train_sources()) & set(content.bench_sources())
    crfs = {v.crf for v in plan("graphics:0", "train", 0) if v.kind == "compression"}
    bench = {v.crf for v in plan("graphics:100", "bench", 0) if v.kind == "compression"}
    assert all(c % 2 == 0 for c in crfs) and all(c % 2 == 1 for c in bench)


def test_mos_maps_are_monotone() -> None:
    v = np.linspace(-5, 105, 50)
    assert np.all(np.diff(teacher.vmaf_to_mos(v)) >= 0)
    assert teacher.vmaf_to_mos([0, 100]).tolist() == [1.0, 5.0]
    s = np.linspace(0, 1, 50)
    assert np.all(np.diff(teacher.ssim_to_mos(s)) >= 0)


def test_vmaf_teacher_orders_quality() -> None:
    if teacher.find_ffmpeg() is None:
        pytest.skip("no FFmpeg with libvmaf")
    from scorers.train.corpus import impaired

    ref = content.render("graphics:0", 4)
    bad = impaired(ref, Variant("compression", "libx264", 46), seed=0)
    good, worse = teacher.VmafTeacher().raw(ref, [ref, bad])
    assert good.mean() > 95 and worse.mean() < good.mean() - 10


def test_training_runs_exports_and_onnx_matches_torch(tiny_corpus: Path, tmp_path: Path) -> None:
    import torch

    from scorers.train.distill import TrainConfig, load_checkpoint, train
    from scorers.train.export import compare, export
    from scorers.train.model import ModelConfig

    data = load(tiny_corpus)
    small = ModelConfig(widths=(8, 16, 32), embed=32, hidden=64, prototypes=8, dropout=0.3)
    cfg = TrainConfig(epochs=5, batch_size=4, max_steps=3, val_fraction=0.5, seed=1, threads=1)
    report = train(data, tmp_path, cfg, small, progress=False)
    assert report["model_config"]["dropout"] == 0.3
    assert report["steps"] == 3
    assert len(report["history"]["step_loss"]) == 3
    assert report["heldout_sources"] and not set(report["heldout_sources"]) & set(
        report["train_sources"]
    )
    assert (tmp_path / "loss.png").stat().st_size > 1000
    # Deterministic given the seed.
    again = train(data, tmp_path / "again", cfg, small, progress=False)
    assert again["history"]["step_loss"] == report["history"]["step_loss"]

    model = load_checkpoint(tmp_path / "student.pt")
    batch = torch.from_numpy(data.mosaic[:4])
    training = copy.deepcopy(model).train()  # (a copy: train mode moves BN statistics)
    with torch.no_grad():  # dropout acts while training only; the loaded model is in eval
        assert torch.equal(model(batch)[0], model(batch)[0])
        assert not torch.equal(training(batch)[2], training(batch)[2])
    path = export(model, tmp_path / "student.onnx", version="0.test")
    diffs = compare(model, path, data.mosaic[:5])
    # MOS and embedding to 3e-4: the local contrast is the square root of a near-zero
    # variance on these flat graphics, which turns the kernels' last-bit differences (they
    # vary with the machine and its threads) into ~1e-4 of MOS and of the embedding.
    assert diffs["mos"] < 3e-4 and diffs["degradation"] < 1e-4 and diffs["embedding"] < 3e-4

    scorer = DistilledScorer(DistilledConfig(model_path=path, batch_size=3))
    preds = scorer.predict_mosaics(data.mosaic[:7])  # crosses a batch boundary
    with torch.no_grad():
        want = model(torch.from_numpy(data.mosaic[:7]))[0].numpy()
    assert np.allclose(preds.mos, want, atol=3e-4)
    assert preds.degradation.shape == (7, len(DEGRADATIONS))
    assert np.allclose(np.linalg.norm(preds.embedding, axis=1), 1.0, atol=1e-4)
    assert scorer.version.startswith("0.test+")

    from scorers.train.export import write_card

    card = write_card(report, tmp_path / "card.md", command="vqmon train", onnx_path=path)
    text = card.read_text()
    assert "Whole sources held out" in text and report["heldout_sources"][0] in text
    all_sources = {**report, "heldout_metrics": None, "heldout_sources": []}
    text = write_card(all_sources, tmp_path / "all.md", command="x", onnx_path=path).read_text()
    assert "--holdout 0" in text and "Whole sources held out" not in text


def test_patch_stats_dct_is_orthonormal() -> None:
    import torch

    from scorers.train.model import _dct_matrix

    for n in (4, 8):
        c = _dct_matrix(n)
        assert torch.allclose(c @ c.t(), torch.eye(n), atol=1e-5)


def test_patch_stats_blur_is_the_replicate_padded_gaussian() -> None:
    import torch
    import torch.nn.functional as F

    from scorers.train.model import _blur_matrix

    y = torch.rand(3, 1, 32, 32) * 255
    x = torch.arange(7, dtype=torch.float32) - 3
    g = torch.exp(-(x**2) / (2 * (7 / 6) ** 2))
    g = g / g.sum()
    want = F.conv2d(F.pad(y, (3, 3, 3, 3), mode="replicate"), (g[:, None] * g[None, :])[None, None])
    b = _blur_matrix(32)
    assert torch.allclose(b @ y @ b.t(), want, atol=1e-3)


def test_patch_stats_see_blur_and_coding_blocks() -> None:
    """The fixed branch must move the right way on real impairments of real content."""
    import torch

    from ingest import impair
    from scorers.train.model import PatchStats, Student

    stats = PatchStats()
    names = [
        n
        for group in ("nss", "nss_half")
        for n in ("var", "abs", "kurt", "h", "v", "d1", "d2", "log_sigma", "flat")
    ] + ["g1", "g2", "sharp", "lap", "lap_rel", "block8", "block4"]
    names += [f"{n}{k}" for k in (8, 4) for n in ("ratio", "zero", "zero_act", "ratio_act", "act")]
    assert len(names) == PatchStats.FEATURES
    frame = content.render("still:astronaut", 1, (256, 256))[0]

    def features(img: np.ndarray) -> dict[str, float]:
        mosaic = torch.from_numpy(np.ascontiguousarray(img[16:240, 16:240]))[None]
        y = Student.luma_patches(mosaic).reshape(-1, 1, 32, 32)
        return dict(zip(names, stats(y).mean(0).tolist(), strict=True))

    clean = features(frame)
    blurred = features(impair.blur([frame], 2.5)[0])
    assert blurred["g1"] < clean["g1"] - 0.3  # less gradient energy
    assert blurred["sharp"] < clean["sharp"]  # and less at the fine scale than the coarse one
    assert blurred["flat"] >= clean["flat"]
    # 8x8 blocks (each block its mean, as a starved encoder leaves it) raise the 8-px edge ratio.
    f = frame.astype(np.float32)
    blocks = f.reshape(32, 8, 32, 8, 3).mean(axis=(1, 3), keepdims=True)
    blocky = np.broadcast_to(blocks, (32, 8, 32, 8, 3)).reshape(256, 256, 3)
    assert features(blocky.astype(np.uint8))["block8"] > clean["block8"] + 0.5
    # A starved encode empties the high-frequency DCT coefficients of busy blocks.
    from ingest.synth import EncodeSettings, encode
    from scorers.train.corpus import decode_all

    starved = decode_all(encode([frame] * 2, EncodeSettings(crf=46, container="mpegts")))[0]
    fine = decode_all(encode([frame] * 2, EncodeSettings(crf=16, container="mpegts")))[0]
    assert features(starved)["zero8"] > features(fine)["zero8"] + 0.05
    assert features(starved)["ratio8"] < features(fine)["ratio8"]


def test_source_grouped_batches_hold_pairs_of_one_source() -> None:
    from scorers.train.distill import _batches

    sources = np.array(["a"] * 10 + ["b"] * 3 + ["c"] * 20)
    rng = np.random.default_rng(0)
    batches = _batches(sources, 8, 5, 4, rng)
    assert len(batches) == 5
    for idx in batches:
        assert len(idx) == 8
        names, counts = np.unique(sources[idx], return_counts=True)
        assert len(names) <= 2 and (counts >= 4).all()
    uniform = _batches(sources, 8, 4, 0, np.random.default_rng(0))
    assert len(np.unique(np.concatenate(uniform))) == 32  # a permutation, no repeats


def test_overlay_source_renders_over_its_still() -> None:
    a = content.render("overlay:3", 2)
    b = content.render("overlay:3", 2)
    w, h = content.source_size("overlay:3")
    assert a[0].shape == (h, w, 3) and np.array_equal(a[1], b[1])
    assert "overlay:3" in content.train_sources()
    still = content.underlying_still("overlay:3")
    assert still in content.TRAIN_STILLS
    base = content._still_clip(["still", str(still), "3"], w, h, 2)[0].astype(int)
    # the picture above the graphics is the still itself; the lower third carries the bar
    assert np.array_equal(a[0][: h // 2, : w // 2], base[: h // 2, : w // 2])
    low = slice(int(h * 0.72), int(h * 0.95))
    assert np.abs(a[0][low] - base[low]).mean() > 5


def test_photo_sources_carry_a_capture_history_on_training_stills_only() -> None:
    photos = [s for s in content.train_sources() if content.family(s) == "photo"]
    assert len(photos) >= 20
    histories = [content.capture_history(s) for s in photos]
    assert all(any(h.values()) for h in histories)
    for key in ("jpeg_source", "grain", "sharpen", "jpeg_frames"):  # every history occurs
        assert sum(1 for h in histories if h[key]) >= 3, key
    used = {content.underlying_still(s) for s in content.train_sources()} - {None}
    assert not used & set(content.BENCH_STILLS)

    # grain only: the rendered frame is the plain pan and zoom plus noise of the stated size
    name, history = next(
        (s, h)
        for s, h in zip(photos, histories, strict=True)
        if h["grain"] >= 2 and not (h["jpeg_source"] or h["sharpen"] or h["jpeg_frames"])
    )
    w, h = content.source_size(name)
    frames = content.render(name, 2)
    again = content.render(name, 2)
    assert np.array_equal(frames[1], again[1])
    rng = np.random.default_rng(content.seed_of(name, 12))
    plain = content._pan_zoom(content._still(name.split(":")[1]), w, h, 2, rng)
    residual = frames[0].astype(float) - plain[0].astype(float)
    sigma = history["grain"]
    assert 0.6 * sigma < residual.std() < 2.0 * sigma


def test_holdout_zero_trains_on_every_source_and_default_holds_whole_sources() -> None:
    from scorers.train.distill import split_sources

    names = np.array([f"text:{i}" for i in range(6)] + [f"still:{s}" for s in "abcd"] * 3)
    train_all, held_none = split_sources(names, 0.0, seed=0)
    assert held_none == [] and len(train_all) == 10
    train, held = split_sources(names, 0.15, seed=0)
    assert held and not set(held) & set(train) and len(train) + len(held) == 10
    # one picture, one side: a still's plain clip, photo histories and overlays go together
    every = np.array(content.train_sources())
    for seed in range(3):
        train, held = split_sources(every, 0.15, seed=seed)
        assert 0.08 * len(every) < len(held) < 0.3 * len(every)
        pictures_held = {content.underlying_still(n) for n in held} - {None}
        assert pictures_held
        assert not pictures_held & {content.underlying_still(n) for n in train}


def test_ensemble_averages_its_members_and_exports_half_size(
    tiny_corpus: Path, tmp_path: Path
) -> None:
    import onnx
    import torch

    from scorers.train.export import FP16_MIN_SIZE, compare, export
    from scorers.train.model import Ensemble, ModelConfig, Student

    data = load(tiny_corpus)
    small = ModelConfig(widths=(8, 16, 32), embed=32, hidden=64, prototypes=8)
    members = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        members.append(Student(small).eval())
    ens = Ensemble(members).eval()
    x = torch.from_numpy(data.mosaic[:6])
    with torch.no_grad():
        outs = [m(x) for m in members]
        mos, deg, emb = ens(x)
    assert not torch.allclose(outs[0][0], outs[1][0])  # two different members
    assert torch.allclose(mos, (outs[0][0] + outs[1][0]) / 2, atol=1e-6)
    assert torch.allclose(deg, (outs[0][1] + outs[1][1]) / 2, atol=1e-6)
    assert torch.allclose(emb, torch.cat([outs[0][2], outs[1][2]], 1) / 2**0.5, atol=1e-6)
    assert torch.allclose(emb.norm(dim=1), torch.ones(6), atol=1e-5)

    full = export(ens, tmp_path / "fp32.onnx", version="2.test")
    half = export(ens, tmp_path / "fp16.onnx", version="2.test", fp16_weights=True)
    assert half.stat().st_size < 0.7 * full.stat().st_size  # tiny model: many small tensors
    proto = onnx.load(str(half))
    sizes = {
        t: sum(int(np.prod(i.dims)) for i in proto.graph.initializer if i.data_type == t)
        for t in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16)
    }
    # all but the exporter's few Conv+BN-folded weights (not fp16-exact) are stored as fp16
    assert sizes[onnx.TensorProto.FLOAT16] > 0.8 * sum(sizes.values()) >= FP16_MIN_SIZE
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta["members"] == "2" and meta["weights"].startswith("float16")
    stored = [i for i in proto.graph.initializer if i.data_type == onnx.TensorProto.FLOAT16]
    cast_inputs = {n.input[0] for n in proto.graph.node if n.op_type == "Cast"}
    assert stored and all(i.name in cast_inputs for i in stored)  # computed in float32
    # export rounded the model's own weights, so torch and ONNX Runtime agree as before (to
    # 3e-4: near-zero local variances of flat graphics, see the test above)
    diffs = compare(ens, half, data.mosaic[:5])
    assert diffs["mos"] < 3e-4 and diffs["degradation"] < 1e-4 and diffs["embedding"] < 3e-4
    with torch.no_grad():
        assert float((ens(x)[0] - mos).abs().max()) < 0.02  # rounding moved MOS by little
    scorer = DistilledScorer(DistilledConfig(model_path=half, batch_size=4))
    preds = scorer.predict_mosaics(data.mosaic[:6])
    assert preds.embedding.shape == (6, 64)
    assert np.allclose(np.linalg.norm(preds.embedding, axis=1), 1.0, atol=1e-4)


def test_distill_cli_trains_ensemble_members_side_by_side(
    tiny_corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    from monitor.cli import main

    out = tmp_path / "ens"
    args = ["train", "distill", "--corpus", str(tiny_corpus), "--out", str(out), "--seed", "3"]
    args += ["--members", "2", "--jobs", "2", "--threads", "1", "--max-steps", "2"]
    args += ["--holdout", "0.5", "--no-progress", "--version", "2.test"]
    assert main(args) == 0
    report = json.loads((out / "report.json").read_text())
    assert [m["seed"] for m in report["members"]] == [3, 4]
    assert report["steps"] == 4
    members = [json.loads((out / f"member-{i}" / "report.json").read_text()) for i in (0, 1)]
    # one held-out split for both members (the split seed is the first member's)
    assert members[0]["heldout_sources"] == members[1]["heldout_sources"]
    assert members[0]["heldout_sources"] == report["heldout_sources"]
    assert members[0]["history"]["step_loss"] != members[1]["history"]["step_loss"]
    assert report["heldout_metrics"]["frames"] > 0
    scorer = DistilledScorer(DistilledConfig(model_path=out / "student.onnx"))
    assert scorer.version.startswith("2.test+")
    meta = scorer._session.get_modelmeta().custom_metadata_map
    assert meta["members"] == "2"
    assert main([*args[:-2], "--members", "0"]) == 2

    # members trained apart join the same way, to the same ensemble
    joined = tmp_path / "joined"
    members_dirs = [str(out / "member-0"), str(out / "member-1")]
    common = ["--corpus", str(tiny_corpus), "--out", str(joined)]
    assert main(["train", "ensemble", *members_dirs, *common]) == 0
    again = json.loads((joined / "report.json").read_text())
    assert again["heldout_metrics"] == report["heldout_metrics"]
    assert main(["train", "ensemble", members_dirs[0], str(tmp_path), *common]) == 2
    # a member with another held-out split is refused, not averaged in
    odd = tmp_path / "odd"
    odd_args = ["train", "distill", "--corpus", str(tiny_corpus), "--out", str(odd)]
    odd_args += ["--holdout", "0", "--threads", "1", "--max-steps", "1", "--no-progress"]
    assert main(odd_args) == 0
    capsys.readouterr()
    assert main(["train", "ensemble", members_dirs[0], str(odd), *common]) == 2
    assert "differs from" in capsys.readouterr().err

    from scorers.train.export import write_card

    card = write_card(
        report, tmp_path / "card.md", command="x", onnx_path=out / "student.onnx", notes=["N1"]
    ).read_text()
    assert "Ensemble of 2 students" in card and "seeds 3, 4" in card and "\nN1\n" in card


def _unfolded_patches(mosaic: torch.Tensor, keep: torch.Tensor | None, s: int = 4) -> torch.Tensor:
    """The stem's plain definition of its input: every patch's s x s pixel blocks unfolded
    into 3*s*s channels (c, sy, sx), normalised: (N*P) x 3*s*s x 32/s x 32/s."""
    import torch

    n, g = mosaic.shape[0], 32 // s
    x = mosaic.reshape(n, 7, g, s, 7, g, s, 3)
    x = x.permute(0, 1, 4, 7, 3, 6, 2, 5).reshape(n, 49, 3 * s * s, g, g)
    if keep is not None:
        x = x[:, keep]
    x = x.reshape(-1, 3 * s * s, g, g).to(torch.float32)
    return (x - 0.45 * 255.0) / (0.25 * 255.0)


def test_fast_stem_and_block_dct_equal_their_plain_definitions() -> None:
    import scipy.fft
    import torch

    from scorers.train.model import ModelConfig, PatchStats, Student

    rng = np.random.default_rng(4)
    mosaic = torch.from_numpy(rng.integers(0, 256, (3, 224, 224, 3), dtype=np.uint8))
    torch.manual_seed(0)
    model = Student(ModelConfig(widths=(8, 16, 32), embed=32, hidden=64, prototypes=8)).eval()
    keep = torch.tensor([0, 5, 17, 48])
    with torch.no_grad():
        for k in (None, keep):
            plain = model.stem(_unfolded_patches(mosaic, k))  # a 1x1 conv on unfolded blocks
            assert torch.allclose(model.stem_features(mosaic, k), plain, atol=1e-5)

    # the block-diagonal DCT and masked block sums against scipy's DCT of each block
    # textured and near-flat blocks side by side, so the "active block" masks matter
    y_np = rng.normal(128, 40, (5, 1, 32, 32))
    y_np[:, :, :16] = 128 + rng.normal(0, 0.7, (5, 1, 16, 32))
    y = torch.from_numpy(y_np.astype(np.float32))  # not integers: no ties at |c| = 2
    stats = PatchStats()
    for n in (8, 4):
        got = stats._dct(y, n)
        blocks = y.numpy().reshape(5, 32 // n, n, 32 // n, n).transpose(0, 1, 3, 2, 4)
        c = scipy.fft.dctn(blocks.astype(np.float64), axes=(-2, -1), norm="ortho")
        u = np.arange(n)
        freq = u[:, None] + u[None, :]
        hi, mid = freq >= n, (freq >= 1) & (freq < n)
        e = c * c
        log_ratio = np.log(((e * hi).sum((-1, -2)) + 1) / ((e * mid).sum((-1, -2)) + 1))
        zero = ((np.abs(c) < 2) & hi).sum((-1, -2)) / hi.sum()
        active = (e * mid).sum((-1, -2)) > 100
        assert 0 < active.mean() < 1
        n_active = active.sum((1, 2)) + 1
        want = [
            log_ratio.mean((1, 2)),
            zero.mean((1, 2)),
            (zero * active).sum((1, 2)) / n_active,
            (log_ratio * active).sum((1, 2)) / n_active,
            active.mean((1, 2)),
        ]
        for g, w in zip(got, want, strict=True):
            assert np.allclose(g.numpy(), w, atol=1e-4)

"""The distilled scorer at runtime: fragments, pooling, metrics, the shipped ONNX model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ingest.config import DecodeConfig, SamplingConfig
from ingest.decode import decode
from ingest.synth import EncodeSettings, clip
from ingest.types import Segment
from scorers import fragments, metrics
from scorers.distilled import DistilledConfig, DistilledScorer, default_model_path, pool
from scorers.types import ScorerError


def _frame(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def test_fragments_keep_native_pixels_and_are_deterministic() -> None:
    frame = _frame(360, 640)
    a, b = fragments.sample(frame), fragments.sample(frame)
    assert a.shape == (fragments.SIZE, fragments.SIZE, 3) and a.dtype == np.uint8
    assert np.array_equal(a, b)
    # Every patch is an unresized, block-aligned crop of the frame.
    patch = a[: fragments.PATCH, : fragments.PATCH]
    hits = [
        (y, x)
        for y in range(0, 360 - 31, fragments.ALIGN)
        for x in range(0, 640 - 31, fragments.ALIGN)
        if np.array_equal(frame[y : y + 32, x : x + 32], patch)
    ]
    assert len(hits) == 1
    jittered = fragments.sample(frame, np.random.default_rng(1))
    assert not np.array_equal(jittered, a)


@pytest.mark.parametrize("shape", [(20, 30), (180, 320), (1080, 1920), (224, 224)])
def test_fragments_any_frame_size(shape: tuple[int, int]) -> None:
    out = fragments.sample(_frame(*shape))
    assert out.shape == (224, 224, 3)


def test_pool_one_bad_frame_vs_short_bad_run() -> None:
    good = [4.5] * 8
    one_bad = [4.5] * 7 + [1.5]
    run_bad = [4.5] * 6 + [1.5, 1.5]
    mean, low = pool(good)
    assert mean == pytest.approx(4.5) and low == pytest.approx(4.5)
    m1, l1 = pool(one_bad)
    _, l2 = pool(run_bad)
    assert m1 > 4.0  # one frame does not sink the mean
    assert 2.5 < l1 < 4.0  # but shows, halfway, in the low score
    assert l2 == pytest.approx(1.5)  # a run of two is not hidden
    assert pool([3.0]) == (3.0, 3.0)
    with pytest.raises(ValueError):
        pool([])


def test_metrics_known_values() -> None:
    x = np.arange(10.0)
    assert metrics.srcc(x, x**3) == pytest.approx(1.0)
    assert metrics.srcc(x, -x) == pytest.approx(-1.0)
    assert metrics.krcc([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(4 / 6)
    # A monotone but non-linear relation: the logistic fit makes PLCC ~1, RMSE ~0.
    y = 1 + 4 / (1 + np.exp(-(x - 5)))
    assert metrics.plcc(x, y) > 0.999
    assert metrics.rmse(x, y) < 0.05
    assert metrics.rankdata([3, 1, 3]).tolist() == [2.5, 1.0, 2.5]
    assert metrics.within_group_srcc(x, x, ["a"] * 5 + ["b"] * 5) == pytest.approx(1.0)


def test_missing_model_names_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope.onnx"
    with pytest.raises(ScorerError, match=str(missing)):
        DistilledScorer(DistilledConfig(model_path=missing))


def test_corrupt_model_names_the_path(tmp_path: Path) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"this is not an onnx model" * 10)
    with pytest.raises(ScorerError, match=str(bad)):
        DistilledScorer(DistilledConfig(model_path=bad))


@pytest.fixture(scope="module")
def shipped() -> DistilledScorer:
    assert default_model_path().is_file(), "the default student must ship in scorers/weights/"
    return DistilledScorer()


def test_shipped_model_loads_quietly_and_reports_provider(
    capfd: pytest.CaptureFixture[str],
) -> None:
    scorer = DistilledScorer(
        DistilledConfig(providers=["CUDAExecutionProvider", "CPUExecutionProvider"])
    )
    err = capfd.readouterr().err
    assert "[E:onnxruntime" not in err  # the CUDA fallback is quiet
    assert scorer.provider in ("CUDAExecutionProvider", "CPUExecutionProvider")
    assert scorer.providers == scorer._session.get_providers()
    assert scorer.version.startswith("2.")
    assert default_model_path().stat().st_size <= 10_000_000  # the package's size budget
    assert len(scorer.degradations) == 7 and scorer.degradations[0] == "clean"
    # idle ONNX Runtime threads must not spin on cores the decode workers need
    key = "session.intra_op.allow_spinning"
    assert scorer._session.get_session_options().get_session_config_entry(key) == "0"
    spinning = DistilledScorer(DistilledConfig(spin=True))
    assert spinning._session.get_session_options().get_session_config_entry(key) == "1"


def _decoded(crf: int, seed: int = 3) -> object:
    data = clip(
        "scene", width=640, height=360, seconds=1.0, seed=seed, settings=EncodeSettings(crf=crf)
    )
    cfg = DecodeConfig(sampling=SamplingConfig(mode="uniform", count=4))
    return decode(Segment(data, "s", f"crf{crf}", crf), cfg)


def test_shipped_model_scores_monotone_in_crf(shipped: DistilledScorer) -> None:
    segments = [_decoded(crf) for crf in (16, 28, 38, 48)]
    verdicts = shipped.score(segments)  # type: ignore[arg-type]
    mos = [v.mos for v in verdicts]
    assert all(m is not None and 1.0 <= m <= 5.0 for m in mos)
    assert mos == sorted(mos, reverse=True), mos
    assert mos[0] - mos[-1] > 1.0, mos  # the scale is used, not a sliver of it
    for v in verdicts:
        assert v.mos_low is not None and v.mos is not None and v.mos_low <= v.mos + 1e-9
        assert len(v.frame_mos) == 4
        assert sum(v.degradation.values()) == pytest.approx(1.0, abs=1e-3)
        assert v.scorers[0].startswith("distilled@")
    assert verdicts[-1].degradation_class in ("compression", "scaling", "blur")


def test_the_slim_variant_ships_with_its_own_fusion_and_ranks_crf() -> None:
    """`variant: slim` runs the packaged one-member student without the statistics branch,
    with the fusion head fitted to its outputs, and it still orders a CRF ladder."""
    slim = DistilledScorer(DistilledConfig(variant="slim"))
    assert slim.path == default_model_path("slim") and slim.path.is_file()
    meta = slim._session.get_modelmeta().custom_metadata_map
    assert meta["members"] == "1" and '"stats": false' in meta["model_config"]
    assert slim.version.startswith("3.") and "+fusion2." in slim.version
    assert slim.path.stat().st_size < default_model_path().stat().st_size
    verdicts = slim.score([_decoded(crf) for crf in (16, 28, 38, 48)])  # type: ignore[list-item]
    mos = [v.mos for v in verdicts]
    assert mos == sorted(mos, reverse=True) and mos[0] - mos[-1] > 1.0, mos  # type: ignore[type-var,operator]


def test_batching_across_segments_is_deterministic(shipped: DistilledScorer) -> None:
    a, b = _decoded(24, seed=5), _decoded(40, seed=6)
    alone = shipped.score([b])[0]  # type: ignore[list-item]
    together = shipped.score([a, b])[1]  # type: ignore[list-item]
    assert np.allclose(alone.frame_mos, together.frame_mos, atol=1e-5)
    again = shipped.score([a, b])[1]  # type: ignore[list-item]
    assert again.frame_mos == together.frame_mos


def test_config_union_and_default_chain() -> None:
    from monitor.config import Config

    cfg = Config.model_validate({"scorers": [{"type": "distilled", "batch_size": 4}]})
    assert isinstance(cfg.scorers[0], DistilledConfig) and cfg.scorers[0].batch_size == 4
    with pytest.raises(ValueError):
        Config.model_validate({"scorers": [{"type": "distilled", "bogus": 1}]})
    assert any(isinstance(s, DistilledConfig) for s in Config().scorers)


def test_eval_cli_on_a_csv_and_a_reference_directory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    from monitor.cli import main

    refs = tmp_path / "refs"
    refs.mkdir()
    settings = EncodeSettings(crf=0)
    refs.joinpath("scene.ts").write_bytes(
        clip("scene", width=320, height=180, seconds=0.4, seed=9, settings=settings)
    )
    rows = []
    for crf in (18, 34, 50):
        name = f"scene__crf{crf}.ts"
        data = clip(
            "scene", width=320, height=180, seconds=0.4, seed=9, settings=EncodeSettings(crf=crf)
        )
        tmp_path.joinpath(name).write_bytes(data)
        rows.append(f"{name},{5 - crf / 15:.2f}")
    csv_path = tmp_path / "labels.csv"
    csv_path.write_text("path,mos\n" + "\n".join(rows) + "\n")
    assert main(["eval", str(csv_path), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["items"] == 3 and result["srcc"] == pytest.approx(1.0)
    assert set(result) >= {"srcc", "plcc", "krcc", "rmse"}
    from scorers.train.teacher import find_ffmpeg

    if find_ffmpeg() is not None:
        assert main(["eval", str(tmp_path), "--json"]) == 0
        assert json.loads(capsys.readouterr().out)["srcc"] == pytest.approx(1.0)


def test_io_binding_path_gives_the_plain_path_s_scores() -> None:
    # The CUDA path feeds the model through IO binding; the same code runs on the CPU
    # provider here, so it is checked against the plain run.
    rng = np.random.default_rng(0)
    mosaics = rng.integers(0, 256, size=(5, 224, 224, 3), dtype=np.uint8)
    plain = DistilledScorer(DistilledConfig(threads=1, batch_size=2, io_binding="off"))
    bound = DistilledScorer(DistilledConfig(threads=1, batch_size=2, io_binding="on"))
    assert bound.io_binding and not plain.io_binding
    a, b = plain.predict_mosaics(mosaics), bound.predict_mosaics(mosaics)
    np.testing.assert_allclose(a.mos, b.mos, atol=1e-6)
    np.testing.assert_allclose(a.embedding, b.embedding, atol=1e-6)

"""Slimming the shipped student: the warm start is exact where it claims to be, the data is
the runtime's mosaics labelled by the real teacher, and training moves towards it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")

import onnxruntime as ort  # noqa: E402
import torch  # noqa: E402

from scorers import fragments  # noqa: E402
from scorers.distilled import DistilledConfig, DistilledScorer, default_model_path  # noqa: E402
from scorers.train import slim  # noqa: E402
from scorers.train.export import compare, export  # noqa: E402

TEACHER = default_model_path()


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> slim.SlimData:
    """Four procedural segments (two patterns, clean and impaired) through the real build."""
    jobs = slim.synthetic_jobs(4, seed=3, jitter=2)
    return slim.build(jobs, TEACHER, tmp_path_factory.mktemp("slim"), workers=1)


def test_the_warm_start_computes_the_members_encoder_exactly() -> None:
    """The ONNX graph folds each BatchNorm into its convolution; unfolded into the slim
    student, the encoder's output equals the shipped member's intermediate tensor."""
    proto = onnx.load(str(TEACHER))
    name = "/encoder/encoder.4/encoder.4.5/Relu_output_0"  # member 0's last encoder block
    proto.graph.output.append(
        onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None)
    )
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(proto.SerializeToString(), options, ["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 255, (180, 320, 3), dtype=np.uint8) for _ in range(2)]
    mosaics = fragments.sample_batch(frames)
    want = session.run([name], {"fragments": mosaics})[0]
    model = slim.warm_start(TEACHER).eval()
    assert model.stats is None  # the slim student has no statistics branch
    with torch.no_grad():
        got = model.encoder(model.stem_features(torch.from_numpy(mosaics))).numpy()
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, atol=1e-4)


def test_the_data_is_the_runtimes_mosaics_labelled_by_the_teacher(data: slim.SlimData) -> None:
    # 8 sampled frames per segment as displayed, and 2 jittered ones.
    assert len(data) == 4 * 10
    assert data.mosaic.shape[1:] == fragments.MOSAIC
    scorer = DistilledScorer(DistilledConfig(model_path=TEACHER, threads=1, hybrid=False))
    again = scorer.predict_mosaics(np.ascontiguousarray(data.mosaic[:8]))
    np.testing.assert_allclose(again.mos, data.mos[:8], atol=1e-4)
    np.testing.assert_allclose(again.degradation, data.degradation[:8], atol=1e-4)
    assert len(set(data.source.tolist())) >= 2  # whole sources, for holding out


def test_training_moves_the_slim_student_to_the_teacher(
    data: slim.SlimData, tmp_path: Path
) -> None:
    model = slim.warm_start(TEACHER)
    before = slim.agreement(model, data)
    cfg = slim.SlimConfig(epochs=30, batch_size=16, lr=2e-3, val_fraction=0.3, max_steps=24)
    report = slim.train(model, data, tmp_path, cfg)
    after = slim.agreement(model, data)
    assert report["steps"] == 24
    assert after["mae"] < 0.7 * before["mae"]  # the warm start lacks the statistics' share
    path = export(model, tmp_path / "slim.onnx", version="test", fp16_weights=True)
    diff = compare(model, path, np.ascontiguousarray(data.mosaic[:4]))
    assert diff["mos"] < 1e-3
    scorer = DistilledScorer(DistilledConfig(model_path=path, threads=1, hybrid=False))
    preds = scorer.predict_mosaics(np.ascontiguousarray(data.mosaic[:4]))
    assert np.all((preds.mos >= 1) & (preds.mos <= 5))


def test_labelled_jobs_keep_their_label_through_the_build(tmp_path: Path) -> None:
    """A realset labels.csv row's MOS reaches every mosaic of its segment; procedural
    segments have none (NaN), and the labels survive save and load."""
    seg = tmp_path / "seg"
    seg.mkdir()
    (seg / "a.ts").write_bytes(slim._synthetic_segment("synth:zoneplate:320x180:crf:0.5:1", 1))
    (tmp_path / "labels.csv").write_text(
        "path,mos,vmaf,source,kind,variant,display\nseg/a.ts,2.25,40.0,pic,compression,x,640x360\n"
    )
    real = slim.real_jobs(tmp_path / "labels.csv", jitter=1)
    assert [j.label for j in real] == [2.25] and real[0].display == (640, 360)
    built = slim.build(real + slim.synthetic_jobs(1, jitter=1), TEACHER, tmp_path / "d", 1)
    again = slim.SlimData.load(tmp_path / "d")
    assert again.label is not None and built.label is not None
    np.testing.assert_array_equal(again.label, built.label)
    mine = again.source == "pic"
    assert mine.sum() == 9 and np.all(again.label[mine] == np.float32(2.25))
    assert np.all(np.isnan(again.label[~mine]))


def test_label_targets_move_the_student_to_the_labels_not_the_teacher(
    data: slim.SlimData, tmp_path: Path
) -> None:
    """With targets=labels a labelled mosaic learns its own label: here the teacher's MOS
    turned upside down, which the teacher's targets would never teach."""
    labels = (6.0 - np.asarray(data.mos)).astype(np.float32)
    labelled = slim.SlimData(data.mosaic, data.mos, data.degradation, data.source, labels)
    model = slim.warm_start(TEACHER)
    before = slim.agreement(model, labelled)
    cfg = slim.SlimConfig(
        epochs=30,
        batch_size=16,
        lr=2e-3,
        val_fraction=0.3,
        max_steps=30,
        targets="labels",
        group=4,
        within_rank_weight=1.0,
    )
    slim.train(model, labelled, tmp_path, cfg)
    after = slim.agreement(model, labelled)
    assert after["label_srcc"] > before["label_srcc"] + 0.3
    with pytest.raises(ValueError, match="needs mosaics with labels"):
        slim.train(slim.warm_start(TEACHER), data, tmp_path, cfg)

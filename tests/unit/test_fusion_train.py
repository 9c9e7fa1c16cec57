"""The fusion trainer on real encodes: features through the runtime path, the same on one
process or several (the quantiser read once raced with FFmpeg's frame threads, so the
trainer learned noisy QP features), cached and reused, and a head that loads."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from ingest.synth import EncodeSettings, encode, pattern_frames
from scorers import hybrid
from scorers.train import fusion

FIELDS = ("path", "mos", "vmaf", "source", "kind", "variant", "display")


@pytest.fixture(scope="module")
def labelled(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("set")
    (root / "seg").mkdir()
    rows = []
    for s, pattern in enumerate(("scene", "texture")):
        frames = list(pattern_frames(pattern, 320, 180, 16, seed=s))
        for crf, vmaf in ((20, 97.0), (38, 70.0), (46, 45.0)):
            path = f"seg/{pattern}_{crf}.ts"
            (root / path).write_bytes(encode(frames, EncodeSettings(crf=crf, gop=8)))
            rows.append([path, 1 + 4 * vmaf / 100, vmaf, pattern, "compression", f"crf{crf}"])
            rows[-1].append("640x360")
    with (root / "labels.csv").open("w", newline="") as fh:
        out = csv.writer(fh)
        out.writerow(FIELDS)
        out.writerows(rows)
    return root / "labels.csv"


def test_features_are_the_same_on_one_process_or_two(labelled: Path) -> None:
    one = fusion.extract(labelled, jobs=1)
    cache = labelled.with_name(f"features-8-v{fusion.FEATURES_CACHE}.npz")
    assert cache.is_file()
    cache.unlink()
    two = fusion.extract(labelled, jobs=2)
    assert list(two.path) == list(one.path) and len(one.path) == 6
    np.testing.assert_array_equal(one.x, two.x)
    qp = one.x[:, hybrid.FEATURES.index("qp_mean")]
    assert (one.x[:, hybrid.FEATURES.index("has_qp")] == 1).all()
    # Coarser CRF, coarser quantiser, for each source.
    for src in ("scene", "texture"):
        assert list(np.argsort(qp[one.source == src])) == [0, 1, 2]


def test_cache_is_reused_and_a_head_loads(labelled: Path) -> None:
    first = fusion.extract(labelled)
    cache = labelled.with_name(f"features-8-v{fusion.FEATURES_CACHE}.npz")
    stamp = cache.stat().st_mtime_ns
    again = fusion.extract(labelled)
    assert cache.stat().st_mtime_ns == stamp  # nothing recomputed, nothing rewritten
    np.testing.assert_array_equal(first.x, again.x)
    spec = fusion.train(first, fusion.FusionConfig(members=2, epochs=30), version="t")
    pred = fusion.predict(spec, first)
    assert pred.shape == (6,) and np.isfinite(pred).all()
    assert hybrid.Fusion.from_spec(spec).version == "t"
    assert first.package is None  # these labels name no package


def test_labels_with_packages_give_package_folds(labelled: Path, tmp_path: Path) -> None:
    rows = fusion.read_labels(labelled)
    named = tmp_path / "labels.csv"
    with named.open("w", newline="") as fh:
        out = csv.DictWriter(fh, fieldnames=[*FIELDS, "package"])
        out.writeheader()
        out.writerows({**r, "package": f"pkg-{r['source']}"} for r in rows)
    (tmp_path / "seg").symlink_to(labelled.parent / "seg")
    data = fusion.extract(named)
    assert list(data.package) == [f"pkg-{s}" for s in data.source]
    masks = fusion.cv_folds(data, by="package")
    assert [sorted(set(data.package[m])) for m in masks] == [["pkg-scene"], ["pkg-texture"]]

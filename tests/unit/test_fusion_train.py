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


def _features_against_the_grain(n: int = 240) -> fusion.SetFeatures:
    """Random features whose labels rise with the quantiser: a head free to follow them
    learns the wrong direction, a monotone one must not."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, len(hybrid.FEATURES))).astype(np.float32)
    qp = x[:, hybrid.FEATURES.index("qp_mean")]
    mos = np.clip(3 + qp + 0.1 * rng.normal(size=n), 1, 5).astype(np.float32)
    src = np.array([f"s{i % 12}" for i in range(n)])
    return fusion.SetFeatures(
        x=x,
        damaged=np.zeros(n, np.float32),
        mos=mos,
        vmaf=(mos - 1) * 25,
        source=src,
        kind=np.array(["compression"] * n),
        coded_mos=mos,
        path=np.array([f"p{i}" for i in range(n)]),
    )


def _worst_move(spec: dict[str, object], feature: str, sign: int) -> float:
    """The largest change of the head's score against `sign` when `feature` rises."""
    head = hybrid.Fusion.from_spec(spec)  # type: ignore[arg-type]
    rng = np.random.default_rng(1)
    x = rng.normal(size=(400, len(hybrid.FEATURES))).astype(np.float32)
    i = hybrid.FEATURES.index(feature)
    worst = 0.0
    for step in (0.25, 1.0, 3.0):
        up = x.copy()
        up[:, i] += step * float(head.scale[i])
        d = head.predict(up, np.zeros(400, np.float32)) - head.predict(x, np.zeros(400))
        worst = max(worst, float((-sign * d).max()))
    return worst


def test_monotone_head_moves_only_the_known_way() -> None:
    data = _features_against_the_grain()
    free = fusion.train(data, fusion.FusionConfig(members=2, epochs=40))
    assert _worst_move(free, "qp_mean", -1) > 0.5  # the data pulls it the wrong way
    spec = fusion.train(data, fusion.FusionConfig(members=2, epochs=40, monotone=True))
    for feature, sign in fusion.MONOTONE.items():
        assert _worst_move(spec, feature, sign) <= 1e-5, feature
    assert spec["config"]["monotone"] is True


def test_labels_and_cache_alone_give_the_set(labelled: Path, tmp_path: Path) -> None:
    """A segment that does not decode is cached as such: once extracted, a set's labels
    and features cache give the same features with the segments gone."""
    import shutil

    root = tmp_path / "set"
    shutil.copytree(labelled.parent, root)
    (root / f"features-8-v{fusion.FEATURES_CACHE}.npz").unlink(missing_ok=True)
    (root / "seg" / "broken.ts").write_bytes(b"\x47" + bytes(187) * 3)
    with (root / "labels.csv").open("a", newline="") as fh:
        csv.writer(fh).writerow(
            ["seg/broken.ts", 3.0, 50.0, "scene", "packet_loss", "x", "640x360"]
        )
    first = fusion.extract(root / "labels.csv")
    assert len(first.path) == 6 and "seg/broken.ts" not in set(first.path)
    shutil.rmtree(root / "seg")
    again = fusion.extract(root / "labels.csv")
    assert list(again.path) == list(first.path)
    np.testing.assert_array_equal(again.x, first.x)
    np.testing.assert_array_equal(again.vmaf, first.vmaf)
    # labels come from labels.csv as it is now, features from the cache
    text = (root / "labels.csv").read_text().replace(",97.0,", ",91.0,")
    (root / "labels.csv").write_text(text)
    relabelled = fusion.extract(root / "labels.csv")
    assert sorted(set(relabelled.vmaf.tolist())) == [45.0, 70.0, 91.0]
    np.testing.assert_array_equal(relabelled.x, first.x)


def test_ignored_features_change_nothing() -> None:
    data = _features_against_the_grain()
    ignore = ("detail", "motion", "luma")
    spec = fusion.train(data, fusion.FusionConfig(members=2, epochs=40, ignore=ignore))
    head = hybrid.Fusion.from_spec(spec)
    moved = data.x.copy()
    for name in ignore:
        moved[:, hybrid.FEATURES.index(name)] += 5.0 * float(
            head.scale[hybrid.FEATURES.index(name)]
        )
    zeros = np.zeros(len(data.x), np.float32)
    np.testing.assert_array_equal(head.predict(moved, zeros), head.predict(data.x, zeros))
    # and a feature it may use does move it
    used = data.x.copy()
    used[:, hybrid.FEATURES.index("qp_mean")] += 2.0
    assert np.abs(head.predict(used, zeros) - head.predict(data.x, zeros)).max() > 0.01
    assert spec["config"]["ignore"] == ignore
    # ignored in training too, not only cut from the spec: whatever those columns hold,
    # the fitted weights are the same
    scrambled = fusion.SetFeatures(**{**vars(data), "x": data.x.copy()})
    rng = np.random.default_rng(7)
    for name in ignore:
        scrambled.x[:, hybrid.FEATURES.index(name)] = rng.normal(size=len(data.x))
    again = fusion.train(scrambled, fusion.FusionConfig(members=2, epochs=40, ignore=ignore))
    assert again["layers"] == spec["layers"]

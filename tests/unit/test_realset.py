"""The real-content set builder and the fusion trainer, on small real inputs."""

from __future__ import annotations

import csv
import itertools
import json
from pathlib import Path

import numpy as np
import pytest

from ingest.decode import decode
from ingest.types import Segment
from scorers import hybrid
from scorers.train import content, fusion, realset


def test_eval_and_train_splits_share_no_package() -> None:
    assert not set(realset.EVAL_PACKAGES) & set(realset.TRAIN_PACKAGES)
    assert realset.plan("eval", "a") == realset.plan("eval", "b")  # fixed before training
    a, b = realset.plan("train", "a"), realset.plan("train", "b")
    assert a != b and {v.kind for v in a} == {v.kind for v in realset.plan("eval", "a")}


def test_film_moves_a_camera_over_a_photograph() -> None:
    clip = realset.film(content._still("coffee"), "t", frames=8, size=(320, 180))
    assert len(clip) == 8 and clip[0].shape == (180, 320, 3)
    assert any(not np.array_equal(clip[0], f) for f in clip[1:])
    assert (
        realset.film(content._still("coffee"), "t", frames=8, size=(320, 180))[3].tobytes()
        == clip[3].tobytes()
    )


def test_the_camera_leads_into_its_clip() -> None:
    """start=-n films the camera's n frames before the clip, its motion carried on: the step
    into the clip's first frame is like the clip's own steps (every motion: pan, zoom,
    shake and the window before a cut)."""
    picture = content._still("coffee")
    for seed in range(12):
        clip = realset.camera(picture, f"c{seed}", frames=12, size=(64, 36))
        before = realset.camera(picture, f"c{seed}", frames=12, size=(64, 36), start=-12)
        assert len(before) == 12 and before[0].shape == clip[0].shape
        steps = [float(np.abs(b.astype(int) - a).mean()) for a, b in itertools.pairwise(clip)]
        into = float(np.abs(clip[0].astype(int) - before[-1]).mean())
        assert into <= 2 * steps[0] + 1.0
        if min(steps) > 1.0:  # a camera that moves on every frame moved before too: it
            # turned back at the picture's edge rather than stopping there (a still)
            assert all(
                float(np.abs(b.astype(int) - a).mean()) > 0.5 for a, b in itertools.pairwise(before)
            )
        assert before[0].tobytes() != clip[0].tobytes()  # other frames: the ones before
    with pytest.raises(ValueError, match="not within"):
        realset.camera(picture, "c", frames=12, size=(64, 36), start=-13)


def test_a_rung_is_delivered_at_its_coded_size_and_judged_displayed() -> None:
    clip = realset.film(content._still("chelsea"), "t", frames=6, size=(640, 360))
    v = realset.Version("ladder", crf=None, bitrate=300_000, width=320, height=180)
    data = realset.make_segment(clip, v, seed=1)
    d = decode(Segment(data))
    assert (d.info.width, d.info.height) == (320, 180)
    shown = realset.as_displayed(data, len(clip), (640, 360))
    assert len(shown) == 6 and shown[0].shape == (360, 640, 3)


def test_list_sources_keeps_one_file_per_wallpaper(tmp_path: Path) -> None:
    from PIL import Image

    pic = (np.random.default_rng(0).integers(0, 255, (720, 1280, 3))).astype(np.uint8)
    for size in ("1280x720", "640x360"):
        d = tmp_path / "mate-backgrounds" / "w" / "Hill" / "contents" / "images"
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pic).save(d / f"{size}.png")
    flat = tmp_path / "mate-backgrounds" / "w" / "flat.png"
    Image.fromarray(np.full((720, 1280, 3), 90, np.uint8)).save(flat)
    found = realset.list_sources(tmp_path, "eval")
    assert len(found) == 2  # Hill once (its largest file), and flat.png
    assert next(p for p in found if realset.usable(p) is not None).name == "1280x720.png"
    with pytest.raises(FileNotFoundError, match="--fetch"):
        realset.list_sources(tmp_path, "train")


def test_an_offset_spread_shares_no_picture_with_the_first(tmp_path: Path) -> None:
    from PIL import Image

    rng = np.random.default_rng(1)
    for i in range(9):
        d = tmp_path / "mate-backgrounds" / "w"
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (400, 480, 3)).astype(np.uint8)).save(d / f"p{i}.png")
    first = [n for n, _ in realset.spread_pictures(tmp_path, "eval", 3)]
    second = [n for n, _ in realset.spread_pictures(tmp_path, "eval", 3, offset=1)]
    assert len(first) == len(second) == 3 and not set(first) & set(second)
    # the offset wraps: the last pick moves on to the first picture
    assert realset.spread_pictures(tmp_path, "eval", 1, offset=9)[0][0] == first[0]


def _fake_set(n_sources: int = 6, per: int = 10) -> fusion.SetFeatures:
    """Features where quality falls with the quantiser and with damage, plus noise."""
    rng = np.random.default_rng(0)
    n = n_sources * per
    x = rng.normal(0, 1, (n, len(hybrid.FEATURES))).astype(np.float32)
    qp = rng.uniform(0.3, 0.9, n).astype(np.float32)
    x[:, hybrid.FEATURES.index("qp_mean")] = qp
    damaged = np.where(rng.random(n) < 0.2, rng.uniform(0, 0.5, n), 0).astype(np.float32)
    mos = (5.0 - 4.0 * (qp - 0.3) / 0.6 - 2.0 * damaged + rng.normal(0, 0.1, n)).astype(np.float32)
    return fusion.SetFeatures(
        x=x,
        damaged=damaged,
        mos=np.clip(mos, 1, 5),
        vmaf=np.clip(mos, 1, 5) * 20,
        source=np.repeat([f"s{i}" for i in range(n_sources)], per),
        kind=np.array(["compression"] * n),
        coded_mos=np.zeros(n, np.float32),
        path=np.array([f"p{i}" for i in range(n)]),
    )


def test_fusion_head_learns_and_damage_only_lowers(tmp_path: Path) -> None:
    data = _fake_set(8, 25)
    spec = fusion.train(data, fusion.FusionConfig(members=2, epochs=150, hidden=8))
    path = tmp_path / "f.json"
    path.write_text(json.dumps(spec))
    head = hybrid.Fusion(path)
    pred = head.predict(data.x, data.damaged)
    assert fusion.report(list(pred), data)["srcc"] > 0.8
    assert spec["damage_per_fraction"] > 0
    x = np.repeat(data.x[:1], 5, axis=0)
    scores = head.predict(x, np.array([0, 0.1, 0.2, 0.4, 0.8], np.float32))
    assert np.all(np.diff(scores) <= 0)
    cv = fusion.cross_validate(data, fusion.FusionConfig(members=1, epochs=150, hidden=8), folds=3)
    assert cv["sources"] == 8 and cv["srcc"] > 0.5


def test_a_source_built_before_the_package_column_gets_it(tmp_path: Path) -> None:
    assets, out = tmp_path / "assets", tmp_path / "set"
    picture = assets / "gnome-backgrounds" / "usr" / "share" / "blobs.png"
    name = realset.source_name(assets, picture)
    (out / "done").mkdir(parents=True)
    old = {"path": f"seg/{name}__clean_00.ts", "mos": "4.5", "source": name}
    finished = [old] * len(realset.plan("train", name))
    (out / "done" / f"{name}.json").write_text(json.dumps(finished))
    rows = realset.build_source(picture, assets, out, "train")  # finished: not rebuilt
    assert rows == [{**old, "package": "gnome-backgrounds"}] * len(finished)
    assert "package" in realset.LABEL_FIELDS


def test_the_training_plan_ends_with_a_service_ladder() -> None:
    a = realset.plan("train", "a")[-6:]
    assert all(v.kind == "ladder" and v.bitrate for v in a) and len({v.codec for v in a}) == 1
    assert (a[0].width, a[0].height) == (1280, 720) and all(v.height < 720 for v in a[1:5])
    bpp = [v.bitrate / (v.width * v.height * realset.FPS) for v in a if v.bitrate]
    assert 0.04 < bpp[0] < 0.21 and all(0.02 < b < 0.4 for b in bpp)
    # a second 720p rung at a lower rate, drawn after the first five (which keep theirs)
    assert (a[5].width, a[5].height) == (1280, 720) and 0.35 <= bpp[5] / bpp[0] <= 0.7


def test_a_grown_plan_makes_only_the_new_versions(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A set built under an older plan is resumed, not rebuilt: a source's finished
    versions keep their bytes and labels, and only the versions the plan gained are
    filmed, encoded and labelled by VMAF against the same reference."""
    from PIL import Image

    assets, out = tmp_path / "assets", tmp_path / "set"
    picture = assets / "gnome-backgrounds" / "coffee.png"
    picture.parent.mkdir(parents=True)
    Image.fromarray(content._still("coffee")).resize((800, 600)).save(picture)
    full = [
        realset.Version("clean", crf=12),
        realset.Version("compression", crf=40),
        realset.Version("ladder", crf=None, bitrate=150_000, width=416, height=234),
    ]
    monkeypatch.setattr(realset, "plan", lambda split, name: full[:2])
    first = realset.build_source(picture, assets, out, "train")
    before = {r["path"]: (out / r["path"]).read_bytes() for r in first}
    # a mark only the finished rows carry: a rebuild of every version (whose bytes and
    # labels would come out the same) loses it
    first[0]["mos"] = "marked"
    (out / "done" / f"{realset.source_name(assets, picture)}.json").write_text(json.dumps(first))
    monkeypatch.setattr(realset, "plan", lambda split, name: full)
    rows = realset.build_source(picture, assets, out, "train")
    assert rows[:2] == first and len(rows) == 3
    assert all((out / p).read_bytes() == b for p, b in before.items())
    assert rows[2]["kind"] == "ladder" and rows[2]["path"].endswith("__ladder_02.ts")
    assert float(rows[2]["vmaf"]) < float(rows[0]["vmaf"]) - 10  # labelled, and lower
    assert realset.build_source(picture, assets, out, "train") == rows  # finished now


def test_package_folds_hold_out_whole_packages() -> None:
    data = _fake_set(8, 25)
    with pytest.raises(ValueError, match="rebuild labels"):
        fusion.cv_folds(data, by="package")  # labels from before the column
    data.package = np.array(["a", "a", "b", "c", "c", "c", "d", "d"]).repeat(25)
    masks = fusion.cv_folds(data, by="package")
    assert len(masks) == 4 and sum(int(m.sum()) for m in masks) == len(data.mos)
    for m in masks:  # one package each, all of it, and every source of it whole
        assert len(set(data.package[m])) == 1
        assert not set(data.source[m]) & set(data.source[~m])
    by_source = fusion.cv_folds(data, folds=3)
    assert len(by_source) == 3 and any(len(set(data.package[m])) > 1 for m in by_source)
    cfg = fusion.FusionConfig(members=1, epochs=100, hidden=8)
    cv = fusion.cross_validate(data, cfg, by="package")
    assert cv["folds"] == "package" and sorted(cv["by_package"]) == ["a", "b", "c", "d"]
    assert cv["srcc"] > 0.5


def test_eval_cli_reports_within_source_and_kind(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from ingest.synth import EncodeSettings, encode
    from monitor.cli import main

    clip = realset.film(content._still("coffee"), "e", frames=8, size=(320, 180))
    rows = []
    for src in ("a", "b"):
        for crf, mos in ((18, 4.5), (30, 3.5), (44, 1.5)):
            name = f"{src}_{crf}.ts"
            (tmp_path / name).write_bytes(encode(clip, EncodeSettings(crf=crf)))
            rows.append([name, mos, src, "clean" if crf == 18 else "compression", "320x180"])
    with (tmp_path / "labels.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "mos", "source", "kind", "display"])
        w.writerows(rows)
    assert main(["eval", str(tmp_path / "labels.csv"), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["items"] == 6 and out["srcc_within_source"] > 0.9
    assert out["srcc_by_kind"]["compression"] > 0.8
    assert main(["eval", str(tmp_path / "labels.csv"), "--display", "12x"]) == 2


def test_video_masters_are_sources(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`--footage`: an operator's own masters are cut into clips, versioned and labelled by
    VMAF as the pictures are; a master too short for a clip is skipped, not fatal."""
    from ingest.synth import EncodeSettings, encode, pattern_frames

    footage, out = tmp_path / "masters", tmp_path / "set"
    (footage / "news").mkdir(parents=True)
    frames = list(pattern_frames("scene", 640, 360, 60, seed=3))
    master = EncodeSettings(codec="libx264", container="mp4", fps=25, crf=4, gop=25)
    (footage / "news" / "desk.mp4").write_bytes(encode(frames, master))
    (footage / "short.mov").write_bytes(encode(frames[:5], master))  # 5 frames: no clip
    (footage / "notes.txt").write_text("not a video")
    monkeypatch.setattr(
        realset,
        "plan",
        lambda split, name: [
            realset.Version("clean", crf=12),
            realset.Version("compression", crf=44),
        ],
    )
    labels = realset.build(footage, out, "train", footage=True)
    rows = list(csv.DictReader(labels.open()))
    assert [r["kind"] for r in rows] == ["clean", "compression"]
    assert {r["package"] for r in rows} == {"news"}
    assert float(rows[0]["vmaf"]) > 85 and float(rows[1]["vmaf"]) < float(rows[0]["vmaf"]) - 10
    clip = realset.footage_clip(footage / "news" / "desk.mp4", rows[0]["source"])
    assert clip is not None and len(clip) == realset.CLIP_FRAMES
    assert clip[0].shape == (realset.DISPLAY[1], realset.DISPLAY[0], 3)
    assert realset.footage_clip(footage / "short.mov", "x") is None
    assert realset.footage_clip(footage / "notes.txt", "x") is None
    manifest = json.loads((out / "sources.json").read_text())
    assert manifest["packages"] == ["news"] and manifest["versions"] == 2

"""`vqmon train vlmlabel`: a segment set labelled by the VLM, the no-reference teacher.

A test double (the picture's sharpness decides its answer) checks the labels themselves;
the real tiny Qwen2.5-VL runs the command end to end through transformers' generate."""

from __future__ import annotations

import csv
import io
import math
import statistics
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ingest.synth import EncodeSettings, encode, pattern_frames
from monitor.cli import main
from scorers.train import fusion, vlmlabel
from scorers.vlm.config import DiagnoseConfig
from scorers.vlm.diagnoser import Diagnoser
from scorers.vlm.types import Generation, Prompt, VLMError

FIELDS = ("path", "mos", "vmaf", "source", "kind", "variant", "display", "package")
BLURS = (0.0, 1.5, 4.0)


@pytest.fixture(scope="module")
def segments(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny realset: two sources x three blurs, 160x90 shown at 320x180, VMAF-labelled."""
    from PIL import ImageFilter

    root = tmp_path_factory.mktemp("set")
    (root / "seg").mkdir()
    rows = []
    for s, pattern in enumerate(("texture", "scene")):
        frames = list(pattern_frames(pattern, 160, 90, 8, seed=s))
        for b in BLURS:
            soft = [
                np.asarray(Image.fromarray(f).filter(ImageFilter.GaussianBlur(b))) for f in frames
            ]
            path = f"seg/{pattern}_{b}.ts"
            (root / path).write_bytes(encode(soft, EncodeSettings(crf=18, gop=8)))
            vmaf = 100 - 20 * b
            rows.append([path, 1 + vmaf / 25, vmaf, pattern, "blur", f"b{b}", "320x180", "pkg"])
    with (root / "labels.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(FIELDS)
        w.writerows(rows)
    return root


class SharpnessTeacher:
    """Answers by the picture's sharpness (the mean of its horizontal differences): the
    first sample exactly, later ones 0.2 apart; every `garbage`-th picture gets a text that
    does not parse. Records what it was shown and what it answered."""

    model_id = "sharpness-double"

    def __init__(self, garbage: int = 0, fail_after: int | None = None) -> None:
        self.garbage, self.fail_after = garbage, fail_after
        self.sizes: list[tuple[int, int]] = []
        self.answers: list[list[float]] = []
        self.calls = 0

    def generate(
        self, prompts: Sequence[Prompt], samples: int, temperature: float
    ) -> list[Generation]:
        self.calls += 1
        if self.fail_after is not None and self.calls > self.fail_after:
            raise VLMError("the server went away")
        out = []
        for p in prompts:
            img = Image.open(io.BytesIO(p.images[0])).convert("L")
            self.sizes.append(img.size)
            if self.garbage and len(self.sizes) % self.garbage == 0:
                self.answers.append([])
                out.append(Generation(("I cannot tell",) * samples, 0.01))
                continue
            sharp = float(np.abs(np.diff(np.asarray(img, np.float32), axis=1)).mean())
            scores = [round(min(4.5, 1.0 + sharp / 4) + 0.2 * k, 2) for k in range(samples)]
            self.answers.append(scores)
            out.append(Generation(tuple(f"<answer>{v:.2f}</answer>" for v in scores), 0.01))
        return out

    def close(self) -> None:
        pass


def read(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def diagnoser(teacher: SharpnessTeacher, samples: int = 1) -> Diagnoser:
    return Diagnoser(DiagnoseConfig(tasks=["score"], samples=samples), teacher)


def test_labels_follow_the_teacher_as_displayed(segments: Path, tmp_path: Path) -> None:
    teacher = SharpnessTeacher()
    out = tmp_path / "vlm.csv"
    rows = vlmlabel.read_rows(segments)
    summary = vlmlabel.label(segments, rows, out, diagnoser(teacher, samples=2))
    assert summary.labelled == 6 and summary.failed == 0 and summary.teacher == "sharpness-double"
    # three pictures a segment, each upscaled from 160x90 to the 320x180 display
    assert teacher.sizes == [(320, 180)] * 18
    got = read(out)
    assert [r["vmaf"] for r in got] == [r["vmaf"] for r in rows]  # kept, to compare
    for src in ("texture", "scene"):
        mos = [float(r["mos"]) for r in got if r["source"] == src]
        assert mos == sorted(mos, reverse=True) and mos[0] > mos[-1]  # more blur, lower
    for r in got:
        assert r["parsed"] == "6" and r["display"] == "320x180"
        assert r["teacher"] == "sharpness-double" and r["failure"] == ""
        # paths are relative to the output's folder, where the trainers look for them
        assert (out.parent / r["path"]).resolve().parent == (segments / "seg").resolve()


def test_a_segment_that_does_not_parse_has_no_label(segments: Path, tmp_path: Path) -> None:
    out = tmp_path / "vlm.csv"
    teacher = SharpnessTeacher(garbage=1)  # nothing parses
    summary = vlmlabel.label(segments, vlmlabel.read_rows(segments), out, diagnoser(teacher))
    assert summary.labelled == 0 and summary.failed == 6
    for r in read(out):
        assert r["mos"] == "" and r["parsed"] == "0" and r["failure"]


def test_the_label_pools_every_parsed_sample(segments: Path, tmp_path: Path) -> None:
    out = tmp_path / "vlm.csv"
    teacher = SharpnessTeacher(garbage=3)  # the third picture of the segment fails
    rows = vlmlabel.read_rows(segments)[:1]
    vlmlabel.label(segments, rows, out, diagnoser(teacher, samples=3))
    (row,) = read(out)
    scores = [v for a in teacher.answers for v in a]
    assert len(teacher.answers) == 3 and len(scores) == 6 and row["parsed"] == "6"
    assert math.isclose(float(row["mos"]), statistics.fmean(scores), abs_tol=1e-3)
    assert math.isclose(float(row["spread"]), statistics.pstdev(scores), abs_tol=1e-3)


def test_a_run_that_loses_its_vlm_resumes(segments: Path, tmp_path: Path) -> None:
    out = tmp_path / "vlm.csv"
    rows = vlmlabel.read_rows(segments)
    cfg = vlmlabel.LabelConfig(batch=2)
    with pytest.raises(VLMError):
        vlmlabel.label(segments, rows, out, diagnoser(SharpnessTeacher(fail_after=1)), cfg)
    assert len(read(out)) == 2  # the first batch was written before the server went away
    teacher = SharpnessTeacher()
    summary = vlmlabel.label(segments, rows, out, diagnoser(teacher), cfg)
    assert summary.kept == 2 and summary.labelled == 4 and len(teacher.sizes) == 4 * 3
    assert len({r["path"] for r in read(out)}) == len(read(out)) == 6


def test_rows_that_did_not_parse_are_labelled_again_when_asked(
    segments: Path, tmp_path: Path
) -> None:
    out = tmp_path / "vlm.csv"
    rows = vlmlabel.read_rows(segments)
    vlmlabel.label(segments, rows[:2], out, diagnoser(SharpnessTeacher(garbage=1)))
    # a plain resume keeps them as they are
    summary = vlmlabel.label(segments, rows, out, diagnoser(SharpnessTeacher()))
    assert (summary.kept, summary.labelled) == (2, 4)
    assert sum(not r["mos"] for r in read(out)) == 2
    retry = vlmlabel.LabelConfig(retry_failed=True)
    # a retry that loses its VLM, or asks for part of the set, loses no row
    with pytest.raises(VLMError):
        vlmlabel.label(segments, rows, out, diagnoser(SharpnessTeacher(fail_after=0)), retry)
    vlmlabel.label(segments, rows[:1], out, diagnoser(SharpnessTeacher()), retry)
    assert [bool(r["mos"]) for r in read(out)] == [False, False, True, True, True, True, True]
    summary = vlmlabel.label(segments, rows, out, diagnoser(SharpnessTeacher()), retry)
    assert (summary.kept, summary.labelled) == (5, 1)
    got = read(out)
    last = {r["path"]: r for r in got}
    assert len(got) == 8 and len(last) == 6 and all(r["mos"] for r in last.values())
    # the trainers read each segment once, with its score
    assert len(fusion.labelled_rows(out)) == 6


def test_the_fusion_trainer_learns_from_vlm_labels_of_footage(
    segments: Path, tmp_path: Path
) -> None:
    footage = tmp_path / "footage"  # a folder of segments: no labels.csv, no VMAF
    (footage / "cam").mkdir(parents=True)
    for f in (segments / "seg").iterdir():
        (footage / "cam" / f.name).symlink_to(f)
    rows = vlmlabel.read_rows(footage)
    assert len(rows) == 6 and {r["source"] for r in rows} == {"cam"}
    out = footage / "labels-vlm.csv"
    teacher = SharpnessTeacher(garbage=4)  # one picture a segment: the fourth fails
    cfg = vlmlabel.LabelConfig(pictures=1)
    summary = vlmlabel.label(footage, rows, out, diagnoser(teacher), cfg)
    assert summary.failed == 1 and summary.labelled == 5
    data = fusion.extract(out)  # judged at the coded size the teacher saw
    assert len(data.mos) == summary.labelled  # segments without a label are left out
    assert np.isnan(data.vmaf).all()
    labelled = {r["path"]: float(r["mos"]) for r in read(out) if r["mos"]}
    assert [labelled[str(p)] for p in data.path] == pytest.approx(list(data.mos))
    spec = fusion.train(data, fusion.FusionConfig(members=1, epochs=20), version="vlm")
    pred = fusion.predict(spec, data)
    report = fusion.report(list(pred), data)  # ranked against the labels it learned
    assert math.isfinite(report["srcc"])


def test_the_command_runs_the_tiny_vlm(segments: Path, tiny_vlm_dir: Path, tmp_path: Path) -> None:
    config = tmp_path / "vlm.yaml"
    config.write_text(
        "diagnose:\n  backend:\n    type: transformers\n"
        f"    model_path: {tiny_vlm_dir}\n    model_id: tiny-qwen\n    max_new_tokens: 8\n"
    )
    out = tmp_path / "labels.csv"
    args = ["--config", str(config), "--out", str(out), "--pictures", "1", "--max-side", "128"]
    assert main(["train", "vlmlabel", str(segments), *args]) == 0
    got = read(out)
    assert len(got) == 6 and {r["teacher"] for r in got} == {"tiny-qwen"}
    for r in got:
        # random weights: a strict parse in 1-5, or no label and the parser's reason
        if r["mos"]:
            assert 1.0 <= float(r["mos"]) <= 5.0 and r["parsed"] == "1"
        else:
            assert r["failure"] and r["parsed"] == "0"


def test_the_command_refuses_the_rules_backend(
    segments: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "rules.yaml"
    config.write_text("diagnose:\n  backend:\n    type: rules\n")
    assert main(["train", "vlmlabel", str(segments), "--config", str(config)]) == 2
    assert "names no VLM" in capsys.readouterr().err
    assert not (segments / "labels-vlm.csv").exists()


def test_one_odd_row_is_skipped_and_the_run_goes_on(segments: Path, tmp_path: Path) -> None:
    rows = vlmlabel.read_rows(segments)
    rows[1] = {**rows[1], "display": "1920x"}  # malformed
    out = tmp_path / "vlm.csv"
    summary = vlmlabel.label(segments, rows, out, diagnoser(SharpnessTeacher()))
    assert summary.undecodable == 1 and summary.labelled == 5 and len(read(out)) == 5


def test_an_output_that_is_the_sets_own_list_is_refused(
    segments: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = vlmlabel.read_rows(segments)
    with pytest.raises(vlmlabel.LabelError, match=r"the set's own labels\.csv"):
        vlmlabel.label(segments, rows, segments / "labels.csv", diagnoser(SharpnessTeacher()))
    other = tmp_path / "other.csv"
    other.write_text("path,mos\nseg/x.ts,3\n")
    with pytest.raises(vlmlabel.LabelError, match="not a vlmlabel CSV"):
        vlmlabel.label(segments, rows, other, diagnoser(SharpnessTeacher()))
    config = tmp_path / "c.yaml"
    config.write_text(
        "diagnose:\n  backend:\n    type: openai\n"
        "    base_url: http://127.0.0.1:9/v1\n    model: m\n"
    )
    args = ["train", "vlmlabel", str(segments), "--config", str(config)]
    assert main([*args, "--out", str(segments / "labels.csv")]) == 2
    assert "own labels.csv" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([*args, "--pictures", "0"])


def test_rows_without_a_usable_mos_are_left_out_of_the_fit(segments: Path, tmp_path: Path) -> None:
    rows = fusion.read_labels(segments / "labels.csv")
    odd = tmp_path / "odd.csv"
    with odd.open("w", newline="") as fh:
        w = csv.DictWriter(fh, list(rows[0]))
        w.writeheader()
        w.writerows([{**rows[0], "mos": "nan"}, {**rows[1], "mos": "n/a"}, *rows[2:]])
    (tmp_path / "seg").symlink_to(segments / "seg")
    data = fusion.extract(odd)
    assert len(data.mos) == 4 and np.isfinite(data.mos).all()
    assert odd.with_name(f"odd.features-8-v{fusion.FEATURES_CACHE}.npz").is_file()  # its own
    pred = fusion.predict(fusion.train(data, fusion.FusionConfig(members=1, epochs=5)), data)
    assert fusion.report(list(pred), data)["against"] == "vmaf"

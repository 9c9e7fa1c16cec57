"""The strict parsers on well-formed and malformed outputs of each paper's format."""

from __future__ import annotations

import pytest

from scorers.vlm import parse, prompts
from scorers.vlm.parse import DegradationAnswer, ParseFailure


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("<answer>3.25</answer>", 3.25),
        ("<think>soft edges, some blocking</think>\n<answer> 2.8 </answer>", 2.8),
        ("<answer>1.0</answer> then <answer>4.5</answer>", 4.5),  # last answer wins
        ("<answer>The score is 4</answer>", 4.0),
        ("3.7", 3.7),  # no tags: the whole text (VisualQuality-R1's fallback)
        ("<answer>5</answer>", 5.0),
    ],
)
def test_visualquality_score_well_formed(text: str, want: float) -> None:
    assert parse.parse_score(text) == pytest.approx(want)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("<answer>good</answer>", "no number in the <answer>"),
        ("no idea", "no number in the text"),
        ("<answer>7.5</answer>", "outside 1-5"),
        ("<answer>0.2</answer>", "outside 1-5"),
        ("<answer>-3</answer>", "outside 1-5"),
        ("", "no number"),
    ],
)
def test_visualquality_score_malformed_is_a_failure_not_a_default(text: str, reason: str) -> None:
    out = parse.parse_score(text)
    assert isinstance(out, ParseFailure) and reason in out.reason


def test_qinsight_rating() -> None:
    assert parse.parse_rating('<think>ok</think><answer>{"rating": 3.42}</answer>') == 3.42
    # Q-Insight reads the first <answer>
    assert parse.parse_rating('<answer>{"rating":2}</answer><answer>{"rating":4}</answer>') == 2
    for bad, why in [
        ('{"rating": 3}', "no <answer>"),
        ("<answer>3.4</answer>", '"rating"'),
        ('<answer>{"rating": 9}</answer>', "outside"),
        ('<answer>{"rating": 3.4.1}</answer>', "not a number"),
    ]:
        out = parse.parse_rating(bad)
        assert isinstance(out, ParseFailure) and why in out.reason, (bad, out)


def test_degradation_well_formed_and_streaming_classes() -> None:
    ok = (
        '<think>8x8 grid</think><answer>{"distortion_class": "blocking", '
        '"severity": "serious"}</answer>'
    )
    assert parse.parse_degradation(ok) == DegradationAnswer("blocking", "serious")
    smear = '<answer>{"distortion_class": "Packet-loss smear", "severity": "Obvious"}</answer>'
    assert parse.parse_degradation(smear) == DegradationAnswer("packet_loss", "obvious")
    color = '<answer>{"distortion_class": "color", "severity": "slight"}</answer>'
    assert parse.parse_degradation(color) == DegradationAnswer("colour", "slight")
    none = '<answer>{"distortion_class": "none", "severity": "none"}</answer>'
    assert parse.parse_degradation(none) == DegradationAnswer("none", "none")
    for label in prompts.DEGRADATION_LABELS:
        text = f'<answer>{{"distortion_class": "{label}", "severity": "moderate"}}</answer>'
        got = parse.parse_degradation(text)
        assert isinstance(got, DegradationAnswer), (label, got)
        assert got.distortion_class in prompts.DEGRADATION_CLASSES


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ('{"distortion_class": "blur", "severity": "slight"}', "no <answer>"),
        ("<answer>blur, slight</answer>", "no JSON object"),
        ('<answer>{"distortion_class": "blur", "severity": }</answer>', "invalid JSON"),
        (
            '<answer>{"distortion_class": "rain", "severity": "slight"}</answer>',
            "unknown distortion",
        ),
        ('<answer>{"distortion_class": "blur", "severity": "awful"}</answer>', "unknown severity"),
        ('<answer>{"class": "blur"}</answer>', "needs string keys"),
    ],
)
def test_degradation_malformed(text: str, reason: str) -> None:
    out = parse.parse_degradation(text)
    assert isinstance(out, ParseFailure) and reason in out.reason


def test_comparison() -> None:
    assert parse.parse_comparison("<answer>Image A</answer>") == "Image A"
    assert (
        parse.parse_comparison("<think>B is sharper</think><answer> image b. </answer>")
        == "Image B"
    )
    assert parse.parse_comparison('"Similar"') == "Similar"
    for bad in ("<answer>Image C</answer>", "Image A is better", "<answer></answer>"):
        out = parse.parse_comparison(bad)
        assert isinstance(out, ParseFailure) and "not one of" in out.reason


def test_video_global_and_local() -> None:
    assert parse.parse_video("<answer>2.75\n3.50</answer>") == (2.75, 3.5)
    assert parse.parse_video("<think>freeze</think><answer>1.5\n4</answer>") == (1.5, 4.0)
    for bad, why in [
        ("2.7\n3.1", "no <answer>"),
        ("<answer>3.1</answer>", "found 1"),
        ("<answer>3.1 3.2 3.3</answer>", "found 3"),
        ("<answer>0.5\n3</answer>", "global score 0.5"),
        ("<answer>3\n6</answer>", "local score 6"),
    ]:
        out = parse.parse_video(bad)
        assert isinstance(out, ParseFailure) and why in out.reason, (bad, out)


def test_prompts_match_the_papers_wording() -> None:
    score = prompts.score_prompt()
    assert score.startswith("You are doing the image quality assessment task.")
    assert score.endswith(
        "Please only output the final answer with only one score in <answer> </answer> tags."
    )
    assert prompts.score_prompt(thinking=True).endswith(prompts.THINK_SUFFIX)
    assert '{"rating": x}' in prompts.score_prompt("q-insight")
    deg = prompts.degradation_prompt()
    assert deg.startswith(
        "Analyze the given image and determine if it contains any of the following "
        'distortions: "noise", "compression", "blur", "darken", "blocking"'
    )
    assert '"slight", "moderate", "obvious", "serious", or "catastrophic"' in deg
    assert all(f'"{c}"' in deg for c in ("freeze", "black", "packet-loss smear", "colour"))
    assert prompts.system_prompt("score") is None
    assert prompts.system_prompt("degradation") == prompts.QINSIGHT_SYSTEM

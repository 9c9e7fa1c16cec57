"""Each task's prompt, as the papers' public code words it (../shared/SEEDS.md).

Change any text here and bump PROMPT_VERSION: every Diagnosis records it, so scores from
different prompt sets are never mixed up.
"""

from __future__ import annotations

from typing import Literal

PROMPT_VERSION = "vqmon-prompts/1"

ScorePrompt = Literal["visualquality-r1", "q-insight"]

# VisualQuality-R1 (TianheWu/VisualQuality-R1): question + thinking or non-thinking suffix.
SCORE_QUESTION = (
    "You are doing the image quality assessment task. Here is the question: What is your "
    "overall rating on the quality of this picture? The rating should be a float between 1 "
    "and 5, rounded to two decimal places, with 1 representing very poor quality and 5 "
    "representing excellent quality."
)
THINK_SUFFIX = (
    "First output the thinking process in <think> </think> tags and then output the final "
    "answer with only one score in <answer> </answer> tags."
)
NO_THINK_SUFFIX = (
    "Please only output the final answer with only one score in <answer> </answer> tags."
)

# Q-Insight (bytedance/Q-Insight): reasoning in <think>, answer in <answer>, JSON answers.
QINSIGHT_SYSTEM = (
    "A conversation between User and Assistant. The user asks a question, and the Assistant "
    "solves it. The assistant first thinks about the reasoning process in the mind and then "
    "provides the user with the answer. The reasoning process and answer are enclosed within "
    "<think> </think> and <answer> </answer> tags, respectively, i.e., <think> reasoning "
    "process here </think><answer> answer here </answer>."
)
QINSIGHT_RATING_FORMAT = 'Answer with JSON in <answer> </answer> tags: {"rating": x}.'

# Q-Insight's four distortions, extended with the streaming artifacts vqmon's detectors
# and distilled head know. Labels are what the model is asked to answer; the parser maps
# spelling variants to the canonical names in DEGRADATION_CLASSES.
QINSIGHT_CLASSES = ("noise", "compression", "blur", "darken")
STREAMING_CLASSES = (
    "blocking",
    "banding",
    "freeze",
    "black",
    "scaling",
    "packet-loss smear",
    "colour",
)
DEGRADATION_LABELS = QINSIGHT_CLASSES + STREAMING_CLASSES
DEGRADATION_CLASSES = (
    "noise",
    "compression",
    "blur",
    "darken",
    "blocking",
    "banding",
    "freeze",
    "black",
    "scaling",
    "packet_loss",
    "colour",
)
SEVERITIES = ("slight", "moderate", "obvious", "serious", "catastrophic")
NO_DISTORTION = "none"


def _quoted_or(items: tuple[str, ...]) -> str:
    quoted = [f'"{i}"' for i in items]
    return ", ".join(quoted[:-1]) + ", or " + quoted[-1]


DEGRADATION_QUESTION = (
    "Analyze the given image and determine if it contains any of the following distortions: "
    f"{_quoted_or(DEGRADATION_LABELS)}. If a distortion is present, classify its severity as "
    f"{_quoted_or(SEVERITIES)}."
)
DEGRADATION_FORMAT = (
    'Answer with JSON in <answer> </answer> tags: {"distortion_class": x, "severity": y}, '
    f'with "{NO_DISTORTION}" for both when no distortion is present.'
)

COMPARISON_LABELS = ("Image A", "Image B", "Similar")
COMPARISON_QUESTION = (
    "You are given two images, Image A and Image B. Which image has better quality? "
    'Answer exactly one of "Image A", "Image B" or "Similar" in <answer> </answer> tags.'
)

# PreResQ-R1 (DanceSkyCode/General-Visual-Quality-RL), video: one global multi-frame
# mosaic then local frames; the answer is a global and a local score.
VIDEO_QUESTION = (
    "You are doing the video quality assessment task. The first picture is a mosaic of "
    "frames sampled from the video in time order (read it left to right, top to bottom); "
    "the following pictures are single frames of the video. Here is the question: What is "
    "your rating on the global quality of the video (from the mosaic: temporal consistency, "
    "freezes, flicker) and on its local quality (from the frames: sharpness, noise, "
    "compression)? Each rating should be a float between 1 and 5, rounded to two decimal "
    "places, with 1 representing very poor quality and 5 representing excellent quality."
)
VIDEO_THINK_SUFFIX = (
    "First output the thinking process in <think> </think> tags and then output the final "
    "answer with the global score and the local score, one a line, in <answer> </answer> tags."
)
VIDEO_NO_THINK_SUFFIX = (
    "Please only output the final answer with the global score and the local score, one a "
    "line, in <answer> </answer> tags."
)


def score_prompt(style: ScorePrompt = "visualquality-r1", thinking: bool = False) -> str:
    """The 1-5 score question. Non-thinking is the evaluator default (VisualQuality-R1)."""
    if style == "q-insight":
        return f"{SCORE_QUESTION} {QINSIGHT_RATING_FORMAT}"
    return f"{SCORE_QUESTION} {THINK_SUFFIX if thinking else NO_THINK_SUFFIX}"


def degradation_prompt() -> str:
    return f"{DEGRADATION_QUESTION} {DEGRADATION_FORMAT}"


def comparison_prompt() -> str:
    return COMPARISON_QUESTION


def video_prompt(thinking: bool = False) -> str:
    return f"{VIDEO_QUESTION} {VIDEO_THINK_SUFFIX if thinking else VIDEO_NO_THINK_SUFFIX}"


def system_prompt(task: str, style: ScorePrompt = "visualquality-r1") -> str | None:
    """Q-Insight's system prompt for its tasks; VisualQuality-R1 and PreResQ-R1 use none."""
    if task in ("degradation", "compare") or (task == "score" and style == "q-insight"):
        return QINSIGHT_SYSTEM
    return None

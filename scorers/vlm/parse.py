"""Strict parsers of the papers' answer formats: pure functions, text in, value or failure out.

A failure carries its reason and is never turned into a default score: a score outside
1-5 is a failure too. Patterns follow ../shared/SEEDS.md.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass

from scorers.vlm.prompts import (
    COMPARISON_LABELS,
    DEGRADATION_CLASSES,
    NO_DISTORTION,
    SEVERITIES,
)

SCORE_MIN, SCORE_MAX = 1.0, 5.0

_ANSWER = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)
_NUMBER = re.compile(r"-?\d+(\.\d+)?")
_RATING = re.compile(r'"rating"\s*:\s*([\d\.]+)')
_JSON_OBJECT = re.compile(r"\{.*?\}", re.DOTALL)
_CLASS_ALIASES = {
    "color": "colour",
    "packet_loss_smear": "packet_loss",
    "packet_loss": "packet_loss",
    "packetloss": "packet_loss",
    "smear": "packet_loss",
    "blockiness": "blocking",
    "dark": "darken",
    "darkness": "darken",
}


@dataclass(frozen=True, slots=True)
class ParseFailure:
    reason: str


@dataclass(frozen=True, slots=True)
class DegradationAnswer:
    distortion_class: str
    """One of prompts.DEGRADATION_CLASSES, or "none"."""
    severity: str
    """One of prompts.SEVERITIES, or "none" with class "none"."""


def last_answer(text: str) -> str | None:
    """Content of the last <answer>...</answer>, or None (VisualQuality-R1 takes the last)."""
    found = _ANSWER.findall(text)
    return found[-1] if found else None


def _in_range(value: float, what: str) -> float | ParseFailure:
    if not math.isfinite(value) or not SCORE_MIN <= value <= SCORE_MAX:
        return ParseFailure(f"{what} {value} is outside {SCORE_MIN:g}-{SCORE_MAX:g}")
    return value


def parse_score(text: str) -> float | ParseFailure:
    """VisualQuality-R1: last <answer> (else the whole text), first number in it, 1-5."""
    answer = last_answer(text)
    body = text if answer is None else answer
    m = _NUMBER.search(body)
    if m is None:
        where = "the <answer> tags" if answer is not None else "the text (no <answer> tags)"
        return ParseFailure(f"no number in {where}")
    return _in_range(float(m.group(0)), "score")


def parse_rating(text: str) -> float | ParseFailure:
    """Q-Insight: `"rating": x` inside the first <answer>, 1-5."""
    found = _ANSWER.findall(text)
    if not found:
        return ParseFailure("no <answer> tags")
    m = _RATING.search(found[0])
    if m is None:
        return ParseFailure('no "rating": number in the first <answer>')
    try:
        value = float(m.group(1))
    except ValueError:
        return ParseFailure(f"rating {m.group(1)!r} is not a number")
    return _in_range(value, "rating")


def _canonical(label: str) -> str:
    key = re.sub(r"[\s\-]+", "_", label.strip().lower())
    return _CLASS_ALIASES.get(key, key)


def parse_degradation(text: str) -> DegradationAnswer | ParseFailure:
    """Q-Insight: JSON {"distortion_class", "severity"} inside the last <answer>."""
    answer = last_answer(text)
    if answer is None:
        return ParseFailure("no <answer> tags")
    m = _JSON_OBJECT.search(answer)
    if m is None:
        return ParseFailure("no JSON object in <answer>")
    try:
        obj = json.loads(m.group(0))
    except json.JSONDecodeError as e:
        return ParseFailure(f"invalid JSON in <answer>: {e.msg}")
    if not isinstance(obj, dict):
        return ParseFailure("<answer> JSON is not an object")
    cls, sev = obj.get("distortion_class"), obj.get("severity")
    if not isinstance(cls, str) or not isinstance(sev, str):
        return ParseFailure('JSON needs string keys "distortion_class" and "severity"')
    cls, sev = _canonical(cls), sev.strip().lower()
    if cls in (NO_DISTORTION, "no_distortion", "null"):
        return DegradationAnswer(NO_DISTORTION, NO_DISTORTION)
    if cls not in DEGRADATION_CLASSES:
        return ParseFailure(f"unknown distortion_class {cls!r}")
    if sev not in SEVERITIES:
        return ParseFailure(f"unknown severity {sev!r}; expected one of {', '.join(SEVERITIES)}")
    return DegradationAnswer(cls, sev)


def parse_comparison(text: str) -> str | ParseFailure:
    """Q-Insight: exactly one of "Image A", "Image B", "Similar" (last <answer>, else text)."""
    answer = last_answer(text)
    body = (text if answer is None else answer).strip().strip("\"'.").strip()
    for label in COMPARISON_LABELS:
        if body.lower() == label.lower():
            return label
    shown = body if len(body) <= 40 else body[:40] + "..."
    return ParseFailure(f"answer {shown!r} is not one of {', '.join(COMPARISON_LABELS)}")


def parse_video(text: str) -> tuple[float, float] | ParseFailure:
    """PreResQ-R1 video: exactly two numbers (global, local) in the last <answer>, each 1-5."""
    answer = last_answer(text)
    if answer is None:
        return ParseFailure("no <answer> tags")
    numbers = [float(m.group(0)) for m in _NUMBER.finditer(answer)]
    if len(numbers) != 2:
        return ParseFailure(f"expected 2 numbers (global, local) in <answer>, found {len(numbers)}")
    g = _in_range(numbers[0], "global score")
    loc = _in_range(numbers[1], "local score")
    if isinstance(g, ParseFailure):
        return g
    if isinstance(loc, ParseFailure):
        return loc
    return g, loc

"""The hybrid screen score: what the pixels look like, fused with what the encoder did.

Pixels alone misjudge real footage: soft camera content reads as blur, a well-coded
ladder rung looks like any other. The bitstream says what the encoder did: the mean
quantiser (ingest's per-frame QP, on H.264's 0-51 scale), bits per pixel, and how far
the player must upscale the rendition to its display size. ITU-T P.1204.5 fuses the
same two views. Per segment the features are:

- the student's pooled MOS (mean and low) and degradation distribution, judged on
  mosaics taken from the picture as displayed (scorers.fragments.sample_displayed);
- the mean and 90th percentile of the frame quantisers, with a flag for whether the
  codec exported any (HEVC does not: the fusion learned that case from HEVC versions);
- log2 bits per coded pixel, log2 of the display-to-coded area ratio;
- how much there is to see: the spatial detail of the displayed mosaics (mean absolute
  luma gradient inside patches), motion (mean frame-to-frame luma difference) and
  brightness, the content masking that decides how visible a quantiser is;
- the damaged fraction of the timeline (frames concealed, missing or rejected).

A small MLP maps the undamaged features to MOS; damage then subtracts a learned
non-negative amount per damaged fraction, so a segment with visible smear never
scores above the same segment without it. The weights are a JSON file
(scorers/weights/vqmon-fusion.json, made by `vqmon train fusion`), run in NumPy:
a few microseconds per segment.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from ingest.types import DecodedSegment
from scorers.types import ScorerError, finite_number

DEFAULT_FUSION = "vqmon-fusion.json"
DEGRADATIONS = ("clean", "compression", "blur", "noise", "scaling", "packet_loss", "banding")
FEATURES = (
    "mos_mean",
    "mos_low",
    *(f"p_{d}" for d in DEGRADATIONS),
    "qp_mean",
    "qp_p90",
    "has_qp",
    "log2_bpp",
    "log2_upscale",
    "detail",
    "motion",
    "luma",
)
"""What the MLP sees; `damaged` enters only through the monotone penalty."""
Floats = npt.NDArray[np.float32]


def mean_qp(extra: dict[str, Any]) -> float | None:
    """A verdict's mean frame quantiser on H.264's 0-51 scale, from the hybrid features the
    distilled scorer puts in `extra["hybrid"]`; None when its codec exported none, or when
    what came off the topic is no quantiser (has_qp not 1, a value outside 0-51)."""
    if _feature(extra, "has_qp") != 1.0:
        return None
    qp = _feature(extra, "qp_mean")
    return qp * 51.0 if qp is not None and 0.0 <= qp <= 1.0 else None


LADDER_UPSCALE = 1.1
"""A rendition shown at least this many times its coded area (a ladder's lower rung, judged
at the top rung's display size) looks scaled by design: the degradation head says
"scaling" on every segment of it."""


def _feature(extra: dict[str, Any], name: str) -> float | None:
    """A finite number among a verdict's hybrid features, else None (it comes off a topic:
    text, a bool or an integer beyond a float's range is not one)."""
    feats = extra.get("hybrid")
    return finite_number(feats.get(name)) if isinstance(feats, dict) else None


def upscale(extra: dict[str, Any]) -> float | None:
    """How many times a verdict's picture was enlarged to its display size (display area
    over coded area, from the hybrid features the distilled scorer puts in
    `extra["hybrid"]`); None without them. A ladder's lower rungs are above 1."""
    value = _feature(extra, "log2_upscale")
    return None if value is None else float(2.0 ** max(-10.0, min(10.0, value)))


def enlarged(extra: dict[str, Any]) -> bool:
    """The verdict judged its rendition enlarged to the display (see LADDER_UPSCALE)."""
    times = upscale(extra)
    return times is not None and times >= LADDER_UPSCALE


def default_fusion_path() -> Path:
    return Path(str(resources.files("scorers") / "weights" / DEFAULT_FUSION))


def damaged_fraction(d: DecodedSegment) -> float:
    """Frames concealed, missing from the timeline or rejected, over all frames."""
    from scorers.artifacts import _missing_frames

    missing, _ = _missing_frames(d)
    damaged = int(d.stats.corrupt.sum()) + missing + d.decode_errors
    total = len(d.stats) + missing + d.decode_errors
    return damaged / max(total, 1)


@dataclass(frozen=True, slots=True)
class SegmentFeatures:
    values: Floats
    """len(FEATURES), in that order."""
    damaged: float
    display: tuple[int, int]

    def as_dict(self) -> dict[str, float]:
        out = {k: round(float(v), 4) for k, v in zip(FEATURES, self.values, strict=True)}
        out["damaged"] = round(self.damaged, 4)
        return out


def detail(mosaics: npt.NDArray[np.uint8]) -> float:
    """Mean absolute luma gradient (0-255 code values) inside the patches of N mosaics."""
    from scorers.fragments import PATCH

    if len(mosaics) == 0:
        return 0.0
    n, h, w = mosaics.shape[:3]
    # Green ~ luma, enough for a masking estimate. Viewed as N x rows x PATCH x cols x
    # PATCH, neighbours along the two PATCH axes are inside one patch; |a - b| in uint8
    # as max - min, without a widened copy of the mosaics.
    p = mosaics[..., 1].reshape(n, h // PATCH, PATCH, w // PATCH, PATCH)
    sums = []
    for a, b in ((p[..., 1:], p[..., :-1]), (p[:, :, 1:], p[:, :, :-1])):
        sums.append(float((np.maximum(a, b) - np.minimum(a, b)).sum(dtype=np.int64)) / a.size)
    return (sums[0] + sums[1]) / 2.0


def features(
    d: DecodedSegment,
    frame_mos: npt.NDArray[np.floating],
    degradation: npt.NDArray[np.floating],
    display: tuple[int, int],
    low_fraction: float = 0.25,
    mosaics: npt.NDArray[np.uint8] | None = None,
) -> SegmentFeatures:
    from scorers.distilled import pool

    mean, low = pool(frame_mos, low_fraction)
    qp = d.stats.qp
    read = qp[np.isfinite(qp)] if qp is not None else np.zeros(0, np.float32)
    has_qp = read.size > 0
    qp_mean = float(read.mean()) / 51.0 if has_qp else 0.0
    qp_p90 = float(np.quantile(read, 0.9)) / 51.0 if has_qp else 0.0
    info = d.info
    coded = max(1, info.width * info.height)
    bpp = info.bitrate / max(coded * max(info.fps, 1.0), 1.0)
    shown = max(1, display[0] * display[1])
    values = np.array(
        [
            mean,
            low,
            *np.asarray(degradation, np.float32)[: len(DEGRADATIONS)],
            qp_mean,
            qp_p90,
            float(has_qp),
            float(np.log2(max(bpp, 1e-4))),
            float(np.log2(max(shown / coded, 1e-2))),
            float(np.log2(1.0 + detail(mosaics))) if mosaics is not None else 0.0,
            float(np.nan_to_num(np.nanmean(d.stats.luma_diff)) if len(d.stats) > 1 else 0.0),
            float(np.mean(d.stats.luma_mean)),
        ],
        dtype=np.float32,
    )
    return SegmentFeatures(values, damaged_fraction(d), display)


class Fusion:
    """The fusion head: clip each feature to the range training saw, standardise, MLP
    (ReLU), minus softplus(k) x damaged."""

    def __init__(self, path: Path) -> None:
        try:
            spec: dict[str, Any] = json.loads(path.read_text())
        except FileNotFoundError:
            raise ScorerError(
                f"fusion model not found: {path}; set scorers[].fusion_path to a file made by "
                "`vqmon train fusion`, leave it empty for the shipped one, or set hybrid: false"
            ) from None
        except (OSError, ValueError) as exc:
            raise ScorerError(
                f"fusion model {path} is not a vqmon fusion file ({type(exc).__name__}: {exc}); "
                "re-make it with `vqmon train fusion`"
            ) from exc
        self._configure(spec, str(path))

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> Fusion:
        """A head from the spec `scorers.train.fusion.train` returns, without a file."""
        head = cls.__new__(cls)
        head._configure(spec, "(in memory)")
        return head

    def _configure(self, spec: dict[str, Any], where: str) -> None:
        try:
            names = tuple(spec["features"])
            self.mean = np.asarray(spec["mean"], np.float32)
            self.scale = np.asarray(spec["scale"], np.float32)
            self.layers = [
                (np.asarray(w, np.float32), np.asarray(b, np.float32)) for w, b in spec["layers"]
            ]
            self.damage = float(spec["damage_per_fraction"])
            self.version = str(spec.get("version", "0"))
            self.lo = np.asarray(spec["lo"], np.float32)
            self.hi = np.asarray(spec["hi"], np.float32)
        except (ValueError, KeyError, TypeError) as exc:
            raise ScorerError(
                f"fusion model {where} is not a vqmon fusion file ({type(exc).__name__}: "
                f"{exc}); re-make it with `vqmon train fusion`"
            ) from exc
        if names != FEATURES:
            raise ScorerError(
                f"fusion model {where} expects features {list(names)}; this vqmon computes "
                f"{list(FEATURES)}: re-train it with `vqmon train fusion`"
            )
        if self.damage < 0:
            raise ScorerError(f"fusion model {where}: damage_per_fraction must be >= 0")

    def predict(self, x: Floats, damaged: Floats) -> Floats:
        """N x len(FEATURES) features and N damaged fractions -> N MOS on 1-5."""
        # Clipped to the range training covered: content unlike any trained on must not
        # send the MLP off along one of its linear pieces.
        h = (np.clip(np.asarray(x, np.float32), self.lo, self.hi) - self.mean) / self.scale
        for i, (w, b) in enumerate(self.layers):
            h = h @ w + b
            if i < len(self.layers) - 1:
                np.maximum(h, 0, out=h)
        mos = h[:, 0] - self.damage * np.asarray(damaged, np.float32)
        return np.clip(mos, 1.0, 5.0).astype(np.float32)

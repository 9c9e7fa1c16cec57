"""The distilled no-reference scorer: the shipped ONNX student on ONNX Runtime (no torch).

Every sampled frame of every segment in a batch is turned into a fragment mosaic
(scorers.fragments, the same function training used) and run through the student
in batches of `batch_size` across segments. Per frame the model gives MOS 1-5, a
distribution over degradation types and an embedding; per segment the frame
scores are pooled by `pool` into a mean and a low score that neither one bad frame
dominates nor a short bad run hides.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import numpy.typing as npt
from pydantic import Field

from ingest.config import StrictModel
from ingest.types import DecodedSegment
from scorers import fragments, hybrid
from scorers.types import ScorerError, Verdict

log = logging.getLogger(__name__)

DEFAULT_MODEL = "vqmon-student.onnx"
INPUT = "fragments"
OUTPUTS = ("mos", "degradation", "embedding")


Variant = Literal["full", "slim"]
PACKAGED: dict[str, tuple[str, str]] = {
    "full": (DEFAULT_MODEL, hybrid.DEFAULT_FUSION),
    "slim": ("vqmon-student-slim.onnx", "vqmon-fusion-slim.json"),
}
"""Per variant, the student and the fusion head fitted to its outputs (scorers/weights/)."""


def default_model_path(variant: Variant = "full") -> Path:
    """A student shipped inside the package: the full model or the slim one."""
    return Path(str(resources.files("scorers") / "weights" / PACKAGED[variant][0]))


def default_fusion_path(variant: Variant = "full") -> Path:
    """The fusion head shipped for that student."""
    return Path(str(resources.files("scorers") / "weights" / PACKAGED[variant][1]))


class DistilledConfig(StrictModel):
    type: Literal["distilled"] = "distilled"
    model_path: Path | None = Field(
        None,
        description="ONNX student to run; empty means the packaged one that `variant` names.",
    )
    variant: Variant = Field(
        "full",
        description="Which packaged student runs when model_path is empty: 'full' "
        "(vqmon-student.onnx: two members beside a fixed statistics branch) or 'slim' "
        "(vqmon-student-slim.onnx: one CNN member distilled from it by `vqmon train slim`, "
        "about 4x cheaper per frame; with its own fusion head). Both are measured on the "
        "held-out real-content set in docs/benchmarks.md; the escalation thresholds were "
        "calibrated on 'full'.",
    )
    providers: list[str] = Field(
        default_factory=lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"],
        min_length=1,
        description="ONNX Runtime execution providers in order of preference; the first that "
        "works runs the model (see the scorer's `providers` and the startup log line).",
    )
    batch_size: int = Field(
        16, ge=1, le=1024, description="Frames per inference call, gathered across segments."
    )
    threads: int = Field(
        0, ge=0, le=64, description="ONNX Runtime intra-op threads; 0 lets it use every core."
    )
    spin: bool = Field(
        False,
        description="Let ONNX Runtime's idle intra-op threads spin-wait for work (lower "
        "latency per call on an idle machine). Off by default: the daemon shares its cores "
        "with the decode workers, and spinning threads take CPU they would use.",
    )
    io_binding: Literal["auto", "on", "off"] = Field(
        "auto",
        description="Feed the model through ONNX Runtime's IO binding (the uint8 mosaics copied "
        "to the device once, normalised on it): 'auto' uses it when CUDA runs the model.",
    )
    hybrid: bool = Field(
        True,
        description="Fuse the pixel score with what the bitstream says (mean quantiser, bits per "
        "pixel, upscale to the display) and with concealed damage, through the fusion head "
        "(scorers.hybrid). Off: the student's pooled MOS alone.",
    )
    fusion_path: Path | None = Field(
        None,
        description="Fusion head to run (JSON from `vqmon train fusion`); empty means the one "
        "shipped in the package for `variant` (scorers/weights/).",
    )
    display: str = Field(
        "auto",
        pattern=r"^(auto|coded|[0-9]{2,5}x[0-9]{2,5})$",
        description="The size segments are judged at, as a player shows them: 'WxH' for every "
        "rendition, 'coded' for the picture as coded, 'auto' for the segment's `display` "
        "header, else the largest rendition of the stream seen so far (the ladder's top rung), "
        "else the coded size.",
    )
    low_fraction: float = Field(
        0.25,
        gt=0,
        le=1,
        description="mos_low is the mean of the worst this-fraction of a segment's frames "
        "(at least two frames when there are four or more).",
    )


@dataclass(frozen=True, slots=True)
class FramePredictions:
    mos: npt.NDArray[np.float32]
    """N, on 1-5."""
    degradation: npt.NDArray[np.float32]
    """N x len(degradations), rows sum to 1."""
    embedding: npt.NDArray[np.float32]
    """N x D, unit length."""


def pool(
    frame_mos: Sequence[float] | npt.NDArray[np.floating], low_fraction: float = 0.25
) -> tuple[float, float]:
    """(mean, low) of per-frame MOS.

    low is the mean of the worst ceil(low_fraction * n) frames, and of at least two
    frames once there are four or more: one bad frame among eight moves it halfway,
    not all the way, while a run of two or more bad frames shows in full.
    """
    m = np.sort(np.asarray(frame_mos, dtype=np.float64))
    if m.size == 0:
        raise ValueError("cannot pool an empty list of frame scores")
    k = max(1, int(np.ceil(low_fraction * m.size)))
    if m.size >= 4:
        k = max(k, 2)
    return float(m.mean()), float(m[:k].mean())


def _session(path: Path, providers: Sequence[str], threads: int, spin: bool = False) -> Any:
    import onnxruntime as ort

    if not path.is_file():
        raise ScorerError(
            f"distilled model not found: {path}; set scorers[].model_path to an ONNX file made "
            "by `vqmon train distill`, or leave it empty for the shipped model"
        )
    # Quiet: on a machine without CUDA the CUDA provider fails to load and ORT would log
    # a stack of errors before falling back; the provider actually used is logged by the
    # scorer instead. Only fatal messages while the session is made, errors afterwards.
    ort.set_default_logger_severity(4)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
    available = set(ort.get_available_providers())
    wanted = [p for p in providers if p in available] or ["CPUExecutionProvider"]
    try:
        return ort.InferenceSession(str(path), options, providers=wanted)
    except Exception as exc:  # ORT raises its own Fail/InvalidGraph/... types
        raise ScorerError(
            f"distilled model {path} cannot be loaded by ONNX Runtime ({type(exc).__name__}: "
            f"{str(exc)[:200]}); the file is corrupt or not a vqmon student: re-export it "
            "with `vqmon train distill` or reinstall vqmon for the shipped model"
        ) from exc
    finally:
        ort.set_default_logger_severity(3)


class DistilledScorer:
    name: ClassVar[str] = "distilled"

    def __init__(self, config: DistilledConfig | None = None) -> None:
        self.config = config or DistilledConfig()
        self.path = self.config.model_path or default_model_path(self.config.variant)
        self._session = _session(
            self.path, self.config.providers, self.config.threads, self.config.spin
        )
        inputs = {i.name for i in self._session.get_inputs()}
        outputs = {o.name for o in self._session.get_outputs()}
        if INPUT not in inputs or not set(OUTPUTS) <= outputs:
            raise ScorerError(
                f"distilled model {self.path} has inputs {sorted(inputs)} and outputs "
                f"{sorted(outputs)}; a vqmon student has input {INPUT!r} and outputs "
                f"{', '.join(OUTPUTS)}"
            )
        meta = self._session.get_modelmeta().custom_metadata_map
        self.degradations: tuple[str, ...] = tuple(json.loads(meta.get("degradations", "[]")))
        digest = hashlib.sha256(self.path.read_bytes()).hexdigest()[:8]
        self._version = f"{meta.get('version', '0')}+{digest}"
        self.providers: list[str] = list(self._session.get_providers())
        self.io_binding = self.config.io_binding == "on" or (
            self.config.io_binding == "auto" and self.providers[0] == "CUDAExecutionProvider"
        )
        self.fusion = (
            hybrid.Fusion(self.config.fusion_path or default_fusion_path(self.config.variant))
            if self.config.hybrid
            else None
        )
        if self.fusion is not None:
            self._version += f"+fusion{self.fusion.version}"
        self._largest: dict[str, tuple[int, int]] = {}
        log.info(
            "distilled scorer %s runs on %s (asked for %s)",
            self._version,
            self.providers[0],
            ", ".join(self.config.providers),
        )

    @classmethod
    def from_config(cls, config: DistilledConfig) -> DistilledScorer:
        return cls(config)

    @property
    def version(self) -> str:
        return self._version

    @property
    def provider(self) -> str:
        """The execution provider that actually runs the model (for a metric label)."""
        return self.providers[0]

    def predict_mosaics(self, mosaics: npt.NDArray[np.uint8]) -> FramePredictions:
        """Run the student on N x 224 x 224 x 3 uint8 mosaics, `batch_size` at a time."""
        mos, deg, emb = [], [], []
        bs = self.config.batch_size
        run = self._run_bound if self.io_binding else self._run
        for s in range(0, len(mosaics), bs):
            m, d, e = run(mosaics[s : s + bs])
            mos.append(m)
            deg.append(d)
            emb.append(e)
        if not mos:
            n = len(self.degradations)
            return FramePredictions(
                np.zeros(0, np.float32), np.zeros((0, n), np.float32), np.zeros((0, 0), np.float32)
            )
        return FramePredictions(
            np.concatenate(mos).astype(np.float32),
            np.concatenate(deg).astype(np.float32),
            np.concatenate(emb).astype(np.float32),
        )

    def _run(self, batch: npt.NDArray[np.uint8]) -> list[Any]:
        return list(self._session.run(list(OUTPUTS), {INPUT: batch}))

    def _run_bound(self, batch: npt.NDArray[np.uint8]) -> list[Any]:
        """IO binding: the uint8 batch goes to the device in one copy (a quarter of the bytes
        of the float input a normalising caller would send), outputs come back to host."""
        binding = self._session.io_binding()
        binding.bind_cpu_input(INPUT, np.ascontiguousarray(batch))
        for name in OUTPUTS:
            binding.bind_output(name, "cpu")
        self._session.run_with_iobinding(binding)
        return list(binding.copy_outputs_to_cpu())

    def predict_frames(self, frames: Sequence[npt.NDArray[np.uint8]]) -> FramePredictions:
        """Fragment-sample H x W x 3 RGB frames (deterministic grid) and run the student."""
        return self.predict_mosaics(fragments.sample_batch(list(frames)))

    def display_of(self, d: DecodedSegment) -> tuple[int, int]:
        """The size this segment is judged at (see DistilledConfig.display)."""
        coded = (d.info.width, d.info.height)
        mode = self.config.display
        if mode == "coded":
            return coded
        if mode != "auto":
            w, _, h = mode.partition("x")
            return int(w), int(h)
        if d.segment.display is not None:
            return d.segment.display
        key = d.segment.stream
        best = self._largest.get(key)
        if best is None or coded[0] * coded[1] > best[0] * best[1]:
            self._largest[key] = best = coded
            if len(self._largest) > 10_000:  # bounded: forget the oldest streams
                self._largest.pop(next(iter(self._largest)))
        return best

    def score(self, segments: Sequence[DecodedSegment]) -> list[Verdict]:
        displays = [self.display_of(d) for d in segments]
        mosaics = np.empty((sum(len(d.frames) for d in segments), *fragments.MOSAIC), np.uint8)
        i = 0
        for d, shown in zip(segments, displays, strict=True):
            for f in d.frames:
                mosaics[i] = fragments.sample_displayed(f.rgb, shown)
                i += 1
        preds = self.predict_mosaics(mosaics)
        verdicts = []
        start = 0
        tag = f"{self.name}@{self._version}"
        for d in segments:
            n = len(d.frames)
            if n == 0:
                why = (
                    f"no sampled frame to score ({len(d.stats)} of {d.info.frame_count} "
                    f"frames decoded, {d.decode_errors} packets rejected)"
                )
                verdicts.append(Verdict.empty(d, tag, why))
                continue
            mos = preds.mos[start : start + n]
            deg = preds.degradation[start : start + n].mean(axis=0)
            start += n
            mean, low = pool(mos, self.config.low_fraction)
            shown = displays[len(verdicts)]
            extra: dict[str, Any] = {
                "distilled_provider": self.provider,
                "judged_at": f"{shown[0]}x{shown[1]}",
            }
            if self.fusion is not None:
                feats = hybrid.features(
                    d, mos, deg, shown, self.config.low_fraction, mosaics[start - n : start]
                )
                fused = float(self.fusion.predict(feats.values[None], np.array([feats.damaged]))[0])
                extra["pixel_mos"] = round(mean, 4)
                extra["hybrid"] = feats.as_dict()
                mean, low = fused, max(1.0, fused - (mean - low))
            seg = d.segment
            dist = {k: round(float(p), 4) for k, p in zip(self.degradations, deg, strict=True)}
            verdicts.append(
                Verdict(
                    seg.segment_id,
                    seg.stream,
                    seg.rendition,
                    seg.seq,
                    mean,
                    low,
                    tuple(float(m) for m in mos),
                    (),
                    (tag,),
                    extra,
                    dist,
                )
            )
        return verdicts

    def close(self) -> None:
        self._session = None

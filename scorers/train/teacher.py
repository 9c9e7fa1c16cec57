"""Full-reference teachers: label distorted frames against their reference, on MOS 1-5.

A Teacher takes one reference clip and several distorted versions of it (all the
same size and length) and returns per-frame MOS for each distorted clip. The
default is VMAF through an FFmpeg build with libvmaf (imageio-ffmpeg's static
binary has it); without one, SSIM computed in numpy. The VLM teacher (RALI
proper) will plug in behind the same interface.

MOS maps (monotone, documented in the model card):

- VMAF v0.6.1 (0-100): MOS = 1 + 4 * clip(VMAF, 0, 100) / 100. Linear, so the
  industry's yardsticks carry over: VMAF 95 -> 4.8, 80 -> 4.2, 50 -> 3.0, 20 -> 1.8;
  one just-noticeable difference (about 6 VMAF points) is about 0.24 MOS.
- SSIM (luma, 0-1): MOS = 1 + 4 * clip((SSIM - 0.5) / 0.5, 0, 1). SSIM below 0.5
  is unwatchable in practice, so the useful range is stretched over 1-5.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np
import numpy.typing as npt

RGB = npt.NDArray[np.uint8]
Floats = npt.NDArray[np.float32]


class TeacherError(RuntimeError):
    """A teacher that cannot label (no FFmpeg, a failed run); says what to install or fix."""


class Teacher(Protocol):
    name: str

    def label(self, reference: Sequence[RGB], distorted: Sequence[Sequence[RGB]]) -> list[Floats]:
        """Per-frame MOS (1-5) of each distorted clip against `reference`."""
        ...

    def raw(self, reference: Sequence[RGB], distorted: Sequence[Sequence[RGB]]) -> list[Floats]:
        """Per-frame values on the teacher's own scale (VMAF 0-100, SSIM 0-1)."""
        ...


def vmaf_to_mos(vmaf: npt.ArrayLike) -> Floats:
    return (1.0 + 4.0 * np.clip(np.asarray(vmaf, dtype=np.float32), 0.0, 100.0) / 100.0).astype(
        np.float32
    )


def ssim_to_mos(ssim: npt.ArrayLike) -> Floats:
    s = np.clip((np.asarray(ssim, dtype=np.float32) - 0.5) / 0.5, 0.0, 1.0)
    return (1.0 + 4.0 * s).astype(np.float32)


def find_ffmpeg() -> str | None:
    """An FFmpeg with libvmaf: $VQMON_FFMPEG, else imageio-ffmpeg's static binary."""
    candidates = []
    if os.environ.get("VQMON_FFMPEG"):
        candidates.append(os.environ["VQMON_FFMPEG"])
    try:
        import imageio_ffmpeg

        candidates.append(imageio_ffmpeg.get_ffmpeg_exe())
    except (ImportError, RuntimeError):
        pass
    for exe in candidates:
        try:
            out = subprocess.run(
                [exe, "-hide_banner", "-filters"], capture_output=True, text=True, timeout=30
            ).stdout
        except (OSError, subprocess.TimeoutExpired):
            continue
        if " libvmaf " in out:
            return exe
    return None


def _check(reference: Sequence[RGB], distorted: Sequence[Sequence[RGB]]) -> tuple[int, int]:
    if not reference:
        raise ValueError("teacher needs a non-empty reference clip")
    h, w = reference[0].shape[:2]
    for i, clip in enumerate(distorted):
        if len(clip) != len(reference):
            raise ValueError(
                f"distorted clip {i} has {len(clip)} frames, reference {len(reference)}"
            )
        if any(f.shape != reference[0].shape for f in clip):
            raise ValueError(f"distorted clip {i} is not {w}x{h} like the reference")
    return h, w


class VmafTeacher:
    """VMAF (model vmaf_v0.6.1) per frame through FFmpeg's libvmaf filter.

    All distorted clips of one reference go through one FFmpeg run: the clips are
    concatenated and compared with the reference repeated. VMAF's motion feature
    looks at neighbouring reference frames, so the first and last frame of each clip
    see a scene cut; callers should sample frames away from clip boundaries.
    """

    name = "vmaf"

    def __init__(self, ffmpeg: str | None = None, threads: int = 2) -> None:
        exe = ffmpeg or find_ffmpeg()
        if exe is None:
            raise TeacherError(
                "no FFmpeg with libvmaf found: pip install imageio-ffmpeg (its static binary "
                "has libvmaf) or set VQMON_FFMPEG; or use the SSIM teacher"
            )
        self.ffmpeg = exe
        self.threads = threads

    def raw(self, reference: Sequence[RGB], distorted: Sequence[Sequence[RGB]]) -> list[Floats]:
        h, w = _check(reference, distorted)
        if not distorted:
            return []
        tmp_root = "/dev/shm" if os.path.isdir("/dev/shm") else None
        with tempfile.TemporaryDirectory(prefix="vqmon-vmaf-", dir=tmp_root) as tmp:
            ref_path, dist_path, log = (
                Path(tmp, "ref.rgb"),
                Path(tmp, "dist.rgb"),
                Path(tmp, "v.json"),
            )
            ref_bytes = b"".join(np.ascontiguousarray(f).tobytes() for f in reference)
            ref_path.write_bytes(ref_bytes * len(distorted))
            with dist_path.open("wb") as fh:
                for clip in distorted:
                    for f in clip:
                        fh.write(np.ascontiguousarray(f).tobytes())
            raw = ["-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{w}x{h}", "-r", "25"]
            graph = (
                "[0:v]format=yuv420p[d];[1:v]format=yuv420p[r];"
                f"[d][r]libvmaf=log_fmt=json:log_path={log}:n_threads={self.threads}"
            )
            cmd = [self.ffmpeg, "-v", "error", "-nostdin", *raw, "-i", str(dist_path), *raw]
            cmd += ["-i", str(ref_path), "-lavfi", graph, "-f", "null", "-"]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0 or not log.exists():
                raise TeacherError(f"libvmaf run failed: {proc.stderr.strip()[-500:]}")
            frames = json.loads(log.read_text())["frames"]
        values = np.array([f["metrics"]["vmaf"] for f in frames], dtype=np.float32)
        n = len(reference)
        if len(values) != n * len(distorted):
            raise TeacherError(
                f"libvmaf returned {len(values)} frames, expected {n * len(distorted)}"
            )
        return [values[i * n : (i + 1) * n] for i in range(len(distorted))]

    def label(self, reference: Sequence[RGB], distorted: Sequence[Sequence[RGB]]) -> list[Floats]:
        return [vmaf_to_mos(v) for v in self.raw(reference, distorted)]


def _luma(frame: RGB) -> npt.NDArray[np.float64]:
    f = frame.astype(np.float64)
    return 0.299 * f[..., 0] + 0.587 * f[..., 1] + 0.114 * f[..., 2]


def ssim(a: RGB, b: RGB) -> float:
    """Luma SSIM (Wang et al. 2004: gaussian window sigma 1.5, K1 0.01, K2 0.03)."""
    from skimage.metrics import structural_similarity

    return float(
        structural_similarity(
            _luma(a), _luma(b), data_range=255.0, gaussian_weights=True, sigma=1.5
        )
    )


class SsimTeacher:
    """Per-frame luma SSIM (scikit-image): the fallback when no libvmaf is at hand."""

    name = "ssim"

    def raw(self, reference: Sequence[RGB], distorted: Sequence[Sequence[RGB]]) -> list[Floats]:
        _check(reference, distorted)
        return [
            np.array([ssim(r, d) for r, d in zip(reference, clip, strict=True)], dtype=np.float32)
            for clip in distorted
        ]

    def label(self, reference: Sequence[RGB], distorted: Sequence[Sequence[RGB]]) -> list[Floats]:
        return [ssim_to_mos(v) for v in self.raw(reference, distorted)]


def default_teacher(name: str = "auto") -> Teacher:
    """'vmaf', 'ssim', or 'auto' (VMAF when an FFmpeg with libvmaf is found, else SSIM)."""
    if name == "ssim":
        return SsimTeacher()
    if name == "vmaf":
        return VmafTeacher()
    if name != "auto":
        raise ValueError(f"unknown teacher {name!r}; choose auto, vmaf or ssim")
    exe = find_ffmpeg()
    return VmafTeacher(exe) if exe else SsimTeacher()

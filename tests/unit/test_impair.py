"""ingest.impair: pure, deterministic impairments on frames and on MPEG-TS bytes."""

from __future__ import annotations

import numpy as np
import pytest

from ingest import impair
from ingest.synth import EncodeSettings, clip, pattern_frames

LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


@pytest.fixture(scope="module")
def frames() -> list[np.ndarray]:
    return list(pattern_frames("scene", 96, 64, 6, seed=3))


@pytest.fixture(scope="module")
def ts() -> bytes:
    return clip("scene", width=160, height=96, seconds=1.0, settings=EncodeSettings(gop=25))


def _luma(f: np.ndarray) -> np.ndarray:
    return f.astype(np.float32) @ LUMA


def test_frame_functions_are_pure_and_keep_shape(frames: list[np.ndarray]) -> None:
    before = [f.copy() for f in frames]
    outputs = [
        impair.blur(frames, 1.5),
        impair.noise(frames, 5, seed=1),
        impair.banding(frames, 16),
        impair.black(frames, 1, 2),
        impair.freeze(frames, 1, 3),
        impair.darken(frames, 0.5),
        impair.downscale_upscale(frames, 3),
    ]
    for out in outputs:
        assert len(out) == len(frames)
        assert all(
            o.shape == f.shape and o.dtype == np.uint8 for o, f in zip(out, frames, strict=True)
        )
    assert all(np.array_equal(a, b) for a, b in zip(before, frames, strict=True))


def test_blur_smooths_more_with_sigma(frames: list[np.ndarray]) -> None:
    def roughness(fs: list[np.ndarray]) -> float:
        return float(np.abs(np.diff(_luma(fs[0]), axis=1)).mean())

    assert np.array_equal(impair.blur(frames, 0)[0], frames[0])
    r = [roughness(impair.blur(frames, s)) for s in (0.0, 0.8, 2.0, 4.0)]
    assert r[0] > r[1] > r[2] > r[3]
    # A uniform picture stays uniform: the borders are reflected, not padded with black.
    flat = [np.full((20, 30, 3), 100, np.uint8)]
    assert np.array_equal(impair.blur(flat, 3.0)[0], flat[0])


def test_noise_is_deterministic_and_scaled(frames: list[np.ndarray]) -> None:
    flat = [np.full((64, 64, 3), 128, np.uint8)] * 2
    a, b = impair.noise(flat, 6, seed=7), impair.noise(flat, 6, seed=7)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not np.array_equal(a[0], impair.noise(flat, 6, seed=8)[0])
    assert not np.array_equal(a[0], a[1])  # fresh noise every frame
    assert abs(float(a[0][..., 0].astype(np.float32).std()) - 6) < 0.5


def test_banding_quantises_luma_to_levels() -> None:
    ramp = np.tile(np.linspace(20, 230, 256, dtype=np.float32)[None, :, None], (8, 1, 3))
    out = impair.banding([ramp.astype(np.uint8)], 8)[0]
    step = 255 / 7
    levels = _luma(out) / step
    # Within RGB rounding of the quantised luma levels, and only a handful of them.
    assert np.abs(levels - np.rint(levels)).max() * step < 1.0
    assert len(np.unique(np.rint(levels))) <= 8


def test_black_and_freeze_spans(frames: list[np.ndarray]) -> None:
    out = impair.black(frames, 2, 10)  # clipped at the end
    assert [int(f.max()) == 0 for f in out] == [False, False, True, True, True, True]
    frozen = impair.freeze(frames, 1, 3)
    assert all(np.array_equal(frozen[i], frames[1]) for i in (1, 2, 3))
    assert np.array_equal(frozen[4], frames[4])
    with pytest.raises(ValueError, match="span"):
        impair.freeze(frames, 6, 1)


def test_darken_and_rescale(frames: list[np.ndarray]) -> None:
    dark = impair.darken(frames, 0.25)
    assert abs(_luma(dark[0]).mean() - 0.25 * _luma(frames[0]).mean()) < 1.0
    assert np.array_equal(impair.downscale_upscale(frames, 1)[0], frames[0])
    blocky = impair.downscale_upscale(frames, 4, method="nearest")[0]
    assert np.array_equal(
        blocky[0:4:, 0:4].reshape(-1, 3).min(0), blocky[0:4, 0:4].reshape(-1, 3).max(0)
    )
    with pytest.raises(ValueError, match="factor"):
        impair.downscale_upscale(frames, 0.5)


def _packets(data: bytes) -> list[bytes]:
    return [data[i : i + 188] for i in range(0, len(data), 188)]


def test_corrupt_packets_spares_headers_and_psi(ts: bytes) -> None:
    out = impair.corrupt_packets(ts, 0.3, seed=1)
    assert len(out) == len(ts)
    before, after = _packets(ts), _packets(out)
    changed = [i for i, (a, b) in enumerate(zip(before, after, strict=True)) if a != b]
    assert len(changed) > 5
    for i in changed:
        assert after[i][:4] == before[i][:4]  # TS header kept
        pid = ((before[i][1] & 0x1F) << 8) | before[i][2]
        assert pid not in (0, 0x1000)  # PAT and PMT (FFmpeg's PMT PID) untouched


def test_corrupt_packets_deterministic_and_nested(ts: bytes) -> None:
    assert impair.corrupt_packets(ts, 0.1, seed=4) == impair.corrupt_packets(ts, 0.1, seed=4)
    assert impair.corrupt_packets(ts, 0.1, seed=4) != impair.corrupt_packets(ts, 0.1, seed=5)
    assert impair.corrupt_packets(ts, 0.0, seed=4) == ts

    def damaged(fraction: float) -> set[int]:
        out = _packets(impair.corrupt_packets(ts, fraction, seed=4))
        return {i for i, (a, b) in enumerate(zip(_packets(ts), out, strict=True)) if a != b}

    assert damaged(0.05) <= damaged(0.2) <= damaged(0.5)
    dropped = impair.corrupt_packets(ts, 0.2, seed=4, mode="drop")
    assert len(ts) - len(dropped) == 188 * len(damaged(0.2))


def test_corrupt_packets_refuses_non_ts() -> None:
    with pytest.raises(ValueError, match="MPEG-TS"):
        impair.corrupt_packets(b"\x00" * 376, 0.1)
    with pytest.raises(ValueError, match="fraction"):
        impair.corrupt_packets(b"\x47" * 188, 1.5)

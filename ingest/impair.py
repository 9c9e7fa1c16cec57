"""Deterministic impairments: inject known artifacts into frames or encoded segments.

Used to make labelled training corpora, demos and detector tests. Every function is
pure (inputs are never modified) and deterministic for its arguments (a `seed` where
randomness is involved). Frame functions take and return lists of H x W x 3 uint8 RGB
arrays. Heavy quantisation is not here: encode with a high CRF through
`ingest.synth.EncodeSettings(crf=...)`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import numpy as np
import numpy.typing as npt

from ingest.tsguard import payload_offset

RGB = npt.NDArray[np.uint8]
Frames = Sequence[RGB]

TS_PACKET = 188
TS_SYNC = 0x47
_NULL_PID = 0x1FFF
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)
# PMT stream_type values of video codecs (ISO 13818-1 table 2-34 and registrations).
_VIDEO_STREAM_TYPES = {0x01, 0x02, 0x10, 0x1B, 0x20, 0x24, 0x33, 0xD1, 0xEA}


def _check_frames(frames: Frames) -> None:
    for i, f in enumerate(frames):
        if f.dtype != np.uint8 or f.ndim != 3 or f.shape[2] != 3:
            raise ValueError(
                f"frame {i} is {f.dtype} {f.shape}; impairments take H x W x 3 uint8 RGB frames"
            )


def _to_uint8(x: npt.NDArray[np.floating]) -> RGB:
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def _gaussian_kernel(sigma: float) -> npt.NDArray[np.float32]:
    radius = max(1, math.ceil(3 * sigma))
    x = np.arange(-radius, radius + 1, dtype=np.float32)
    k = np.exp(-0.5 * (x / sigma) ** 2)
    return (k / k.sum()).astype(np.float32)


def _convolve_axis(
    img: npt.NDArray[np.float32], kernel: npt.NDArray[np.float32], axis: int
) -> npt.NDArray[np.float32]:
    """1-D convolution along `axis` with edge-reflected borders (no dark halo at the frame edge)."""
    radius = len(kernel) // 2
    pad = [(0, 0)] * img.ndim
    pad[axis] = (radius, radius)
    padded = np.pad(img, pad, mode="reflect" if img.shape[axis] > radius else "edge")
    out = np.zeros_like(img)
    n = img.shape[axis]
    for i, w in enumerate(kernel):
        out += w * np.take(padded, np.arange(i, i + n), axis=axis)
    return out


def gaussian_blur(img: npt.NDArray[np.float32], sigma: float) -> npt.NDArray[np.float32]:
    """Separable gaussian blur of a float image over its first two axes."""
    if sigma <= 0:
        return img
    kernel = _gaussian_kernel(sigma)
    return _convolve_axis(_convolve_axis(img, kernel, 0), kernel, 1)


def blur(frames: Frames, sigma: float) -> list[RGB]:
    """Gaussian blur with standard deviation `sigma` pixels (0 leaves frames unchanged)."""
    if sigma < 0:
        raise ValueError(f"blur sigma must be >= 0, got {sigma}")
    _check_frames(frames)
    return [_to_uint8(gaussian_blur(f.astype(np.float32), sigma)) for f in frames]


def noise(frames: Frames, sigma: float, seed: int = 0) -> list[RGB]:
    """Additive white gaussian noise of `sigma` code values (0-255 scale), fresh every frame.

    The same noise is added to the three channels (luma noise, like sensor or film
    grain after chroma subsampling would mostly leave).
    """
    if sigma < 0:
        raise ValueError(f"noise sigma must be >= 0, got {sigma}")
    _check_frames(frames)
    rng = np.random.default_rng(seed)
    out = []
    for f in frames:
        n = rng.normal(0.0, sigma, size=f.shape[:2]).astype(np.float32)
        out.append(_to_uint8(f.astype(np.float32) + n[:, :, None]))
    return out


def banding(frames: Frames, levels: int) -> list[RGB]:
    """Quantise luma to `levels` evenly spaced values (2-256), keeping chroma.

    On smooth gradients this makes flat bands separated by visible steps, the way a
    low bit depth or an over-eager encoder does. Luma (BT.601), not each RGB channel,
    is quantised: channels quantised separately step at different places and their
    luma steps come out smaller and irregular, unlike the contouring seen in video.
    """
    if not 2 <= levels <= 256:
        raise ValueError(f"banding levels must be within 2..256, got {levels}")
    _check_frames(frames)
    step = 255.0 / (levels - 1)
    out = []
    for f in frames:
        rgb = f.astype(np.float32)
        luma = rgb @ _LUMA
        shift = np.rint(luma / step) * step - luma
        out.append(_to_uint8(rgb + shift[:, :, None]))
    return out


def picture(frames: Frames, kind: str, strength: float, seed: int = 0) -> list[RGB]:
    """Apply a picture impairment by name: 'blur' (sigma), 'noise' (sigma, seeded) or
    'banding' (levels); any other kind leaves the frames as they are."""
    if kind == "blur":
        return blur(frames, strength)
    if kind == "noise":
        return noise(frames, strength, seed=seed)
    if kind == "banding":
        return banding(frames, int(strength))
    return list(frames)


def _check_span(frames: Frames, start: int, length: int, what: str) -> None:
    if start < 0 or length < 0 or start >= len(frames):
        raise ValueError(
            f"{what} span start={start} length={length} does not fit {len(frames)} frames"
        )


def black(frames: Frames, start: int, length: int) -> list[RGB]:
    """Replace `length` frames from `start` with black (clipped at the end of the list)."""
    _check_span(frames, start, length, "black")
    _check_frames(frames)
    end = min(len(frames), start + length)
    return [np.zeros_like(f) if start <= i < end else f.copy() for i, f in enumerate(frames)]


def freeze(frames: Frames, start: int, length: int) -> list[RGB]:
    """Repeat frame `start` over `length` frames in total (clipped at the end of the list)."""
    _check_span(frames, start, length, "freeze")
    _check_frames(frames)
    end = min(len(frames), start + length)
    held = frames[start]
    return [held.copy() if start <= i < end else f.copy() for i, f in enumerate(frames)]


def darken(frames: Frames, factor: float) -> list[RGB]:
    """Scale every value by `factor` (0-1): 1 leaves frames unchanged, 0 makes them black."""
    if not 0 <= factor <= 1:
        raise ValueError(f"darken factor must be within 0..1, got {factor}")
    _check_frames(frames)
    return [_to_uint8(f.astype(np.float32) * factor) for f in frames]


def resize(
    img: RGB, height: int, width: int, method: Literal["bilinear", "nearest"] = "bilinear"
) -> RGB:
    """Resize an RGB image (pixel-centre aligned, like FFmpeg's scalers)."""
    if height < 1 or width < 1:
        raise ValueError(f"cannot resize to {width}x{height}")
    h, w = img.shape[:2]
    ys = (np.arange(height, dtype=np.float32) + 0.5) * h / height - 0.5
    xs = (np.arange(width, dtype=np.float32) + 0.5) * w / width - 0.5
    if method == "nearest":
        yi = np.clip(np.rint(ys), 0, h - 1).astype(np.intp)
        xi = np.clip(np.rint(xs), 0, w - 1).astype(np.intp)
        return np.ascontiguousarray(img[yi][:, xi])
    ys, xs = np.clip(ys, 0, h - 1), np.clip(xs, 0, w - 1)
    y0, x0 = np.floor(ys).astype(np.intp), np.floor(xs).astype(np.intp)
    y1, x1 = np.minimum(y0 + 1, h - 1), np.minimum(x0 + 1, w - 1)
    fy, fx = (ys - y0)[:, None, None], (xs - x0)[None, :, None]
    f = img.astype(np.float32)
    top = f[y0][:, x0] * (1 - fx) + f[y0][:, x1] * fx
    bottom = f[y1][:, x0] * (1 - fx) + f[y1][:, x1] * fx
    return _to_uint8(top * (1 - fy) + bottom * fy)


def downscale_upscale(
    frames: Frames, factor: float, method: Literal["bilinear", "nearest"] = "bilinear"
) -> list[RGB]:
    """Shrink by `factor` (>= 1) and scale back to the original size: upscaling softness
    ('bilinear') or blocky pixel replication ('nearest')."""
    if factor < 1:
        raise ValueError(f"downscale factor must be >= 1, got {factor}")
    _check_frames(frames)
    out = []
    for f in frames:
        h, w = f.shape[:2]
        small = resize(f, max(1, round(h / factor)), max(1, round(w / factor)), method)
        out.append(resize(small, h, w, method))
    return out


def ts_packets(data: bytes) -> list[bytes]:
    """Split MPEG-TS bytes into 188-byte packets; ValueError when it is not aligned TS."""
    if len(data) < TS_PACKET or len(data) % TS_PACKET or data[0] != TS_SYNC:
        raise ValueError(
            f"not an MPEG-TS segment ({len(data)} bytes, first byte {data[:1].hex() or 'none'}); "
            "corrupt_packets works on 188-byte-aligned TS starting with sync byte 0x47"
        )
    packets = [data[i : i + TS_PACKET] for i in range(0, len(data), TS_PACKET)]
    if any(p[0] != TS_SYNC for p in packets):
        raise ValueError("MPEG-TS sync byte 0x47 missing inside the segment; it is already damaged")
    return packets


def _pid(packet: bytes) -> int:
    return ((packet[1] & 0x1F) << 8) | packet[2]


def _section(packet: bytes) -> bytes:
    """The PSI section starting in a packet (after its pointer field)."""
    start = payload_offset(packet)
    if start >= TS_PACKET:
        return b""
    pointer = packet[start]
    return packet[start + 1 + pointer :]


def _pmt_pids(packets: Sequence[bytes]) -> set[int]:
    """PMT PIDs listed by the first PAT."""
    for p in packets:
        if _pid(p) == 0 and p[1] & 0x40:
            sec = _section(p)
            if len(sec) < 8:
                continue
            length = ((sec[1] & 0x0F) << 8) | sec[2]
            body = sec[8 : min(len(sec), 3 + length - 4)]
            pids = set()
            for i in range(0, len(body) - 3, 4):
                program = (body[i] << 8) | body[i + 1]
                if program != 0:
                    pids.add(((body[i + 2] & 0x1F) << 8) | body[i + 3])
            return pids
    return set()


def _video_pids(packets: Sequence[bytes], pmt_pids: set[int]) -> set[int]:
    """Elementary PIDs whose PMT stream_type is a video codec."""
    found: set[int] = set()
    for p in packets:
        if _pid(p) not in pmt_pids or not p[1] & 0x40:
            continue
        sec = _section(p)
        if len(sec) < 12:
            continue
        length = ((sec[1] & 0x0F) << 8) | sec[2]
        end = min(len(sec), 3 + length - 4)
        pos = 12 + (((sec[10] & 0x0F) << 8) | sec[11])
        while pos + 5 <= end:
            stream_type = sec[pos]
            pid = ((sec[pos + 1] & 0x1F) << 8) | sec[pos + 2]
            if stream_type in _VIDEO_STREAM_TYPES:
                found.add(pid)
            pos += 5 + (((sec[pos + 3] & 0x0F) << 8) | sec[pos + 4])
    return found


def _pes_header_end(packet: bytes, start: int) -> int:
    """Where the elementary stream starts in a packet that begins a PES packet."""
    if start + 9 > TS_PACKET or packet[start : start + 3] != b"\x00\x00\x01":
        return start
    return min(TS_PACKET, start + 9 + packet[start + 8])


def corrupt_packets(
    data: bytes,
    fraction: float,
    seed: int = 0,
    mode: Literal["overwrite", "drop"] = "overwrite",
) -> bytes:
    """Damage `fraction` (0-1) of the video packets of an MPEG-TS segment like transport loss.

    'overwrite' fills the elementary-stream bytes of the chosen packets with random bytes
    (TS header, adaptation field and PES header kept, so timing survives and the decoder
    conceals); 'drop' removes the packets. PAT, PMT and non-video packets are never
    touched. The chosen packets come from one seeded permutation, so a larger fraction
    damages a superset of what a smaller one does: severity grows monotonically.
    """
    if not 0 <= fraction <= 1:
        raise ValueError(f"corrupt fraction must be within 0..1, got {fraction}")
    if mode not in ("overwrite", "drop"):
        raise ValueError(f"corrupt mode must be 'overwrite' or 'drop', got {mode!r}")
    packets = ts_packets(data)
    pmt = _pmt_pids(packets)
    video = _video_pids(packets, pmt)
    if not video:
        # No usable PMT: treat every non-PSI, non-null PID as video rather than do nothing.
        video = {_pid(p) for p in packets} - pmt - {0, 1, 2, 0x11, 0x12, _NULL_PID}
    candidates = [i for i, p in enumerate(packets) if _pid(p) in video]
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(candidates))
    chosen = {candidates[i] for i in order[: round(fraction * len(candidates))]}
    out = []
    for i, p in enumerate(packets):
        if i not in chosen:
            out.append(p)
        elif mode == "overwrite":
            out.append(_overwrite(p, np.random.default_rng([seed, i])))
    return b"".join(out)


def _overwrite(packet: bytes, rng: np.random.Generator) -> bytes:
    start = payload_offset(packet)
    if packet[1] & 0x40:
        start = _pes_header_end(packet, start)
    junk = rng.integers(0, 256, size=TS_PACKET - start, dtype=np.uint8).tobytes()
    return packet[:start] + junk

"""Synthetic content and real encodes with PyAV: test data, demo streams and training corpora.

No file or network access: moving test patterns and procedural natural-looking
scenes are made in numpy and encoded with FFmpeg's encoders through PyAV.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from fractions import Fraction

import av
import numpy as np
import numpy.typing as npt

from ingest.decode import top_level_boxes

RGB = npt.NDArray[np.uint8]

PATTERNS = ("bars", "gradient", "zoneplate", "texture", "scene")


def pattern_frames(
    kind: str, width: int, height: int, count: int, *, seed: int = 0, speed: float = 2.0
) -> Iterator[RGB]:
    """`count` RGB frames of a moving pattern. Deterministic for a given seed."""
    if kind not in PATTERNS:
        raise ValueError(f"unknown pattern {kind!r}; choose one of {', '.join(PATTERNS)}")
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    if kind in ("texture", "scene"):
        canvas = _scene(rng, width * 2, height * 2, detail=kind == "texture")
    for t in range(count):
        shift = t * speed
        if kind == "bars":
            phase = ((xx + shift) / width * 8).astype(np.int32) % 8
            palette = np.array(
                [
                    [235, 235, 235],
                    [235, 235, 16],
                    [16, 235, 235],
                    [16, 235, 16],
                    [235, 16, 235],
                    [235, 16, 16],
                    [16, 16, 235],
                    [16, 16, 16],
                ],
                dtype=np.uint8,
            )
            frame = palette[phase]
            box = (int(shift * 3) % max(1, width - 40), height // 3)
            frame[box[1] : box[1] + 40, box[0] : box[0] + 40] = (128, 64, 200)
            yield frame
        elif kind == "gradient":
            v = (xx / width * 0.7 + yy / height * 0.3 + 0.05 * np.sin(shift / 10)) % 1.0
            g = (v * 255).astype(np.uint8)
            yield np.stack([g, (g * 0.8).astype(np.uint8), 255 - g], axis=-1)
        elif kind == "zoneplate":
            r2 = (xx - width / 2) ** 2 + (yy - height / 2) ** 2
            g = (127.5 + 127.5 * np.cos(r2 * np.pi / (width * 2) + shift / 4)).astype(np.uint8)
            yield np.stack([g, g, g], axis=-1)
        else:
            ox = int(width / 2 + width / 2 * np.sin(shift / 40))
            oy = int(height / 2 + height / 2 * np.sin(shift / 55))
            yield np.ascontiguousarray(canvas[oy : oy + height, ox : ox + width])


def _scene(rng: np.random.Generator, width: int, height: int, *, detail: bool) -> RGB:
    """A procedural natural-looking picture: 1/f noise terrain, blobs and thin marks."""
    fy = np.fft.fftfreq(height)[:, None]
    fx = np.fft.rfftfreq(width)[None, :]
    radius = np.sqrt(fx**2 + fy**2)
    radius[0, 0] = 1.0
    exponent = 1.2 if detail else 1.8
    channels = []
    base = rng.normal(size=(height, width // 2 + 1)) + 1j * rng.normal(
        size=(height, width // 2 + 1)
    )
    for c in range(3):
        tint = rng.normal(size=base.shape) * 0.3 + 1j * rng.normal(size=base.shape) * 0.3
        spec = (base + tint) / radius**exponent
        img = np.fft.irfft2(spec, s=(height, width))
        img = (img - img.mean()) / (img.std() + 1e-9)
        channels.append(img * (0.18 + 0.04 * c) + 0.45 + 0.05 * c)
    rgb = np.stack(channels, axis=-1)
    yy, xx = np.mgrid[0:height, 0:width]
    for _ in range(12):
        cy, cx = rng.uniform(0, height), rng.uniform(0, width)
        r = rng.uniform(0.03, 0.15) * min(width, height)
        mask = ((yy - cy) ** 2 + (xx - cx) ** 2) < r**2
        rgb[mask] = rgb[mask] * 0.4 + rng.uniform(0, 1, size=3) * 0.6
    for _ in range(30):
        y, x = int(rng.uniform(0, height - 12)), int(rng.uniform(0, width - 60))
        w = int(rng.uniform(10, 60))
        rgb[y : y + 2, x : x + w] = rng.uniform(0, 1)
    return (np.clip(rgb, 0, 1) * 255).astype(np.uint8)


@dataclass(frozen=True, slots=True)
class EncodeSettings:
    codec: str = "libx264"
    container: str = "mpegts"
    fps: int = 25
    crf: int | None = 23
    bitrate: int | None = None
    gop: int = 50
    preset: str = "veryfast"
    pix_fmt: str = "yuv420p"
    options: tuple[tuple[str, str], ...] = ()
    """Extra encoder AVOptions applied last, e.g. libx264's ("noise_reduction", "400")."""


def encode(frames: Iterable[RGB], settings: EncodeSettings | None = None) -> bytes:
    """Encode RGB frames into a complete file (MPEG-TS, MP4, Matroska, ...) in memory."""
    s = settings or EncodeSettings()
    buf = io.BytesIO()
    options = {}
    if s.container == "mp4-frag":
        options = {"movflags": "frag_keyframe+empty_moov+default_base_moof"}
    fmt = "mp4" if s.container == "mp4-frag" else s.container
    with av.open(buf, mode="w", format=fmt, options=options) as out:
        _encode_into(out, frames, s)
    return buf.getvalue()


def _encode_into(
    out: av.container.OutputContainer, frames: Iterable[RGB], s: EncodeSettings
) -> None:
    stream: av.VideoStream | None = None
    for rgb in frames:
        if stream is None:
            stream = _open_stream(out, s, rgb.shape[1], rgb.shape[0])
        frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
        for packet in stream.encode(frame):
            out.mux(packet)
    if stream is None:
        raise ValueError("no frames to encode")
    for packet in stream.encode(None):
        out.mux(packet)


def _open_stream(
    out: av.container.OutputContainer, s: EncodeSettings, width: int, height: int
) -> av.VideoStream:
    stream = out.add_stream(s.codec, rate=Fraction(s.fps))
    if not isinstance(stream, av.VideoStream):
        raise ValueError(f"{s.codec} is not a video encoder")
    stream.width, stream.height = width, height
    stream.pix_fmt = s.pix_fmt
    stream.codec_context.gop_size = s.gop
    stream.time_base = Fraction(1, s.fps)
    opts: dict[str, object] = {}
    if s.codec in ("libx264", "libx265"):
        opts["preset"] = s.preset
        if s.codec == "libx265":
            opts["x265-params"] = f"log-level=error:keyint={s.gop}:min-keyint={s.gop}"
        else:
            opts["sc_threshold"] = "0"
    if s.bitrate is not None:
        stream.bit_rate = s.bitrate
    elif s.crf is not None:
        opts["crf" if s.codec in ("libx264", "libx265") else "q"] = str(s.crf)
    opts.update(s.options)
    stream.options = opts
    return stream


def split_fmp4(data: bytes) -> tuple[bytes, list[bytes]]:
    """Split a fragmented MP4 into its init segment (ftyp+moov) and media fragments (moof+mdat)."""
    pos = 0
    init = b""
    fragments: list[bytes] = []
    current = b""
    for kind in top_level_boxes(data):
        size = int.from_bytes(data[pos : pos + 4], "big")
        if size == 1:
            size = int.from_bytes(data[pos + 8 : pos + 16], "big")
        box = data[pos : pos + size]
        pos += size
        if kind in (b"ftyp", b"moov"):
            init += box
        elif kind in (b"styp", b"moof", b"sidx") and current.find(b"mdat") >= 0:
            fragments.append(current)
            current = box
        elif kind == b"mfra":
            continue
        else:
            current += box
    if current:
        fragments.append(current)
    return init, fragments


def clip(
    kind: str = "scene",
    *,
    width: int = 320,
    height: int = 180,
    seconds: float = 2.0,
    seed: int = 0,
    settings: EncodeSettings | None = None,
) -> bytes:
    """Encode `seconds` of a moving pattern: the one-liner most tests use."""
    s = settings or EncodeSettings()
    n = max(1, round(seconds * s.fps))
    return encode(pattern_frames(kind, width, height, n, seed=seed), s)


def main(argv: list[str] | None = None) -> int:
    """`python -m ingest.synth OUT [SECONDS]`: write a sample clip (H.264 in MPEG-TS)."""
    import sys
    from pathlib import Path

    args = sys.argv[1:] if argv is None else argv
    if not args:
        print("usage: python -m ingest.synth OUT.ts [SECONDS]", file=sys.stderr)
        return 2
    seconds = float(args[1]) if len(args) > 1 else 10.0
    data = clip("scene", width=640, height=360, seconds=seconds)
    Path(args[0]).write_bytes(data)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Pictures for the VLM: JPEG encoding on the screen side (PyAV, a core dependency) and
the video task's mosaic on the diagnose side (Pillow, the `vlm` extra)."""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from fractions import Fraction
from typing import TYPE_CHECKING

import av
import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from PIL import Image


def fit_size(width: int, height: int, max_side: int) -> tuple[int, int]:
    """Scale (width, height) down so the longer side is at most max_side; even sizes (4:2:0)."""
    scale = min(1.0, max_side / max(width, height))
    return max(2, int(width * scale) // 2 * 2), max(2, int(height * scale) // 2 * 2)


def encode_jpeg(rgb: npt.NDArray[np.uint8], max_side: int = 768, qscale: int = 4) -> bytes:
    """H x W x 3 RGB -> JPEG bytes, downscaled to max_side. qscale is FFmpeg's -q:v (2-31)."""
    h, w = rgb.shape[:2]
    nw, nh = fit_size(w, h, max_side)
    cc = av.CodecContext.create("mjpeg", "w")
    cc.width, cc.height = nw, nh
    cc.pix_fmt = "yuvj420p"
    cc.time_base = Fraction(1, 25)
    cc.options = {"qmin": str(qscale), "qmax": str(qscale)}
    frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
    frame = frame.reformat(width=nw, height=nh, format="yuvj420p", interpolation="AREA")
    packets = [*cc.encode(frame), *cc.encode(None)]
    return b"".join(bytes(p) for p in packets)


def open_jpeg(data: bytes) -> Image.Image:
    from PIL import Image

    img = Image.open(io.BytesIO(data))
    img.load()
    return img.convert("RGB")


def to_jpeg(img: Image.Image, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def mosaic(frames: Sequence[bytes], max_side: int = 896) -> bytes:
    """PreResQ-R1's global picture: the frames tiled in time order (rows of ceil(sqrt(n)))."""
    from PIL import Image

    imgs = [open_jpeg(f) for f in frames]
    cols = math.ceil(math.sqrt(len(imgs)))
    rows = math.ceil(len(imgs) / cols)
    w0, h0 = imgs[0].size
    tile_w, tile_h = fit_size(w0, h0, max_side // cols)
    canvas = Image.new("RGB", (tile_w * cols, tile_h * rows))
    for i, img in enumerate(imgs):
        tile = img.resize((tile_w, tile_h), Image.Resampling.BILINEAR)
        canvas.paste(tile, ((i % cols) * tile_w, (i // cols) * tile_h))
    return to_jpeg(canvas)


def spread(n: int, k: int) -> list[int]:
    """k indices evenly spread over range(n) (all of them when k >= n)."""
    if k >= n:
        return list(range(n))
    return [round(i * (n - 1) / max(1, k - 1)) for i in range(k)] if k > 1 else [n // 2]

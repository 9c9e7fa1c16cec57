"""Offline training content: named sources that each render a short clip at a given size.

Everything comes from what ships with the packages: the sample photographs of
scikit-image, matplotlib, PyWavelets and scikit-learn turned into panning/zooming
clips (plain, and with a camera's and a contribution feed's history), ingest.synth's
procedural patterns and scenes, fractal zooms, noise textures, scrolling text and flat
graphics. A source is named "family:detail[:seed]" and renders deterministically from
its name, so a corpus can be rebuilt exactly and the training and benchmark sets can
be kept disjoint by name.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable

import numpy as np
import numpy.typing as npt

from ingest import impair
from ingest.synth import pattern_frames

RGB = npt.NDArray[np.uint8]

# Training and benchmark content never share a source (bench/quality.py checks it).
TRAIN_STILLS = (
    "astronaut",
    "camera",
    "coins",
    "moon",
    "hubble_deep_field",
    "immunohistochemistry",
    "retina",
    "rocket",
    "brick",
    "grass",
    "text",
    "logo",
    "colorwheel",
    "cell",
    "clock",
    "motorcycle",
    "grace_hopper",
    "aero",
    "ascent",
    "china",
    "flower",
)
# Training stills that are drawings rather than photographs; the "photo" family gives
# every other one a capture history, because real sources rarely arrive pristine.
_GRAPHIC_STILLS = ("text", "logo", "colorwheel")
PHOTO_STILLS = tuple(s for s in TRAIN_STILLS if s not in _GRAPHIC_STILLS)
BENCH_STILLS = ("coffee", "chelsea", "gravel", "page")

_WORDS = [
    "stream",
    "quality",
    "monitor",
    "segment",
    "bitrate",
    "frame",
    "codec",
    "latency",
    "encoder",
    "ladder",
    "viewer",
    "live",
    "sports",
    "news",
    "weather",
    "goal",
    "match",
    "score",
    "replay",
    "market",
    "index",
    "shares",
    "breaking",
    "update",
    "channel",
    "studio",
    "camera",
    "signal",
    "network",
    "broadcast",
    "episode",
    "season",
    "trailer",
]


def seed_of(name: str, salt: int = 0) -> int:
    return zlib.crc32(f"{name}#{salt}".encode())


def train_sources() -> list[str]:
    names = [f"still:{s}" for s in TRAIN_STILLS]
    names += [f"pattern:{k}:{i}" for k in ("scene", "texture") for i in range(12)]
    names += [f"pattern:{k}:0" for k in ("bars", "gradient", "zoneplate")]
    names += [f"fractal:julia:{i}" for i in range(8)] + [f"fractal:mandel:{i}" for i in range(4)]
    names += [f"texture:fbm:{i}" for i in range(8)] + [f"texture:plasma:{i}" for i in range(6)]
    names += [f"text:{i}" for i in range(10)] + [f"graphics:{i}" for i in range(8)]
    names += [f"overlay:{i}" for i in range(8)]
    names += [f"photo:{s}:{i}" for s in PHOTO_STILLS for i in range(2)]
    return names


def bench_sources() -> list[str]:
    names = [f"still:{s}" for s in BENCH_STILLS]
    names += [f"pattern:scene:{100 + i}" for i in range(3)] + ["pattern:texture:100"]
    names += ["fractal:julia:100", "fractal:mandel:100", "texture:fbm:100", "texture:plasma:100"]
    names += ["text:100", "text:101", "graphics:100", "graphics:101"]
    return names


def family(name: str) -> str:
    return name.split(":", 1)[0]


def underlying_still(name: str) -> str | None:
    """The sample still (see _still) a source is made from, if any."""
    fam = family(name)
    if fam in ("still", "photo"):
        return name.split(":")[1]
    if fam == "overlay":
        return _overlay_still(name)
    return None


def source_size(name: str) -> tuple[int, int]:
    """(width, height) a source renders at: mixes 384x216 .. 1280x720 across sources."""
    which = underlying_still(name)
    if which is not None:
        h0, w0 = _still(which).shape[:2]
        if min(h0, w0) >= 800:
            return 960, 540
        return (512, 288) if w0 >= 450 else (384, 216)
    sizes: tuple[tuple[int, int], ...] = (
        (640, 360),
        (960, 540),
        (640, 360),
        (1280, 720),
        (480, 270),
    )
    if family(name) == "fractal":  # escape-time rendering is slow: keep fractals small
        sizes = ((640, 360), (480, 270))
    return sizes[seed_of(name) % len(sizes)]


def render(name: str, count: int, size: tuple[int, int] | None = None) -> list[RGB]:
    """`count` frames of source `name` at `size` (default source_size(name))."""
    width, height = size or source_size(name)
    parts = name.split(":")
    makers: dict[str, Callable[[list[str], int, int, int], list[RGB]]] = {
        "still": _still_clip,
        "pattern": _pattern_clip,
        "fractal": _fractal_clip,
        "texture": _texture_clip,
        "text": _text_clip,
        "graphics": _graphics_clip,
        "overlay": _overlay_clip,
        "photo": _photo_clip,
    }
    if parts[0] not in makers:
        raise ValueError(f"unknown content family {parts[0]!r} in source {name!r}")
    frames = makers[parts[0]](parts, width, height, count)
    return [np.ascontiguousarray(f[:height, :width], dtype=np.uint8) for f in frames]


def _still(which: str) -> RGB:
    from skimage import data

    if which == "motorcycle":  # the left view of scikit-image's stereo pair
        img = np.asarray(data.stereo_motorcycle()[0])
    elif which == "grace_hopper":  # the portrait matplotlib ships as sample data
        from matplotlib import cbook
        from PIL import Image

        with Image.open(str(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))) as im:
            img = np.asarray(im.convert("RGB"))
    elif which in ("aero", "ascent"):  # PyWavelets' sample photographs (aerial, stairs)
        import pywt.data

        img = np.asarray(getattr(pywt.data, which)())
    elif which in ("china", "flower"):  # scikit-learn's two sample photographs
        from sklearn.datasets import load_sample_image

        img = np.asarray(load_sample_image(f"{which}.jpg"))
    else:
        img = np.asarray(getattr(data, which)())
    if img.dtype == bool:
        img = img.astype(np.uint8) * 255
    if img.dtype != np.uint8:
        img = (np.clip(img, 0, 1) * 255).astype(np.uint8)
    if img.ndim == 2:
        img = np.stack([img] * 3, axis=-1)
    return np.ascontiguousarray(img[..., :3])


def _still_clip(parts: list[str], width: int, height: int, count: int) -> list[RGB]:
    rng = np.random.default_rng(seed_of(":".join(parts)))
    return _pan_zoom(_still(parts[1]), width, height, count, rng)


def _pan_zoom(img: RGB, width: int, height: int, count: int, rng: np.random.Generator) -> list[RGB]:
    """A slow pan and zoom over `img`, resampled to width x height."""
    h0, w0 = img.shape[:2]
    aspect = width / height
    base_h = min(h0, w0 / aspect)
    z0, z1 = rng.uniform(0.75, 1.0), rng.uniform(0.75, 1.0)
    c0 = rng.uniform(0.35, 0.65, size=2)
    c1 = c0 + rng.uniform(-0.12, 0.12, size=2)
    out = []
    for t in range(count):
        a = t / max(1, count - 1)
        wh = base_h * (z0 + (z1 - z0) * a)
        ww = wh * aspect
        cy = np.clip((c0[0] + (c1[0] - c0[0]) * a) * h0, wh / 2, h0 - wh / 2)
        cx = np.clip((c0[1] + (c1[1] - c0[1]) * a) * w0, ww / 2, w0 - ww / 2)
        y0, x0 = int(cy - wh / 2), int(cx - ww / 2)
        crop = img[y0 : y0 + int(wh), x0 : x0 + int(ww)]
        out.append(impair.resize(crop, height, width))
    return out


def _pattern_clip(parts: list[str], width: int, height: int, count: int) -> list[RGB]:
    seed = int(parts[2]) if len(parts) > 2 else 0
    speed = 1.5 + (seed % 4)
    return list(pattern_frames(parts[1], width, height, count, seed=seed, speed=speed))


def _palette(rng: np.random.Generator) -> Callable[[npt.NDArray[np.float64]], RGB]:
    phase = rng.uniform(0, 2 * np.pi, size=3)
    freq = rng.uniform(2.0, 6.0, size=3)

    def colour(v: npt.NDArray[np.float64]) -> RGB:
        rgb = 0.5 + 0.5 * np.cos(v[..., None] * freq + phase)
        return (rgb * 255).astype(np.uint8)

    return colour


def _fractal_clip(parts: list[str], width: int, height: int, count: int) -> list[RGB]:
    rng = np.random.default_rng(seed_of(":".join(parts)))
    colour = _palette(rng)
    julia = parts[1] == "julia"
    angle = rng.uniform(0, 2 * np.pi)
    c = 0.7885 * np.exp(1j * angle)
    if julia:
        centre = complex(rng.uniform(-0.3, 0.3), rng.uniform(-0.3, 0.3))
    else:
        spots = (-0.745 + 0.113j, -0.1011 + 0.9563j, -1.25066 + 0.02012j, 0.285 + 0.01j)
        centre = spots[int(rng.integers(len(spots)))]
    span0 = rng.uniform(0.5, 1.5) if julia else rng.uniform(0.05, 0.3)
    out = []
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float64)
    for t in range(count):
        span = span0 * (0.97**t)
        z = centre + ((xs - width / 2) + 1j * (ys - height / 2)) * (span / width)
        w = z.copy() if julia else np.zeros_like(z)
        cc = c if julia else z
        n = np.zeros(z.shape)
        alive = np.ones(z.shape, dtype=bool)
        for _ in range(48):
            w[alive] = w[alive] ** 2 + (cc if julia else cc[alive])
            esc = alive & (np.abs(w) > 4)
            alive &= ~esc
            n[alive] += 1
        smooth = n / 48.0
        out.append(colour(smooth * 3))
    return out


def _fbm(rng: np.random.Generator, h: int, w: int, exponent: float) -> npt.NDArray[np.float64]:
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.rfftfreq(w)[None, :]
    r = np.sqrt(fx**2 + fy**2)
    r[0, 0] = 1.0
    spec = (rng.normal(size=r.shape) + 1j * rng.normal(size=r.shape)) / r**exponent
    img = np.fft.irfft2(spec, s=(h, w))
    return (img - img.mean()) / (img.std() + 1e-9)


def _texture_clip(parts: list[str], width: int, height: int, count: int) -> list[RGB]:
    rng = np.random.default_rng(seed_of(":".join(parts)))
    out = []
    if parts[1] == "fbm":
        exponent = rng.uniform(0.8, 2.0)
        big = np.stack([_fbm(rng, height + 64, width + 64, exponent) for _ in range(3)], -1)
        mix = rng.uniform(0.1, 0.25, size=3)
        big = np.clip(0.5 + big * mix, 0, 1)
        vy, vx = rng.uniform(-2.5, 2.5, size=2)
        for t in range(count):
            y, x = int(32 + vy * t) % 64, int(32 + vx * t) % 64
            out.append((big[y : y + height, x : x + width] * 255).astype(np.uint8))
        return out
    colour = _palette(rng)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float64) / max(width, height)
    k = rng.uniform(4, 20, size=(4, 2))
    for t in range(count):
        v = sum(np.sin(k[i, 0] * xs + k[i, 1] * ys + 0.15 * t * (i + 1)) for i in range(4))
        out.append(colour(np.asarray(v) / 2))
    return out


def _text_clip(parts: list[str], width: int, height: int, count: int) -> list[RGB]:
    from PIL import Image, ImageDraw, ImageFont

    rng = np.random.default_rng(seed_of(":".join(parts)))
    size = int(rng.integers(14, 40))
    font = ImageFont.load_default(size=size)
    bg = tuple(int(v) for v in rng.integers(0, 256, size=3))
    fg = tuple(255 - v if abs(255 - 2 * v) > 60 else (v + 128) % 256 for v in bg)
    page_h = height * 2
    page = Image.new("RGB", (width, page_h), bg)
    draw = ImageDraw.Draw(page)
    y = 4
    while y < page_h - size:
        line = " ".join(rng.choice(_WORDS, size=int(rng.integers(3, 10))))
        draw.text((int(rng.integers(4, 40)), y), line.capitalize(), fill=fg, font=font)
        y += int(size * rng.uniform(1.2, 1.8))
    arr = np.asarray(page)
    speed = rng.uniform(1.0, 4.0)
    return [arr[int(t * speed) : int(t * speed) + height] for t in range(count)]


def _graphics_clip(parts: list[str], width: int, height: int, count: int) -> list[RGB]:
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed_of(":".join(parts)))
    _, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    c0, c1 = rng.uniform(0, 255, size=3), rng.uniform(0, 255, size=3)
    grad = (xx / width)[..., None] * (c1 - c0) + c0
    shapes = []
    for _ in range(int(rng.integers(8, 20))):
        x, y = rng.uniform(0, width), rng.uniform(0, height)
        r = rng.uniform(10, min(width, height) / 4)
        shapes.append(
            (
                x,
                y,
                r,
                rng.uniform(-3, 3, size=2),
                tuple(int(v) for v in rng.integers(0, 256, size=3)),
                bool(rng.integers(2)),
            )
        )
    out = []
    for t in range(count):
        img = Image.fromarray(grad.astype(np.uint8))
        draw = ImageDraw.Draw(img)
        for x, y, r, v, col, ellipse in shapes:
            cx, cy = x + v[0] * t, y + v[1] * t
            box = (cx - r, cy - r * 0.7, cx + r, cy + r * 0.7)
            if ellipse:
                draw.ellipse(box, fill=col, outline=(0, 0, 0), width=2)
            else:
                draw.rectangle(box, fill=col)
        out.append(np.asarray(img))
    return out


def _overlay_clip(parts: list[str], width: int, height: int, count: int) -> list[RGB]:
    """Broadcast graphics over natural content: a training still panning under a
    lower-third bar with text and a corner logo box (news, sports)."""
    from PIL import Image, ImageDraw, ImageFont

    rng = np.random.default_rng(seed_of(":".join(parts)))
    still = _overlay_still(":".join(parts))
    base = _still_clip(["still", still, parts[-1]], width, height, count)
    size = int(rng.integers(max(10, height // 24), max(12, height // 10)))
    font = ImageFont.load_default(size=size)
    bar = tuple(int(v) for v in rng.integers(0, 256, size=3))
    fg = (255, 255, 255) if sum(bar) < 384 else (0, 0, 0)
    top = int(height * rng.uniform(0.72, 0.85))
    line = " ".join(rng.choice(_WORDS, size=int(rng.integers(3, 7)))).upper()
    speed, x0 = rng.uniform(2.0, 8.0), rng.uniform(8, width * 0.3)
    out = []
    for t, frame in enumerate(base):
        img = Image.fromarray(frame)
        draw = ImageDraw.Draw(img, "RGBA")
        draw.rectangle((0, top, width, top + int(size * 1.6)), fill=(*bar, 210))
        draw.text((int(x0 - speed * t), top + size // 4), line, fill=fg, font=font)
        draw.rectangle((width - 8 - 3 * size, 8, width - 8, 8 + size * 2), fill=(*bar, 255))
        draw.text((width - 6 - 3 * size, 8 + size // 2), "LIVE", fill=fg, font=font)
        out.append(np.asarray(img))
    return out


def _overlay_still(name: str) -> str:
    """The training still under overlay source `name`."""
    return TRAIN_STILLS[seed_of(name, 7) % len(TRAIN_STILLS)]


def _jpeg(img: RGB, quality: int) -> RGB:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(img).save(buf, "JPEG", quality=quality)
    buf.seek(0)
    with Image.open(buf) as im:
        return np.asarray(im.convert("RGB"))


def capture_history(name: str) -> dict[str, float]:
    """What happened to photo source `name` before it reached the encoder (deterministic):
    `jpeg_source` (the still was a JPEG at this quality, then resampled by the pan and
    zoom), `grain` (sensor noise sigma, fresh every frame), `sharpen` (in-camera unsharp
    amount) and `jpeg_frames` (a contribution feed compressed every frame at this
    quality). 0 means absent; at least one is present."""
    rng = np.random.default_rng(seed_of(name, 11))
    h = {
        "jpeg_source": float(rng.integers(35, 86)) if rng.random() < 0.55 else 0.0,
        "grain": round(float(rng.uniform(1.0, 5.0)), 2) if rng.random() < 0.55 else 0.0,
        "sharpen": round(float(rng.uniform(0.3, 1.2)), 2) if rng.random() < 0.3 else 0.0,
        "jpeg_frames": float(rng.integers(55, 93)) if rng.random() < 0.3 else 0.0,
    }
    if not any(h.values()):
        h["jpeg_source"] = float(rng.integers(35, 86))
    return h


def _photo_clip(parts: list[str], width: int, height: int, count: int) -> list[RGB]:
    """A training still with a camera's and a contribution feed's history: the kind of
    "clean" reference real streams start from. The teacher still scores this reference
    as pristine, so the student learns that grain, mild JPEG texture and in-camera
    sharpening are content, and only what the encoder does on top is damage."""
    name = ":".join(parts)
    h = capture_history(name)
    rng = np.random.default_rng(seed_of(name, 12))
    still = _still(parts[1])
    if h["jpeg_source"]:
        still = _jpeg(still, int(h["jpeg_source"]))
    frames = _pan_zoom(still, width, height, count, rng)
    out = []
    for f in frames:
        x = f.astype(np.float32)
        if h["sharpen"]:
            x = x + h["sharpen"] * (x - impair.gaussian_blur(x, 1.2))
        if h["grain"]:
            g = rng.normal(0.0, h["grain"], size=(*x.shape[:2], 1)).astype(np.float32)
            g = impair.gaussian_blur(g, 0.5) * 1.6  # slightly soft, the same in R, G and B
            x = x + g + rng.normal(0.0, h["grain"] * 0.3, size=x.shape).astype(np.float32)
        y = np.clip(np.rint(x), 0, 255).astype(np.uint8)
        out.append(_jpeg(y, int(h["jpeg_frames"])) if h["jpeg_frames"] else y)
    return out

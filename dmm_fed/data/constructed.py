"""*Constructed* digit domains, built offline; they imitate, but are not, the original datasets.

* ``mnistm``: MNIST-M-like (Ganin & Lempitsky, 2015). Each MNIST digit is blended over a random
  28x28 crop of a colour photo bundled with scikit-image (astronaut, coffee, chelsea, rocket,
  hubble_deep_field, immunohistochemistry, the left motorcycle stereo image) as
  ``|patch - digit|`` per channel. Train uses all 60000 MNIST train digits, test all 10000 MNIST
  test digits.
* ``synthdigits``: SynthDigits-like (Ganin & Lempitsky, 2015). Digits 0-9 rendered with PIL from
  matplotlib's bundled TrueType fonts (``SYNTH_FONTS``: DejaVu Sans / Sans Mono / Serif in all
  styles, STIX General in all styles, Computer Modern cmr10, cmss10, cmtt10, cmb10, cmti10), with
  random font, size, position jitter, rotation, contrasting foreground/background colours and a
  slight Gaussian blur. 20000 train, 5000 test, balanced labels.

Both are deterministic: each split has its own fixed seed. Built arrays are cached as ``.npy``
files under ``root/constructed/<name>-v<RECIPE_VERSION>/`` (written atomically) and read back
memory-mapped, so changing a recipe means bumping ``RECIPE_VERSION``.
"""

from __future__ import annotations

import os
import tempfile
import time
from functools import cache
from pathlib import Path

import matplotlib
import numpy as np
import skimage.data
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from dmm_fed.data.paths import constructed_dir, not_found
from dmm_fed.data.sources import load_mnist

RECIPE_VERSION = 1
SIDE = 28
SEEDS = {
    ("mnistm", "train"): 101,
    ("mnistm", "test"): 102,
    ("synthdigits", "train"): 201,
    ("synthdigits", "test"): 202,
}
SYNTH_COUNTS = {"train": 20000, "test": 5000}
SYNTH_FONTS = (
    "DejaVuSans.ttf",
    "DejaVuSans-Bold.ttf",
    "DejaVuSans-Oblique.ttf",
    "DejaVuSans-BoldOblique.ttf",
    "DejaVuSansMono.ttf",
    "DejaVuSansMono-Bold.ttf",
    "DejaVuSansMono-Oblique.ttf",
    "DejaVuSansMono-BoldOblique.ttf",
    "DejaVuSerif.ttf",
    "DejaVuSerif-Bold.ttf",
    "DejaVuSerif-Italic.ttf",
    "DejaVuSerif-BoldItalic.ttf",
    "STIXGeneral.ttf",
    "STIXGeneralBol.ttf",
    "STIXGeneralItalic.ttf",
    "STIXGeneralBolIta.ttf",
    "cmr10.ttf",
    "cmss10.ttf",
    "cmtt10.ttf",
    "cmb10.ttf",
    "cmti10.ttf",
)
RENDER_SCALE = 2  # glyphs are drawn at 2x and downsampled, for smooth edges
FONT_SIZES = range(44, 65, 2)  # pixel sizes at render scale: digits fill ~60-85% of the height
MAX_JITTER = 3  # pixels at output scale
MAX_ROTATION = 12.0  # degrees
MAX_BLUR = 0.8  # Gaussian radius, output pixels
MIN_CONTRAST = 80.0  # minimum |luma(fg) - luma(bg)| on a 0..255 scale
LUMA = np.array([0.299, 0.587, 0.114])


def _photos() -> list[np.ndarray]:
    """The colour photos bundled with scikit-image (no download needed), RGB uint8."""
    images = [
        skimage.data.astronaut(),
        skimage.data.coffee(),
        skimage.data.chelsea(),
        skimage.data.rocket(),
        skimage.data.hubble_deep_field(),
        skimage.data.immunohistochemistry(),
        skimage.data.stereo_motorcycle()[0],
    ]
    return [np.ascontiguousarray(img[..., :3], dtype=np.uint8) for img in images]


def build_mnistm(digits: np.ndarray, seed: int) -> np.ndarray:
    """Blend ``uint8 (N, 1, 28, 28)`` digits over random photo crops; ``uint8 (N, 3, 28, 28)``.

    The number of outputs is ``len(digits)``: pass a slice to build a small sample.
    """
    rng = np.random.default_rng(seed)
    photos = _photos()
    n = len(digits)
    which = rng.integers(len(photos), size=n)
    out = np.empty((n, 3, SIDE, SIDE), dtype=np.uint8)
    offsets = np.arange(SIDE)
    for p, photo in enumerate(photos):
        rows = np.flatnonzero(which == p)
        top = rng.integers(photo.shape[0] - SIDE + 1, size=len(rows))
        left = rng.integers(photo.shape[1] - SIDE + 1, size=len(rows))
        ii = (top[:, None] + offsets)[:, :, None]
        jj = (left[:, None] + offsets)[:, None, :]
        patches = photo[ii, jj].transpose(0, 3, 1, 2).astype(np.int16)
        out[rows] = np.abs(patches - digits[rows].astype(np.int16)).astype(np.uint8)
    return out


@cache
def _font(name: str, size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(str(Path(matplotlib.get_data_path()) / "fonts" / "ttf" / name), size)


def _glyph_mask(
    digit: int, font: ImageFont.FreeTypeFont, dx: int, dy: int, angle: float, blur: float
) -> np.ndarray:
    """Coverage mask in [0, 1] of one rendered digit, ``float32 (28, 28)``."""
    big = SIDE * RENDER_SCALE
    canvas = Image.new("L", (big, big), 0)
    text = str(digit)
    left, top, right, bottom = font.getbbox(text)
    x = (big - (right - left)) / 2 - left + dx * RENDER_SCALE
    y = (big - (bottom - top)) / 2 - top + dy * RENDER_SCALE
    ImageDraw.Draw(canvas).text((x, y), text, fill=255, font=font)
    canvas = canvas.rotate(angle, resample=Image.Resampling.BILINEAR)
    small = canvas.resize((SIDE, SIDE), Image.Resampling.BOX)
    if blur > 0:
        small = small.filter(ImageFilter.GaussianBlur(blur))
    return np.asarray(small, dtype=np.float32) / 255.0


def _contrasting_colours(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Foreground and background RGB colours, ``float (n, 3)``, luma apart by MIN_CONTRAST."""
    fg = rng.uniform(0, 255, size=(n, 3))
    bg = rng.uniform(0, 255, size=(n, 3))
    bad = np.abs((fg - bg) @ LUMA) < MIN_CONTRAST
    while bad.any():
        fg[bad] = rng.uniform(0, 255, size=(bad.sum(), 3))
        bg[bad] = rng.uniform(0, 255, size=(bad.sum(), 3))
        bad = np.abs((fg - bg) @ LUMA) < MIN_CONTRAST
    return fg, bg


def build_synthdigits(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Render ``count`` digits with balanced labels: ``uint8 (N, 3, 28, 28)``, ``int64 (N,)``."""
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(count) % 10).astype(np.int64)
    fonts = rng.integers(len(SYNTH_FONTS), size=count)
    sizes = rng.choice(np.array(FONT_SIZES), size=count)
    jitter = rng.integers(-MAX_JITTER, MAX_JITTER + 1, size=(count, 2))
    angles = rng.uniform(-MAX_ROTATION, MAX_ROTATION, size=count)
    blurs = rng.uniform(0, MAX_BLUR, size=count)
    fg, bg = _contrasting_colours(count, rng)
    masks = np.stack(
        [
            _glyph_mask(
                int(labels[i]),
                _font(SYNTH_FONTS[fonts[i]], int(sizes[i])),
                int(jitter[i, 0]),
                int(jitter[i, 1]),
                float(angles[i]),
                float(blurs[i]),
            )
            for i in range(count)
        ]
    )[:, None]
    images = bg[:, :, None, None] * (1 - masks) + fg[:, :, None, None] * masks
    return np.round(images).astype(np.uint8), labels


def _build(name: str, split: str, root: Path) -> tuple[np.ndarray, np.ndarray]:
    seed = SEEDS[(name, split)]
    if name == "mnistm":
        digits, labels = load_mnist(split, root)
        return build_mnistm(digits, seed), labels.copy()
    return build_synthdigits(SYNTH_COUNTS[split], seed)


def _files(name: str, split: str, root: Path) -> tuple[Path, Path]:
    folder = constructed_dir(root, name, RECIPE_VERSION)
    return folder / f"{split}_x.npy", folder / f"{split}_y.npy"


def _save_atomic(path: Path, array: np.ndarray) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.stem, suffix=".tmp")
    with os.fdopen(fd, "wb") as f:
        np.save(f, array)
    os.replace(tmp, path)


def ensure_constructed(name: str, root: Path) -> None:
    """Build and cache both splits of constructed domain ``name`` unless already cached."""
    for split in ("train", "test"):
        x_path, y_path = _files(name, split, root)
        if x_path.is_file() and y_path.is_file():
            print(f"{name} {split}: cached in {x_path.parent}", flush=True)
            continue
        start = time.perf_counter()
        x, y = _build(name, split, root)
        x_path.parent.mkdir(parents=True, exist_ok=True)
        _save_atomic(y_path, y)
        _save_atomic(x_path, x)
        took = time.perf_counter() - start
        print(f"{name} {split}: built {len(y)} images in {took:.1f} s", flush=True)


def load_constructed(name: str, split: str, root: Path) -> tuple[np.ndarray, np.ndarray]:
    """Memory-mapped cached arrays of a constructed domain (``uint8`` images, ``int64`` labels)."""
    x_path, y_path = _files(name, split, root)
    for path in (x_path, y_path):
        if not path.is_file():
            raise not_found(f"constructed domain {name!r} ({split})", root, path)
    return np.load(x_path, mmap_mode="r"), np.load(y_path, mmap_mode="r")

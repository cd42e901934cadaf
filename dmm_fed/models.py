"""Models: a small BatchNorm CNN (default), a ResNet-18 for small images (the paper's backbone),
and an image+text model for the emoji domains.

The image models take ``(N, 3, 28, 28)`` inputs normalised to ``dmm_fed.data.DATA_RANGE``; the
image+text model takes packed rows (see :mod:`dmm_fed.inputs`). All return logits.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torchvision.models import resnet18

from dmm_fed.data.text import TEXT_DIM
from dmm_fed.inputs import InputLayout

MODELS: tuple[str, ...] = ("cnn", "resnet18", "cnn-text")
ModelFactory = Callable[[], nn.Module]
TEXT_MODELS = frozenset({"cnn-text"})


class SmallCNN(nn.Module):
    """conv32-BN-ReLU-pool, conv64-BN-ReLU-pool, fc128-BN-ReLU, fc: trains in seconds on a CPU."""

    def __init__(self, num_classes: int = 10, in_channels: int = 3) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 32, 3, padding=1, bias=False),
            nn.BatchNorm2d(32),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1, bias=False),
            nn.BatchNorm2d(64),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
        )
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Linear(64 * 7 * 7, 128, bias=False),
            nn.BatchNorm1d(128),
            nn.ReLU(inplace=True),
            nn.Linear(128, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class ImageTextCNN(nn.Module):
    """Image tower (``SmallCNN`` up to its fc128-BN-ReLU), text tower over frozen sentence
    embeddings (fc128-BN1d-ReLU, fc64-BN1d-ReLU), and a linear classifier on both, concatenated.

    Every tower has BatchNorm, so DMM can synthesise both modalities from uploaded statistics.
    """

    def __init__(self, num_classes: int = 10, text_dim: int = TEXT_DIM) -> None:
        super().__init__()
        self.input_layout = InputLayout(text_dim=text_dim)
        image = SmallCNN(num_classes)
        self.image = nn.Sequential(image.features, *list(image.head)[:-1])
        self.text = nn.Sequential(
            nn.Linear(text_dim, 128, bias=False),
            nn.BatchNorm1d(128),
            nn.ReLU(inplace=True),
            nn.Linear(128, 64, bias=False),
            nn.BatchNorm1d(64),
            nn.ReLU(inplace=True),
        )
        self.classifier = nn.Linear(128 + 64, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        images, text = self.input_layout.split(x)
        return self.classifier(torch.cat([self.image(images), self.text(text)], dim=1))


def small_resnet18(num_classes: int = 10) -> nn.Module:
    """ResNet-18 (He et al. 2016) with a 3x3 stride-1 stem and no max-pool, for 28x28 inputs."""
    model = resnet18(weights=None, num_classes=num_classes)
    model.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
    model.maxpool = nn.Identity()
    return model


def build_model(name: str, num_classes: int = 10, seed: int | None = None) -> nn.Module:
    """Build a model by name; ``seed`` fixes the initial weights (same seed, same model)."""
    if name not in MODELS:
        raise ValueError(f"Unknown model {name!r}; valid values: {', '.join(MODELS)}")
    factory = {"cnn": SmallCNN, "resnet18": small_resnet18, "cnn-text": ImageTextCNN}[name]
    if seed is None:
        return factory(num_classes)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return factory(num_classes)

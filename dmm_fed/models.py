"""Models: a small BatchNorm CNN (default) and a ResNet-18 for small images (the paper's backbone).

Both take ``(N, 3, 28, 28)`` inputs normalised to ``dmm_fed.data.DATA_RANGE`` and return logits.
"""

from __future__ import annotations

import torch
from torch import nn
from torchvision.models import resnet18

MODELS: tuple[str, ...] = ("cnn", "resnet18")


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
    factory = SmallCNN if name == "cnn" else small_resnet18
    if seed is None:
        return factory(num_classes)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return factory(num_classes)

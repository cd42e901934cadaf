"""Local training and evaluation loops on in-memory tensors."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class OptimizerConfig:
    """What ``local training`` needs to build its optimizer."""

    name: str = "sgd"
    learning_rate: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4


def make_optimizer(params, config: OptimizerConfig) -> torch.optim.Optimizer:
    """SGD with momentum or Adam."""
    if config.name == "sgd":
        return torch.optim.SGD(
            params, lr=config.learning_rate, momentum=config.momentum,
            weight_decay=config.weight_decay,
        )
    if config.name == "adam":
        return torch.optim.Adam(params, lr=config.learning_rate, weight_decay=config.weight_decay)
    raise ValueError(f"Unknown optimizer {config.name!r}; valid values: sgd, adam")


def train(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    epochs: int,
    batch_size: int,
    optimizer: OptimizerConfig,
    seed: int,
) -> float:
    """Train with cross-entropy for ``epochs`` passes; return the mean loss of the last epoch.

    Batches of one example are skipped (BatchNorm cannot normalise them in train mode).
    """
    if len(x) == 0:
        raise ValueError("cannot train on an empty partition")
    generator = torch.Generator().manual_seed(seed)
    opt = make_optimizer(model.parameters(), optimizer)
    model.train()
    last = float("nan")
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=generator)
        total, count = 0.0, 0
        for start in range(0, len(x), batch_size):
            batch = order[start : start + batch_size]
            if len(batch) < 2:
                continue
            loss = F.cross_entropy(model(x[batch]), y[batch])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.item() * len(batch)
            count += len(batch)
        last = total / max(count, 1)
    return last


@torch.no_grad()
def predict_logits(model: nn.Module, x: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    """Logits of ``model`` in eval mode, batched."""
    model.eval()
    return torch.cat([model(x[i : i + batch_size]) for i in range(0, len(x), batch_size)])


def evaluate(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 512
) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of ``model`` in eval mode (NaN on an empty set)."""
    if len(x) == 0:
        return float("nan"), float("nan")
    logits = predict_logits(model, x, batch_size)
    loss = F.cross_entropy(logits, y).item()
    return loss, (logits.argmax(1) == y).float().mean().item()

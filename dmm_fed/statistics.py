"""Normalization statistics: the targets that pseudo-data must match.

For every BatchNorm layer with running statistics the targets are its ``running_mean`` and
``running_var`` (they travel inside the state dict). For norm layers without running statistics
(GroupNorm, LayerNorm, InstanceNorm, BatchNorm with ``track_running_stats=False``) a client
measures the per-channel mean and variance of that layer's *input* over its whole training set
and uploads only those aggregates -- never features of single examples.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

STATISTICS_KEY = "statistics"  # the ConfigRecord of a train reply that carries these aggregates
ACTIVATION_PREFIX = "act."  # its keys for activation statistics: act.<layer>.mean / .var

NORM_TYPES = (_BatchNorm, nn.GroupNorm, nn.LayerNorm, nn.modules.instancenorm._InstanceNorm)


@dataclass(frozen=True)
class NormTarget:
    """Per-channel mean and (biased) variance of a norm layer's input."""

    mean: torch.Tensor
    var: torch.Tensor


def has_running_stats(module: nn.Module) -> bool:
    """A BatchNorm layer that tracks running statistics."""
    return isinstance(module, _BatchNorm) and module.track_running_stats


def norm_layers(model: nn.Module) -> dict[str, nn.Module]:
    """Every normalization layer of ``model`` by name, selected by module type."""
    return {name: m for name, m in model.named_modules() if isinstance(m, NORM_TYPES)}


def channel_stats(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel (dim 1) mean and biased variance over every other dimension."""
    dims = [d for d in range(x.dim()) if d != 1]
    return x.mean(dims), x.var(dims, unbiased=False)


@contextmanager
def capture_norm_inputs(
    layers: Mapping[str, nn.Module],
) -> Iterator[dict[str, tuple[torch.Tensor, torch.Tensor]]]:
    """While active, each forward pass stores ``channel_stats`` of every layer's input."""
    captured: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    handles = []
    for name, module in layers.items():
        def hook(_m: nn.Module, inputs: tuple[torch.Tensor, ...], name: str = name) -> None:
            captured[name] = channel_stats(inputs[0])
        handles.append(module.register_forward_pre_hook(hook))
    try:
        yield captured
    finally:
        for handle in handles:
            handle.remove()


@torch.no_grad()
def activation_statistics(
    model: nn.Module, x: torch.Tensor, batch_size: int = 512
) -> dict[str, NormTarget]:
    """Input mean/variance of each norm layer *without* running stats, over the whole of ``x``.

    Batches are combined exactly (the variance of the union, not the mean of batch variances).
    """
    layers = {n: m for n, m in norm_layers(model).items() if not has_running_stats(m)}
    if not layers or len(x) == 0:
        return {}
    model.eval()
    sums: dict[str, list[torch.Tensor]] = {}
    with capture_norm_inputs(layers) as captured:
        for start in range(0, len(x), batch_size):
            batch = x[start : start + batch_size]
            model(batch)
            for name, (mean, var) in captured.items():
                n = len(batch)
                first, second = mean * n, (var + mean**2) * n
                if name in sums:
                    sums[name][0] += first
                    sums[name][1] += second
                else:
                    sums[name] = [first, second]
    total = len(x)
    return {
        name: NormTarget(s1 / total, s2 / total - (s1 / total) ** 2)
        for name, (s1, s2) in sums.items()
    }


def running_stat_targets(model: nn.Module) -> dict[str, NormTarget]:
    """The stored running mean/var of every BatchNorm layer that tracks them."""
    return {
        name: NormTarget(m.running_mean.detach().clone(), m.running_var.detach().clone())
        for name, m in norm_layers(model).items()
        if has_running_stats(m)
    }


def mixture_moments(
    means: Sequence[torch.Tensor], variances: Sequence[torch.Tensor], weights: Sequence[float]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and variance of a mixture of distributions (law of total variance).

    ``weights`` must sum to 1: ``mu = sum_i w_i mu_i``, ``var = sum_i w_i (var_i + (mu_i - mu)^2)``.
    """
    mean = sum(w * m for w, m in zip(weights, means, strict=True))
    var = sum(w * (v + (m - mean) ** 2) for w, m, v in zip(weights, means, variances, strict=True))
    return mean, var


def merge_targets(
    targets: Sequence[Mapping[str, NormTarget]], weights: Sequence[float]
) -> dict[str, NormTarget]:
    """Statistics of the mixture of several clients' inputs (weights: their example counts)."""
    total = float(sum(weights))
    shares = [w / total for w in weights]
    names = set(targets[0]).intersection(*targets[1:])
    return {
        name: NormTarget(*mixture_moments([t[name].mean for t in targets],
                                          [t[name].var for t in targets], shares))
        for name in sorted(names)
    }


def flatten_targets(targets: Mapping[str, NormTarget]) -> dict[str, list[float]]:
    """Targets as plain lists under ``<layer>.mean`` / ``<layer>.var`` (for a Flower record)."""
    flat = {}
    for name, t in targets.items():
        flat[f"{name}.mean"] = t.mean.tolist()
        flat[f"{name}.var"] = t.var.tolist()
    return flat


def unflatten_targets(flat: Mapping[str, Sequence[float]]) -> dict[str, NormTarget]:
    """Inverse of :func:`flatten_targets`."""
    names = {k.rsplit(".", 1)[0] for k in flat if k.endswith((".mean", ".var"))}
    return {
        n: NormTarget(torch.tensor(flat[f"{n}.mean"]), torch.tensor(flat[f"{n}.var"]))
        for n in sorted(names)
    }

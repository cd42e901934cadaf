"""Checks a server runs on every client update before merging it.

:func:`check_update` refuses an update whose state dict does not match the global one (missing or
extra keys, other shapes or dtypes), holds NaN/Inf, or carries malformed statistics.
:func:`norm_outliers` flags poisoned updates: task vectors whose norm is far above the round's
median (a simple, robust screen in the spirit of norm-bounding defences, Sun et al. 2019, "Can you
really backdoor federated learning?").
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from dmm_fed.dmm import ClientUpdate
from dmm_fed.layout import StateDict


class InvalidUpdate(ValueError):
    """An update the server must not merge; ``reason`` is a short category for metrics."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


def _finite(t: torch.Tensor) -> bool:
    return not t.is_floating_point() or bool(torch.isfinite(t).all())


def _dtype_mismatch(key: str, value: torch.Tensor, ref: torch.Tensor) -> bool:
    """Floating tensors must keep the global dtype; integer tensors must stay integers, except
    ``num_batches_tracked``, which Flower's FedAvg averages into a float64 global."""
    if value.is_floating_point():
        return value.dtype != ref.dtype
    return ref.is_floating_point() and not key.endswith("num_batches_tracked")


def check_update(update: ClientUpdate, reference: StateDict, num_classes: int) -> None:
    """Raise :class:`InvalidUpdate` unless ``update`` can be merged into ``reference``'s model."""
    missing, extra = sorted(set(reference) - set(update.state)), sorted(
        set(update.state) - set(reference))
    if missing or extra:
        raise InvalidUpdate("keys", f"missing {missing[:3]}, unexpected {extra[:3]}")
    for key, ref in reference.items():
        value = update.state[key]
        if value.shape != ref.shape:
            raise InvalidUpdate("shape", f"{key} is {tuple(value.shape)}, "
                                         f"expected {tuple(ref.shape)}")
        if _dtype_mismatch(key, value, ref):
            raise InvalidUpdate("dtype", f"{key} is {value.dtype}, expected {ref.dtype}")
        if not _finite(value):
            raise InvalidUpdate("non-finite", f"{key} holds NaN or Inf")
        if key.endswith("running_var") and bool((value < 0).any()):
            raise InvalidUpdate("statistics", f"{key} has negative variances")
    counts = update.label_counts
    if counts is not None and (len(counts) != num_classes or min(counts) < 0 or sum(counts) <= 0):
        raise InvalidUpdate("statistics", f"label-counts must be {num_classes} non-negative "
                                          f"counts, not all zero; got {list(counts)[:12]}")
    for layer, target in update.activation_stats.items():
        if target.mean.shape != target.var.shape or target.mean.dim() != 1:
            raise InvalidUpdate("statistics", f"activation statistics of {layer} are malformed")
        if not (_finite(target.mean) and _finite(target.var)) or bool((target.var < 0).any()):
            raise InvalidUpdate("statistics", f"activation statistics of {layer} are not finite "
                                              "non-negative variances")


def norm_outliers(
    base: StateDict, updates: Sequence[ClientUpdate], keys: Sequence[str], factor: float
) -> list[int]:
    """Indices of updates whose task-vector norm exceeds ``factor`` times the median norm.

    Needs three or more updates (with two, neither is an outlier of the other); ``factor <= 0``
    turns the screen off.
    """
    if factor <= 0 or len(updates) < 3:
        return []
    norms = torch.stack([
        torch.sqrt(sum(((u.state[k].double() - base[k].double()) ** 2).sum() for k in keys))
        for u in updates
    ])
    limit = factor * norms.median()
    return [i for i, n in enumerate(norms.tolist()) if n > limit]

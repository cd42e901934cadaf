"""Gaussian noise on the normalization statistics a client uploads (``statistics-noise``).

The server synthesises pseudo-data from these statistics, so they are the part of an upload that
is most directly "about the data". Adding ``N(0, sigma^2)`` to every BatchNorm running mean and
variance (in the state dict) and to every uploaded activation mean/variance blurs what a curious
server can reconstruct of a site's feature distribution, at a cost in synthesis quality.

It is *not* differential privacy: there is no clipping of the statistics' sensitivity and no
privacy accounting, the weights themselves are sent without noise (and also reflect the data),
and the label counts are sent exactly (use ``share-label-counts=false`` to withhold them).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from dmm_fed.layout import StateDict
from dmm_fed.statistics import NormTarget

MIN_VARIANCE = 1e-5
"""Noisy variances are clamped to this, so they stay valid variances."""


def _noisy(t: torch.Tensor, sigma: float, g: torch.Generator, variance: bool) -> torch.Tensor:
    out = t + sigma * torch.randn(t.shape, generator=g, dtype=t.dtype)
    return out.clamp_min(MIN_VARIANCE) if variance else out


def noisy_bn_statistics(state: StateDict, sigma: float, seed: int) -> StateDict:
    """A copy of ``state`` with noise on every ``running_mean`` / ``running_var``."""
    g = torch.Generator().manual_seed(seed)
    return {
        k: _noisy(v, sigma, g, k.endswith("running_var"))
        if k.endswith(("running_mean", "running_var")) else v
        for k, v in state.items()
    }


def noisy_targets(
    targets: Mapping[str, NormTarget], sigma: float, seed: int
) -> dict[str, NormTarget]:
    """Noise on measured activation means and variances."""
    g = torch.Generator().manual_seed(seed)
    return {name: NormTarget(_noisy(t.mean, sigma, g, False), _noisy(t.var, sigma, g, True))
            for name, t in targets.items()}

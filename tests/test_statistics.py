"""Normalization statistics that clients upload and the server merges."""

import torch
from torch import nn

from dmm_fed.statistics import (
    NormTarget,
    activation_statistics,
    flatten_targets,
    merge_targets,
    norm_layers,
    unflatten_targets,
)


def _groupnorm_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.GroupNorm(2, 4), nn.ReLU(), nn.Flatten(),
                         nn.Linear(4 * 6 * 6, 5), nn.LayerNorm(5), nn.BatchNorm1d(5))


def test_activation_statistics_cover_norm_layers_without_running_stats_exactly():
    model = _groupnorm_net()
    x = torch.randn(50, 3, 8, 8)
    stats = activation_statistics(model, x, batch_size=7)  # batches combined exactly
    assert set(stats) == {"1", "5"}  # GroupNorm and LayerNorm, not the tracked BatchNorm1d
    conv_out = model[0](x)
    torch.testing.assert_close(stats["1"].mean, conv_out.mean((0, 2, 3)), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(stats["1"].var, conv_out.var((0, 2, 3), unbiased=False),
                               atol=1e-5, rtol=1e-4)
    assert set(norm_layers(model)) == {"1", "5", "6"}


def test_merge_targets_is_the_mixture():
    a = {"l": NormTarget(torch.tensor([0.0]), torch.tensor([1.0]))}
    b = {"l": NormTarget(torch.tensor([2.0]), torch.tensor([1.0]))}
    merged = merge_targets([a, b], [1.0, 1.0])["l"]
    assert merged.mean.item() == 1.0 and merged.var.item() == 2.0
    merged = merge_targets([a, b], [3.0, 1.0])["l"]  # mean 0.5; var 1 + 0.75*0.25 + 0.25*2.25
    assert merged.mean.item() == 0.5 and abs(merged.var.item() - 1.75) < 1e-6


def test_flatten_round_trip():
    targets = {"features.1": NormTarget(torch.tensor([1.0, 2.0]), torch.tensor([3.0, 4.0]))}
    flat = flatten_targets(targets)
    assert flat == {"features.1.mean": [1.0, 2.0], "features.1.var": [3.0, 4.0]}
    back = unflatten_targets(flat)
    torch.testing.assert_close(back["features.1"].var, targets["features.1"].var)

"""DeepInversion-style synthesis: the BN-statistics loss, its priors, and that it is lowered."""

import torch
from torch import nn

from dmm_fed.models import build_model
from dmm_fed.statistics import capture_norm_inputs, norm_layers, running_stat_targets
from dmm_fed.synthesis import (
    SynthesisConfig,
    bn_statistics_loss,
    sample_labels,
    synthesize,
    total_variation,
)


def _set_running_stats_to_batch(model: nn.Module, x: torch.Tensor) -> None:
    """Make every BN layer's running stats equal the (biased) statistics of its input on x."""

    def hook(module, inputs):
        dims = [d for d in range(inputs[0].dim()) if d != 1]
        module.running_mean.copy_(inputs[0].mean(dims))
        module.running_var.copy_(inputs[0].var(dims, unbiased=False))

    handles = [m.register_forward_pre_hook(hook) for m in norm_layers(model).values()]
    model.eval()
    with torch.no_grad():
        model(x)
    for h in handles:
        h.remove()


def test_bn_loss_is_zero_on_inputs_matching_the_stored_statistics():
    model = build_model("cnn", seed=0)
    x = torch.randn(16, 3, 28, 28, generator=torch.Generator().manual_seed(0))
    _set_running_stats_to_batch(model, x)
    targets = running_stat_targets(model)
    layers = norm_layers(model)
    assert list(targets) == list(layers)  # all three BN layers, in model order
    with capture_norm_inputs(layers) as captured, torch.no_grad():
        model(x)
        assert bn_statistics_loss(captured, targets).item() < 1e-4
        model(x * 2 + 1)  # other inputs, other statistics
        assert bn_statistics_loss(captured, targets).item() > 1.0


def test_bn_loss_exact_value_and_first_layer_weight():
    targets = running_stat_targets(nn.Sequential(nn.BatchNorm1d(2), nn.BatchNorm1d(2)))
    # running stats of fresh layers: mean 0, var 1
    captured = {
        "0": (torch.tensor([3.0, 4.0]), torch.tensor([1.0, 1.0])),  # ||mean||=5, ||var-1||=0
        "1": (torch.tensor([0.0, 0.0]), torch.tensor([2.0, 1.0])),  # ||mean||=0, ||var-1||=1
    }
    assert bn_statistics_loss(captured, targets).item() == 6.0
    assert bn_statistics_loss(captured, targets, first_layer_weight=10.0).item() == 51.0


def test_total_variation():
    assert total_variation(torch.ones(2, 3, 5, 5)).item() == 0.0
    x = torch.zeros(1, 1, 2, 2)
    x[..., 0, 0] = 1.0
    # vertical diffs: (1-0)^2, 0 -> mean 0.5; horizontal likewise -> 0.5
    assert total_variation(x).item() == 1.0


def test_sample_labels_cover_the_support_evenly():
    g = torch.Generator().manual_seed(0)
    labels = sample_labels([0, 50, 0, 5, 0.1], 30, g)
    assert torch.bincount(labels, minlength=5).tolist() == [0, 15, 0, 15, 0]


def test_synthesis_lowers_the_bn_loss_and_respects_the_data_range():
    model = build_model("cnn", seed=0)
    x = torch.rand(64, 3, 28, 28, generator=torch.Generator().manual_seed(1)) * 2 - 1
    _set_running_stats_to_batch(model, x)
    labels = torch.arange(10).repeat(2)
    config = SynthesisConfig(num_samples=20, steps=60, lr=0.1, log_every=0)
    result = synthesize(model, running_stat_targets(model), labels, config, seed=0)
    assert result.x.shape == (20, 3, 28, 28)
    assert result.x.min() >= -1.0 and result.x.max() <= 1.0
    assert result.bn_loss < 0.5 * result.bn_loss_start
    assert all(p.requires_grad for p in model.parameters())  # the teacher is handed back intact

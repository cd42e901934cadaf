"""The DMM server step end to end on small models: clustering, skipping, class support."""

import math
from dataclasses import replace

import torch

from dmm_fed.distillation import DistillConfig, kd_loss
from dmm_fed.dmm import ClientUpdate, DMMConfig, dmm_merge
from dmm_fed.models import build_model
from dmm_fed.synthesis import SynthesisConfig

FAST = DMMConfig(
    synthesis=SynthesisConfig(num_samples=16, steps=5, log_every=0),
    distill=DistillConfig(steps=5, batch_size=16, log_every=0),
)


def _planted_updates(groups: int, per_group: int) -> tuple[dict, list[ClientUpdate]]:
    """Clients whose task vectors are a group direction plus small noise."""
    base = build_model("cnn", seed=0).state_dict()
    g = torch.Generator().manual_seed(0)
    directions = [{k: torch.randn(v.shape, generator=g) * 0.01 for k, v in base.items()
                   if v.is_floating_point()} for _ in range(groups)]
    updates = []
    for k in range(groups):
        for _ in range(per_group):
            state = {key: (v + directions[k][key]
                           + 0.002 * torch.randn(v.shape, generator=g)).abs()
                     if key.endswith("running_var")
                     else v + directions[k][key] + 0.002 * torch.randn(v.shape, generator=g)
                     if v.is_floating_point() else v.clone()
                     for key, v in base.items()}
            counts = [0] * 10
            counts[k] = 100
            updates.append(ClientUpdate(state, 100 + k, counts, name=f"g{k}"))
    return base, updates


def test_planted_groups_are_recovered_and_distilled():
    base, updates = _planted_updates(3, 2)
    out = dmm_merge(base, updates, lambda: build_model("cnn"), FAST)
    assert out.report.clusters == [0, 0, 1, 1, 2, 2]
    assert out.report.student_cluster == 2  # the largest by examples (102 per client)
    assert len(out.teachers) == 3 and out.report.teachers == [[0, 1], [2, 3], [4, 5]]
    # each teacher's class support is its members' label counts: one class each
    assert [s.index(max(s)) for s in out.report.class_support] == [0, 1, 2]
    assert set(out.report.seconds) == {"similarity", "merge", "synthesis", "distillation"}
    assert out.state.keys() == base.keys()
    build_model("cnn").load_state_dict(out.state)


def test_one_cluster_means_plain_merge():
    base, updates = _planted_updates(1, 3)
    out = dmm_merge(base, updates, lambda: build_model("cnn"), FAST)
    assert out.report.clusters == [0, 0, 0]
    assert out.report.skipped
    assert "synthesis" not in out.report.seconds


def test_teachers_models_mode_and_inferred_support():
    base, updates = _planted_updates(2, 2)
    updates = [ClientUpdate(u.state, u.num_examples, None, name=u.name) for u in updates]
    config = DMMConfig(**{**FAST.__dict__, "teachers": "models", "student_init": "all"})
    out = dmm_merge(base, updates, lambda: build_model("cnn"), config)
    # the student's own cluster merge plus each model outside it
    assert out.report.teachers == [[2, 3], [0], [1]]
    assert all(sum(s) > 0 for s in out.report.class_support)


def test_kd_loss_zero_iff_distributions_match():
    logits = torch.randn(8, 10)
    probs = torch.softmax(logits / 4.0, dim=1)
    assert kd_loss(logits, probs, 4.0).abs().item() < 1e-6
    assert kd_loss(torch.zeros(8, 10), probs, 4.0).item() > 1e-3


class _GroupNormNet(torch.nn.Module):
    """BatchNorm layers plus a GroupNorm without running statistics."""

    def __init__(self) -> None:
        super().__init__()
        self.body = torch.nn.Sequential(
            torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
            torch.nn.Conv2d(8, 8, 3, padding=1), torch.nn.GroupNorm(2, 8), torch.nn.ReLU(),
            torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(8, 10),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def test_uploaded_activation_statistics_are_merged_and_matched():
    from dmm_fed.statistics import activation_statistics

    torch.manual_seed(0)
    base = _GroupNormNet().state_dict()
    updates = []
    for k in range(2):
        model = _GroupNormNet()
        model.load_state_dict(base)
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p) * 0.5)
        x = torch.randn(64, 3, 28, 28) * (1 + k)
        model.train()
        with torch.no_grad():
            model(x)  # BN running stats move toward this client's data
        stats = activation_statistics(model, x)
        assert set(stats) == {"body.4"}
        updates.append(ClientUpdate(model.state_dict(), 64, [10] * 10, stats, name=str(k)))
    config = DMMConfig(**{**FAST.__dict__, "num_clusters": 2,
                          "synthesis": SynthesisConfig(num_samples=16, steps=30, log_every=0)})
    out = dmm_merge(base, updates, _GroupNormNet, config)
    assert len(out.teachers) == 2
    for teacher, update in zip(out.teachers, updates, strict=True):
        # a singleton cluster keeps its client's uploaded statistics as targets
        torch.testing.assert_close(teacher.activation_stats["body.4"].var,
                                   update.activation_stats["body.4"].var)
    assert all(e < s for s, e in zip(out.report.synthesis_bn_loss_start,
                                     out.report.synthesis_bn_loss, strict=True))


def test_noise_ablation_distils_on_clamped_noise_and_keeps_the_pseudo_data():
    base, updates = _planted_updates(2, 2)
    synthesized = dmm_merge(base, updates, lambda: build_model("cnn"), FAST)
    noise = dmm_merge(base, updates, lambda: build_model("cnn"),
                      replace(FAST, pseudo_inputs="noise"))
    assert [x.shape for x in noise.pseudo_data] == [(16, 3, 28, 28)] * 2
    assert [x.shape for x in synthesized.pseudo_data] == [(16, 3, 28, 28)] * 2
    for x in noise.pseudo_data:
        assert x.min() >= -1 and x.max() <= 1
        assert 0.5 < x.std() < 1  # Gaussian noise, clamped to the data range
    # no synthesis ran: no BN loss was measured, and the inputs differ from the synthesised ones
    assert all(math.isnan(v) for v in noise.report.synthesis_bn_loss)
    assert not torch.equal(noise.pseudo_data[0], synthesized.pseudo_data[0])
    assert noise.state.keys() == base.keys()

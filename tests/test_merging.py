"""Exact checks of the merging math on small hand-made tensors and a tiny BN model."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from dmm_fed.layout import StateLayout
from dmm_fed.merging import (
    MERGE_METHODS,
    dare,
    dare_merge,
    disjoint_mean,
    elect_signs,
    merge_bn_statistics,
    merge_states,
    task_arithmetic,
    task_vectors,
    ties_merge,
    trim_top_k,
    weighted_average,
)

F64 = torch.float64


def t(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=F64)


class TinyNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3, bias=False)
        self.bn2d = nn.BatchNorm2d(2)
        self.fc = nn.Linear(2, 3)
        self.bn1d = nn.BatchNorm1d(3)
        self.register_buffer("offset", torch.arange(3.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.bn2d(self.conv(x)).mean(dim=(2, 3))
        return self.bn1d(self.fc(x)) + self.offset


class LayoutNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.bn_like = nn.Conv2d(1, 1, 1)
        self.bn = nn.BatchNorm2d(1)
        self.stateless_bn = nn.BatchNorm1d(2, track_running_stats=False)
        self.norm = nn.LayerNorm(2)
        self.body = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))


def client_states(model: nn.Module, count: int, seed: int) -> list[dict[str, torch.Tensor]]:
    """States with perturbed parameters and BN statistics (other buffers left as they are)."""
    gen = torch.Generator().manual_seed(seed)
    base = model.state_dict()
    states = []
    for i in range(count):
        state = {}
        for key, value in base.items():
            if key.endswith("num_batches_tracked"):
                state[key] = torch.tensor(10 * (i + 1), dtype=value.dtype)
            elif key.endswith("running_var"):
                state[key] = value + torch.rand(value.shape, generator=gen)
            elif key == "offset":
                state[key] = value.clone()
            else:
                state[key] = value + 0.1 * torch.randn(value.shape, generator=gen)
        states.append(state)
    return states


# --- layout -----------------------------------------------------------------------------------


def test_layout_selects_bn_layers_by_type() -> None:
    layout = StateLayout.from_model(LayoutNet())
    assert layout.bn_layers == ("bn", "body.1")
    assert "bn_like.weight" in layout.params and "norm.weight" in layout.params
    assert layout.bn_keys("bn") == (
        "bn.running_mean",
        "bn.running_var",
        "bn.num_batches_tracked",
    )
    assert layout.other_buffers == ()
    tiny = StateLayout.from_model(TinyNet())
    assert tiny.bn_layers == ("bn2d", "bn1d")
    assert tiny.other_buffers == ("offset",)
    assert set(tiny.params) == {name for name, _ in TinyNet().named_parameters()}


# --- weighted average -------------------------------------------------------------------------


def test_weighted_average_exact() -> None:
    a = {"w": t(1.0, 2.0), "b": t(4.0)}
    b = {"w": t(5.0, -2.0), "b": t(0.0)}
    out = weighted_average([a, b], [1, 3], ["w", "b"])
    assert list(out) == ["w", "b"]
    assert torch.equal(out["w"], t(0.25 * 1 + 0.75 * 5, 0.25 * 2 + 0.75 * -2))  # (4, -1)
    assert torch.equal(out["b"], t(1.0))
    c = {"w": t(-3.0, 6.0), "b": t(8.0)}
    out3 = weighted_average([a, b, c], [2, 2, 4], ["w"])  # normalised to (0.25, 0.25, 0.5)
    assert torch.equal(out3["w"], t(0.25 + 1.25 - 1.5, 0.5 - 0.5 + 3.0))
    assert torch.equal(a["w"], t(1.0, 2.0))  # input untouched


def test_weighted_average_keeps_dtype() -> None:
    a = {"w": torch.tensor([1.0, 3.0], dtype=torch.float32)}
    b = {"w": torch.tensor([3.0, 5.0], dtype=torch.float32)}
    out = weighted_average([a, b], [1, 1], ["w"])
    assert out["w"].dtype == torch.float32
    assert torch.equal(out["w"], torch.tensor([2.0, 4.0]))


@pytest.mark.parametrize(
    ("states", "weights"),
    [([], []), ([{"w": t(1.0)}], [-1.0]), ([{"w": t(1.0)}] * 2, [0, 0]), ([{"w": t(1.0)}], [1, 2])],
)
def test_weighted_average_rejects_bad_weights(states: list, weights: list) -> None:
    with pytest.raises(ValueError):
        weighted_average(states, weights, ["w"])


# --- task arithmetic --------------------------------------------------------------------------


def test_task_vectors_and_task_arithmetic() -> None:
    base = {"w": t(1.0, 1.0, 1.0)}
    states = [{"w": t(3.0, 1.0, 0.0)}, {"w": t(2.0, -1.0, 1.0)}]
    taus = task_vectors(states, base, ["w"])
    assert torch.equal(taus[0]["w"], t(2.0, 0.0, -1.0))
    assert torch.equal(taus[1]["w"], t(1.0, -2.0, 0.0))
    out = task_arithmetic(base, states, ["w"], scale=0.5)
    # 1 + 0.5 * (2 + 1), 1 + 0.5 * (0 - 2), 1 + 0.5 * (-1 + 0)
    assert torch.equal(out["w"], t(2.5, 0.0, 0.5))
    with pytest.raises(ValueError):
        task_arithmetic(base, states, ["w"], scale=float("nan"))


# --- TIES -------------------------------------------------------------------------------------

# Five entries split over two keys: "a" = entries 0-1, "b" = entries 2-4.
TAUS = [
    {"a": t(4.0, -1.0), "b": t(0.5, 2.0, -3.0)},
    {"a": t(-2.0, 1.0), "b": t(0.25, -5.0, 1.0)},  # |1| ties at entries 1 and 4
    {"a": t(3.0, 0.5), "b": t(-0.5, 1.0, -2.0)},
]
KEYS = ["a", "b"]


def test_ties_trim_is_global_and_breaks_ties_by_position() -> None:
    trimmed = [trim_top_k(tau, KEYS, density=0.6) for tau in TAUS]  # k = 3 of 5
    assert torch.equal(trimmed[0]["a"], t(4.0, 0.0)) and torch.equal(
        trimmed[0]["b"], t(0.0, 2.0, -3.0)
    )
    # entry 1 and entry 4 tie at |1| for the third place: the earlier one (entry 1) is kept
    assert torch.equal(trimmed[1]["a"], t(-2.0, 1.0)) and torch.equal(
        trimmed[1]["b"], t(0.0, -5.0, 0.0)
    )
    assert torch.equal(trimmed[2]["a"], t(3.0, 0.0)) and torch.equal(
        trimmed[2]["b"], t(0.0, 1.0, -2.0)
    )


def test_ties_signs_disjoint_mean_and_merge() -> None:
    trimmed = [trim_top_k(tau, KEYS, density=0.6) for tau in TAUS]
    signs = elect_signs(trimmed, KEYS)
    # sums: 4-2+3=5, 0+1+0=1, 0 (all trimmed), 2-5+1=-2, -3+0-2=-5
    assert torch.equal(signs["a"], t(1.0, 1.0)) and torch.equal(signs["b"], t(0.0, -1.0, -1.0))
    merged = disjoint_mean(trimmed, signs, KEYS)
    # entry 0 conflicts (4, -2, 3): mean of 4 and 3; entry 3 conflicts (2, -5, 1): only -5 agrees;
    # entry 2 was trimmed away everywhere: 0
    assert torch.equal(merged["a"], t(3.5, 1.0))
    assert torch.equal(merged["b"], t(0.0, -5.0, -2.5))
    base = {"a": t(1.0, 1.0), "b": t(1.0, 1.0, 1.0)}
    states = [{k: base[k] + tau[k] for k in KEYS} for tau in TAUS]
    out = ties_merge(base, states, KEYS, density=0.6, scale=0.5)
    assert torch.equal(out["a"], t(1.0 + 0.5 * 3.5, 1.0 + 0.5 * 1.0))
    assert torch.equal(out["b"], t(1.0, 1.0 - 0.5 * 5.0, 1.0 - 0.5 * 2.5))


def test_ties_sign_tie_gives_zero() -> None:
    trimmed = [{"w": t(1.0)}, {"w": t(-1.0)}]
    signs = elect_signs(trimmed, ["w"])
    assert torch.equal(signs["w"], t(0.0))
    assert torch.equal(disjoint_mean(trimmed, signs, ["w"])["w"], t(0.0))


@pytest.mark.parametrize("density", [0.0, -0.1, 1.5])
def test_ties_rejects_bad_density(density: float) -> None:
    with pytest.raises(ValueError):
        ties_merge({"w": t(0.0)}, [{"w": t(1.0)}], ["w"], density=density, scale=1.0)


# --- DARE -------------------------------------------------------------------------------------


def test_dare_zero_drop_is_identity() -> None:
    tau = {"w": t(1.5, -2.0, 0.25)}
    out = dare(tau, ["w"], 0.0, torch.Generator().manual_seed(0))
    assert torch.equal(out["w"], tau["w"])


def test_dare_seeded_and_rescaled() -> None:
    tau = {"w": torch.linspace(-1.0, 1.0, 200, dtype=F64)}
    first = dare(tau, ["w"], 0.3, torch.Generator().manual_seed(7))["w"]
    again = dare(tau, ["w"], 0.3, torch.Generator().manual_seed(7))["w"]
    other = dare(tau, ["w"], 0.3, torch.Generator().manual_seed(8))["w"]
    assert torch.equal(first, again)
    assert not torch.equal(first, other)
    rescaled = tau["w"] / (1.0 - 0.3)
    assert bool(((first == 0) | (first == rescaled)).all())


def test_dare_preserves_expectation() -> None:
    tau = {"w": torch.full((20000,), 2.0, dtype=F64)}
    out = dare(tau, ["w"], 0.5, torch.Generator().manual_seed(0))["w"]
    assert set(out.unique().tolist()) == {0.0, 4.0}
    assert abs(out.mean().item() - 2.0) < 0.1  # std of the mean is 2 / sqrt(20000) ~ 0.014


@pytest.mark.parametrize("rate", [1.0, -0.1])
def test_dare_rejects_bad_rate(rate: float) -> None:
    with pytest.raises(ValueError):
        dare({"w": t(1.0)}, ["w"], rate, torch.Generator())


def test_dare_merge_reproducible() -> None:
    base = {"w": torch.zeros(50, dtype=F64)}
    states = [{"w": torch.full((50,), float(i + 1), dtype=F64)} for i in range(3)]
    runs = [dare_merge(base, states, ["w"], 0.5, 1.0, "linear", 1.0, seed) for seed in (3, 3, 4)]
    assert torch.equal(runs[0]["w"], runs[1]["w"])
    assert not torch.equal(runs[0]["w"], runs[2]["w"])
    # every entry is a sum of a subset of {2, 4, 6} (each tau rescaled by 1 / 0.5)
    assert set(runs[0]["w"].tolist()) <= {0.0, 2.0, 4.0, 6.0, 8.0, 10.0, 12.0}
    zero = dare_merge(base, states, ["w"], 0.0, 0.5, "ties", 1.0, 0)
    assert torch.equal(zero["w"], torch.full((50,), 0.5 * 2.0, dtype=F64))  # mean of 1, 2, 3


# --- BN statistics ----------------------------------------------------------------------------

BN_LAYOUT = StateLayout(params=(), bn_layers=("bn",), other_buffers=())


def bn_state(mean: float, var: float, count: int) -> dict[str, torch.Tensor]:
    return {
        "bn.running_mean": torch.full((2,), mean),
        "bn.running_var": torch.full((2,), var),
        "bn.num_batches_tracked": torch.tensor(count),
    }


def test_bn_mixture_and_average() -> None:
    a, b = bn_state(0.0, 1.0, 3), bn_state(2.0, 1.0, 5)
    mixture = merge_bn_statistics([a, b], [1, 1], BN_LAYOUT, "mixture")
    assert list(mixture) == ["bn.running_mean", "bn.running_var", "bn.num_batches_tracked"]
    assert torch.equal(mixture["bn.running_mean"], torch.full((2,), 1.0))
    assert torch.equal(mixture["bn.running_var"], torch.full((2,), 2.0))
    count = mixture["bn.num_batches_tracked"]
    assert count.dtype == torch.int64 and count.item() == 5
    average = merge_bn_statistics([a, b], [1, 1], BN_LAYOUT, "average")
    assert torch.equal(average["bn.running_var"], torch.full((2,), 1.0))
    # weights (1, 3): mean 1.5; var 0.25 * (1 + 1.5^2) + 0.75 * (1 + 0.5^2) = 1.75
    skewed = merge_bn_statistics([a, b], [1, 3], BN_LAYOUT, "mixture")
    assert torch.equal(skewed["bn.running_mean"], torch.full((2,), 1.5))
    assert torch.equal(skewed["bn.running_var"], torch.full((2,), 1.75))
    assert skewed["bn.running_var"].dtype == torch.float32
    with pytest.raises(ValueError):
        merge_bn_statistics([a, b], [1, 1], BN_LAYOUT, "median")  # type: ignore[arg-type]


# --- merge_states on a real model -------------------------------------------------------------

HPARAMS = {
    "fedavg": {},
    "task-arithmetic": {"scale": 0.5},
    "ties": {"density": 0.5, "scale": 1.0},
    "dare": {"drop_rate": 0.5, "scale": 0.5, "seed": 1},
}


@pytest.mark.parametrize("method", MERGE_METHODS)
def test_merge_states_loads_strictly(method: str) -> None:
    model = TinyNet()
    layout = StateLayout.from_model(model)
    base = model.state_dict()
    states = client_states(model, 3, seed=0)
    snapshot = [{k: v.clone() for k, v in s.items()} for s in states]
    merged = merge_states(base, states, [1, 2, 3], layout, method, **HPARAMS[method])
    assert list(merged) == list(base)
    for key, value in merged.items():
        assert value.dtype == base[key].dtype and value.shape == base[key].shape
    assert merged["bn2d.num_batches_tracked"].item() == 30
    TinyNet().load_state_dict(merged, strict=True)
    for before, after in zip(snapshot, states, strict=True):
        assert all(torch.equal(before[k], after[k]) for k in before)


def test_merge_states_dare_with_ties() -> None:
    model = TinyNet()
    layout = StateLayout.from_model(model)
    states = client_states(model, 2, seed=1)
    merged = merge_states(
        model.state_dict(), states, [1, 1], layout, "dare", combine="ties", density=0.5
    )
    TinyNet().load_state_dict(merged, strict=True)


def test_fedavg_of_identical_states_is_identity() -> None:
    model = TinyNet()
    layout = StateLayout.from_model(model)
    state = client_states(model, 1, seed=2)[0]
    merged = merge_states(model.state_dict(), [state] * 3, [2, 5, 3], layout, "fedavg")
    assert all(torch.equal(merged[k], state[k]) for k in state)


def test_merge_states_errors() -> None:
    model = TinyNet()
    layout = StateLayout.from_model(model)
    base = model.state_dict()
    with pytest.raises(ValueError, match="fedavg, task-arithmetic, ties, dare"):
        merge_states(base, [base], [1], layout, "median")
    with pytest.raises(ValueError, match="density"):
        merge_states(base, [base], [1], layout, "task-arithmetic", density=0.5)
    with pytest.raises(ValueError, match="bn mode"):
        merge_states(base, [base], [1], layout, "fedavg", bn_mode="max")
    with pytest.raises(ValueError):
        merge_states(base, [base], [1], layout, "ties", density=0.0)

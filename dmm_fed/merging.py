"""Data-free model merging: FedAvg, Task Arithmetic, TIES-Merging, DARE and BN-statistics merging.

Every function is pure: state dicts in, a new state dict out, inputs never mutated. Arithmetic is
done in float64 on the device of the reference state (``base``, or the first state where there is
no base) and cast back, so outputs keep the reference's dtypes, devices and key order. Functions
that take ``keys`` return exactly those keys, in that order; :func:`merge_states` returns a full
state dict in the key order of ``base``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

import torch

from dmm_fed.layout import StateDict, StateLayout
from dmm_fed.statistics import mixture_moments

MERGE_METHODS: tuple[str, ...] = ("fedavg", "task-arithmetic", "ties", "dare")
BN_MODES: tuple[str, ...] = ("mixture", "average")
COMBINES: tuple[str, ...] = ("linear", "ties")

# Hyper-parameters each method of merge_states accepts, with their defaults.
_HPARAMS: dict[str, dict[str, Any]] = {
    "fedavg": {},
    "task-arithmetic": {"scale": 1.0},
    "ties": {"density": 0.2, "scale": 1.0},
    "dare": {"drop_rate": 0.9, "scale": 1.0, "combine": "linear", "density": 0.2, "seed": 0},
}


def _f64(tensor: torch.Tensor, like: torch.Tensor | None = None) -> torch.Tensor:
    """``tensor`` in float64 on the device of ``like`` (default: its own)."""
    device = (tensor if like is None else like).device
    return tensor.to(device=device, dtype=torch.float64)


def _normalise(weights: Sequence[float], count: int) -> list[float]:
    if count == 0:
        raise ValueError("Need at least one state to merge")
    if len(weights) != count:
        raise ValueError(f"Got {len(weights)} weights for {count} states")
    values = [float(w) for w in weights]
    if any(not math.isfinite(w) or w < 0 for w in values):
        raise ValueError(f"Weights must be finite and >= 0, got {values}")
    total = sum(values)
    if total <= 0:
        raise ValueError("Weights must not all be zero")
    return [w / total for w in values]


def _check_states(states: Sequence[StateDict]) -> None:
    if len(states) == 0:
        raise ValueError("Need at least one state to merge")


def _check_scale(scale: float) -> None:
    if not math.isfinite(scale):
        raise ValueError(f"scale must be finite, got {scale}")


def _check_density(density: float) -> None:
    if not 0.0 < density <= 1.0:
        raise ValueError(f"density must be in (0, 1], got {density}")


def weighted_average(
    states: Sequence[StateDict], weights: Sequence[float], keys: Sequence[str]
) -> StateDict:
    """Weighted average of ``states`` on ``keys``; weights are normalised to sum to 1.

    With weights proportional to the clients' example counts this is FedAvg (McMahan et al. 2017,
    "Communication-Efficient Learning of Deep Networks from Decentralized Data").
    """
    normalised = _normalise(weights, len(states))
    out: StateDict = {}
    for key in keys:
        ref = states[0][key]
        total = sum(w * _f64(s[key], ref) for w, s in zip(normalised, states, strict=True))
        out[key] = total.to(ref.dtype)
    return out


def task_vectors(
    states: Sequence[StateDict], base: StateDict, keys: Sequence[str]
) -> list[StateDict]:
    """Task vectors ``tau_i = theta_i - theta_base`` on ``keys`` (Ilharco et al. 2023)."""
    return [
        {key: (_f64(s[key], base[key]) - _f64(base[key])).to(base[key].dtype) for key in keys}
        for s in states
    ]


def _apply(
    base: StateDict, task_vector: StateDict, keys: Sequence[str], scale: float
) -> StateDict:
    """``theta_base + scale * task_vector`` on ``keys``."""
    return {
        key: (_f64(base[key]) + scale * _f64(task_vector[key], base[key])).to(
            base[key].dtype
        )
        for key in keys
    }


def _sum(vectors: Sequence[StateDict], keys: Sequence[str]) -> StateDict:
    return {key: sum(_f64(v[key], vectors[0][key]) for v in vectors) for key in keys}


def task_arithmetic(
    base: StateDict, states: Sequence[StateDict], keys: Sequence[str], scale: float
) -> StateDict:
    """``theta_0 + scale * sum_i tau_i`` (Ilharco et al. 2023, "Editing Models with Task
    Arithmetic")."""
    _check_states(states)
    _check_scale(scale)
    return _apply(base, _sum(task_vectors(states, base, keys), keys), keys, scale)


def _flatten(vector: StateDict, keys: Sequence[str]) -> torch.Tensor:
    ref = vector[keys[0]]
    return torch.cat([_f64(vector[key], ref).flatten() for key in keys])


def _unflatten(flat: torch.Tensor, like: StateDict, keys: Sequence[str]) -> StateDict:
    out: StateDict = {}
    start = 0
    for key in keys:
        ref = like[key]
        out[key] = flat[start:start + ref.numel()].reshape(ref.shape).to(ref.device, ref.dtype)
        start += ref.numel()
    return out


def trim_top_k(task_vector: StateDict, keys: Sequence[str], density: float) -> StateDict:
    """TIES step 1 (Yadav et al. 2023): keep the ``density`` fraction of largest-magnitude entries.

    The ranking is over the whole task vector (all ``keys`` flattened and concatenated in order),
    as in the paper. ``k = floor(density * d + 0.5)`` entries are kept (at least one); ties at the
    threshold keep the entries that come first in that flattened order, so exactly ``k`` entries
    survive and the result is deterministic. The others are set to 0.
    """
    _check_density(density)
    if sum(task_vector[key].numel() for key in keys) == 0:
        return {key: task_vector[key].clone() for key in keys}
    flat = _flatten(task_vector, keys)
    magnitude = flat.abs()
    k = max(1, math.floor(density * flat.numel() + 0.5))
    threshold = torch.kthvalue(magnitude, flat.numel() - k + 1).values
    above = magnitude > threshold
    at = magnitude == threshold
    keep = above | (at & (torch.cumsum(at, dim=0) <= k - above.sum()))
    return _unflatten(torch.where(keep, flat, torch.zeros_like(flat)), task_vector, keys)


def elect_signs(trimmed: Sequence[StateDict], keys: Sequence[str]) -> StateDict:
    """TIES step 2 (Yadav et al. 2023): elected sign ``sign(sum_i trimmed_i)`` per entry.

    Returned as float64 tensors of -1, 0 or +1 (0 where the sum is exactly 0).
    """
    return {key: torch.sign(value) for key, value in _sum(trimmed, keys).items()}


def disjoint_mean(
    trimmed: Sequence[StateDict], signs: StateDict, keys: Sequence[str]
) -> StateDict:
    """TIES step 3 (Yadav et al. 2023): per entry, the mean of the non-zero trimmed values whose
    sign equals the elected sign; entries with no agreeing value are 0. Returned in float64."""
    out: StateDict = {}
    for key in keys:
        sign = signs[key]
        values = torch.stack([_f64(t[key], sign) for t in trimmed])
        agree = (torch.sign(values) == sign) & (values != 0)
        count = agree.sum(dim=0).clamp(min=1)
        out[key] = torch.where(agree, values, torch.zeros_like(values)).sum(dim=0) / count
    return out


def _ties_combine(vectors: Sequence[StateDict], keys: Sequence[str], density: float) -> StateDict:
    trimmed = [trim_top_k(v, keys, density) for v in vectors]
    return disjoint_mean(trimmed, elect_signs(trimmed, keys), keys)


def ties_merge(
    base: StateDict,
    states: Sequence[StateDict],
    keys: Sequence[str],
    density: float,
    scale: float,
) -> StateDict:
    """TIES-Merging (Yadav et al. 2023, "TIES-Merging: Resolving Interference When Merging Models").

    Trim every task vector to its top-``density`` entries (:func:`trim_top_k`), elect a sign per
    entry (:func:`elect_signs`), take the disjoint mean (:func:`disjoint_mean`) and return
    ``theta_0 + scale * merged``.
    """
    _check_states(states)
    _check_density(density)
    _check_scale(scale)
    return _apply(base, _ties_combine(task_vectors(states, base, keys), keys, density), keys, scale)


def dare(
    task_vector: StateDict, keys: Sequence[str], drop_rate: float, generator: torch.Generator
) -> StateDict:
    """DARE (Yu et al. 2024, "Language Models are Super Mario"): drop and rescale.

    Each entry is zeroed with probability ``drop_rate`` and the survivors are multiplied by
    ``1 / (1 - drop_rate)``, which keeps the expectation of the task vector. Random draws come from
    ``generator`` (on its own device), key by key in the order of ``keys``.
    """
    if not 0.0 <= drop_rate < 1.0:
        raise ValueError(f"drop_rate must be in [0, 1), got {drop_rate}")
    out: StateDict = {}
    for key in keys:
        ref = task_vector[key]
        draws = torch.rand(ref.shape, generator=generator, device=generator.device)
        keep = (draws >= drop_rate).to(ref.device)
        value = _f64(ref)
        out[key] = torch.where(keep, value / (1.0 - drop_rate), torch.zeros_like(value)).to(
            ref.dtype
        )
    return out


def dare_merge(
    base: StateDict,
    states: Sequence[StateDict],
    keys: Sequence[str],
    drop_rate: float,
    scale: float,
    combine: Literal["linear", "ties"],
    density: float,
    seed: int,
) -> StateDict:
    """DARE (Yu et al. 2024) on every task vector, then Task Arithmetic or TIES-Merging.

    One CPU generator seeded with ``seed`` draws the masks of the task vectors in order, so the
    result is reproducible. ``density`` (validated always) is only used by ``combine="ties"``.
    """
    _check_states(states)
    _check_scale(scale)
    _check_density(density)
    if combine not in COMBINES:
        raise ValueError(f"Unknown combine {combine!r}; valid values: {', '.join(COMBINES)}")
    generator = torch.Generator().manual_seed(seed)
    dropped = [dare(v, keys, drop_rate, generator) for v in task_vectors(states, base, keys)]
    merged = _sum(dropped, keys) if combine == "linear" else _ties_combine(dropped, keys, density)
    return _apply(base, merged, keys, scale)


def merge_bn_statistics(
    states: Sequence[StateDict],
    weights: Sequence[float],
    layout: StateLayout,
    mode: Literal["mixture", "average"] = "mixture",
) -> StateDict:
    """Merge the BN running statistics of ``states``; returns only the BN buffer keys.

    ``running_mean`` is the weighted mean ``mu = sum_i w_i mu_i``. With ``mode="mixture"``,
    ``running_var = sum_i w_i (var_i + (mu_i - mu)^2)``, the variance of the mixture of the
    clients' per-channel activation distributions (law of total variance), as DMM merges the
    statistics of divergent models; ``mode="average"`` is the plain weighted mean of the variances
    (what FedAvg does). ``num_batches_tracked`` is the maximum over the clients, in its own dtype.
    """
    if mode not in BN_MODES:
        raise ValueError(f"Unknown bn mode {mode!r}; valid values: {', '.join(BN_MODES)}")
    normalised = _normalise(weights, len(states))
    out: StateDict = {}
    for layer in layout.bn_layers:
        mean_key, var_key, count_key = layout.bn_keys(layer)
        ref_mean, ref_var = states[0][mean_key], states[0][var_key]
        means = [_f64(s[mean_key], ref_mean) for s in states]
        variances = [_f64(s[var_key], ref_var) for s in states]
        if mode == "mixture":
            mean, var = mixture_moments(means, variances, normalised)
        else:
            mean = sum(w * m for w, m in zip(normalised, means, strict=True))
            var = sum(w * v for w, v in zip(normalised, variances, strict=True))
        ref_count = states[0][count_key]
        out[mean_key] = mean.to(ref_mean.dtype)
        out[var_key] = var.to(ref_var.dtype)
        out[count_key] = torch.stack([s[count_key].to(ref_count.device) for s in states]).amax(
            dim=0
        )
    return out


def merge_states(
    base: StateDict,
    states: Sequence[StateDict],
    weights: Sequence[float],
    layout: StateLayout,
    method: str,
    **hparams: Any,
) -> StateDict:
    """Merge client ``states`` into one full state dict (key order of ``base``).

    Parameters are merged by ``method``: ``fedavg`` (weighted average, weights = example counts),
    ``task-arithmetic`` (``scale``), ``ties`` (``density``, ``scale``) or ``dare`` (``drop_rate``,
    ``scale``, ``combine``, ``density``, ``seed``); defaults are in ``_HPARAMS``. The task-vector
    methods sum/elect over clients without weights, as in their papers. BN statistics are merged by
    :func:`merge_bn_statistics` with ``bn_mode`` (default ``"mixture"``) and the ``weights``; other
    buffers are copied from ``states[0]``. Unknown methods or hyper-parameters raise ``ValueError``.
    """
    if method not in MERGE_METHODS:
        valid = ", ".join(MERGE_METHODS)
        raise ValueError(f"Unknown merge method {method!r}; valid values: {valid}")
    accepted = {**_HPARAMS[method], "bn_mode": "mixture"}
    unknown = sorted(set(hparams) - set(accepted))
    if unknown:
        raise ValueError(
            f"Unknown hyper-parameter(s) {', '.join(unknown)} for {method!r}; "
            f"valid: {', '.join(sorted(accepted))}"
        )
    options = {**accepted, **hparams}
    _check_states(states)
    bn_keys = layout.all_bn_keys()
    expected = set(layout.params) | set(bn_keys) | set(layout.other_buffers)
    if set(base) != expected:
        missing, extra = sorted(expected - set(base)), sorted(set(base) - expected)
        raise ValueError(f"base does not match the layout: missing {missing}, unexpected {extra}")
    keys = layout.params
    if method == "fedavg":
        params = weighted_average(states, weights, keys)
    elif method == "task-arithmetic":
        params = task_arithmetic(base, states, keys, options["scale"])
    elif method == "ties":
        params = ties_merge(base, states, keys, options["density"], options["scale"])
    else:
        params = dare_merge(
            base,
            states,
            keys,
            options["drop_rate"],
            options["scale"],
            options["combine"],
            options["density"],
            options["seed"],
        )
    merged = {**params, **merge_bn_statistics(states, weights, layout, options["bn_mode"])}
    for key in layout.other_buffers:
        merged[key] = states[0][key].clone()
    return {key: merged[key] for key in base}

"""Checks of the similarity measures and the clustering on hand-made inputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dmm_fed.layout import StateLayout
from dmm_fed.similarity import (
    bn_statistics_distance,
    cluster_models,
    combined_similarity,
    cosine_similarity_matrix,
    flatten_task_vectors,
)

F64 = torch.float64
LAYOUT = StateLayout(params=(), bn_layers=("bn", "head.bn"), other_buffers=())


def test_flatten_task_vectors() -> None:
    base = {"a": torch.tensor([1.0, 1.0]), "b": torch.tensor([[0.0], [2.0]])}
    states = [
        {"a": torch.tensor([2.0, 1.0]), "b": torch.tensor([[1.0], [2.0]])},
        {"a": torch.tensor([1.0, 0.0]), "b": torch.tensor([[0.0], [5.0]])},
    ]
    flat = flatten_task_vectors(states, base, ["a", "b"])
    assert flat.dtype == F64
    assert torch.equal(flat, torch.tensor([[1.0, 0.0, 1.0, 0.0], [0.0, -1.0, 0.0, 3.0]], dtype=F64))


def test_cosine_similarity_matrix() -> None:
    vectors = torch.tensor(
        [[2.0, 0.0, 0.0], [0.0, 3.0, 0.0], [-5.0, 0.0, 0.0], [0.0, 0.0, 0.0], [4.0, 0.0, 0.0]]
    )
    sim = cosine_similarity_matrix(vectors)
    expected = torch.tensor(
        [
            [1.0, 0.0, -1.0, 0.0, 1.0],
            [0.0, 1.0, 0.0, 0.0, 0.0],
            [-1.0, 0.0, 1.0, 0.0, -1.0],
            [0.0, 0.0, 0.0, 1.0, 0.0],
            [1.0, 0.0, -1.0, 0.0, 1.0],
        ],
        dtype=F64,
    )
    assert torch.equal(sim, expected)
    generic = cosine_similarity_matrix(torch.tensor([[1.0, 2.0], [2.0, 1.0]]))
    torch.testing.assert_close(generic[0, 1], torch.tensor(0.8, dtype=F64))  # 4 / (sqrt5 sqrt5)
    assert torch.equal(generic, generic.T)


def bn_stats(mean: float, var: float) -> dict[str, torch.Tensor]:
    state = {}
    for layer in LAYOUT.bn_layers:
        mean_key, var_key, count_key = LAYOUT.bn_keys(layer)
        state[mean_key] = torch.full((3,), mean)
        state[var_key] = torch.full((3,), var)
        state[count_key] = torch.tensor(1)
    return state


def test_bn_statistics_distance() -> None:
    same = bn_statistics_distance([bn_stats(0.0, 1.0), bn_stats(0.0, 1.0)], LAYOUT, eps=0.0)
    assert torch.equal(same, torch.zeros(2, 2, dtype=F64))
    states = [bn_stats(0.0, 1.0), bn_stats(2.0, 1.0), bn_stats(0.0, 4.0)]
    dist = bn_statistics_distance(states, LAYOUT, eps=0.0)
    # Jeffreys divergence 0.5 * ((va + d^2) / vb + (vb + d^2) / va) - 1:
    # (0,1) vs (2,1): 0.5 * (5 + 5) - 1 = 4; (0,1) vs (0,4): 0.5 * (1/4 + 4) - 1 = 1.125;
    # (2,1) vs (0,4): 0.5 * (5/4 + 8) - 1 = 3.625
    expected = torch.tensor([[0.0, 4.0, 1.125], [4.0, 0.0, 3.625], [1.125, 3.625, 0.0]], dtype=F64)
    assert torch.equal(dist, expected)
    with_eps = bn_statistics_distance(states, LAYOUT)
    assert torch.equal(with_eps, with_eps.T) and bool((with_eps > 0).sum() == 6)
    assert torch.equal(torch.diagonal(with_eps), torch.zeros(3, dtype=F64))


def test_combined_similarity() -> None:
    cos = torch.tensor([[1.0, 0.5], [0.5, 1.0]], dtype=F64)
    dist = torch.tensor([[0.0, 4.0], [4.0, 0.0]], dtype=F64)
    out = combined_similarity(cos, dist, bn_weight=0.25)
    assert torch.equal(out, torch.tensor([[1.0, 0.25], [0.25, 1.0]], dtype=F64))
    assert torch.equal(combined_similarity(cos, torch.zeros(2, 2), 1.0), cos)
    with pytest.raises(ValueError):
        combined_similarity(cos, dist, bn_weight=-1.0)


PLAN = [2, 0, 0, 1, 2, 1, 0, 1, 2]
PLAN_LABELS = [0, 1, 1, 2, 0, 2, 1, 2, 0]  # PLAN renumbered by first appearance


def planted_similarity() -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    centres = torch.randn(3, 64, generator=gen, dtype=F64)
    vectors = centres[PLAN] + 0.05 * torch.randn(len(PLAN), 64, generator=gen, dtype=F64)
    return cosine_similarity_matrix(vectors)


def test_cluster_models_recovers_planted_groups() -> None:
    sim = planted_similarity()
    assert cluster_models(sim, threshold=0.6) == PLAN_LABELS
    assert cluster_models(sim, num_clusters=3) == PLAN_LABELS
    assert cluster_models(sim.numpy(), num_clusters=3) == PLAN_LABELS
    assert cluster_models(sim, threshold=1.0) == list(range(9))
    assert cluster_models(sim, threshold=1.5) == list(range(9))
    assert cluster_models(sim, threshold=-1.0) == [0] * 9
    assert cluster_models(sim, num_clusters=1) == [0] * 9
    assert cluster_models(sim, num_clusters=9) == list(range(9))


def test_cluster_models_threshold_is_average_similarity() -> None:
    # 0 and 1 merge at similarity 0.8; the pair then has average similarity (0.5 + 0.3) / 2 = 0.4
    # with model 2
    sim = np.array([[1.0, 0.8, 0.5], [0.8, 1.0, 0.3], [0.5, 0.3, 1.0]])
    assert cluster_models(sim, threshold=0.8) == [0, 0, 1]
    assert cluster_models(sim, threshold=0.41) == [0, 0, 1]
    assert cluster_models(sim, threshold=0.4) == [0, 0, 0]


def test_cluster_models_edge_cases() -> None:
    assert cluster_models(torch.ones(1, 1), threshold=0.5) == [0]
    assert cluster_models(torch.ones(1, 1), num_clusters=1) == [0]
    sim = torch.eye(3, dtype=F64)
    with pytest.raises(ValueError):
        cluster_models(sim)
    with pytest.raises(ValueError):
        cluster_models(sim, threshold=0.5, num_clusters=2)
    with pytest.raises(ValueError):
        cluster_models(sim, num_clusters=4)
    with pytest.raises(ValueError):
        cluster_models(sim, num_clusters=0)

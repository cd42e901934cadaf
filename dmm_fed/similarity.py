"""How alike client models are: task-vector cosine similarity, BN-statistics distance, clustering.

DMM merges divergent models by first grouping the clients whose updates (task vectors) point the
same way and whose BatchNorm statistics describe similar activation distributions.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from scipy.cluster.hierarchy import linkage
from scipy.spatial.distance import squareform

from dmm_fed.layout import StateDict, StateLayout

# Slack on the similarity threshold so an average similarity equal to it (up to rounding) merges.
_THRESHOLD_SLACK = 1e-12


def flatten_task_vectors(
    states: Sequence[StateDict], base: StateDict, keys: Sequence[str]
) -> torch.Tensor:
    """The task vectors ``theta_i - theta_base`` (Ilharco et al. 2023) on ``keys``, one per row.

    Shape ``(n, d)``, float64, on the device of ``base``; ``keys`` are concatenated in order.
    """
    if not keys:
        return torch.zeros(len(states), 0, dtype=torch.float64)
    device = base[keys[0]].device
    flat_base = torch.cat([base[k].to(device, torch.float64).flatten() for k in keys])
    rows = [torch.cat([s[k].to(device, torch.float64).flatten() for k in keys]) for s in states]
    if not rows:
        return torch.zeros(0, flat_base.numel(), dtype=torch.float64, device=device)
    return torch.stack(rows) - flat_base


def cosine_similarity_matrix(vectors: torch.Tensor) -> torch.Tensor:
    """Pairwise cosine similarity of the rows of ``vectors`` (n, d) -> (n, n), float64.

    Symmetric with a diagonal of exactly 1; a zero row has similarity 0 with every other row and 1
    with itself. Values are clamped to [-1, 1].
    """
    if vectors.dim() != 2:
        raise ValueError(f"vectors must be 2-D (n, d), got shape {tuple(vectors.shape)}")
    v = vectors.to(torch.float64)
    norms = v.norm(dim=1, keepdim=True)
    unit = torch.where(norms > 0, v / norms.clamp(min=torch.finfo(torch.float64).tiny), 0.0)
    sim = (unit @ unit.T).clamp(-1.0, 1.0)
    sim = (sim + sim.T) / 2
    sim.fill_diagonal_(1.0)
    return sim


def bn_statistics_distance(
    states: Sequence[StateDict], layout: StateLayout, eps: float = 1e-5
) -> torch.Tensor:
    """Pairwise distance between the clients' BN statistics, (n, n) float64.

    Each BN channel is read as a Gaussian ``N(mu, var + eps)`` of its activations; two clients are
    compared by the symmetric KL divergence (Jeffreys divergence, ``KL(a||b) + KL(b||a)``)
    ``0.5 * ((var_a + d^2) / var_b + (var_b + d^2) / var_a) - 1`` with ``d = mu_a - mu_b``,
    averaged over the channels of a layer and then over the layers. Symmetric, non-negative, zero
    on the diagonal; all zeros when the layout has no BN layer.
    """
    n = len(states)
    if not layout.bn_layers or n == 0:
        return torch.zeros(n, n, dtype=torch.float64)
    per_layer = []
    for layer in layout.bn_layers:
        mean_key, var_key, _ = layout.bn_keys(layer)
        device = states[0][mean_key].device
        means = torch.stack([s[mean_key].to(device, torch.float64).flatten() for s in states])
        var = torch.stack([s[var_key].to(device, torch.float64).flatten() for s in states]) + eps
        diff2 = (means[:, None, :] - means[None, :, :]) ** 2
        var_a, var_b = var[:, None, :], var[None, :, :]
        jeffreys = 0.5 * ((var_a + diff2) / var_b + (var_b + diff2) / var_a) - 1.0
        per_layer.append(jeffreys.mean(dim=2))
    dist = torch.stack(per_layer).mean(dim=0).clamp(min=0.0)
    dist = (dist + dist.T) / 2
    dist.fill_diagonal_(0.0)
    return dist


def combined_similarity(
    cos_sim: torch.Tensor, bn_dist: torch.Tensor, bn_weight: float
) -> torch.Tensor:
    """``cos_sim - bn_weight * bn_dist / scale``, with ``scale`` the largest off-diagonal BN
    distance (1 when that is 0 or there is no off-diagonal entry), so the BN term lies in
    ``[-bn_weight, 0]`` whatever the units of the distance."""
    if cos_sim.shape != bn_dist.shape or cos_sim.dim() != 2:
        raise ValueError(
            f"cos_sim and bn_dist must be the same (n, n) shape, got {tuple(cos_sim.shape)} "
            f"and {tuple(bn_dist.shape)}"
        )
    if not math.isfinite(bn_weight) or bn_weight < 0:
        raise ValueError(f"bn_weight must be finite and >= 0, got {bn_weight}")
    dist = bn_dist.to(device=cos_sim.device, dtype=torch.float64)
    off_diagonal = ~torch.eye(dist.shape[0], dtype=torch.bool, device=dist.device)
    largest = float(dist[off_diagonal].max()) if off_diagonal.any() else 0.0
    scale = largest if largest > 0 else 1.0
    return cos_sim.to(torch.float64) - bn_weight * dist / scale


def cluster_models(
    similarity: torch.Tensor | np.ndarray,
    threshold: float | None = None,
    num_clusters: int | None = None,
) -> list[int]:
    """Agglomerative clustering (average linkage on ``1 - similarity``) of n models.

    Give exactly one of ``threshold`` (clusters keep merging while their average pairwise
    similarity is ``>= threshold``) or ``num_clusters`` (stop at exactly that many clusters).
    Returns one label per model, numbered 0..k-1 in order of first appearance.
    """
    if (threshold is None) == (num_clusters is None):
        raise ValueError("Give exactly one of threshold and num_clusters")
    sim = (
        similarity.detach().cpu().to(torch.float64).numpy()
        if isinstance(similarity, torch.Tensor)
        else np.asarray(similarity, dtype=np.float64)
    )
    if sim.ndim != 2 or sim.shape[0] != sim.shape[1]:
        raise ValueError(f"similarity must be a square (n, n) matrix, got shape {sim.shape}")
    if not np.isfinite(sim).all():
        raise ValueError("similarity must be finite")
    n = sim.shape[0]
    if num_clusters is not None and not 1 <= num_clusters <= n:
        raise ValueError(f"num_clusters must be in [1, {n}], got {num_clusters}")
    if n <= 1:
        return [0] * n
    distance = np.clip(1.0 - (sim + sim.T) / 2, 0.0, 2.0)
    np.fill_diagonal(distance, 0.0)
    # Average linkage has no inversions: merge heights are non-decreasing, so a cut is a prefix.
    merges = linkage(squareform(distance, checks=False), method="average")
    if num_clusters is not None:
        applied = n - num_clusters
    else:
        applied = int((merges[:, 2] <= 1.0 - threshold + _THRESHOLD_SLACK).sum())
    members: dict[int, list[int]] = {i: [i] for i in range(n)}
    for step in range(applied):
        left, right = int(merges[step, 0]), int(merges[step, 1])
        members[n + step] = members.pop(left) + members.pop(right)
    label_of = [0] * n
    for cluster, items in enumerate(members.values()):
        for item in items:
            label_of[item] = cluster
    first_seen: dict[int, int] = {}
    return [first_seen.setdefault(label, len(first_seen)) for label in label_of]

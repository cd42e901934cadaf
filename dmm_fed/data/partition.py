"""Deterministic client partitions: one domain per client, optionally Dirichlet label skew.

Partition ``p`` of ``N`` gets domain ``domains[p % D]``; the clients that share a domain split its
train set either uniformly at random (``alpha = 0``) or with Dirichlet(alpha) label proportions
(Hsu et al. 2019; alpha = 0.01 is the highly non-IID setting of the DMM paper). The same per-class
proportions split the domain's test set, so a client's local test split follows its own label
distribution. Everything is a pure function of ``(labels, seed)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

MAX_DIRICHLET_DRAWS = 1000


@dataclass(frozen=True)
class ClientSlot:
    """Where a partition lives: its domain, its rank among that domain's clients, their count."""

    domain: str
    rank: int
    clients_in_domain: int


def assign_domains(num_partitions: int, domains: Sequence[str]) -> list[ClientSlot]:
    """Round-robin clients over domains: partition ``p`` gets ``domains[p % len(domains)]``."""
    if num_partitions < 1:
        raise ValueError(f"num_partitions must be >= 1, got {num_partitions}")
    if not domains:
        raise ValueError("domains is empty")
    n_dom = len(domains)
    return [
        ClientSlot(
            domain=domains[p % n_dom],
            rank=p // n_dom,
            clients_in_domain=len(range(p % n_dom, num_partitions, n_dom)),
        )
        for p in range(num_partitions)
    ]


def label_proportions(
    num_classes: int, num_splits: int, alpha: float, rng: np.random.Generator
) -> np.ndarray:
    """Per-class shares of each split, shape ``(num_classes, num_splits)``, rows sum to 1.

    ``alpha = 0`` means uniform shares (IID); ``alpha > 0`` draws each row from Dirichlet(alpha).
    """
    if alpha == 0:
        return np.full((num_classes, num_splits), 1.0 / num_splits)
    if alpha < 0:
        raise ValueError(f"alpha must be >= 0, got {alpha}")
    return rng.dirichlet(np.full(num_splits, alpha), size=num_classes)


def split_by_proportions(
    labels: np.ndarray, proportions: np.ndarray, rng: np.random.Generator
) -> list[np.ndarray]:
    """Split indices so that split ``j`` gets a ``proportions[c, j]`` share of each class ``c``."""
    num_classes, num_splits = proportions.shape
    parts: list[list[np.ndarray]] = [[] for _ in range(num_splits)]
    for c in range(num_classes):
        idx = rng.permutation(np.flatnonzero(labels == c))
        cuts = np.round(np.cumsum(proportions[c])[:-1] * len(idx)).astype(int)
        for j, chunk in enumerate(np.split(idx, cuts)):
            parts[j].append(chunk)
    return [np.sort(np.concatenate(p)) for p in parts]


def split_domain(
    train_labels: np.ndarray,
    test_labels: np.ndarray,
    num_splits: int,
    alpha: float,
    seed: int | Sequence[int],
    min_train_size: int = 10,
    num_classes: int = 10,
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Train and test index splits of one domain, sharing one draw of label proportions.

    Dirichlet draws are repeated (deterministically) until every split holds at least
    ``min_train_size`` training examples, as ``flwr-datasets``' DirichletPartitioner does.
    """
    rng = np.random.default_rng(seed)
    for _ in range(MAX_DIRICHLET_DRAWS):
        props = label_proportions(num_classes, num_splits, alpha, rng)
        train = split_by_proportions(train_labels, props, rng)
        if min(len(t) for t in train) >= min_train_size:
            return train, split_by_proportions(test_labels, props, rng)
    raise ValueError(
        f"Could not give each of {num_splits} clients >= {min_train_size} examples with "
        f"alpha={alpha} in {MAX_DIRICHLET_DRAWS} draws; use fewer clients or a larger alpha"
    )


def subsample(indices: np.ndarray, limit: int, seed: int | Sequence[int]) -> np.ndarray:
    """At most ``limit`` of ``indices`` (all when ``limit == 0``), drawn uniformly, sorted."""
    if limit == 0 or len(indices) <= limit:
        return indices
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(indices, size=limit, replace=False))

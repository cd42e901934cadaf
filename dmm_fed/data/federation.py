"""What each party of a federation sees: a client's private partition, the server's test sets."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from dmm_fed.data.domains import DOMAINS, load_domain, num_classes, to_tensors
from dmm_fed.data.partition import assign_domains, split_domain, subsample


@dataclass(frozen=True)
class ClientData:
    """A client's private train split and local test split, as model-ready tensors."""

    domain: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int = 10

    def label_counts(self) -> list[int]:
        """Examples per class in the train split (the only label information a client shares)."""
        return torch.bincount(self.y_train, minlength=self.num_classes).tolist()


def client_data(
    root: Path,
    domains: tuple[str, ...],
    partition_id: int,
    num_partitions: int,
    alpha: float,
    seed: int,
    max_train: int = 0,
    text: bool = False,
) -> ClientData:
    """Load partition ``partition_id`` of ``num_partitions`` (see :mod:`dmm_fed.data.partition`).

    ``max_train > 0`` caps the train split by uniform subsampling (keeps the label skew); the local
    test split is capped to a quarter of that. ``text``: packed image+text rows (emoji domains).
    """
    if not 0 <= partition_id < num_partitions:
        raise ValueError(f"partition-id {partition_id} is outside 0..{num_partitions - 1}")
    slot = assign_domains(num_partitions, domains)[partition_id]
    train, test = (load_domain(slot.domain, s, root, text=text) for s in ("train", "test"))
    domain_seed = [seed, DOMAINS.index(slot.domain)]
    train_parts, test_parts = split_domain(
        np.asarray(train.y), np.asarray(test.y), slot.clients_in_domain, alpha, domain_seed
    )
    part_seed = [seed, partition_id]
    train_idx = subsample(train_parts[slot.rank], max_train, part_seed)
    test_idx = subsample(test_parts[slot.rank], max(max_train // 4, 1) if max_train else 0,
                         part_seed)
    x_train, y_train = to_tensors(train, train_idx)
    x_test, y_test = to_tensors(test, test_idx)
    return ClientData(slot.domain, x_train, y_train, x_test, y_test, num_classes(domains))


def server_test_sets(
    root: Path,
    domains: tuple[str, ...],
    max_per_domain: int = 0,
    seed: int = 0,
    text: bool = False,
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Each domain's held-out test split (no client trains on it), optionally subsampled."""
    sets = {}
    for domain in domains:
        test = load_domain(domain, "test", root, text=text)
        idx = subsample(np.arange(len(test.y)), max_per_domain, seed)
        sets[domain] = to_tensors(test, idx)
    return sets

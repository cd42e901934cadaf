"""Strategy registry: the ``strategy`` run-config key picks one of these."""

from __future__ import annotations

from flwr.serverapp.strategy import FedAvg, Strategy

from dmm_fed.config import RunConfig


def build_strategy(config: RunConfig) -> Strategy:
    """The strategy named by ``config.strategy`` (validated by :mod:`dmm_fed.config`)."""
    min_nodes = config.min_nodes
    if config.strategy == "fedavg":
        return FedAvg(
            fraction_train=1.0,
            fraction_evaluate=config.fraction_evaluate,
            min_train_nodes=min_nodes,
            min_evaluate_nodes=min_nodes if config.fraction_evaluate > 0 else 0,
            min_available_nodes=min_nodes,
        )
    raise ValueError(f"Unknown strategy {config.strategy!r}")

"""Train the clients once through Flower and cache what they upload.

One-shot: every client starts from the same initial model, trains on its own partition with the
project's ``ClientApp`` (Flower's simulation engine, Ray backend) and replies with its weights,
normalization statistics and counts. The server keeps those replies as
:class:`~dmm_fed.dmm.ClientUpdate` objects, so every merging method can then be applied to
exactly the same client models. The cache file is keyed by everything the clients' training
depends on.
"""

from __future__ import annotations

import hashlib
import json
import time
from logging import INFO
from pathlib import Path
from typing import Any

import torch
from flwr.app import ArrayRecord, Context
from flwr.common import log
from flwr.serverapp import Grid, ServerApp
from flwr.simulation import run_simulation

from clients.app import make_client_app
from dmm_fed.config import RunConfig
from dmm_fed.dmm import ClientUpdate
from dmm_fed.layout import StateDict
from server.app import wait_for_nodes
from server.screened import ScreenedFedAvg

DEFAULT_CACHE_DIR = Path("~/.cache/dmm-fed/experiments/clients")
CLIENT_KEYS: tuple[str, ...] = (
    "seed", "domains", "dirichlet-alpha", "max-train-per-client", "model", "local-epochs",
    "batch-size", "optimizer", "learning-rate", "momentum", "weight-decay", "share-label-counts",
    "statistics-noise",
)
"""The run-config keys the client models depend on (and so the cache key)."""


class CollectStrategy(ScreenedFedAvg):
    """Screened FedAvg that asks for statistics; the usable replies stay in ``screened``."""

    request_statistics = True

    def updates(self) -> list[ClientUpdate]:
        """The usable updates of the (single) round."""
        return self.screened[1].updates if 1 in self.screened else []


def cache_path(config: RunConfig, num_clients: int, cache_dir: Path) -> Path:
    """``<cache_dir>/clients-<hash>.pt``, the hash over :data:`CLIENT_KEYS` and the client count."""
    flower = config.to_flower()
    key = json.dumps({"num-clients": num_clients, **{k: flower[k] for k in CLIENT_KEYS}},
                     sort_keys=True)
    return cache_dir.expanduser() / f"clients-{hashlib.sha256(key.encode()).hexdigest()[:16]}.pt"


def collect_app(config: RunConfig, num_clients: int, path: Path) -> ServerApp:
    """A ServerApp that runs one round of training on ``num_clients`` nodes and saves
    ``{"base", "updates", "seconds"}`` to ``path``."""
    app = ServerApp()

    @app.main()
    def _main(grid: Grid, context: Context) -> None:
        strategy = CollectStrategy(
            fraction_train=1.0, fraction_evaluate=0.0, min_train_nodes=num_clients,
            min_evaluate_nodes=0, min_available_nodes=num_clients,
            num_classes=config.num_classes,
        )
        wait_for_nodes(grid, num_clients, config.node_wait_timeout)
        base = config.new_model(seed=config.seed).state_dict()
        tick = time.perf_counter()
        strategy.start(grid=grid, initial_arrays=ArrayRecord(base), num_rounds=1,
                       timeout=config.round_timeout)
        seconds = time.perf_counter() - tick
        updates = strategy.updates()
        if len(updates) != num_clients:
            raise RuntimeError(f"only {len(updates)} of {num_clients} clients replied usably; "
                               "see the warnings above")
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        torch.save({"base": base, "updates": updates, "seconds": seconds}, tmp)
        tmp.replace(path)
        log(INFO, "Saved %d client updates to %s", num_clients, path)

    return app


def train_through_flower(
    config: RunConfig,
    num_clients: int,
    cache_dir: Path = DEFAULT_CACHE_DIR,
    ray_init_args: dict[str, Any] | None = None,
) -> tuple[StateDict, list[ClientUpdate], float]:
    """The initial global state, every client's update and the round's seconds; cached.

    ``ray_init_args`` go to ``ray.init`` (e.g. ``{"address": "auto"}`` for a running cluster).
    """
    path = cache_path(config, num_clients, cache_dir)
    if not path.exists():
        run_simulation(
            server_app=collect_app(config, num_clients, path),
            client_app=make_client_app(config.to_flower()),
            num_supernodes=num_clients,
            backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0},
                            "init_args": dict(ray_init_args or {})},
        )
        if not path.exists():
            raise RuntimeError("client training through Flower failed; see the log above")
    saved = torch.load(path, weights_only=False)
    return saved["base"], saved["updates"], saved["seconds"]

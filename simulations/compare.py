"""One-shot comparison without the Flower engine: train the clients once, then merge them many ways.

Uses the same partitions, model and local training as the ClientApp, so its client models equal
those of a ``flwr run`` with the same config and seed. Meant for sweeps and benchmarks; the
production path is the Flower app.

    python -m simulations.compare --run-config "dirichlet-alpha=0.01 domains='mnist'" \
        --num-clients 10 --out /abs/path/compare.json
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from flwr.common.config import parse_config_args

from clients.app import local_train
from dmm_fed.config import RunConfig, parse_run_config
from dmm_fed.data import resolve_data_root
from dmm_fed.data.federation import client_data, server_test_sets
from dmm_fed.dmm import ClientUpdate, dmm_merge
from dmm_fed.evaluation import baseline_accuracies
from dmm_fed.models import build_model
from dmm_fed.report import accuracy_table, write_json
from dmm_fed.statistics import activation_statistics
from server.strategies import dmm_config


def train_clients(config: RunConfig, num_clients: int) -> tuple[dict, list[ClientUpdate]]:
    """The initial global state and every client's one-shot update (as the ClientApp makes it)."""
    root = resolve_data_root(config.data_root)
    base = build_model(config.model, seed=config.seed).state_dict()
    updates = []
    for pid in range(num_clients):
        data = client_data(root, config.domain_list, pid, num_clients, config.dirichlet_alpha,
                           config.seed, config.max_train_per_client)
        model = build_model(config.model)
        model.load_state_dict(base)
        local_train(config, model, data, pid, server_round=1)
        updates.append(ClientUpdate(
            {k: v.clone() for k, v in model.state_dict().items()}, len(data.y_train),
            data.label_counts() if config.share_label_counts else None,
            activation_statistics(model, data.x_train), name=f"{pid}:{data.domain}",
        ))
        print(f"client {pid} ({data.domain}) trained on {len(data.y_train)} examples", flush=True)
    return base, updates


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-config", default="", help="space-separated key=value overrides")
    parser.add_argument("--num-clients", type=int, default=8)
    parser.add_argument("--out", type=Path, required=True, help="absolute path of the JSON")
    parser.add_argument("--clients-cache", type=Path, default=None,
                        help="reuse (or write) the trained client updates here (torch.save file)")
    args = parser.parse_args(argv)
    overrides = parse_config_args([args.run_config])
    config = parse_run_config({}, {**overrides, "strategy": "dmm"})
    server_threads = config.server_threads or torch.get_num_threads()
    torch.set_num_threads(config.num_threads)
    domains = config.domain_list
    tests = server_test_sets(resolve_data_root(config.data_root), domains,
                             config.max_test_per_domain, config.seed)
    tick = time.perf_counter()
    if args.clients_cache and args.clients_cache.exists():
        base, updates = torch.load(args.clients_cache, weights_only=False)
    else:
        base, updates = train_clients(config, args.num_clients)
        if args.clients_cache:
            torch.save((base, updates), args.clients_cache)
    train_s = time.perf_counter() - tick
    torch.set_num_threads(server_threads)  # the server step, as in the ServerApp
    out = dmm_merge(base, updates, lambda: build_model(config.model), dmm_config(config),
                    progress=lambda m: print(m, flush=True))
    rows = baseline_accuracies(config.model, base, updates, out, tests)
    print(accuracy_table(rows, domains))
    write_json(args.out, {"config": config.to_flower(), "accuracy": rows,
                          "dmm": out.report.to_dict(), "client-training-s": train_s})



if __name__ == "__main__":
    main()

"""The dmm-fed ServerApp: run the configured strategy, evaluate every domain, write the results.

After every round the global model is evaluated on each domain's held-out test split; the
per-domain accuracy table is logged, and ``results.json`` plus the final checkpoint ``model.pt``
are written to the output directory (``output-dir``, default ``~/.cache/dmm-fed/runs/<stamp>``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from logging import INFO, WARNING
from typing import Any

import torch
from flwr.app import ArrayRecord, Context, MetricRecord
from flwr.common import log
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import Result

from dmm_fed.config import RunConfig, parse_run_config
from dmm_fed.data import resolve_data_root
from dmm_fed.data.federation import server_test_sets
from dmm_fed.evaluation import TestSets, baseline_accuracies, domain_accuracies
from dmm_fed.models import build_model
from dmm_fed.report import accuracy_table, mean_accuracy, resolve_output_dir, write_json
from server.dmm_strategy import DMMStrategy
from server.screened import ScreenedFedAvg
from server.strategies import build_strategy


def make_evaluate_fn(
    config: RunConfig, test_sets: TestSets
) -> Callable[[int, ArrayRecord], MetricRecord]:
    """Server-side evaluation after every round: per-domain accuracy and their mean."""
    domains = tuple(test_sets)

    def evaluate_fn(server_round: int, arrays: ArrayRecord) -> MetricRecord:
        model = build_model(config.model)
        model.load_state_dict(arrays.to_torch_state_dict())
        accs = domain_accuracies(model, test_sets)
        log(INFO, "Round %d, global model on held-out test sets (accuracy %%):\n%s",
            server_round, accuracy_table({f"round {server_round}": accs}, domains))
        return MetricRecord({**{f"accuracy-{d}": a for d, a in accs.items()},
                             "accuracy-mean": mean_accuracy(accs, domains)})

    return evaluate_fn


def wait_for_nodes(grid: Grid, min_nodes: int, timeout: float) -> int:
    """Block until ``min_nodes`` nodes are connected; raise ``TimeoutError`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while (connected := len(list(grid.get_node_ids()))) < min_nodes:
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"Only {connected} of the required {min_nodes} nodes connected within {timeout} s;"
                " start more SuperNodes or lower min-nodes"
            )
        time.sleep(1.0)
    return connected


def results_payload(
    config: RunConfig, result: Result, wall_time: float, domains: tuple[str, ...]
) -> dict[str, Any]:
    """What ``results.json`` holds: config, per-round metrics, final per-domain accuracy, time."""
    rounds = sorted(set(result.evaluate_metrics_serverapp) | set(result.train_metrics_clientapp))
    per_round = [
        {
            "round": r,
            "train": dict(result.train_metrics_clientapp.get(r, {})),
            "client-evaluate": dict(result.evaluate_metrics_clientapp.get(r, {})),
            "server-evaluate": dict(result.evaluate_metrics_serverapp.get(r, {})),
        }
        for r in rounds
    ]
    final = result.evaluate_metrics_serverapp[max(result.evaluate_metrics_serverapp)]
    return {
        "config": config.to_flower(),
        "seed": config.seed,
        "rounds": per_round,
        "final-accuracy": {d: final[f"accuracy-{d}"] for d in domains},
        "final-accuracy-mean": final["accuracy-mean"],
        "wall-time-s": wall_time,
    }


def make_server_app(overrides: Mapping[str, Any] | None = None) -> ServerApp:
    """A ServerApp; ``overrides`` (kebab-case run-config keys) win over the run config."""
    app = ServerApp()

    @app.main()
    def _main(grid: Grid, context: Context) -> None:
        start = time.perf_counter()
        config = parse_run_config(context.run_config, overrides)
        if config.server_threads:
            torch.set_num_threads(config.server_threads)
        out_dir = resolve_output_dir(config.output_dir, config.strategy)
        log(INFO, "dmm-fed: strategy=%s model=%s domains=%s, output in %s",
            config.strategy, config.model, config.domains, out_dir)
        domains = config.domain_list
        test_sets = server_test_sets(
            resolve_data_root(config.data_root), domains, config.max_test_per_domain, config.seed
        )
        strategy = build_strategy(config, artifact_dir=out_dir)
        wait_for_nodes(grid, config.min_nodes, config.node_wait_timeout)
        initial = ArrayRecord(build_model(config.model, seed=config.seed).state_dict())
        result = strategy.start(
            grid=grid,
            initial_arrays=initial,
            num_rounds=config.num_server_rounds,
            timeout=config.round_timeout,
            evaluate_fn=make_evaluate_fn(config, test_sets),
        )
        final = result.arrays or initial
        if not result.arrays:
            log(WARNING, "No round produced a new global model (see the warnings above); "
                "saving the initial model")
        out_dir.mkdir(parents=True, exist_ok=True)
        torch.save(final.to_torch_state_dict(), out_dir / "model.pt")
        payload = results_payload(config, result, time.perf_counter() - start, domains)
        if isinstance(strategy, ScreenedFedAvg):
            payload["refused-replies"] = {
                r: [{"node": n, "reason": reason, "detail": d} for n, reason, d in s.rejected]
                for r, s in strategy.screened.items()
            }
        rows = {config.strategy: payload["final-accuracy"]}
        if isinstance(strategy, DMMStrategy) and strategy.outputs:
            last = max(strategy.outputs)
            payload["dmm"] = strategy.outputs[last].report.to_dict()
            if config.report_baselines:
                log(INFO, "Evaluating the baselines (each client, one-shot FedAvg, ensemble)")
                rows = baseline_accuracies(config.model, strategy.bases[last],
                                           strategy.updates[last], strategy.outputs[last],
                                           test_sets, progress=lambda m: log(INFO, m),
                                           dmm_accuracy=payload["final-accuracy"])
                payload["comparison"] = rows
            payload["wall-time-s"] = time.perf_counter() - start
        write_json(out_dir / "results.json", payload)
        log(INFO, "Final accuracy (%%) on held-out test sets:\n%s", accuracy_table(rows, domains))
        log(INFO, "Wrote %s and %s", out_dir / "results.json", out_dir / "model.pt")

    return app


app = make_server_app()

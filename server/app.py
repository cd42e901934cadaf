"""The dmm-fed ServerApp: run the configured strategy, evaluate every domain, write the results.

After every round the global model is evaluated on each domain's held-out test split, the
per-domain accuracy table is logged and ``checkpoint.pt`` (global model, round, strategy state)
is rewritten; at the end ``results.json`` and the final model ``model.pt`` are written to the
output directory (``output-dir``, default ``~/.cache/dmm-fed/runs/<stamp>``). With
``resume=true`` a run continues from the checkpoint in ``output-dir``: the remaining rounds are
numbered as in an uninterrupted run, so clients and the strategy do exactly what they would have.
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

from dmm_fed.config import RunConfig, parse_run_config
from dmm_fed.data import resolve_data_root
from dmm_fed.data.federation import server_test_sets
from dmm_fed.evaluation import TestSets, baseline_accuracies, domain_accuracies
from dmm_fed.report import accuracy_table, mean_accuracy, resolve_output_dir, write_json
from server.checkpoint import CHECKPOINT_NAME, load_checkpoint, save_checkpoint
from server.dmm_strategy import DMMStrategy
from server.screened import ScreenedFedAvg
from server.strategies import build_strategy

RoundCallback = Callable[[int, ArrayRecord, MetricRecord], None]


def make_evaluate_fn(
    config: RunConfig,
    test_sets: TestSets,
    after: RoundCallback | None = None,
    offset: int = 0,
    restored: MetricRecord | None = None,
) -> Callable[[int, ArrayRecord], MetricRecord]:
    """Server-side evaluation after every round: per-domain accuracy and their mean.

    Rounds are numbered after ``offset`` (a resumed run); the resumed run's starting point is
    not evaluated again (``restored`` is returned for it). ``after`` is called with each round's
    result (the ServerApp checkpoints there).
    """
    domains = tuple(test_sets)

    def evaluate_fn(server_round: int, arrays: ArrayRecord) -> MetricRecord:
        rnd = server_round + offset
        if server_round == 0 and restored is not None:
            return restored
        model = config.new_model()
        model.load_state_dict(arrays.to_torch_state_dict())
        accs = domain_accuracies(model, test_sets)
        log(INFO, "Round %d, global model on held-out test sets (accuracy %%):\n%s",
            rnd, accuracy_table({f"round {rnd}": accs}, domains))
        metrics = MetricRecord({**{f"accuracy-{d}": a for d, a in accs.items()},
                                "accuracy-mean": mean_accuracy(accs, domains)})
        if after is not None:
            after(rnd, arrays, metrics)
        return metrics

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
    config: RunConfig, strategy: ScreenedFedAvg, server_evaluate: Mapping[int, Mapping],
    wall_time: float, domains: tuple[str, ...],
) -> dict[str, Any]:
    """What ``results.json`` holds: config, per-round metrics, final per-domain accuracy, time."""
    rounds = sorted(set(server_evaluate) | set(strategy.train_metrics))
    per_round = [
        {
            "round": r,
            "train": dict(strategy.train_metrics.get(r, {})),
            "client-evaluate": dict(strategy.evaluate_metrics.get(r, {})),
            "server-evaluate": dict(server_evaluate.get(r, {})),
        }
        for r in rounds
    ]
    final = server_evaluate[max(server_evaluate)]
    return {
        "config": config.to_flower(),
        "seed": config.seed,
        "rounds": per_round,
        "final-accuracy": {d: final[f"accuracy-{d}"] for d in domains},
        "final-accuracy-mean": final["accuracy-mean"],
        "refused-replies": strategy.state_dict()["refused"],
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
            resolve_data_root(config.data_root), domains, config.max_test_per_domain, config.seed,
            config.uses_text,
        )
        strategy = build_strategy(config, artifact_dir=out_dir)
        initial = ArrayRecord(config.new_model(seed=config.seed).state_dict())
        server_evaluate: dict[int, dict[str, Any]] = {}
        checkpoint = load_checkpoint(out_dir) if config.resume else None
        done = 0
        if checkpoint is not None:
            done = checkpoint["round"]
            initial = ArrayRecord(checkpoint["arrays"])
            server_evaluate = dict(checkpoint["server-evaluate"])
            strategy.load_state_dict(checkpoint["strategy"], rounds_done=done)
            log(INFO, "Resuming from %s: %d of %d rounds done", out_dir / CHECKPOINT_NAME,
                done, config.num_server_rounds)
        elif config.resume:
            log(INFO, "resume=true but no checkpoint in %s: starting from round 0", out_dir)

        def after_round(rnd: int, arrays: ArrayRecord, metrics: MetricRecord) -> None:
            server_evaluate[rnd] = dict(metrics)
            save_checkpoint(out_dir, rnd, arrays.to_torch_state_dict(), server_evaluate,
                            strategy.state_dict())

        remaining = config.num_server_rounds - done
        final = initial
        if remaining > 0:
            wait_for_nodes(grid, config.min_nodes, config.node_wait_timeout)
            restored = MetricRecord(server_evaluate[done]) if checkpoint is not None else None
            result = strategy.start(
                grid=grid,
                initial_arrays=initial,
                num_rounds=remaining,
                timeout=config.round_timeout,
                evaluate_fn=make_evaluate_fn(config, test_sets, after_round, done, restored),
            )
            final = result.arrays or initial
            if not result.arrays:
                log(WARNING, "No round produced a new global model (see the warnings above); "
                    "saving the model it started from")
        else:
            log(INFO, "All %d rounds were already done", config.num_server_rounds)
        out_dir.mkdir(parents=True, exist_ok=True)
        torch.save(final.to_torch_state_dict(), out_dir / "model.pt")
        payload = results_payload(config, strategy, server_evaluate,
                                  time.perf_counter() - start, domains)
        rows = {config.strategy: payload["final-accuracy"]}
        if isinstance(strategy, DMMStrategy) and strategy.outputs:
            last = max(strategy.outputs)
            payload["dmm"] = strategy.outputs[last].report.to_dict()
            if config.report_baselines:
                log(INFO, "Evaluating the baselines (each client, one-shot FedAvg, ensemble)")
                rows = baseline_accuracies(config.new_model, strategy.bases[last],
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

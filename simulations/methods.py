"""Every method the experiments compare, applied to one set of client updates.

Baselines merge all clients at once with the standard techniques at their papers' usual
hyper-parameters (there is no validation data to tune them on: the setting is data-free); DMM
variants change one knob of the run config each. Upper references are marked: the teachers'
output ensemble is not one model, centralised training on pooled data is not data-free.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from clients.app import local_train
from dmm_fed.config import RunConfig
from dmm_fed.data import resolve_data_root
from dmm_fed.data.federation import ClientData, client_data
from dmm_fed.dmm import ClientUpdate, DMMOutput, dmm_merge, merge_group
from dmm_fed.evaluation import TestSets, ensemble_accuracies, state_accuracies
from dmm_fed.layout import StateDict, StateLayout
from server.strategies import dmm_config

Progress = Callable[[str], None]

LOCAL = "local models (mean over clients)"
FEDAVG = "one-shot FedAvg"
DMM = "DMM"
MERGE_ONLY = "DMM merge only (no distillation; = one cluster)"
NO_CLUSTERING = "DMM, no clustering (every client a teacher)"
ENSEMBLE = "teachers' output ensemble [not one model]"
POOLED = "centralised, pooled data [not data-free]"

BASELINES: dict[str, dict[str, Any]] = {
    FEDAVG: {"merge_method": "fedavg"},
    "Task Arithmetic (lambda 0.3)": {"merge_method": "task-arithmetic", "merge_scale": 0.3},
    "TIES (top 20%, lambda 1)": {"merge_method": "ties", "ties_density": 0.2, "merge_scale": 1.0},
    "DARE (drop 0.5, lambda 0.3)": {"merge_method": "dare", "dare_drop_rate": 0.5,
                                    "merge_scale": 0.3},
}
"""One-shot merges of all clients; BN statistics are averaged, as FedAvg does."""

ABLATIONS: dict[str, dict[str, Any]] = {
    "DMM, distilled on noise": {"pseudo_inputs": "noise"},
    "DMM, no BN loss in synthesis": {"bn_loss_weight": 0.0},
}
"""DMM with one knob changed (snake_case RunConfig fields); ``NO_CLUSTERING`` and
``MERGE_ONLY`` depend on the client count and are built in :func:`run_methods`."""


@dataclass
class MethodResults:
    """Per-domain accuracy of every method, the seconds each took, and the default DMM output."""

    rows: dict[str, dict[str, float]]
    clients: dict[str, dict[str, float]]
    seconds: dict[str, float]
    dmm: DMMOutput


def baseline_states(
    config: RunConfig, base: StateDict, updates: Sequence[ClientUpdate], layout: StateLayout
) -> dict[str, StateDict]:
    """Each baseline merge of all clients (example-weighted where the method uses weights)."""
    everyone = range(len(updates))
    return {
        name: merge_group(base, updates, everyone, layout,
                          dmm_config(config.replace(bn_merge="average", **changes))).state
        for name, changes in BASELINES.items()
    }


def pooled_state(config: RunConfig, num_clients: int) -> StateDict:
    """A model trained on the union of all clients' training data, with the clients' recipe."""
    root = resolve_data_root(config.data_root)
    parts = [client_data(root, config.domain_list, p, num_clients, config.dirichlet_alpha,
                         config.seed, config.max_train_per_client, config.uses_text)
             for p in range(num_clients)]
    pooled = ClientData("pooled", torch.cat([p.x_train for p in parts]),
                        torch.cat([p.y_train for p in parts]), parts[0].x_test, parts[0].y_test,
                        config.num_classes)
    model = config.new_model(seed=config.seed)
    local_train(config, model, pooled, partition_id=num_clients, server_round=1)
    return model.state_dict()


def run_dmm(
    config: RunConfig, base: StateDict, updates: Sequence[ClientUpdate], say: Progress,
    **changes: Any,
) -> DMMOutput:
    """DMM with some RunConfig fields changed."""
    cfg = dmm_config(config.replace(**changes))
    return dmm_merge(base, updates, config.new_model, cfg, progress=say)


def run_methods(
    config: RunConfig,
    base: StateDict,
    updates: Sequence[ClientUpdate],
    tests: TestSets,
    say: Progress,
    pooled: bool = True,
) -> MethodResults:
    """Apply every method to ``updates`` and evaluate each on every domain's test set."""
    rows: dict[str, dict[str, float]] = {}
    seconds: dict[str, float] = {}
    layout = StateLayout.from_model(config.new_model())
    model = config.new_model

    def timed(name: str, make: Callable[[], Any]) -> Any:
        say(f"method: {name}")
        tick = time.perf_counter()
        value = make()
        seconds[name] = time.perf_counter() - tick
        return value

    clients = {f"client {u.name}": state_accuracies(model, u.state, tests) for u in updates}
    rows[LOCAL] = {d: sum(c[d] for c in clients.values()) / len(clients) for d in tests}
    for name, state in timed("baselines", lambda: baseline_states(config, base, updates,
                                                                  layout)).items():
        rows[name] = state_accuracies(model, state, tests)
    dmm = timed(DMM, lambda: run_dmm(config, base, updates, say))
    rows[DMM] = state_accuracies(model, dmm.state, tests)
    merged = merge_group(base, updates, range(len(updates)), layout, dmm_config(config)).state
    rows[MERGE_ONLY] = state_accuracies(model, merged, tests)
    if len(set(dmm.report.clusters)) == len(updates):  # every client its own cluster already
        rows[NO_CLUSTERING] = rows[DMM]
    else:
        out = timed(NO_CLUSTERING, lambda: run_dmm(config, base, updates, say,
                                                   num_clusters=len(updates)))
        rows[NO_CLUSTERING] = state_accuracies(model, out.state, tests)
    for name, changes in ABLATIONS.items():
        out = timed(name, lambda changes=changes: run_dmm(config, base, updates, say, **changes))
        rows[name] = state_accuracies(model, out.state, tests)
    rows[ENSEMBLE] = ensemble_accuracies(model, [t.state for t in dmm.teachers], tests)
    if pooled:
        state = timed(POOLED, lambda: pooled_state(config, len(updates)))
        rows[POOLED] = state_accuracies(model, state, tests)
    return MethodResults(rows, clients, seconds, dmm)


def budget_sweep(
    config: RunConfig,
    base: StateDict,
    updates: Sequence[ClientUpdate],
    tests: TestSets,
    budgets: Sequence[tuple[int, int]],
    say: Progress,
) -> list[dict[str, Any]]:
    """DMM's accuracy per synthesis budget ``(samples per teacher, steps)``."""
    points = []
    for samples, steps in budgets:
        tick = time.perf_counter()
        out = run_dmm(config, base, updates, say, pseudo_samples_per_teacher=samples,
                      synthesis_steps=steps)
        accs = state_accuracies(config.new_model, out.state, tests)
        points.append({"samples": samples, "steps": steps, "accuracy": accs,
                       "seconds": time.perf_counter() - tick})
        say(f"budget {samples} x {steps}: {accs}")
    return points

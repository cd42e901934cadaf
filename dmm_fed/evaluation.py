"""Held-out evaluation of the global model and of the baselines DMM is compared with."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch
import torch.nn.functional as F

from dmm_fed.dmm import ClientUpdate, DMMOutput
from dmm_fed.layout import StateDict, StateLayout
from dmm_fed.merging import merge_states
from dmm_fed.models import ModelFactory
from dmm_fed.training import evaluate, predict_logits

TestSets = Mapping[str, tuple[torch.Tensor, torch.Tensor]]


def domain_accuracies(model: torch.nn.Module, test_sets: TestSets) -> dict[str, float]:
    """Accuracy of ``model`` on each domain's test split."""
    return {d: evaluate(model, x, y)[1] for d, (x, y) in test_sets.items()}


def state_accuracies(
    model_factory: ModelFactory, state: StateDict, test_sets: TestSets
) -> dict[str, float]:
    """:func:`domain_accuracies` of a state dict."""
    model = model_factory()
    model.load_state_dict(state)
    return domain_accuracies(model, test_sets)


def ensemble_accuracies(
    model_factory: ModelFactory, states: Sequence[StateDict], test_sets: TestSets
) -> dict[str, float]:
    """Accuracy of the mean softmax output of several models (an output ensemble)."""
    models = []
    for state in states:
        model = model_factory()
        model.load_state_dict(state)
        models.append(model)
    accs = {}
    for domain, (x, y) in test_sets.items():
        probs = torch.stack([F.softmax(predict_logits(m, x), dim=1) for m in models]).mean(0)
        accs[domain] = (probs.argmax(1) == y).float().mean().item()
    return accs


def baseline_accuracies(
    model_factory: ModelFactory,
    base: StateDict,
    updates: Sequence[ClientUpdate],
    dmm: DMMOutput,
    test_sets: TestSets,
    progress: Callable[[str], None] | None = None,
    dmm_accuracy: Mapping[str, float] | None = None,
) -> dict[str, dict[str, float]]:
    """Per-domain accuracy of each client's model, FedAvg of those same models (one-shot FedAvg
    when there is one round), the teachers' output ensemble, and DMM (``dmm_accuracy`` when the
    caller has already evaluated ``dmm.state``)."""
    say = progress or (lambda _msg: None)
    rows = {}
    for i, u in enumerate(updates):
        say(f"evaluating client {i + 1}/{len(updates)}")
        rows[f"client {u.name or i}"] = state_accuracies(model_factory, u.state, test_sets)
    say("evaluating FedAvg of the same clients, the teachers' ensemble and DMM")
    layout = StateLayout.from_model(model_factory())
    fedavg = merge_states(base, [u.state for u in updates],
                          [float(u.num_examples) for u in updates], layout, "fedavg",
                          bn_mode="average")
    rows["fedavg (same clients)"] = state_accuracies(model_factory, fedavg, test_sets)
    rows["teacher ensemble"] = ensemble_accuracies(
        model_factory, [t.state for t in dmm.teachers], test_sets
    )
    rows["dmm"] = dict(dmm_accuracy or state_accuracies(model_factory, dmm.state, test_sets))
    return rows

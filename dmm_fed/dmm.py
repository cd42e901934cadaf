"""DMM on the server: group similar models, merge each group, distil the divergent ones back in.

Steps 2 and 3 of DMM (data-free model merging of divergent models, ICASSP 2026):

2. task vectors ``tau_i = theta_i - theta_global`` -> cosine similarity (optionally minus a
   BN-statistics distance) -> agglomerative clustering -> one merge per cluster
   (:func:`dmm_fed.merging.merge_states`);
3. the student is the merge of the largest cluster (or of every model); each teacher (every
   cluster merge, or every model outside the student's cluster, plus the student's own cluster
   merge) gets pseudo-data synthesised from its normalization statistics
   (:mod:`dmm_fed.synthesis`), and the student is distilled on it (:mod:`dmm_fed.distillation`).

:func:`dmm_merge` is the whole server step as one function: state dicts in, state dict out.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from dmm_fed.distillation import DistillConfig, distill, reestimate_bn, teacher_targets
from dmm_fed.inputs import input_layout
from dmm_fed.layout import StateDict, StateLayout
from dmm_fed.merging import merge_states
from dmm_fed.similarity import (
    bn_statistics_distance,
    cluster_models,
    combined_similarity,
    cosine_similarity_matrix,
    flatten_task_vectors,
)
from dmm_fed.statistics import NormTarget, merge_targets, running_stat_targets
from dmm_fed.synthesis import SynthesisConfig, noise_inputs, sample_labels, synthesize

STUDENT_INITS: tuple[str, ...] = ("largest", "all")
TEACHER_MODES: tuple[str, ...] = ("clusters", "models")
PSEUDO_INPUTS: tuple[str, ...] = ("synthesized", "noise")


@dataclass(frozen=True)
class DMMConfig:
    """Every DMM knob (the run-config keys of the same name, kebab-cased)."""

    merge_method: str = "fedavg"
    merge_scale: float = 0.0  # 0: automatic (1/n for summing methods, 1 for TIES)
    ties_density: float = 0.2
    dare_drop_rate: float = 0.5
    dare_combine: str = "linear"
    bn_merge: str = "mixture"
    similarity_threshold: float = 0.65
    num_clusters: int = 0  # > 0 overrides the threshold
    bn_similarity_weight: float = 0.0
    student_init: str = "all"
    teachers: str = "clusters"
    pseudo_inputs: str = "synthesized"  # "noise": distil on clamped Gaussian noise (an ablation)
    synthesis: SynthesisConfig = field(default_factory=SynthesisConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    reestimate_bn: bool = False
    support_confidence: float = 0.9
    seed: int = 0


@dataclass(frozen=True)
class ClientUpdate:
    """What one client uploaded: weights (with BN buffers), its example count, optional stats."""

    state: StateDict
    num_examples: int
    label_counts: Sequence[int] | None = None
    activation_stats: Mapping[str, NormTarget] = field(default_factory=dict)
    name: str = ""


@dataclass(frozen=True)
class Teacher:
    """A frozen model to distil from, and the clients whose knowledge it carries."""

    state: StateDict
    members: tuple[int, ...]
    label_counts: Sequence[int] | None
    activation_stats: Mapping[str, NormTarget]


@dataclass
class DMMReport:
    """What one DMM step did, for logs and ``results.json``."""

    clusters: list[int]
    similarity: list[list[float]]
    student_cluster: int
    teachers: list[list[int]] = field(default_factory=list)
    class_support: list[list[int]] = field(default_factory=list)
    synthesis_bn_loss_start: list[float] = field(default_factory=list)
    synthesis_bn_loss: list[float] = field(default_factory=list)
    distill_loss_start: float = float("nan")
    distill_loss: float = float("nan")
    seconds: dict[str, float] = field(default_factory=dict)
    skipped: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class DMMOutput:
    """The refined global model, the teachers it learnt from, their pseudo-data, the report."""

    state: StateDict
    teachers: list[Teacher]
    report: DMMReport
    pseudo_data: list[torch.Tensor] = field(default_factory=list)


def _merge_hparams(config: DMMConfig, n: int) -> dict[str, Any]:
    summing = config.merge_method == "task-arithmetic" or (
        config.merge_method == "dare" and config.dare_combine == "linear"
    )
    scale = config.merge_scale or (1.0 / n if summing else 1.0)
    if config.merge_method == "fedavg":
        return {"bn_mode": config.bn_merge}
    if config.merge_method == "task-arithmetic":
        return {"scale": scale, "bn_mode": config.bn_merge}
    if config.merge_method == "ties":
        return {"scale": scale, "density": config.ties_density, "bn_mode": config.bn_merge}
    return {
        "scale": scale, "density": config.ties_density, "drop_rate": config.dare_drop_rate,
        "combine": config.dare_combine, "seed": config.seed, "bn_mode": config.bn_merge,
    }


def merge_group(
    base: StateDict,
    updates: Sequence[ClientUpdate],
    members: Sequence[int],
    layout: StateLayout,
    config: DMMConfig,
) -> Teacher:
    """Merge the clients ``members`` with the configured method (weights: example counts)."""
    group = [updates[i] for i in members]
    weights = [float(u.num_examples) for u in group]
    state = merge_states(
        base, [u.state for u in group], weights, layout, config.merge_method,
        **_merge_hparams(config, len(group)),
    )
    counts = None
    if all(u.label_counts is not None for u in group):
        counts = [sum(c) for c in zip(*(u.label_counts for u in group), strict=True)]
    acts = {}
    if all(u.activation_stats for u in group):
        acts = merge_targets([u.activation_stats for u in group], weights)
    return Teacher(state, tuple(members), counts, acts)


def similarity_matrix(
    base: StateDict, updates: Sequence[ClientUpdate], layout: StateLayout, bn_weight: float
) -> torch.Tensor:
    """Cosine similarity of task vectors, optionally minus a scaled BN-statistics distance."""
    states = [u.state for u in updates]
    sim = cosine_similarity_matrix(flatten_task_vectors(states, base, layout.params))
    if bn_weight > 0 and layout.bn_layers:
        sim = combined_similarity(sim, bn_statistics_distance(states, layout), bn_weight)
    return sim


def infer_class_support(
    teacher: nn.Module,
    targets: Mapping[str, NormTarget],
    config: DMMConfig,
    seed: int,
) -> list[int]:
    """Class support without label counts: what the teacher confidently predicts on inputs
    synthesised from its statistics alone (no class term)."""
    probe = SynthesisConfig(**{**asdict(config.synthesis), "ce_weight": 0.0, "log_every": 0,
                               "steps": max(config.synthesis.steps // 2, 1)})
    labels = torch.zeros(config.synthesis.num_samples, dtype=torch.long)
    x = synthesize(teacher, targets, labels, probe, seed).x
    with torch.no_grad():
        probs = F.softmax(teacher(x), dim=1)
    confident = probs.max(1).values >= config.support_confidence
    preds = probs.argmax(1)[confident] if confident.any() else probs.argmax(1)
    return torch.bincount(preds, minlength=probs.shape[1]).tolist()


def dmm_merge(
    base: StateDict,
    updates: Sequence[ClientUpdate],
    model_factory: Callable[[], nn.Module],
    config: DMMConfig,
    progress: Callable[[str], None] | None = None,
) -> DMMOutput:
    """The DMM server step; returns the refined student as the new global state dict."""
    if not updates:
        raise ValueError("DMM needs at least one client update")
    say = progress or (lambda _msg: None)
    seconds: dict[str, float] = {}
    tick = time.perf_counter()
    layout = StateLayout.from_model(model_factory())

    sim = similarity_matrix(base, updates, layout, config.bn_similarity_weight)
    if config.num_clusters > 0:
        labels = cluster_models(sim, num_clusters=min(config.num_clusters, len(updates)))
    else:
        labels = cluster_models(sim, threshold=config.similarity_threshold)
    groups = [[i for i, c in enumerate(labels) if c == k] for k in range(max(labels) + 1)]
    sizes = [sum(updates[i].num_examples for i in g) for g in groups]
    student_cluster = max(range(len(groups)), key=lambda k: sizes[k])
    seconds["similarity"] = time.perf_counter() - tick
    say(f"clusters {labels} (student: cluster {student_cluster})")

    tick = time.perf_counter()
    merges = [merge_group(base, updates, g, layout, config) for g in groups]
    if config.student_init == "all":
        student_state = merge_group(base, updates, range(len(updates)), layout, config).state
    else:
        student_state = merges[student_cluster].state
    if config.teachers == "clusters":
        teachers = merges
    else:
        outside = [i for i in range(len(updates)) if labels[i] != student_cluster]
        teachers = [merges[student_cluster]] + [
            merge_group(base, updates, [i], layout, config) for i in outside
        ]
    seconds["merge"] = time.perf_counter() - tick
    report = DMMReport(labels, sim.tolist(), student_cluster,
                       teachers=[list(t.members) for t in teachers])

    if len(groups) == 1:
        report.skipped = "one cluster: the merge is the only teacher, nothing to distil"
        report.seconds = seconds
        return DMMOutput(student_state, teachers, report)

    tick = time.perf_counter()
    teacher_models, pseudo = [], []
    generator = torch.Generator().manual_seed(config.seed)
    for i, teacher in enumerate(teachers):
        model = model_factory()
        model.load_state_dict(teacher.state)
        model.eval()
        targets = {**running_stat_targets(model), **teacher.activation_stats}
        support = (
            list(teacher.label_counts) if teacher.label_counts is not None
            else infer_class_support(model, targets, config, config.seed + 7919 * i)
        )
        labels_i = sample_labels(support, config.synthesis.num_samples, generator)
        if config.pseudo_inputs == "noise":
            result = noise_inputs(labels_i, config.seed + 104_729 * i, input_layout(model))
        else:
            result = synthesize(model, targets, labels_i, config.synthesis,
                                config.seed + 104_729 * i,
                                progress=lambda m, i=i: say(f"synthesis teacher {i + 1}/"
                                                             f"{len(teachers)}: {m}"))
        teacher_models.append(model)
        pseudo.append(result.x)
        report.class_support.append([int(c) for c in support])
        report.synthesis_bn_loss_start.append(result.bn_loss_start)
        report.synthesis_bn_loss.append(result.bn_loss)
    seconds["synthesis"] = time.perf_counter() - tick

    tick = time.perf_counter()
    student = model_factory()
    student.load_state_dict(student_state)
    probs = teacher_targets(teacher_models, pseudo, config.distill.temperature)
    x_all = torch.cat(pseudo)
    result = distill(student, x_all, probs, config.distill, config.seed,
                     progress=lambda m: say(f"distillation {m}"))
    if config.reestimate_bn:
        reestimate_bn(student, x_all)
    seconds["distillation"] = time.perf_counter() - tick
    report.distill_loss_start, report.distill_loss = result.loss_start, result.loss_end
    report.seconds = seconds
    return DMMOutput({k: v.detach().clone() for k, v in student.state_dict().items()},
                     teachers, report, pseudo)


"""Typed, validated run configuration.

Flower hands every app a flat ``run_config`` mapping with kebab-case keys (from
``[tool.flwr.app.config]`` in ``pyproject.toml`` plus ``--run-config`` overrides). This module turns
it into a frozen :class:`RunConfig`, failing at start with the list of valid values when a key or a
choice is unknown. The defaults below equal the ``pyproject.toml`` table (checked by a test), so a
``ServerApp``/``ClientApp`` started without that table (``run_simulation``, deployment) behaves
the same.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from torch import nn

from dmm_fed.data import DOMAINS, check_label_space, num_classes
from dmm_fed.data.domains import TEXT_DOMAINS
from dmm_fed.dmm import PSEUDO_INPUTS, STUDENT_INITS, TEACHER_MODES
from dmm_fed.merging import BN_MODES, COMBINES, MERGE_METHODS
from dmm_fed.models import MODELS, TEXT_MODELS, build_model

STRATEGIES: tuple[str, ...] = ("dmm", "fedavg")
OPTIMIZERS: tuple[str, ...] = ("sgd", "adam")


@dataclass(frozen=True)
class RunConfig:
    """All run settings; the field ``foo_bar`` is the Flower key ``foo-bar``."""

    strategy: str = "dmm"
    num_server_rounds: int = 1
    round_timeout: float = 1800.0
    min_nodes: int = 2
    node_wait_timeout: float = 120.0
    seed: int = 0
    data_root: str = ""
    output_dir: str = ""
    resume: bool = False
    domains: str = "mnist,optdigits,mnistm,synthdigits"
    dirichlet_alpha: float = 0.0
    max_train_per_client: int = 2000
    max_test_per_domain: int = 0
    model: str = "cnn"
    local_epochs: int = 3
    batch_size: int = 64
    optimizer: str = "sgd"
    learning_rate: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 0.0005
    num_threads: int = 1
    server_threads: int = 0
    fraction_evaluate: float = 1.0
    norm_outlier_factor: float = 10.0
    # --- DMM (strategy = "dmm"); see dmm_fed/dmm.py ---
    share_label_counts: bool = True
    statistics_noise: float = 0.0
    merge_method: str = "fedavg"
    merge_scale: float = 0.0
    ties_density: float = 0.2
    dare_drop_rate: float = 0.5
    dare_combine: str = "linear"
    bn_merge: str = "mixture"
    similarity_threshold: float = 0.65
    num_clusters: int = 0
    bn_similarity_weight: float = 0.0
    student_init: str = "all"
    teachers: str = "clusters"
    pseudo_inputs: str = "synthesized"
    pseudo_samples_per_teacher: int = 128
    synthesis_steps: int = 200
    synthesis_lr: float = 0.1
    bn_loss_weight: float = 1.0
    bn_first_layer_weight: float = 1.0
    ce_loss_weight: float = 1.0
    tv_loss_weight: float = 0.01
    l2_loss_weight: float = 0.0
    jitter: int = 2
    flip: bool = False
    distill_steps: int = 400
    distill_lr: float = 0.0001
    distill_batch_size: int = 128
    temperature: float = 4.0
    reestimate_bn: bool = False
    report_baselines: bool = True

    @property
    def domain_list(self) -> tuple[str, ...]:
        """The ``domains`` key split on commas."""
        return tuple(d.strip() for d in self.domains.split(",") if d.strip())

    @property
    def num_classes(self) -> int:
        """Classes of the label space that ``domains`` share."""
        return num_classes(self.domain_list)

    def new_model(self, seed: int | None = None) -> nn.Module:
        """A fresh model of this config (``seed`` fixes its initial weights); pass the bound
        method where a ``ModelFactory`` is expected."""
        return build_model(self.model, self.num_classes, seed=seed)

    @property
    def uses_text(self) -> bool:
        """The model reads image+text rows (see :mod:`dmm_fed.inputs`)."""
        return self.model in TEXT_MODELS

    def to_flower(self) -> dict[str, Any]:
        """The config as a kebab-case mapping (what Flower and ``results.json`` hold)."""
        return {_key(f.name): getattr(self, f.name) for f in fields(self)}

    def replace(self, **changes: Any) -> RunConfig:
        """A copy with some fields changed (snake_case names), validated again."""
        new = dataclasses.replace(self, **changes)
        new.validate()
        return new

    def validate(self) -> None:
        """Raise ``ValueError`` naming the bad key and the valid values."""
        _choice("strategy", self.strategy, STRATEGIES)
        _choice("model", self.model, MODELS)
        _choice("optimizer", self.optimizer, OPTIMIZERS)
        _choice("merge-method", self.merge_method, MERGE_METHODS)
        _choice("dare-combine", self.dare_combine, COMBINES)
        _choice("bn-merge", self.bn_merge, BN_MODES)
        _choice("student-init", self.student_init, STUDENT_INITS)
        _choice("teachers", self.teachers, TEACHER_MODES)
        _choice("pseudo-inputs", self.pseudo_inputs, PSEUDO_INPUTS)
        if self.resume and not self.output_dir:
            raise ValueError("'resume' needs 'output-dir': the directory whose checkpoint.pt "
                             "to continue from")
        if not self.domain_list:
            raise ValueError(f"'domains' is empty; choose from {', '.join(DOMAINS)}")
        for domain in self.domain_list:
            _choice("domains", domain, DOMAINS)
        if len(set(self.domain_list)) != len(self.domain_list):
            raise ValueError(f"'domains' lists a domain twice: {self.domains!r}")
        check_label_space(self.domain_list)
        if self.uses_text and not TEXT_DOMAINS.issuperset(self.domain_list):
            raise ValueError(f"model {self.model!r} reads text, which only the domains "
                             f"{', '.join(sorted(TEXT_DOMAINS))} have; got {self.domains!r}")
        positive = ("num_server_rounds", "min_nodes", "local_epochs", "batch_size", "num_threads",
                    "pseudo_samples_per_teacher", "distill_batch_size")
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"'{_key(name)}' must be >= 1, got {getattr(self, name)}")
        for name in ("round_timeout", "node_wait_timeout", "learning_rate", "synthesis_lr",
                     "distill_lr", "temperature"):
            if getattr(self, name) <= 0:
                raise ValueError(f"'{_key(name)}' must be > 0, got {getattr(self, name)}")
        for name in ("dirichlet_alpha", "max_train_per_client", "max_test_per_domain",
                     "momentum", "weight_decay", "server_threads", "norm_outlier_factor",
                     "statistics_noise",
                     "merge_scale", "num_clusters",
                     "bn_similarity_weight", "synthesis_steps", "bn_loss_weight",
                     "bn_first_layer_weight", "ce_loss_weight", "tv_loss_weight",
                     "l2_loss_weight", "jitter", "distill_steps"):
            if getattr(self, name) < 0:
                raise ValueError(f"'{_key(name)}' must be >= 0, got {getattr(self, name)}")
        if not 0.0 < self.ties_density <= 1.0:
            raise ValueError(f"'ties-density' must be in (0, 1], got {self.ties_density}")
        if not 0.0 <= self.dare_drop_rate < 1.0:
            raise ValueError(f"'dare-drop-rate' must be in [0, 1), got {self.dare_drop_rate}")
        if not 0.0 <= self.fraction_evaluate <= 1.0:
            raise ValueError(f"'fraction-evaluate' must be in [0, 1], got {self.fraction_evaluate}")


def _key(name: str) -> str:
    return name.replace("_", "-")


def _choice(key: str, value: str, valid: tuple[str, ...]) -> None:
    if value not in valid:
        raise ValueError(f"Unknown {key} {value!r}; valid values: {', '.join(valid)}")


def _coerce(name: str, value: Any, default: Any) -> Any:
    """Cast a Flower config value to the type of the field's default."""
    kind = type(default)
    if kind is bool:
        if isinstance(value, bool):
            return value
        raise ValueError(f"'{_key(name)}' must be true or false, got {value!r}")
    if kind is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if kind is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if kind is str and isinstance(value, str):
        return value
    article = "an" if kind is int else "a"
    raise ValueError(f"'{_key(name)}' must be {article} {kind.__name__}, got {value!r}")


def parse_run_config(
    run_config: Mapping[str, Any], overrides: Mapping[str, Any] | None = None
) -> RunConfig:
    """Build a validated :class:`RunConfig` from Flower's ``run_config`` (kebab-case keys).

    Keys missing from ``run_config`` take the defaults; ``overrides`` (also kebab-case) win over
    both. Unknown keys raise ``ValueError`` listing the valid keys.
    """
    merged = {**dict(run_config), **dict(overrides or {})}
    defaults = RunConfig()
    by_key = {_key(f.name): f.name for f in fields(RunConfig)}
    unknown = sorted(set(merged) - set(by_key))
    if unknown:
        raise ValueError(
            f"Unknown config key(s) {', '.join(unknown)}; valid keys: {', '.join(sorted(by_key))}"
        )
    values = {
        by_key[k]: _coerce(by_key[k], v, getattr(defaults, by_key[k])) for k, v in merged.items()
    }
    config = RunConfig(**values)
    config.validate()
    return config

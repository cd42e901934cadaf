"""Strategy registry: the ``strategy`` run-config key picks one of these."""

from __future__ import annotations

from pathlib import Path

from dmm_fed.config import RunConfig
from dmm_fed.distillation import DistillConfig
from dmm_fed.dmm import DMMConfig
from dmm_fed.synthesis import SynthesisConfig
from server.dmm_strategy import DMMStrategy
from server.screened import ScreenedFedAvg


def dmm_config(config: RunConfig) -> DMMConfig:
    """The DMM knobs of a run config."""
    return DMMConfig(
        merge_method=config.merge_method,
        merge_scale=config.merge_scale,
        ties_density=config.ties_density,
        dare_drop_rate=config.dare_drop_rate,
        dare_combine=config.dare_combine,
        bn_merge=config.bn_merge,
        similarity_threshold=config.similarity_threshold,
        num_clusters=config.num_clusters,
        bn_similarity_weight=config.bn_similarity_weight,
        student_init=config.student_init,
        teachers=config.teachers,
        pseudo_inputs=config.pseudo_inputs,
        synthesis=SynthesisConfig(
            num_samples=config.pseudo_samples_per_teacher,
            steps=config.synthesis_steps,
            lr=config.synthesis_lr,
            bn_weight=config.bn_loss_weight,
            first_layer_weight=config.bn_first_layer_weight,
            ce_weight=config.ce_loss_weight,
            tv_weight=config.tv_loss_weight,
            l2_weight=config.l2_loss_weight,
            jitter=config.jitter,
            flip=config.flip,
        ),
        distill=DistillConfig(
            steps=config.distill_steps,
            lr=config.distill_lr,
            temperature=config.temperature,
            batch_size=config.distill_batch_size,
        ),
        reestimate_bn=config.reestimate_bn,
        seed=config.seed,
    )


def build_strategy(config: RunConfig, artifact_dir: Path | None = None) -> ScreenedFedAvg:
    """The strategy named by ``config.strategy`` (validated by :mod:`dmm_fed.config`)."""
    sampling = {
        "fraction_train": 1.0,
        "fraction_evaluate": config.fraction_evaluate,
        "min_train_nodes": config.min_nodes,
        "min_evaluate_nodes": config.min_nodes if config.fraction_evaluate > 0 else 0,
        "min_available_nodes": config.min_nodes,
        "norm_factor": config.norm_outlier_factor,
        "num_classes": config.num_classes,
    }
    if config.strategy == "fedavg":
        return ScreenedFedAvg(**sampling)
    if config.strategy == "dmm":
        return DMMStrategy(
            model_factory=config.new_model,
            dmm=dmm_config(config),
            artifact_dir=artifact_dir,
            require_statistics=True,  # this project's ClientApp always sends them when asked
            **sampling,
        )
    raise ValueError(f"Unknown strategy {config.strategy!r}")

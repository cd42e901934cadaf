"""Distil teachers into the student on pseudo-data (Hinton et al. 2015; the DMM refinement step).

Each pseudo-sample is labelled by the soft output of the teacher whose statistics produced it;
the student minimises ``T^2 * KL(p_teacher(y|x; T) || p_student(y|x; T))``. The student's
BatchNorm layers use their (merged) running statistics throughout; they can be re-estimated on
the pseudo-data afterwards with :func:`reestimate_bn`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from dmm_fed.statistics import has_running_stats
from dmm_fed.training import predict_logits


@dataclass(frozen=True)
class DistillConfig:
    """Budget and optimiser of the refinement."""

    steps: int = 400
    lr: float = 1e-4
    temperature: float = 4.0
    batch_size: int = 128
    log_every: int = 100


@dataclass(frozen=True)
class DistillResult:
    """Losses at the start and the end of the refinement."""

    loss_start: float
    loss_end: float
    seconds: float


def kd_loss(student_logits: torch.Tensor, teacher_probs: torch.Tensor, t: float) -> torch.Tensor:
    """``t^2 * KL(teacher || student)`` at temperature ``t``, mean over the batch."""
    log_student = F.log_softmax(student_logits / t, dim=1)
    return F.kl_div(log_student, teacher_probs, reduction="batchmean") * t * t


def teacher_targets(
    teachers: Sequence[nn.Module], inputs: Sequence[torch.Tensor], t: float
) -> torch.Tensor:
    """Soft labels: ``softmax(teacher_i(x) / t)`` for the pseudo-data ``inputs[i]`` of teacher i."""
    return torch.cat(
        [F.softmax(predict_logits(m, x) / t, dim=1) for m, x in zip(teachers, inputs, strict=True)]
    )


def distill(
    student: nn.Module,
    x: torch.Tensor,
    teacher_probs: torch.Tensor,
    config: DistillConfig,
    seed: int,
    progress: Callable[[str], None] | None = None,
) -> DistillResult:
    """Train ``student`` in place on ``(x, teacher_probs)`` for ``config.steps`` Adam steps."""
    if len(x) == 0:
        raise ValueError("no pseudo-data to distil on")
    start = time.perf_counter()
    generator = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(student.parameters(), lr=config.lr)
    student.eval()  # keep the merged BatchNorm statistics; gradients still reach every weight
    first = last = float("nan")
    for step in range(config.steps):
        idx = torch.randint(len(x), (min(config.batch_size, len(x)),), generator=generator)
        loss = kd_loss(student(x[idx]), teacher_probs[idx], config.temperature)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        last = loss.item()
        if step == 0:
            first = last
        if progress and config.log_every and (step + 1) % config.log_every == 0:
            progress(f"step {step + 1}/{config.steps}: kd loss {last:.4f}")
    return DistillResult(first, last, time.perf_counter() - start)


@torch.no_grad()
def reestimate_bn(model: nn.Module, x: torch.Tensor, batch_size: int = 256) -> None:
    """Replace every BatchNorm layer's running statistics by their average over batches of ``x``."""
    bns = [m for m in model.modules() if has_running_stats(m)]
    saved = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the batches below
    model.train()
    for start in range(0, len(x), batch_size):
        model(x[start : start + batch_size])
    for m, momentum in zip(bns, saved, strict=True):
        m.momentum = momentum
    model.eval()

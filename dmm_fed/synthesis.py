"""Pseudo-data from normalization statistics (DeepInversion, Yin et al., CVPR 2020).

A batch of inputs starts from noise and is optimised with Adam, the teacher frozen in eval mode,
so that the batch statistics at every norm layer's input match the stored ones:

    L = w_bn * sum_l a_l (||mu_l(x) - mu_l||_2 + ||var_l(x) - var_l||_2)
        + w_ce * CE(teacher(x), y) + w_tv * TV(x) + w_l2 * ||x||^2

with ``a_0 = first_layer_weight`` and ``a_l = 1`` otherwise, ``y`` drawn from the teacher's class
support, a random roll jitter (and optional flip) each step, and the pixels clamped to the data
range after each step. The batch with the lowest loss is kept.

Image+text teachers (:mod:`dmm_fed.inputs`) get pseudo-embeddings optimised jointly with the
images through the fused classifier: the same loss, where the BN terms of the text tower's
BatchNorm1d layers constrain the embeddings; jitter, flip and TV act on the image part only, and
after each step the embeddings are projected back onto the unit sphere (real embeddings are
normalised) as the pixels are clamped.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from dmm_fed.inputs import IMAGE_ONLY, InputLayout, input_layout
from dmm_fed.statistics import NormTarget, capture_norm_inputs, norm_layers


@dataclass(frozen=True)
class SynthesisConfig:
    """Budgets and loss weights; defaults from DeepInversion scaled to 28x28 digits."""

    num_samples: int = 128
    steps: int = 200
    lr: float = 0.1
    bn_weight: float = 1.0
    first_layer_weight: float = 1.0
    ce_weight: float = 1.0
    tv_weight: float = 1e-2
    l2_weight: float = 0.0
    jitter: int = 2
    flip: bool = False
    log_every: int = 50


@dataclass(frozen=True)
class SynthesisResult:
    """The pseudo-data of one teacher and how well it matches the teacher's statistics."""

    x: torch.Tensor
    y: torch.Tensor
    bn_loss_start: float
    bn_loss: float
    total_loss: float
    seconds: float


def bn_statistics_loss(
    captured: Mapping[str, tuple[torch.Tensor, torch.Tensor]],
    targets: Mapping[str, NormTarget],
    first_layer_weight: float = 1.0,
) -> torch.Tensor:
    """``sum_l a_l (||mu_l - mu_l*||_2 + ||var_l - var_l*||_2)`` over the layers in ``targets``.

    Layers are taken in the order of ``targets`` (model order); the first one is weighted by
    ``first_layer_weight``.
    """
    terms = []
    for i, (name, target) in enumerate(targets.items()):
        mean, var = captured[name]
        term = torch.linalg.vector_norm(mean - target.mean) + torch.linalg.vector_norm(
            var - target.var
        )
        terms.append(term * (first_layer_weight if i == 0 else 1.0))
    return torch.stack(terms).sum()


def total_variation(x: torch.Tensor) -> torch.Tensor:
    """Mean squared difference between neighbouring pixels (an L2 total-variation prior)."""
    dh = (x[..., 1:, :] - x[..., :-1, :]).pow(2).mean()
    dw = (x[..., :, 1:] - x[..., :, :-1]).pow(2).mean()
    return dh + dw


def sample_labels(
    class_weights: Sequence[float], n: int, generator: torch.Generator, min_share: float = 0.01
) -> torch.Tensor:
    """``n`` labels spread evenly over the classes holding >= ``min_share`` of the weight.

    Balanced over the support (not proportional to it) so that a teacher's rare classes get
    pseudo-data too.
    """
    w = torch.as_tensor(class_weights, dtype=torch.float64)
    if w.sum() <= 0:
        raise ValueError("class weights are all zero: the teacher has no class support")
    support = torch.nonzero(w / w.sum() >= min_share).flatten()
    labels = support.repeat(n // len(support) + 1)[:n]
    return labels[torch.randperm(n, generator=generator)]


def _augment(
    x: torch.Tensor, config: SynthesisConfig, generator: torch.Generator, layout: InputLayout
) -> torch.Tensor:
    x, text = layout.split(x)
    if config.jitter:
        dx, dy = torch.randint(-config.jitter, config.jitter + 1, (2,), generator=generator)
        x = torch.roll(x, shifts=(int(dx), int(dy)), dims=(2, 3))
    if config.flip and torch.rand((), generator=generator) < 0.5:
        x = torch.flip(x, dims=(3,))
    return layout.pack(x, text)


def noise_inputs(
    labels: torch.Tensor, seed: int, layout: InputLayout = IMAGE_ONLY
) -> SynthesisResult:
    """Noise shaped like synthesised pseudo-data (clamped Gaussian images, random unit
    embeddings): the "distil on noise" ablation, which shows how much the synthesis carries."""
    x = layout.noise(len(labels), torch.Generator().manual_seed(seed))
    return SynthesisResult(x, labels, math.nan, math.nan, math.nan, 0.0)


def synthesize(
    teacher: nn.Module,
    targets: Mapping[str, NormTarget],
    labels: torch.Tensor,
    config: SynthesisConfig,
    seed: int,
    progress: Callable[[str], None] | None = None,
) -> SynthesisResult:
    """Optimise ``len(labels)`` inputs so the teacher's norm-layer statistics match ``targets``.

    ``targets`` maps norm-layer names of ``teacher`` to the statistics to match: BatchNorm running
    stats and, for layers without them, the client-measured activation statistics.
    """
    layers = norm_layers(teacher)
    missing = set(targets) - set(layers)
    if missing:
        raise ValueError(f"targets name layers the teacher does not have: {sorted(missing)}")
    ordered = {name: targets[name] for name in layers if name in targets}
    if not ordered:
        raise ValueError("no normalization statistics to match: the teacher has no norm layers")
    start = time.perf_counter()
    generator = torch.Generator().manual_seed(seed)
    teacher.eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    layout = input_layout(teacher)
    images, text = layout.split(layout.noise(len(labels), generator))
    images = images.clone().requires_grad_(True)
    groups = [{"params": [images], "lr": config.lr}]
    if text is not None:  # unit vectors: coordinates ~ 1/sqrt(d), so steps scaled alike
        text = text.clone().requires_grad_(True)
        groups.append({"params": [text], "lr": config.lr / math.sqrt(layout.text_dim)})
    opt = torch.optim.Adam(groups, betas=(0.5, 0.9))
    x = layout.pack(images, text)
    best_loss, best_x, bn_start, best_bn = float("inf"), x.detach().clone(), float("nan"), 0.0
    with capture_norm_inputs({n: layers[n] for n in ordered}) as captured:
        for step in range(config.steps + 1):
            x = layout.pack(images, text)
            logits = teacher(_augment(x, config, generator, layout))
            bn = bn_statistics_loss(captured, ordered, config.first_layer_weight)
            loss = (
                config.bn_weight * bn
                + config.ce_weight * F.cross_entropy(logits, labels)
                + config.tv_weight * total_variation(images)
                + config.l2_weight * x.pow(2).mean()
            )
            if step == 0:
                bn_start = bn.item()
            if loss.item() < best_loss:
                best_loss, best_x, best_bn = loss.item(), x.detach().clone(), bn.item()
            if progress and config.log_every and step % config.log_every == 0:
                progress(f"step {step}/{config.steps}: loss {loss.item():.4f} bn {bn.item():.4f}")
            if step == config.steps:
                break
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            layout.project_parts_(images, text)
    for p in teacher.parameters():
        p.requires_grad_(True)
    return SynthesisResult(
        best_x, labels, bn_start, best_bn, best_loss, time.perf_counter() - start
    )

"""How a model's input tensor is laid out: an image, optionally followed by a text embedding.

Image-only models take ``(N, 3, 28, 28)`` images. Image+text models take packed rows
``(N, 3*28*28 + text_dim)``: the flattened image, then the embedding. Packing keeps one tensor
per batch, so training, evaluation, statistics and distillation need no change; only synthesis
looks inside, to apply the image priors (jitter, total variation, the pixel range) to the image
part and to keep pseudo-embeddings on the unit sphere where real (normalised) embeddings lie.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from dmm_fed.data import DATA_RANGE, IMAGE_SHAPE


@dataclass(frozen=True)
class InputLayout:
    """The image shape and the width of the text embedding after it (0: image only)."""

    image_shape: tuple[int, int, int] = IMAGE_SHAPE
    text_dim: int = 0

    @property
    def image_size(self) -> int:
        return math.prod(self.image_shape)

    def split(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(images (N, C, H, W), embeddings (N, text_dim) or None)``; views of ``x``."""
        if not self.text_dim:
            return x, None
        return x[:, : self.image_size].reshape(-1, *self.image_shape), x[:, self.image_size :]

    def pack(self, images: torch.Tensor, text: torch.Tensor | None) -> torch.Tensor:
        """The inverse of :meth:`split`."""
        return images if text is None else torch.cat([images.flatten(1), text], dim=1)

    def noise(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """Clamped Gaussian images and, with text, random unit-norm embeddings."""
        images = torch.randn((n, *self.image_shape), generator=generator).clamp_(*DATA_RANGE)
        if not self.text_dim:
            return images
        text = torch.randn((n, self.text_dim), generator=generator)
        return self.pack(images, nn.functional.normalize(text, dim=1))

    def project_(self, x: torch.Tensor) -> torch.Tensor:
        """In place: pixels back into ``DATA_RANGE``, embeddings back onto the unit sphere."""
        self.project_parts_(*self.split(x))
        return x

    @staticmethod
    @torch.no_grad()
    def project_parts_(images: torch.Tensor, text: torch.Tensor | None) -> None:
        """:meth:`project_` on the two parts held apart."""
        images.clamp_(*DATA_RANGE)
        if text is not None:
            text.div_(text.norm(dim=1, keepdim=True).clamp_min(1e-8))


IMAGE_ONLY = InputLayout()


def input_layout(model: nn.Module) -> InputLayout:
    """The layout a model declares (``model.input_layout``), images only by default."""
    return getattr(model, "input_layout", IMAGE_ONLY)

"""Which entries of a model's state dict are parameters, BatchNorm statistics or other buffers.

Merging treats the three kinds differently: parameters are merged by the chosen method, the running
statistics of BatchNorm layers are merged as statistics, and the remaining buffers are copied.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

StateDict = dict[str, torch.Tensor]


@dataclass(frozen=True)
class StateLayout:
    """Names of a model's state-dict entries, grouped by how they are merged.

    ``params`` are the trainable parameters, ``bn_layers`` the module prefixes of the norm layers
    that track running statistics (``running_mean``, ``running_var``, ``num_batches_tracked``) and
    ``other_buffers`` every remaining state-dict key.
    """

    params: tuple[str, ...]
    bn_layers: tuple[str, ...]
    other_buffers: tuple[str, ...]

    @classmethod
    def from_model(cls, model: nn.Module) -> StateLayout:
        """Read the layout of ``model``; BN layers are selected by module type, not by name.

        A layer counts as BN when it is a ``_BatchNorm`` (BatchNorm1d/2d/3d, SyncBatchNorm, their
        lazy variants) with ``track_running_stats``. Tied parameters keep every name they have in
        the state dict, so each name is merged (identically).
        """
        params = tuple(name for name, _ in model.named_parameters(remove_duplicate=False))
        bn_layers = tuple(
            name
            for name, module in model.named_modules(remove_duplicate=False)
            if isinstance(module, _BatchNorm) and module.track_running_stats
        )
        layout = cls(params=params, bn_layers=bn_layers, other_buffers=())
        known = set(params) | set(layout.all_bn_keys())
        other = tuple(key for key in model.state_dict() if key not in known)
        return cls(params=params, bn_layers=bn_layers, other_buffers=other)

    def bn_keys(self, layer: str) -> tuple[str, str, str]:
        """The ``running_mean``, ``running_var`` and ``num_batches_tracked`` keys of ``layer``."""
        prefix = f"{layer}." if layer else ""
        return (
            f"{prefix}running_mean",
            f"{prefix}running_var",
            f"{prefix}num_batches_tracked",
        )

    def all_bn_keys(self) -> tuple[str, ...]:
        """The BN statistic keys of every layer in ``bn_layers``, layer by layer."""
        return tuple(key for layer in self.bn_layers for key in self.bn_keys(layer))

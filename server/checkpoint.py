"""Per-round checkpoints of a run: the global model, the round number and the strategy's state.

``<output-dir>/checkpoint.pt`` is rewritten atomically after every round's evaluation; with
``resume=true`` the ServerApp continues from it (see :mod:`server.app`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from dmm_fed.layout import StateDict

CHECKPOINT_NAME = "checkpoint.pt"


def save_checkpoint(out_dir: Path, server_round: int, state: StateDict,
                    server_evaluate: dict[int, dict[str, Any]],
                    strategy_state: dict[str, Any]) -> Path:
    """Write the checkpoint of ``server_round`` (replacing the previous one)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / CHECKPOINT_NAME
    tmp = path.with_suffix(".tmp")
    torch.save({"round": server_round, "arrays": state, "server-evaluate": server_evaluate,
                "strategy": strategy_state}, tmp)
    tmp.replace(path)
    return path


def load_checkpoint(out_dir: Path) -> dict[str, Any] | None:
    """The last checkpoint under ``out_dir``, or ``None`` when there is none."""
    path = out_dir / CHECKPOINT_NAME
    return torch.load(path, weights_only=False) if path.exists() else None

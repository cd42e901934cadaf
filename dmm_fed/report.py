"""Run outputs people read: accuracy tables, ``results.json``, the output directory."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

DEFAULT_RUNS_DIR = Path("~/.cache/dmm-fed/runs")


def resolve_output_dir(value: str, strategy: str) -> Path:
    """The run's output directory: ``value`` (must be absolute) or a new timestamped default.

    Only resolved here; :func:`write_json` and the checkpoint create it when they write, so a
    run that fails at start leaves nothing behind.

    Relative paths are refused: under ``flwr run`` the ServerApp runs in the SuperLink's working
    directory, not the caller's, so a relative path would land somewhere unexpected.
    """
    if value:
        path = Path(value).expanduser()
        if not path.is_absolute():
            raise ValueError(
                f"output-dir must be an absolute path, got {value!r} (under `flwr run` the "
                "ServerApp does not run in your working directory)"
            )
    else:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        path = DEFAULT_RUNS_DIR.expanduser() / f"{stamp}-{strategy}"
    return path.resolve()


def accuracy_table(rows: Mapping[str, Mapping[str, float]], domains: tuple[str, ...]) -> str:
    """A fixed-width table: one row per model, one column per domain plus the mean (in %)."""
    name_width = max([len("model"), *(len(r) for r in rows)])
    header = f"{'model':<{name_width}} | " + " | ".join(f"{d:>11}" for d in (*domains, "mean"))
    lines = [header, "-" * len(header)]
    for name, accs in rows.items():
        values = [accs.get(d, math.nan) for d in domains]
        cells = [*values, mean_accuracy(accs, domains)]
        lines.append(f"{name:<{name_width}} | " + " | ".join(f"{100 * v:>11.2f}" for v in cells))
    return "\n".join(lines)


def mean_accuracy(accs: Mapping[str, float], domains: tuple[str, ...]) -> float:
    """Unweighted mean over domains (each domain counts the same, whatever its test-set size)."""
    return sum(accs[d] for d in domains) / len(domains)


def write_json(path: Path, payload: Mapping[str, Any]) -> None:
    """Write ``payload`` as indented JSON (NaN written as null), atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(_finite(payload), indent=2) + "\n")
    tmp.replace(path)


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value

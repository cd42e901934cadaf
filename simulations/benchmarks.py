"""Named benchmark federations: a client count and run-config overrides on top of the defaults.

``digits`` is the default ``flwr run`` federation (``num-supernodes=8``, no overrides). The
``fashion-mnist-*`` benchmarks need ``python -m dmm_fed.data.prepare --domains fashion-mnist``,
``emoji`` and ``emoji-mm`` need ``--domains emoji`` (the five domains and their text embeddings).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dmm_fed.config import RunConfig, parse_run_config
from dmm_fed.data import DatasetNotFoundError, load_domain
from dmm_fed.data.emoji import EMOJI_DOMAINS


@dataclass(frozen=True)
class Benchmark:
    """A federation to run every method on."""

    name: str
    description: str
    num_clients: int
    overrides: dict[str, Any] = field(default_factory=dict)

    def config(self, seed: int, extra: dict[str, Any] | None = None) -> RunConfig:
        """The benchmark's run config for ``seed`` (``extra`` kebab-case keys win)."""
        return parse_run_config({}, {**self.overrides, **(extra or {}), "seed": seed})

    def missing_data(self, root: Path) -> str | None:
        """Why this benchmark cannot run from ``root`` (the loader's message), or ``None``."""
        config = self.config(0)
        for domain in config.domain_list:
            try:
                load_domain(domain, "test", root, text=config.uses_text)
            except DatasetNotFoundError as err:
                return str(err)
        return None


# 485 train emoji per client: more local epochs than the digit defaults (3) to fit them
EMOJI = {"domains": ",".join(EMOJI_DOMAINS), "local-epochs": 20}


def _label_skew(domain: str, alpha: float) -> Benchmark:
    return Benchmark(
        f"{domain}-a{alpha:g}",
        f"label skew: {domain}, 10 clients, Dirichlet alpha {alpha:g}",
        10,
        {"domains": domain, "dirichlet-alpha": alpha},
    )


BENCHMARKS: dict[str, Benchmark] = {
    b.name: b
    for b in (
        Benchmark("digits", "domain shift: mnist, optdigits, mnistm, synthdigits; 2 clients each "
                  "(the default `flwr run` federation)", 8),
        *(_label_skew(domain, a) for domain in ("mnist", "fashion-mnist")
          for a in (0.01, 0.1, 0.5)),
        Benchmark("emoji", "style shift: the same emoji by five vendors/styles (Twemoji, Noto, "
                  "OpenMoji colour, OpenMoji line-art, Fluent flat), 2 clients each, image-only "
                  "CNN", 10, {**EMOJI, "model": "cnn"}),
        Benchmark("emoji-mm", "style shift as `emoji`, image+text model (CNN image tower + "
                  "MLP over frozen MiniLM embeddings of the emoji's names)", 10,
                  {**EMOJI, "model": "cnn-text"}),
    )
}

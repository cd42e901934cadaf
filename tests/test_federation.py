"""End to end through Flower's simulation engine, on small real slices."""


import pytest


@pytest.mark.slow
def test_fedavg_federation_beats_chance(run_app, data_root, tmp_path):
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
    results = run_app(overrides, 4)
    assert (tmp_path / "model.pt").exists()
    assert [r["round"] for r in results["rounds"]] == [0, 1, 2]
    assert set(results["final-accuracy"]) == {"mnist", "optdigits"}
    # chance is 10%; two rounds of FedAvg over four real clients is far above it
    assert results["final-accuracy-mean"] > 0.5
    assert results["rounds"][2]["train"]["train-loss"] < results["rounds"][1]["train"]["train-loss"]


@pytest.mark.slow
def test_dmm_app_writes_report_and_comparison(run_app, data_root, tmp_path):
    overrides = {
        "domains": "mnist,optdigits", "max-train-per-client": 300, "max-test-per-domain": 300,
        "local-epochs": 1, "data-root": str(data_root), "output-dir": str(tmp_path),
        "num-clusters": 2, "pseudo-samples-per-teacher": 16, "synthesis-steps": 5,
        "distill-steps": 5, "round-timeout": 300.0, "node-wait-timeout": 60.0,
    }
    results = run_app(overrides, 4)
    assert results["config"]["strategy"] == "dmm"
    assert sorted(results["dmm"]["clusters"]) == [0, 0, 1, 1]
    rows = results["comparison"]
    assert {"client 0:mnist", "client 3:optdigits", "fedavg (same clients)", "teacher ensemble",
            "dmm"} <= set(rows)
    # the DMM row is the final global model, the one the last round evaluated
    assert rows["dmm"] == results["final-accuracy"]
    assert (tmp_path / "round-1-dmm.json").exists()

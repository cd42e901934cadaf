"""Checkpoints after every round, resume, and run-to-run determinism (through Flower)."""

import json

import pytest
import torch

from server.checkpoint import load_checkpoint


def _run(run_app, data_root, out_dir, rounds: int, resume: bool = False) -> dict:
    overrides = {
        "domains": "mnist,optdigits", "num-server-rounds": rounds, "resume": resume,
        "max-train-per-client": 120, "max-test-per-domain": 300, "local-epochs": 1,
        "data-root": str(data_root), "output-dir": str(out_dir), "num-clusters": 2,
        "pseudo-samples-per-teacher": 8, "synthesis-steps": 3, "distill-steps": 3,
        "report-baselines": False, "round-timeout": 300.0, "node-wait-timeout": 60.0,
    }
    return run_app(overrides, 4)


def _clusters(out_dir, rnd: int) -> list[int]:
    return json.loads((out_dir / f"round-{rnd}-dmm.json").read_text())["clusters"]


@pytest.mark.slow
def test_a_resumed_run_reaches_the_state_of_an_uninterrupted_one(run_app, data_root,
                                                                  tmp_path):
    straight, interrupted = tmp_path / "straight", tmp_path / "interrupted"
    full = _run(run_app, data_root, straight, rounds=2)
    first = _run(run_app, data_root, interrupted, rounds=1)
    checkpoint = load_checkpoint(interrupted)
    assert checkpoint["round"] == 1 and set(checkpoint["server-evaluate"]) == {0, 1}
    resumed = _run(run_app, data_root, interrupted, rounds=2, resume=True)

    # determinism: the same seed gives the same clusters and metrics in a separate run
    assert _clusters(straight, 1) == _clusters(interrupted, 1)
    assert first["rounds"][1]["server-evaluate"] == pytest.approx(
        full["rounds"][1]["server-evaluate"], abs=1e-6)
    # resume: round 2 continues with round-2 seeds and ends where the straight run ended
    assert [r["round"] for r in resumed["rounds"]] == [0, 1, 2]
    assert _clusters(straight, 2) == _clusters(interrupted, 2)
    assert resumed["final-accuracy"] == pytest.approx(full["final-accuracy"], abs=1e-6)
    a, b = torch.load(straight / "model.pt"), torch.load(interrupted / "model.pt")
    for key in a:
        assert torch.allclose(a[key].double(), b[key].double(), atol=1e-5), key
    assert resumed["rounds"][2]["train"]["replies-usable"] == 4

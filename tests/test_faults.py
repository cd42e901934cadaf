"""Bad and failed clients, injected with Flower client mods around the real ClientApp."""

import json
import time

import pytest
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message

from dmm_fed.models import build_model
from dmm_fed.statistics import STATISTICS_KEY

ROUND_TIMEOUT = 60.0  # of the timeout test: its two healthy clients must reply within it


def _edit_state(reply: Message, edit) -> None:
    state = reply.content["arrays"].to_torch_state_dict()
    edit(state)
    reply.content["arrays"] = ArrayRecord(state)


def _poison(msg: Message, reply: Message) -> None:
    start = msg.content["arrays"].to_torch_state_dict()
    _edit_state(reply, lambda s: s.update(  # scale the weights' task vector, keep BN statistics
        {k: start[k] + 1000 * (v - start[k]) for k, v in s.items()
         if v.is_floating_point() and "running" not in k}))


FAULTS = {
    1: "raise", 2: "nan", 3: "shape", 4: "dtype", 5: "missing-key", 6: "no-statistics",
    7: "extra-payload", 8: "poison",
}
"""partition id -> fault; partitions 0, 9 and 10 are healthy."""


def _fault_mod(faults: dict[int, str]):
    def mod(msg: Message, context: Context, call_next) -> Message:
        return _inject(faults.get(int(context.node_config["partition-id"])), msg, context,
                       call_next)
    return mod


def _inject(fault: str | None, msg: Message, context: Context, call_next) -> Message:
    """Run the real ClientApp, then corrupt its train reply as ``fault`` says."""
    if msg.metadata.message_type != "train" or fault is None:
        return call_next(msg, context)
    if fault == "raise":
        raise RuntimeError("injected client failure")
    reply = call_next(msg, context)
    first = next(iter(reply.content["arrays"].keys()))
    if fault == "timeout":
        time.sleep(ROUND_TIMEOUT + 5)
    elif fault == "nan":
        _edit_state(reply, lambda s: s[first].view(-1).__setitem__(0, float("nan")))
    elif fault == "shape":
        _edit_state(reply, lambda s: s.update({first: s[first][:1]}))
    elif fault == "dtype":
        _edit_state(reply, lambda s: s.update({first: s[first].double()}))
    elif fault == "missing-key":
        _edit_state(reply, lambda s: s.pop(first))
    elif fault == "no-statistics":
        del reply.content[STATISTICS_KEY]
    elif fault == "extra-payload":
        reply.content["features"] = ConfigRecord({"x": [0.5] * 784})
    elif fault == "poison":
        _poison(msg, reply)
    return reply


def _overrides(tmp_path, data_root, **extra) -> dict:
    return {
        "domains": "mnist,optdigits", "max-train-per-client": 100, "max-test-per-domain": 200,
        "local-epochs": 1, "data-root": str(data_root), "output-dir": str(tmp_path),
        "pseudo-samples-per-teacher": 8, "synthesis-steps": 3, "distill-steps": 3,
        "fraction-evaluate": 0.0, "report-baselines": False, "round-timeout": 300.0,
        "node-wait-timeout": 60.0, **extra,
    }


@pytest.mark.slow
def test_a_round_completes_with_the_healthy_clients_and_counts_every_refusal(run_app, data_root,
                                                                            tmp_path):
    overrides = _overrides(tmp_path, data_root, **{"min-nodes": 3})
    results = run_app(overrides, 11, mods=[_fault_mod(FAULTS)])
    train = results["rounds"][1]["train"]
    assert train["replies-usable"] == 3
    assert train["replies-rejected"] == len(FAULTS)
    expected = {"error": 1, "non-finite": 1, "shape": 1, "dtype": 1, "keys": 1,
                "statistics": 1, "payload": 1, "norm": 1}
    assert {k[len("rejected-"):]: v for k, v in train.items()
            if k.startswith("rejected-")} == expected
    refused = results["refused-replies"]["1"]
    assert sorted(r["reason"] for r in refused) == sorted(expected)
    assert all(isinstance(r["node"], int) and r["detail"] for r in refused)
    # DMM ran on exactly the three healthy clients and produced a finite new model
    report = json.loads((tmp_path / "round-1-dmm.json").read_text())
    assert report["clients"] == ["0:mnist", "9:optdigits", "10:mnist"]
    saved = torch.load(tmp_path / "model.pt")
    initial = build_model("cnn", seed=0).state_dict()
    assert all(torch.isfinite(v).all() for v in saved.values() if v.is_floating_point())
    assert not torch.equal(saved["head.4.weight"], initial["head.4.weight"])


@pytest.mark.slow
def test_a_client_that_never_replies_is_dropped_after_the_round_timeout(
    run_app, data_root, tmp_path
):
    overrides = _overrides(tmp_path, data_root, **{"strategy": "fedavg", "min-nodes": 2,
                                                   "round-timeout": ROUND_TIMEOUT})
    tick = time.perf_counter()
    results = run_app(overrides, 3, mods=[_fault_mod({2: "timeout"})])
    assert results["rounds"][1]["train"]["replies-usable"] == 2
    assert results["rounds"][1]["train"]["rejected-timeout"] == 1
    assert [r["reason"] for r in results["refused-replies"]["1"]] == ["timeout"]
    assert results["wall-time-s"] < 2 * ROUND_TIMEOUT  # nothing waited for the sleeper
    assert time.perf_counter() - tick > ROUND_TIMEOUT


@pytest.mark.slow
def test_too_few_usable_replies_skip_the_round_and_keep_the_global_model(
    run_app, data_root, tmp_path
):
    def all_nan(msg: Message, context: Context, call_next) -> Message:
        reply = call_next(msg, context)
        if msg.metadata.message_type == "train" and context.node_config["partition-id"] > 0:
            _edit_state(reply, lambda s: s["head.4.bias"].fill_(float("inf")))
        return reply

    overrides = _overrides(tmp_path, data_root, **{"strategy": "fedavg", "min-nodes": 2})
    results = run_app(overrides, 3, mods=[all_nan])
    assert results["rounds"][1]["train"] == {"replies-usable": 1, "replies-rejected": 2,
                                             "rejected-non-finite": 2}
    initial = build_model("cnn", seed=0).state_dict()
    saved = torch.load(tmp_path / "model.pt")
    assert all(torch.equal(saved[k], initial[k]) for k in initial)
    rounds = results["rounds"]
    assert rounds[1]["server-evaluate"] == rounds[0]["server-evaluate"]

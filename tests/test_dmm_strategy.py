"""DMMStrategy in a ServerApp written only for this test, with standard Flower clients."""

import json

import pytest
import torch
from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp
from flwr.simulation import run_simulation

from dmm_fed.data.federation import client_data, server_test_sets
from dmm_fed.distillation import DistillConfig
from dmm_fed.dmm import DMMConfig
from dmm_fed.evaluation import state_accuracies
from dmm_fed.models import build_model
from dmm_fed.synthesis import SynthesisConfig
from dmm_fed.training import OptimizerConfig, train
from server.dmm_strategy import DMMStrategy

DOMAINS = ("mnist", "optdigits")


def _standard_client_app(data_root) -> ClientApp:
    """A plain Flower client: replies with arrays + metrics only, no DMM statistics."""
    app = ClientApp()

    @app.train()
    def _train(msg: Message, context: Context) -> Message:
        pid = int(context.node_config["partition-id"])
        n = int(context.node_config["num-partitions"])
        # mnist clients (even partitions) train on 400 images, optdigits clients on 300, so the
        # test can tell the domains apart from the replies' example counts alone
        data = client_data(data_root, DOMAINS, pid, n, 0.0, seed=0,
                           max_train=400 if pid % 2 == 0 else 300)
        model = build_model("cnn")
        model.load_state_dict(msg.content["arrays"].to_torch_state_dict())
        train(model, data.x_train, data.y_train, 2, 64, OptimizerConfig(), seed=pid)
        reply = RecordDict({"arrays": ArrayRecord(model.state_dict()),
                            "metrics": MetricRecord({"num-examples": len(data.y_train)})})
        return Message(content=reply, reply_to=msg)

    return app


@pytest.mark.slow
def test_dmm_strategy_in_a_plain_serverapp(data_root, tmp_path):
    captured = {}
    server_app = ServerApp()

    @server_app.main()
    def _main(grid: Grid, context: Context) -> None:
        strategy = DMMStrategy(
            model_factory=lambda: build_model("cnn"),
            dmm=DMMConfig(
                num_clusters=2,
                synthesis=SynthesisConfig(num_samples=48, steps=40, log_every=0),
                distill=DistillConfig(steps=100, log_every=0),
            ),
            artifact_dir=tmp_path,
            fraction_evaluate=0.0, min_train_nodes=4, min_available_nodes=4,
        )
        captured["result"] = strategy.start(
            grid=grid, initial_arrays=ArrayRecord(build_model("cnn", seed=0).state_dict()),
            num_rounds=1, timeout=300,
        )
        captured["strategy"] = strategy

    torch.manual_seed(0)
    run_simulation(server_app=server_app, client_app=_standard_client_app(data_root),
                   num_supernodes=4,
                   backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0}})
    strategy = captured["strategy"]
    report = strategy.outputs[1].report
    # the two domains are the two clusters (replies are in node-id order, not partition order)
    counts_by_cluster = {}
    for cluster, update in zip(report.clusters, strategy.updates[1], strict=True):
        counts_by_cluster.setdefault(cluster, set()).add(update.num_examples)
    assert sorted(counts_by_cluster.values(), key=min) == [{300}, {400}]
    assert sorted(report.clusters) == [0, 0, 1, 1]
    # no label counts were sent: the class support was inferred from the teachers themselves
    assert len(report.class_support) == 2 and all(sum(s) > 0 for s in report.class_support)
    artifact = json.loads((tmp_path / "round-1-dmm.json").read_text())
    assert len(artifact["similarity"]) == 4
    tests = server_test_sets(data_root, DOMAINS, max_per_domain=500)
    state = captured["result"].arrays.to_torch_state_dict()
    accs = state_accuracies(lambda: build_model("cnn"), state, tests)
    # a tiny synthesis budget here (the learning gains are tested in test_pseudo_data.py):
    # the refined global model still beats chance (0.1) by 3x on average
    assert sum(accs.values()) / len(accs) > 0.3

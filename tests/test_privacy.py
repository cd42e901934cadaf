"""The privacy boundary: what a client's train reply holds, and the statistics-noise option."""

import time

import pytest
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, Metadata, RecordDict

from clients.app import make_client_app
from dmm_fed.data import IMAGE_SHAPE
from dmm_fed.models import build_model
from dmm_fed.privacy import MIN_VARIANCE, noisy_bn_statistics, noisy_targets
from dmm_fed.statistics import STATISTICS_KEY, NormTarget

NUM_TRAIN = 120


def _train_reply(data_root, model: str = "cnn", **overrides) -> tuple[dict, Message]:
    config = {"domains": "mnist,optdigits", "max-train-per-client": NUM_TRAIN, "local-epochs": 1,
              "data-root": str(data_root), "model": model, **overrides}
    start = build_model(model, seed=0).state_dict()
    metadata = Metadata(run_id=1, message_id="m1", src_node_id=0, dst_node_id=1,
                        reply_to_message_id="", group_id="1", created_at=time.time(), ttl=600.0,
                        message_type="train")
    msg = Message(content=RecordDict({
        "arrays": ArrayRecord(start),
        "config": ConfigRecord({"server-round": 1, "send-statistics": True}),
    }), metadata=metadata)
    context = Context(run_id=1, node_id=1, node_config={"partition-id": 0, "num-partitions": 2},
                      state=RecordDict(), run_config={})
    return start, make_client_app(config)(msg, context)


def _values(content: RecordDict):
    for record in (*content.array_records.values(), *content.metric_records.values(),
                   *content.config_records.values()):
        yield from record.items()


@pytest.mark.parametrize("model", ["cnn", "resnet18"])
def test_a_train_reply_holds_only_the_declared_payload(data_root, model):
    start, reply = _train_reply(data_root, model)
    content = reply.content
    assert set(content) == {"arrays", "metrics", STATISTICS_KEY}
    # the state dict: exactly the model's entries, with the model's shapes
    state = content["arrays"].to_torch_state_dict()
    assert {k: v.shape for k, v in state.items()} == {k: v.shape for k, v in start.items()}
    # metrics: scalars only
    assert set(content["metrics"]) == {"num-examples", "train-loss"}
    assert content["metrics"]["num-examples"] == NUM_TRAIN
    # statistics: per-class counts, names, and per-channel aggregates (ResNet-18 here has none:
    # all of its norm layers keep running statistics, which travel in the state dict)
    stats = content[STATISTICS_KEY]
    assert set(stats) <= {"label-counts", "domain", "partition-id"} | {
        k for k in stats if k.startswith("act.")}
    assert len(stats["label-counts"]) == 10 and sum(stats["label-counts"]) == NUM_TRAIN
    # nothing shaped like input data: no image-sized tensor or list anywhere in the reply
    image_numel = torch.Size(IMAGE_SHAPE).numel()
    for key, value in _values(content):
        if isinstance(value, list):
            assert len(value) < NUM_TRAIN and len(value) % (28 * 28) != 0, key
        elif hasattr(value, "shape"):
            shape = tuple(value.shape)
            assert shape[-2:] != (28, 28) and image_numel not in shape, key


def test_statistics_noise_perturbs_only_the_statistics(data_root):
    _, clean = _train_reply(data_root)
    _, noisy = _train_reply(data_root, **{"statistics-noise": 0.5})
    a = clean.content["arrays"].to_torch_state_dict()
    b = noisy.content["arrays"].to_torch_state_dict()
    for key in a:
        if key.endswith(("running_mean", "running_var")):
            diff = b[key] - a[key]
            assert not torch.equal(a[key], b[key]), key
            if key.endswith("running_mean"):
                assert 0.2 < diff.std() < 1.0, key  # sigma 0.5 (128+ channels per layer)
            else:
                assert (b[key] >= MIN_VARIANCE).all()
        else:
            assert torch.equal(a[key], b[key]), key  # weights and counters are untouched
    assert (clean.content[STATISTICS_KEY]["label-counts"]
            == noisy.content[STATISTICS_KEY]["label-counts"])


def test_noise_functions_are_seeded_and_keep_variances_valid():
    state = {"bn.running_mean": torch.zeros(1000), "bn.running_var": torch.full((1000,), 0.01),
             "conv.weight": torch.ones(3)}
    out = noisy_bn_statistics(state, 0.1, seed=3)
    assert torch.equal(out["conv.weight"], state["conv.weight"])
    assert out["bn.running_mean"].std().item() == pytest.approx(0.1, rel=0.1)
    assert out["bn.running_var"].min() >= MIN_VARIANCE
    assert torch.equal(noisy_bn_statistics(state, 0.1, seed=3)["bn.running_mean"],
                       out["bn.running_mean"])
    targets = noisy_targets({"ln": NormTarget(torch.zeros(500), torch.ones(500))}, 0.2, seed=0)
    assert targets["ln"].mean.std().item() == pytest.approx(0.2, rel=0.15)
    assert targets["ln"].var.min() >= MIN_VARIANCE

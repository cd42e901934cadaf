"""A client's view: its partition and one local training step."""

import torch

from dmm_fed.data.federation import client_data
from dmm_fed.models import build_model
from dmm_fed.training import OptimizerConfig, evaluate, train


def test_client_partition_is_private_and_sized(data_root):
    data = client_data(data_root, ("mnist", "optdigits"), 1, 4, 0.0, seed=0, max_train=300)
    assert data.domain == "optdigits"  # round-robin: partition 1 of 4 over two domains
    assert data.x_train.shape == (300, 3, 28, 28)
    assert len(data.x_test) == 75
    assert sum(data.label_counts()) == 300


def test_local_training_lowers_the_loss(data_root):
    torch.manual_seed(0)
    data = client_data(data_root, ("mnist",), 0, 2, 0.0, seed=0, max_train=1024)
    model = build_model("cnn", seed=0)
    before, acc_before = evaluate(model, data.x_train, data.y_train)
    train(model, data.x_train, data.y_train, epochs=2, batch_size=64,
          optimizer=OptimizerConfig(), seed=0)
    after, acc_after = evaluate(model, data.x_train, data.y_train)
    assert after < 0.7 * before
    assert acc_after > 0.5 > acc_before


def test_resnet18_option_runs_on_28px_inputs():
    model = build_model("resnet18", seed=0)
    assert model(torch.zeros(2, 3, 28, 28)).shape == (2, 10)

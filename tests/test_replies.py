"""What the server reads from a client's reply."""

import pytest
import torch
from flwr.app import ArrayRecord, ConfigRecord, MetricRecord, RecordDict

from dmm_fed.models import build_model
from server.replies import _sort_key, parse_reply


def _reply(**records) -> RecordDict:
    return RecordDict(records)


def test_standard_reply_without_statistics():
    state = build_model("cnn", seed=0).state_dict()
    update = parse_reply(_reply(arrays=ArrayRecord(state),
                                metrics=MetricRecord({"num-examples": 42})), sender=7)
    assert update.num_examples == 42 and update.label_counts is None
    assert update.activation_stats == {}
    assert update.name == "7:?"
    torch.testing.assert_close(update.state["features.1.running_var"],
                               state["features.1.running_var"])
    assert update.state["features.1.num_batches_tracked"].dtype == torch.int64


def test_reply_with_statistics():
    stats = ConfigRecord({"label-counts": [1, 2, 3], "act.body.4.mean": [0.5, 1.5],
                          "act.body.4.var": [2.0, 3.0], "domain": "mnist", "partition-id": 3})
    update = parse_reply(_reply(arrays=ArrayRecord(build_model("cnn").state_dict()),
                                metrics=MetricRecord({"num-examples": 6}), statistics=stats),
                         sender=7)
    assert update.label_counts == [1, 2, 3]
    assert update.activation_stats["body.4"].mean.tolist() == [0.5, 1.5]
    assert update.name == "3:mnist"


@pytest.mark.parametrize(
    "records",
    [
        {"metrics": MetricRecord({"num-examples": 5})},  # no arrays
        {"arrays": ArrayRecord(), "metrics": MetricRecord({"train-loss": 0.1})},  # no count
        {"arrays": ArrayRecord(), "metrics": MetricRecord({"num-examples": 0})},  # zero count
    ],
)
def test_malformed_replies_are_refused(records):
    with pytest.raises(ValueError):
        parse_reply(_reply(**records), sender=7)


def test_updates_sort_by_partition_id_then_name():
    names = ["10:mnist", "2:optdigits", "123456789", "node-x", "0:mnist"]
    assert sorted(names, key=_sort_key) == ["0:mnist", "2:optdigits", "10:mnist", "123456789",
                                            "node-x"]

"""Server-side checks of client updates (each refusal reason) and the norm-outlier screen."""

import pytest
import torch

from dmm_fed.dmm import ClientUpdate
from dmm_fed.models import build_model
from dmm_fed.statistics import NormTarget
from dmm_fed.validation import InvalidUpdate, check_update, norm_outliers


def _update(state, counts=None, acts=None) -> ClientUpdate:
    return ClientUpdate(state, 10, counts, acts or {})


@pytest.fixture
def reference():
    return build_model("cnn", seed=0).state_dict()


def _reason(update, reference) -> str:
    with pytest.raises(InvalidUpdate) as err:
        check_update(update, reference, num_classes=10)
    return err.value.reason


def test_a_clean_update_passes_even_against_a_fedavg_global(reference):
    check_update(_update(dict(reference), [1] * 10), reference, 10)
    # Flower's FedAvg averages the int64 counter into float64: the client's int64 still fits
    averaged = {k: v.double() if k.endswith("num_batches_tracked") else v
                for k, v in reference.items()}
    check_update(_update(dict(reference)), averaged, 10)


def test_each_malformed_update_is_refused_with_its_reason(reference):
    def edited(**changes):
        return _update({**reference, **changes})

    w = "features.0.weight"
    assert _reason(edited(**{w: reference[w][:1]}), reference) == "shape"
    assert _reason(edited(**{w: reference[w].double()}), reference) == "dtype"
    assert _reason(edited(**{w: reference[w].int()}), reference) == "dtype"
    nan = reference[w].clone()
    nan[0, 0, 0, 0] = float("inf")
    assert _reason(edited(**{w: nan}), reference) == "non-finite"
    missing = dict(reference)
    del missing[w]
    assert _reason(_update(missing), reference) == "keys"
    assert _reason(edited(extra=torch.zeros(1)), reference) == "keys"
    var = "features.1.running_var"
    assert _reason(edited(**{var: -reference[var]}), reference) == "statistics"
    assert _reason(_update(dict(reference), [1] * 9), reference) == "statistics"
    assert _reason(_update(dict(reference), [0] * 10), reference) == "statistics"
    bad = {"ln": NormTarget(torch.zeros(4), -torch.ones(4))}
    assert _reason(_update(dict(reference), acts=bad), reference) == "statistics"


def test_norm_outliers_are_relative_to_the_median():
    base = {"w": torch.zeros(4)}
    scales = [1.0, 1.2, 0.9, 50.0]
    updates = [_update({"w": torch.full((4,), s)}) for s in scales]
    assert norm_outliers(base, updates, ["w"], factor=10) == [3]
    assert norm_outliers(base, updates, ["w"], factor=100) == []
    assert norm_outliers(base, updates, ["w"], factor=0) == []
    assert norm_outliers(base, updates[2:], ["w"], factor=10) == []  # two: no majority

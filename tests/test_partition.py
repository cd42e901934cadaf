"""Client partitions: determinism, coverage, skew, domain assignment."""

import numpy as np
import pytest

from dmm_fed.data.partition import (
    assign_domains,
    label_proportions,
    split_by_proportions,
    split_domain,
    subsample,
)

LABELS = np.repeat(np.arange(10), 100)  # 1000 examples, 100 per class
TEST_LABELS = np.repeat(np.arange(10), 20)


def test_assign_domains_round_robin():
    slots = assign_domains(5, ("a", "b"))
    assert [s.domain for s in slots] == ["a", "b", "a", "b", "a"]
    assert [s.rank for s in slots] == [0, 0, 1, 1, 2]
    assert [s.clients_in_domain for s in slots] == [3, 2, 3, 2, 3]


def test_assign_domains_rejects_bad_input():
    with pytest.raises(ValueError):
        assign_domains(0, ("a",))
    with pytest.raises(ValueError):
        assign_domains(3, ())


@pytest.mark.parametrize("alpha", [0.0, 0.01, 0.5])
def test_split_is_a_deterministic_partition(alpha):
    train_a, test_a = split_domain(LABELS, TEST_LABELS, 4, alpha, seed=7)
    train_b, test_b = split_domain(LABELS, TEST_LABELS, 4, alpha, seed=7)
    for a, b in zip(train_a + test_a, train_b + test_b, strict=True):
        np.testing.assert_array_equal(a, b)
    # disjoint and covering: every index exactly once
    np.testing.assert_array_equal(np.sort(np.concatenate(train_a)), np.arange(len(LABELS)))
    np.testing.assert_array_equal(np.sort(np.concatenate(test_a)), np.arange(len(TEST_LABELS)))
    assert min(len(t) for t in train_a) >= 10


def test_different_seeds_give_different_splits():
    a, _ = split_domain(LABELS, TEST_LABELS, 4, 0.5, seed=1)
    b, _ = split_domain(LABELS, TEST_LABELS, 4, 0.5, seed=2)
    assert any(len(x) != len(y) or (x != y).any() for x, y in zip(a, b, strict=True))


def test_iid_split_is_balanced():
    train, _ = split_domain(LABELS, TEST_LABELS, 4, 0.0, seed=0)
    for part in train:
        counts = np.bincount(LABELS[part], minlength=10)
        assert counts.min() >= 24 and counts.max() <= 26  # 100 / 4 per class, rounded


def test_dirichlet_001_is_highly_skewed_and_test_follows_train():
    train, test = split_domain(LABELS, TEST_LABELS, 10, 0.01, seed=0)
    dominant = []
    for tr, te in zip(train, test, strict=True):
        share = np.bincount(LABELS[tr], minlength=10) / len(tr)
        # alpha = 0.01: a client holds one or two classes, almost never more
        assert (share > 0.01).sum() <= 3
        dominant.append(share.max())
        test_counts = np.bincount(TEST_LABELS[te], minlength=10)
        assert set(np.flatnonzero(test_counts)) <= set(np.flatnonzero(share))
    assert np.mean(dominant) > 0.7
    # while IID shares stay near 10% per class
    iid, _ = split_domain(LABELS, TEST_LABELS, 10, 0.0, seed=0)
    assert max(np.bincount(LABELS[p], minlength=10).max() / len(p) for p in iid) < 0.2


def test_label_proportions_rows_sum_to_one():
    rng = np.random.default_rng(0)
    props = label_proportions(10, 5, 0.3, rng)
    assert props.shape == (10, 5)
    np.testing.assert_allclose(props.sum(1), 1.0)
    np.testing.assert_allclose(label_proportions(3, 4, 0.0, rng), 0.25)
    with pytest.raises(ValueError):
        label_proportions(3, 4, -1.0, rng)


def test_split_by_proportions_exact_counts():
    props = np.tile([0.5, 0.3, 0.2], (10, 1))
    parts = split_by_proportions(LABELS, props, np.random.default_rng(0))
    assert [len(p) for p in parts] == [500, 300, 200]


def test_impossible_split_says_what_to_do():
    with pytest.raises(ValueError, match="fewer clients or a larger alpha"):
        split_domain(LABELS[:30], TEST_LABELS, 10, 0.001, seed=0, min_train_size=10)


def test_subsample():
    idx = np.arange(100, 200)
    assert len(subsample(idx, 0, 0)) == 100
    sub = subsample(idx, 10, 3)
    assert len(sub) == 10 and set(sub) <= set(idx)
    np.testing.assert_array_equal(sub, subsample(idx, 10, 3))

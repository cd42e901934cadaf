"""Tests of the data layer on the real prepared data."""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

import numpy as np
import pytest
from sklearn.datasets import load_digits

from dmm_fed.data import (
    DATA_RANGE,
    DOMAINS,
    IMAGE_SHAPE,
    NUM_CLASSES,
    DatasetNotFoundError,
    default_data_root,
    load_domain,
    num_classes,
    prepare,
    resolve_data_root,
    to_tensors,
)
from dmm_fed.data.constructed import build_mnistm, build_synthdigits
from dmm_fed.data.emoji import EMOJI_DOMAINS
from dmm_fed.data.sources import read_optdigits_raw

COUNTS = {
    "mnist": (60000, 10000),
    "optdigits": (3823, 1797),
    "mnistm": (60000, 10000),
    "synthdigits": (20000, 5000),
    "fashion-mnist": (59947, 10000),  # 70,000 less 53 exact duplicates (see dmm_fed.data.fashion)
    **dict.fromkeys(EMOJI_DOMAINS, (971, 243)),  # 1,214 emoji drawn by all five, split by emoji
}
MNIST_TEST_PER_CLASS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
CHANNELS = {"mnist": 1, "optdigits": 1, "mnistm": 3, "synthdigits": 3, "fashion-mnist": 1,
            **dict.fromkeys(EMOJI_DOMAINS, 3)}


@pytest.mark.parametrize("name", DOMAINS)
def test_counts_shapes_and_labels(data_root: Path, name: str) -> None:
    for split, count in zip(("train", "test"), COUNTS[name], strict=True):
        data = load_domain(name, split, data_root)
        assert data.x.shape == (count, CHANNELS[name], 28, 28)
        assert data.x.dtype == np.uint8
        assert data.y.shape == (count,)
        assert data.y.dtype == np.int64
        assert set(np.unique(data.y).tolist()) == set(range(num_classes([name])))


def test_mnist_test_class_counts(data_root: Path) -> None:
    y = load_domain("mnist", "test", data_root).y
    assert np.bincount(y).tolist() == MNIST_TEST_PER_CLASS


def test_constructed_are_memory_mapped_and_balanced(data_root: Path) -> None:
    mnistm = load_domain("mnistm", "test", data_root)
    assert isinstance(mnistm.x, np.memmap)
    assert np.array_equal(mnistm.y, load_domain("mnist", "test", data_root).y)
    for split, count in zip(("train", "test"), COUNTS["synthdigits"], strict=True):
        y = load_domain("synthdigits", split, data_root).y
        assert np.bincount(y).tolist() == [count // NUM_CLASSES] * NUM_CLASSES


def test_optdigits_test_matches_sklearn_digits(data_root: Path) -> None:
    digits = load_digits()
    counts, labels = read_optdigits_raw("test", data_root)
    # scikit-learn's digits are the UCI test set, in the same order.
    assert np.array_equal(counts.reshape(len(counts), -1), digits.data.astype(np.int64))
    assert np.array_equal(labels, digits.target)
    assert np.array_equal(load_domain("optdigits", "test", data_root).y, digits.target)


def test_optdigits_layout_is_mnist_like(data_root: Path) -> None:
    x = load_domain("optdigits", "test", data_root).x
    border = np.ones((28, 28), dtype=bool)
    border[4:24, 4:24] = False
    assert x[:, 0, border].max() == 0
    assert x.max() == 255


def test_to_tensors_grayscale(data_root: Path) -> None:
    data = load_domain("mnist", "test", data_root)
    images, labels = to_tensors(data, np.arange(64))
    assert images.dtype.is_floating_point and str(images.dtype) == "torch.float32"
    assert tuple(images.shape) == (64, *IMAGE_SHAPE)
    assert str(labels.dtype) == "torch.int64" and labels.tolist() == data.y[:64].tolist()
    assert DATA_RANGE[0] <= images.min().item() and images.max().item() <= DATA_RANGE[1]
    assert images.min().item() == DATA_RANGE[0] and images.max().item() == DATA_RANGE[1]
    assert (images[:, 0] == images[:, 1]).all() and (images[:, 0] == images[:, 2]).all()


def test_to_tensors_colour_whole_split(data_root: Path) -> None:
    data = load_domain("synthdigits", "test", data_root)
    images, labels = to_tensors(data)
    assert tuple(images.shape) == (len(data), *IMAGE_SHAPE) and len(labels) == len(data)
    assert DATA_RANGE[0] <= images.min().item() and images.max().item() <= DATA_RANGE[1]
    assert not (images[:, 0] == images[:, 1]).all()


def test_domains_differ(data_root: Path) -> None:
    mnist = load_domain("mnist", "test", data_root).x[:2000].astype(np.float64)
    mnistm = load_domain("mnistm", "test", data_root).x[:2000].astype(np.float64)
    synth = load_domain("synthdigits", "test", data_root).x[:2000].astype(np.float64)
    assert mnistm.mean() > mnist.mean() + 30
    channel_means = mnistm.mean(axis=(0, 2, 3))
    assert channel_means.max() - channel_means.min() > 5
    assert abs(synth.mean() - mnistm.mean()) > 5 or abs(synth.std() - mnistm.std()) > 5


def test_synthdigits_train_and_test_disjoint(data_root: Path) -> None:
    train = load_domain("synthdigits", "train", data_root).x
    test = load_domain("synthdigits", "test", data_root).x
    seen = {row.tobytes() for row in np.asarray(train)}
    assert not any(row.tobytes() in seen for row in np.asarray(test))


def test_builders_are_deterministic(data_root: Path) -> None:
    x1, y1 = build_synthdigits(count=40, seed=7)
    x2, y2 = build_synthdigits(count=40, seed=7)
    assert np.array_equal(x1, x2) and np.array_equal(y1, y2)
    assert not np.array_equal(build_synthdigits(count=40, seed=8)[0], x1)
    digits = load_domain("mnist", "test", data_root).x[:50]
    assert np.array_equal(build_mnistm(digits, seed=3), build_mnistm(digits, seed=3))
    assert not np.array_equal(build_mnistm(digits, seed=4), build_mnistm(digits, seed=3))


def test_unknown_domain_and_split(data_root: Path) -> None:
    with pytest.raises(ValueError, match="mnist, optdigits, mnistm, synthdigits"):
        load_domain("svhn", "train", data_root)
    with pytest.raises(ValueError, match="train, test"):
        load_domain("mnist", "validation", data_root)
    with pytest.raises(ValueError, match="valid domains"):
        prepare(data_root, domains=["usps"])


@pytest.mark.parametrize("name", DOMAINS)
def test_missing_files_raise_with_fix_command(tmp_path: Path, name: str) -> None:
    with pytest.raises(DatasetNotFoundError) as info:
        load_domain(name, "test", tmp_path)
    assert f"python -m dmm_fed.data.prepare --root {tmp_path}" in str(info.value)
    assert isinstance(info.value, FileNotFoundError)


def test_data_root_resolution(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DMM_FED_DATA", str(tmp_path / "env"))
    assert default_data_root() == tmp_path / "env"
    assert resolve_data_root("") == resolve_data_root(None) == tmp_path / "env"
    monkeypatch.delenv("DMM_FED_DATA")
    assert default_data_root() == Path.home().resolve() / ".cache" / "dmm-fed" / "data"
    assert resolve_data_root("~/x") == (Path.home() / "x").resolve()
    assert resolve_data_root("rel").is_absolute()


def test_cli_prints_counts(
    data_root: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["prepare", "--root", str(data_root), "--domains", "optdigits,synthdigits"]
    monkeypatch.setattr(sys, "argv", argv)
    runpy.run_module("dmm_fed.data.prepare", run_name="__main__")
    out = capsys.readouterr().out
    assert "optdigits: train 3823, test 1797" in out
    assert "synthdigits: train 20000, test 5000" in out


def test_cli_expands_domain_groups(data_root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from dmm_fed.data.prepare import main

    main(["--root", str(data_root), "--domains", "emoji,mnist"])
    out = capsys.readouterr().out
    assert "emoji-openmoji-black: train 971, test 243" in out and "mnist: train 60000" in out
    with pytest.raises(SystemExit):
        main(["--root", str(data_root), "--domains", "emojis"])
    assert "or a group: digits, emoji, all" in capsys.readouterr().err

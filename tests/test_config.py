"""Run configuration: defaults match pyproject.toml; bad values fail with the valid ones."""

import tomllib
from pathlib import Path

import pytest

from dmm_fed.config import RunConfig, parse_run_config

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def test_defaults_equal_pyproject_table():
    table = tomllib.loads(PYPROJECT.read_text())["tool"]["flwr"]["app"]["config"]
    assert table == RunConfig().to_flower()
    assert parse_run_config(table) == RunConfig()


def test_overrides_win_and_ints_become_floats():
    config = parse_run_config({"local-epochs": 5}, {"local-epochs": 2, "learning-rate": 1})
    assert config.local_epochs == 2
    assert config.learning_rate == 1.0 and isinstance(config.learning_rate, float)


@pytest.mark.parametrize(
    ("key", "value", "listed"),
    [
        ("strategy", "fedprox", "fedavg"),
        ("model", "vgg", "resnet18"),
        ("domains", "mnist,svhn", "synthdigits"),
        ("optimizer", "rmsprop", "adam"),
    ],
)
def test_unknown_choice_lists_valid_values(key, value, listed):
    with pytest.raises(ValueError, match=listed):
        parse_run_config({key: value})


def test_unknown_key_lists_valid_keys():
    with pytest.raises(ValueError, match="local-epochs"):
        parse_run_config({"local-epoch": 3})


@pytest.mark.parametrize(
    "bad",
    [{"local-epochs": 0}, {"learning-rate": 0.0}, {"dirichlet-alpha": -1.0},
     {"fraction-evaluate": 1.5}, {"domains": "mnist,mnist"}, {"domains": ""},
     {"batch-size": "64"}],
)
def test_bad_values_are_refused(bad):
    with pytest.raises(ValueError):
        parse_run_config(bad)


def test_app_defaults_equal_library_defaults():
    """A DMMStrategy built with DMMConfig() behaves like the app's default run."""
    from dmm_fed.dmm import DMMConfig
    from server.strategies import dmm_config

    assert dmm_config(RunConfig()) == DMMConfig()

"""The experiment runner: client cache keys, seed aggregation, and one tiny end-to-end run."""

import json
import statistics

import pytest

from simulations.benchmarks import BENCHMARKS
from simulations.collect import cache_path
from simulations.methods import DMM, LOCAL, NO_CLUSTERING
from simulations.summary import aggregate, markdown_table


def _payload(seed: int, dmm: tuple[float, float], fedavg: tuple[float, float]) -> dict:
    return {
        "seed": seed, "domains": ["a", "b"], "budget": [],
        "accuracy": {DMM: {"a": dmm[0], "b": dmm[1]}, "fedavg": {"a": fedavg[0], "b": fedavg[1]}},
    }


def test_aggregate_is_mean_and_sample_std_in_percent():
    payloads = [_payload(0, (0.8, 0.6), (0.5, 0.1)), _payload(1, (0.9, 0.4), (0.5, 0.3)),
                _payload(2, (0.7, 0.5), (0.5, 0.2))]
    table = aggregate(payloads)
    assert table[DMM]["a"] == pytest.approx((80.0, 10.0))
    assert table[DMM]["b"] == pytest.approx((50.0, 10.0))
    # the mean column is the per-seed domain mean, then averaged: (70, 65, 60)
    assert table[DMM]["mean"] == pytest.approx((65.0, 5.0))
    assert table["fedavg"]["a"] == pytest.approx((50.0, 0.0))
    assert table["fedavg"]["mean"] == pytest.approx((35.0, statistics.stdev([30, 40, 35])))


def test_budget_points_become_rows():
    payloads = [_payload(0, (0.8, 0.6), (0.5, 0.1)), _payload(1, (0.9, 0.4), (0.5, 0.3))]
    for p, acc in zip(payloads, (0.2, 0.4), strict=True):
        p["budget"] = [{"samples": 8, "steps": 2, "accuracy": {"a": acc, "b": acc}}]
    row = aggregate(payloads)["DMM, synthesis budget 8 x 2"]
    assert row["a"] == pytest.approx((30.0, statistics.stdev([20, 40])))
    assert row["mean"] == pytest.approx(row["a"])


def test_markdown_table_has_one_row_per_method_and_bolds_dmm():
    table = aggregate([_payload(0, (0.8, 0.6), (0.5, 0.1))])
    lines = markdown_table(table, ["a", "b", "mean"]).splitlines()
    assert lines[0] == "| method | a | b | mean |"
    assert lines[2] == f"| {DMM} | 80.0 ± 0.0 | 60.0 ± 0.0 | **70.0 ± 0.0** |"
    assert lines[3] == "| fedavg | 50.0 ± 0.0 | 10.0 ± 0.0 | 30.0 ± 0.0 |"


def test_client_cache_is_keyed_by_what_the_clients_depend_on(tmp_path):
    bench = BENCHMARKS["mnist-a0.1"]
    path = cache_path(bench.config(0), bench.num_clients, tmp_path)
    # server-side knobs do not retrain the clients ...
    assert cache_path(bench.config(0, {"synthesis-steps": 3, "merge-method": "ties"}),
                      bench.num_clients, tmp_path) == path
    # ... their seed, data, recipe and number do
    assert cache_path(bench.config(1), bench.num_clients, tmp_path) != path
    assert cache_path(bench.config(0, {"local-epochs": 1}), bench.num_clients, tmp_path) != path
    assert cache_path(bench.config(0), bench.num_clients + 1, tmp_path) != path
    assert cache_path(BENCHMARKS["mnist-a0.01"].config(0), 10, tmp_path) != path


def test_benchmarks_include_the_default_federation_and_the_label_skew_grid():
    assert BENCHMARKS["digits"].overrides == {} and BENCHMARKS["digits"].num_clients == 8
    for domain in ("mnist", "fashion-mnist"):
        for alpha in (0.01, 0.1, 0.5):
            config = BENCHMARKS[f"{domain}-a{alpha:g}"].config(0)
            assert config.domain_list == (domain,) and config.dirichlet_alpha == alpha


@pytest.mark.slow
def test_experiment_runs_every_method_and_writes_tables_and_plots(data_root, tmp_path):
    from simulations.experiment import main

    out, cache = tmp_path / "results", tmp_path / "cache"
    tiny = (f"data-root='{data_root}' max-train-per-client=150 max-test-per-domain=200 "
            "local-epochs=1 pseudo-samples-per-teacher=16 synthesis-steps=4 distill-steps=4")
    argv = ["--benchmarks", "digits", "--seeds", "0", "1", "--out-dir", str(out),
            "--cache-dir", str(cache), "--run-config", tiny, "--budgets", "8x2", "--threads", "1"]
    main(argv)
    bench = out / "digits"
    for name in ("table.md", "table.csv", "table.json", "accuracy.png", "similarity.png",
                 "pseudo-images.png", "budget.png"):
        assert (bench / name).stat().st_size > 0, name
    assert len(list(cache.glob("clients-*.pt"))) == 2  # one client set per seed
    seed0 = json.loads((bench / "seed-0.json").read_text())
    rows = seed0["accuracy"]
    assert len(rows) == 12 and all(0 <= a <= 1 for r in rows.values() for a in r.values())
    # the local row is exactly the mean of the client models' accuracies
    for d in seed0["domains"]:
        clients = [c[d] for c in seed0["clients"].values()]
        assert rows[LOCAL][d] == pytest.approx(sum(clients) / len(clients))
    assert NO_CLUSTERING in rows and seed0["budget"][0]["samples"] == 8
    table = json.loads((bench / "table.json").read_text())
    assert table["seeds"] == [0, 1]
    assert set(table["rows"]) == set(rows) | {"DMM, synthesis budget 8 x 2"}
    assert "## digits" in (out / "results.md").read_text()
    # a repeated command skips the finished seeds and only rebuilds the summary
    before = (bench / "seed-0.json").stat().st_mtime
    main(argv)
    assert (bench / "seed-0.json").stat().st_mtime == before


def test_command_lines_refuse_relative_or_missing_output_dirs(tmp_path, capsys):
    from simulations.deployment import main as deploy
    from simulations.experiment import main as experiment

    for argv, command in ((["--out-dir", "relative/dir"], experiment),
                          (["--report-only", "--out-dir", str(tmp_path / "none")], experiment),
                          (["--out-dir", "relative/dir"], deploy)):
        with pytest.raises(SystemExit) as exit_info:
            command(argv)
        assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "--out-dir must be absolute" in err and "does not exist" in err
    assert not (tmp_path / "none").exists()


def test_benchmarks_without_prepared_data_are_skipped_or_refused(tmp_path, capsys):
    from simulations.experiment import main

    empty = f'data-root="{tmp_path / "empty"}"'
    with pytest.raises(SystemExit) as exit_info:  # nothing left to run: an error, not a no-op
        main(["--out-dir", str(tmp_path / "out"), "--run-config", empty, "--seeds", "0"])
    assert exit_info.value.code == 2
    out, err = capsys.readouterr()
    assert "no benchmark has its data prepared" in err
    assert "skipping benchmark fashion-mnist-a0.1: Fashion-MNIST not found" in out
    assert "skipping benchmark digits: MNIST not found" in out
    assert f"Run `python -m dmm_fed.data.prepare --root {tmp_path / 'empty'}" in out
    assert not list((tmp_path / "out").glob("*/seed-*.json"))
    with pytest.raises(SystemExit) as exit_info:
        main(["--out-dir", str(tmp_path / "out"), "--run-config", empty,
              "--benchmarks", "fashion-mnist-a0.1"])
    assert exit_info.value.code == 2
    assert "benchmark fashion-mnist-a0.1: Fashion-MNIST not found" in capsys.readouterr().err

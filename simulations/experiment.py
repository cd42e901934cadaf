"""Every merging method on the same client models, over benchmarks and seeds; tables and plots.

    python -m simulations.experiment --out-dir /abs/path/results            # all benchmarks
    python -m simulations.experiment --benchmarks digits --seeds 0 1 2 \\
        --budgets 32x50 128x50 128x200 --out-dir /abs/path/results   # + a budget sweep
    python -m simulations.experiment --report-only --out-dir /abs/path/results

For each (benchmark, seed) the clients are trained once through Flower (cached, see
:mod:`simulations.collect`), then every method of :mod:`simulations.methods` is applied and
evaluated on each domain's full held-out test set; ``<out-dir>/<benchmark>/seed-<s>.json`` is
written (finished runs are skipped when the command is repeated). Then, for every benchmark found
under ``out-dir``, the mean +- std tables (Markdown, CSV, JSON) and the plots are (re)built, and
``<out-dir>/results.md`` gathers them.
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import torch
from flwr.common.config import parse_config_args

from dmm_fed.data import resolve_data_root
from dmm_fed.data.federation import server_test_sets
from dmm_fed.inputs import input_layout
from dmm_fed.report import write_json
from simulations.benchmarks import BENCHMARKS, Benchmark
from simulations.collect import DEFAULT_CACHE_DIR, train_through_flower
from simulations.methods import budget_sweep, run_methods
from simulations.summary import write_benchmark_summary, write_results_index

PSEUDO_PER_TEACHER = 8
"""Synthesised images per teacher kept for the image-grid plot."""


def _budget(text: str) -> tuple[int, int]:
    try:
        samples, steps = (int(v) for v in text.lower().split("x"))
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"budget must be SAMPLESxSTEPS, got {text!r}") from err
    if samples < 1 or steps < 0:
        raise argparse.ArgumentTypeError(f"budget needs samples >= 1, steps >= 0: {text!r}")
    return samples, steps


def run_one(
    bench: Benchmark, seed: int, args: argparse.Namespace, extra: dict
) -> tuple[dict, list[torch.Tensor]]:
    """Train (or load) the clients, apply every method, return the seed's JSON payload."""
    start = time.perf_counter()

    def say(msg: str) -> None:
        print(f"[{bench.name} seed {seed} {time.perf_counter() - start:6.0f}s] {msg}", flush=True)

    config = bench.config(seed, extra)
    torch.set_num_threads(config.num_threads)
    base, updates, client_s = train_through_flower(config, bench.num_clients, args.cache_dir,
                                                   {"num_cpus": args.ray_cpus})
    say(f"{len(updates)} clients ready (their round took {client_s:.0f} s)")
    torch.set_num_threads(args.threads)
    tests = server_test_sets(resolve_data_root(config.data_root), config.domain_list,
                             config.max_test_per_domain, config.seed, config.uses_text)
    results = run_methods(config, base, updates, tests, say, pooled=not args.no_pooled)
    budgets = args.budgets if bench.name in args.budget_on else []
    budget = budget_sweep(config, base, updates, tests, budgets, say) if budgets else []
    report = results.dmm.report
    layout = input_layout(config.new_model())
    pseudo = [layout.split(x[:PSEUDO_PER_TEACHER])[0].clone() for x in results.dmm.pseudo_data]
    return {
        "benchmark": bench.name,
        "description": bench.description,
        "seed": seed,
        "num-clients": bench.num_clients,
        "domains": list(config.domain_list),
        "config": config.to_flower(),
        "accuracy": results.rows,
        "clients": results.clients,
        "client-names": [u.name for u in updates],
        "client-label-counts": [list(u.label_counts or []) for u in updates],
        "dmm": report.to_dict(),
        "budget": budget,
        "seconds": {"client-round": client_s, **results.seconds},
        "wall-time-s": time.perf_counter() - start,
        "machine": f"{platform.machine()}, {torch.get_num_threads()} torch threads, "
                   f"{platform.python_version()}, torch {torch.__version__}",
        "date": time.strftime("%Y-%m-%d"),
    }, pseudo


def runnable(
    names: list[str], extra: dict, explicit: bool, parser: argparse.ArgumentParser
) -> list[str]:
    """The benchmarks whose data is prepared; a missing one is an error when asked for by name,
    and skipped with the loader's message when it only came with the default (all benchmarks)."""
    root = resolve_data_root(extra.get("data-root", ""))
    keep = []
    for name in names:
        reason = BENCHMARKS[name].missing_data(root)
        if reason is None:
            keep.append(name)
        elif explicit:
            parser.error(f"benchmark {name}: {reason}")
        else:
            print(f"skipping benchmark {name}: {reason}", flush=True)
    if not keep:
        parser.error("no benchmark has its data prepared under "
                     f"{root}; run `python -m dmm_fed.data.prepare --domains all`")
    return keep


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--benchmarks", nargs="+", default=None,
                        choices=list(BENCHMARKS), metavar="NAME",
                        help=f"any of {', '.join(BENCHMARKS)} (default: all)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--out-dir", type=Path, required=True, help="absolute output directory")
    parser.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE_DIR,
                        help="trained client updates are cached here")
    parser.add_argument("--run-config", default="",
                        help="extra key=value overrides for every benchmark (e.g. data-root)")
    parser.add_argument("--budgets", nargs="*", type=_budget, default=[], metavar="SxT",
                        help="also sweep DMM's synthesis budget (samples per teacher x steps)")
    parser.add_argument("--budget-on", nargs="+", default=["digits"], choices=list(BENCHMARKS),
                        metavar="NAME", help="benchmarks the budget sweep runs on (default: "
                        "digits)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(),
                        help="torch threads for the server-side methods")
    parser.add_argument("--ray-cpus", type=int, default=2, help="CPUs Ray may use for clients")
    parser.add_argument("--no-pooled", action="store_true", help="skip centralised training")
    parser.add_argument("--force", action="store_true", help="rerun finished (benchmark, seed)s")
    parser.add_argument("--report-only", action="store_true",
                        help="only rebuild tables and plots from the JSON already written")
    args = parser.parse_args(argv)
    if not args.out_dir.is_absolute():
        parser.error(f"--out-dir must be absolute, got {args.out_dir}")
    if args.report_only and not args.out_dir.is_dir():
        parser.error(f"--report-only rebuilds the tables of an earlier run, but {args.out_dir} "
                     "does not exist")
    extra = parse_config_args([args.run_config]) if args.run_config else {}
    if not args.report_only:
        args.out_dir.mkdir(parents=True, exist_ok=True)
        names = args.benchmarks or list(BENCHMARKS)
        for name in runnable(names, extra, args.benchmarks is not None, parser):
            for seed in args.seeds:
                path = args.out_dir / name / f"seed-{seed}.json"
                if path.exists() and not args.force:
                    print(f"{path} exists; skipping (use --force to rerun)", flush=True)
                    continue
                payload, pseudo = run_one(BENCHMARKS[name], seed, args, extra)
                path.parent.mkdir(parents=True, exist_ok=True)
                torch.save(pseudo, path.with_suffix(".pseudo.pt"))
                write_json(path, payload)
                print(f"wrote {path}", flush=True)
    for bench_dir in sorted(p for p in args.out_dir.iterdir() if p.is_dir()):
        if any(bench_dir.glob("seed-*.json")):
            write_benchmark_summary(bench_dir, resolve_data_root(extra.get("data-root", "")))
    write_results_index(args.out_dir)


if __name__ == "__main__":
    main()

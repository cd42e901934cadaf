"""Tables and plots from the per-seed JSON files that :mod:`simulations.experiment` writes.

Per benchmark directory: ``table.md`` / ``table.csv`` / ``table.json`` (rows = methods, columns =
domains + mean, mean +- sample std over seeds, in %), and ``accuracy.png`` (per-domain bars),
``similarity.png`` (first seed's similarity matrix, clients ordered by cluster, clusters boxed),
``pseudo-images.png`` (synthesised images per teacher beside real test images of the same
domains and classes) and, when a budget sweep ran, ``budget.png``.
"""

from __future__ import annotations

import csv
import json
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib import colormaps
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from dmm_fed.data import load_domain, to_tensors
from dmm_fed.report import write_json

MEAN = "mean"


def load_seeds(bench_dir: Path) -> list[dict[str, Any]]:
    """The benchmark's per-seed payloads, by seed."""
    payloads = [json.loads(p.read_text()) for p in bench_dir.glob("seed-*.json")]
    return sorted(payloads, key=lambda p: p["seed"])


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def aggregate(payloads: Sequence[dict[str, Any]]) -> dict[str, dict[str, tuple[float, float]]]:
    """``{method: {domain or "mean": (mean, std)}}`` in %, over the seeds that ran the method;
    budget-sweep points become rows ``DMM, synthesis budget S x T``."""
    domains = payloads[0]["domains"]
    table: dict[str, dict[str, tuple[float, float]]] = {}
    for method in payloads[0]["accuracy"]:
        runs = [p["accuracy"][method] for p in payloads if method in p["accuracy"]]
        cells = {d: _mean_std([100 * r[d] for r in runs]) for d in domains}
        cells[MEAN] = _mean_std([100 * statistics.fmean(r[d] for d in domains) for r in runs])
        table[method] = cells
    budgets = sorted({(b["samples"], b["steps"]) for p in payloads for b in p["budget"]})
    for samples, steps in budgets:
        runs = [b["accuracy"] for p in payloads for b in p["budget"]
                if (b["samples"], b["steps"]) == (samples, steps)]
        cells = {d: _mean_std([100 * r[d] for r in runs]) for d in domains}
        cells[MEAN] = _mean_std([100 * statistics.fmean(r[d] for d in domains) for r in runs])
        table[f"DMM, synthesis budget {samples} x {steps}"] = cells
    return table


def markdown_table(table: dict[str, dict[str, tuple[float, float]]], columns: Sequence[str],
                   bold: str = "DMM") -> str:
    """A Markdown table with ``mean +- std`` cells; the ``bold`` row's mean in bold."""
    lines = ["| method | " + " | ".join(columns) + " |",
             "|---|" + "---|" * len(columns)]
    for method, cells in table.items():
        texts = [f"{cells[c][0]:.1f} ± {cells[c][1]:.1f}" for c in columns]
        if method == bold:
            texts[-1] = f"**{texts[-1]}**"
        lines.append(f"| {method} | " + " | ".join(texts) + " |")
    return "\n".join(lines)


def _write_tables(bench_dir: Path, table: dict, columns: list[str], payloads: list) -> None:
    (bench_dir / "table.md").write_text(markdown_table(table, columns) + "\n")
    with open(bench_dir / "table.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["method", *(f"{c}-{s}" for c in columns for s in ("mean", "std"))])
        for method, cells in table.items():
            writer.writerow([method, *(f"{v:.4f}" for c in columns for v in cells[c])])
    write_json(bench_dir / "table.json", {
        "benchmark": payloads[0]["benchmark"], "seeds": [p["seed"] for p in payloads],
        "unit": "accuracy %, mean and sample std over seeds",
        "rows": {m: {c: {"mean": v[0], "std": v[1]} for c, v in cells.items()}
                 for m, cells in table.items()},
    })


def plot_accuracy(path: Path, table: dict, columns: list[str], title: str) -> None:
    """Grouped bars: one group per domain (and the mean), one bar per method, std as error."""
    methods = list(table)
    width = 0.8 / len(methods)
    fig = Figure(figsize=(max(6.0, 1.6 * len(columns) + 3), 4.2))
    ax = fig.subplots()
    cmap = colormaps["tab20"]
    for i, method in enumerate(methods):
        xs = np.arange(len(columns)) + (i - (len(methods) - 1) / 2) * width
        ax.bar(xs, [table[method][c][0] for c in columns], width,
               yerr=[table[method][c][1] for c in columns], label=method, color=cmap(i % 20),
               capsize=1.5, error_kw={"linewidth": 0.6})
    ax.set_xticks(np.arange(len(columns)), columns)
    ax.set_ylabel("test accuracy (%)")
    ax.set_ylim(0, 100)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=6, loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def plot_similarity(path: Path, payload: dict[str, Any]) -> None:
    """The clients' similarity matrix ordered by DMM's clusters, each cluster boxed."""
    sim = np.asarray(payload["dmm"]["similarity"])
    clusters = payload["dmm"]["clusters"]
    order = sorted(range(len(clusters)), key=lambda i: (clusters[i], i))
    names = [payload["client-names"][i] for i in order]
    fig = Figure(figsize=(5.2, 4.4))
    ax = fig.subplots()
    image = ax.imshow(sim[np.ix_(order, order)], cmap="viridis", vmin=min(0.0, sim.min()),
                      vmax=1.0)
    start = 0
    for k in sorted(set(clusters)):
        size = clusters.count(k)
        ax.add_patch(Rectangle((start - 0.5, start - 0.5), size, size, fill=False,
                                   edgecolor="red", linewidth=1.5))
        start += size
    ax.set_xticks(range(len(names)), names, rotation=90, fontsize=6)
    ax.set_yticks(range(len(names)), names, fontsize=6)
    ax.set_title(f"{payload['benchmark']} seed {payload['seed']}: task-vector cosine similarity,"
                 f"\n{len(set(clusters))} clusters (red)", fontsize=8)
    fig.colorbar(image, ax=ax, fraction=0.046)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def _to_image(x: torch.Tensor) -> np.ndarray:
    return ((x.clamp(-1, 1) + 1) / 2).permute(1, 2, 0).numpy()


def _real_examples(domains: list[str], support: list[int], n: int, root: Path) -> torch.Tensor:
    """``n`` test images of ``domains`` (in turn), cycling over the supported classes."""
    classes = [c for c, count in enumerate(support) if count > 0.01 * sum(support)]
    splits = {d: load_domain(d, "test", root) for d in domains}
    picks = []
    for i in range(n):
        split = splits[domains[i % len(domains)]]
        rows = np.flatnonzero(np.asarray(split.y) == classes[i % len(classes)])
        picks.append(to_tensors(split, rows[i // len(classes) % len(rows):][:1])[0][0])
    return torch.stack(picks)


def plot_pseudo_images(path: Path, payload: dict[str, Any], pseudo: list[torch.Tensor],
                       root: Path) -> None:
    """One row per teacher: its synthesised images, then real test images of its clients'
    domains and classes."""
    report = payload["dmm"]
    n = pseudo[0].shape[0]
    fig = Figure(figsize=(0.55 * (2 * n + 1), 0.75 * len(pseudo) + 0.4))
    axes = fig.subplots(len(pseudo), 2 * n + 1, squeeze=False)
    for k, (members, images) in enumerate(zip(report["teachers"], pseudo, strict=True)):
        domains = sorted({payload["client-names"][m].split(":", 1)[1] for m in members})
        real = _real_examples(domains, report["class_support"][k], n, root)
        tiles = [*images, None, *real]
        for ax, tile in zip(axes[k], tiles, strict=True):
            ax.axis("off")
            if tile is not None:
                ax.imshow(_to_image(tile))
        axes[k][0].set_title(f"teacher {k} (clients {','.join(map(str, members))}): "
                             f"synthesised | real {','.join(domains)}", fontsize=6, loc="left")
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.01, top=0.93, wspace=0.05, hspace=0.5)
    fig.savefig(path, dpi=110)


def plot_budget(path: Path, payloads: Sequence[dict[str, Any]]) -> None:
    """DMM's mean accuracy against samples x steps per teacher, one line per sample count (the
    default budget is the DMM row itself)."""
    domains = payloads[0]["domains"]
    points: dict[tuple[int, int], list[float]] = {}
    for p in payloads:
        default = {"samples": p["config"]["pseudo-samples-per-teacher"],
                   "steps": p["config"]["synthesis-steps"], "accuracy": p["accuracy"]["DMM"]}
        for point in [*p["budget"], default]:
            acc = 100 * statistics.fmean(point["accuracy"][d] for d in domains)
            points.setdefault((point["samples"], point["steps"]), []).append(acc)
    fig = Figure(figsize=(5.2, 3.6))
    ax = fig.subplots()
    for samples in sorted({s for s, _ in points}):
        keys = sorted(k for k in points if k[0] == samples)
        stats = [_mean_std(points[k]) for k in keys]
        ax.errorbar([max(s * t, 1) for s, t in keys], [m for m, _ in stats],
                    yerr=[e for _, e in stats], marker="o", capsize=2,
                    label=f"{samples} images / teacher")
    ax.set_xscale("log")
    ax.set_xlabel("synthesis budget per teacher (images x steps)")
    ax.set_ylabel("DMM mean accuracy (%)")
    ax.set_title(f"{payloads[0]['benchmark']}: accuracy vs synthesis budget "
                 f"({len(payloads)} seeds)", fontsize=8)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def write_benchmark_summary(bench_dir: Path, data_root: Path) -> dict[str, Any]:
    """Tables and plots of one benchmark directory; returns the aggregated table."""
    payloads = load_seeds(bench_dir)
    columns = [*payloads[0]["domains"], MEAN] if len(payloads[0]["domains"]) > 1 else [MEAN]
    table = aggregate(payloads)
    _write_tables(bench_dir, table, columns, payloads)
    first = payloads[0]
    title = f"{first['description']} ({len(payloads)} seeds)"
    plot_accuracy(bench_dir / "accuracy.png", table, columns, title)
    plot_similarity(bench_dir / "similarity.png", first)
    pseudo_file = bench_dir / f"seed-{first['seed']}.pseudo.pt"
    if pseudo_file.exists() and first["dmm"]["class_support"]:
        plot_pseudo_images(bench_dir / "pseudo-images.png", first,
                           torch.load(pseudo_file, weights_only=True), data_root)
    if any(p["budget"] for p in payloads):
        plot_budget(bench_dir / "budget.png", payloads)
    return table


def _test_sets(payload: dict[str, Any]) -> str:
    cap = payload["config"]["max-test-per-domain"]
    return f"test set (first {cap} examples)" if cap else "full held-out test set"


def write_results_index(out_dir: Path) -> Path:
    """``results.md``: per benchmark, its description, seeds, wall time and table."""
    parts = ["# dmm-fed results", ""]
    for bench_dir in sorted(p for p in out_dir.iterdir() if (p / "table.md").exists()):
        payloads = load_seeds(bench_dir)
        first = payloads[0]
        wall = sum(p["wall-time-s"] for p in payloads)
        parts += [
            f"## {first['benchmark']}", "",
            f"{first['description']}; {first['num-clients']} clients; seeds "
            f"{', '.join(str(p['seed']) for p in payloads)}; {first['date']}, {first['machine']}; "
            f"wall time {wall / 60:.1f} min (all seeds, client training included). "
            f"Accuracy % on each domain's {_test_sets(first)}, mean ± std over seeds.", "",
            (bench_dir / "table.md").read_text().strip(), "",
        ]
    path = out_dir / "results.md"
    path.write_text("\n".join(parts) + "\n")
    return path

"""What DMM costs on the server, as ratios measured side by side in one process (medians).

1. synthesis step vs its floor: one DeepInversion step on a batch against a plain
   forward+backward (gradient w.r.t. the inputs) of the same teacher on the same batch;
2. server phases against one client's local training (same model, same thread count);
3. aggregation time (similarity + clustering + merge) and peak memory as the number of clients
   grows (each size in a fresh subprocess, so the peak belongs to it);
4. image+text synthesis (``cnn-text``: pseudo-images and pseudo-embeddings) against image-only
   synthesis (``cnn``) at the same batch and steps.

    python -m benchmarks.perf --out /abs/path/perf.json [--repeats 5] [--clients 10,50,100]
    python -m benchmarks.perf --out docs/perf.json --parts image-text   # rerun one part only
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

from dmm_fed.data import IMAGE_SHAPE
from dmm_fed.distillation import DistillConfig, distill, teacher_targets
from dmm_fed.dmm import ClientUpdate, DMMConfig, merge_group, similarity_matrix
from dmm_fed.layout import StateLayout
from dmm_fed.models import build_model
from dmm_fed.report import write_json
from dmm_fed.similarity import cluster_models
from dmm_fed.statistics import running_stat_targets
from dmm_fed.synthesis import SynthesisConfig, synthesize
from dmm_fed.training import OptimizerConfig, train


def median_seconds(fn: Callable[[], object], repeats: int) -> float:
    """Median wall time of ``fn`` over ``repeats`` calls (after one warm-up call)."""
    fn()
    times = []
    for _ in range(repeats):
        tick = time.perf_counter()
        fn()
        times.append(time.perf_counter() - tick)
    return statistics.median(times)


def synthesis_vs_floor(batch: int, steps: int, repeats: int) -> dict[str, float]:
    """Seconds per synthesis step and per plain forward+backward step, and their ratio."""
    teacher = build_model("cnn", seed=0)
    teacher.eval()
    targets = running_stat_targets(teacher)
    labels = torch.arange(batch) % 10
    config = SynthesisConfig(num_samples=batch, steps=steps, log_every=0)

    def floor() -> None:
        x = torch.randn(batch, *IMAGE_SHAPE, requires_grad=True)
        opt = torch.optim.Adam([x], lr=0.1)
        for _ in range(steps):
            loss = F.cross_entropy(teacher(x), labels)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    synth = median_seconds(lambda: synthesize(teacher, targets, labels, config, seed=0), repeats)
    base = median_seconds(floor, repeats)
    # synthesize runs steps + 1 forward passes (the last one only scores the final batch)
    return {"synthesis-step-s": synth / steps, "floor-step-s": base / steps,
            "synthesis-to-floor": synth / base,
            "synthesis-images-x-steps-per-s": batch * steps / synth}


def image_text_vs_image(batch: int, steps: int, repeats: int) -> dict[str, float]:
    """Seconds per synthesis step of an image+text teacher and of the image-only CNN."""
    config = SynthesisConfig(num_samples=batch, steps=steps, log_every=0)
    labels = torch.arange(batch) % 7
    seconds = {}
    for name in ("cnn", "cnn-text"):
        teacher = build_model(name, 7, seed=0).eval()
        targets = running_stat_targets(teacher)
        seconds[name] = median_seconds(
            lambda t=teacher, s=targets: synthesize(t, s, labels, config, seed=0), repeats)
    return {"image-step-s": seconds["cnn"] / steps,
            "image-text-step-s": seconds["cnn-text"] / steps,
            "image-text-to-image": seconds["cnn-text"] / seconds["cnn"]}


def phases_vs_local_training(repeats: int) -> dict[str, float]:
    """One client's local epoch (2000 images) against one teacher's synthesis and a distillation."""
    model = build_model("cnn", seed=0)
    x, y = torch.randn(2000, *IMAGE_SHAPE), torch.randint(0, 10, (2000,))
    epoch = median_seconds(
        lambda: train(model, x, y, 1, 64, OptimizerConfig(), seed=0), repeats
    )
    teacher = build_model("cnn", seed=1)
    labels = torch.arange(128) % 10
    synth = median_seconds(lambda: synthesize(
        teacher, running_stat_targets(teacher), labels,
        SynthesisConfig(num_samples=128, steps=200, log_every=0), seed=0), max(repeats // 2, 1))
    pseudo = torch.randn(512, *IMAGE_SHAPE)
    probs = teacher_targets([teacher], [pseudo], 4.0)
    dist = median_seconds(lambda: distill(build_model("cnn", seed=2), pseudo, probs,
                                          DistillConfig(log_every=0), seed=0),
                          max(repeats // 2, 1))
    return {"local-epoch-2000-s": epoch, "synthesis-one-teacher-s": synth,
            "distillation-400-steps-s": dist,
            "synthesis-one-teacher-per-local-epoch": synth / epoch,
            "distillation-per-local-epoch": dist / epoch}


def aggregation(num_clients: int, repeats: int) -> dict[str, float]:
    """Similarity + clustering + merges of ``num_clients`` CNN updates; peak RSS of the process."""
    base = build_model("cnn", seed=0).state_dict()
    g = torch.Generator().manual_seed(0)
    updates = [
        ClientUpdate({k: v + 0.01 * torch.randn(v.shape, generator=g) if k.endswith(
            ("weight", "bias", "running_mean")) else v.clone() for k, v in base.items()}, 100)
        for _ in range(num_clients)
    ]
    layout = StateLayout.from_model(build_model("cnn"))
    config = DMMConfig()

    def step() -> None:
        sim = similarity_matrix(base, updates, layout, 0.0)
        labels = cluster_models(sim, threshold=config.similarity_threshold)
        for k in set(labels):
            merge_group(base, updates, [i for i, c in enumerate(labels) if c == k], layout,
                        config)

    seconds = median_seconds(step, repeats)
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"clients": num_clients, "aggregation-s": seconds, "peak-rss-mib": peak_mib}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="absolute path of the JSON")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--clients", default="10,50,100")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--parts", default=",".join(PARTS),
                        help=f"comma-separated subset of {','.join(PARTS)}; the other parts "
                        "of an existing --out file are kept")
    parser.add_argument("--only-aggregation", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.only_aggregation:
        print(json.dumps(aggregation(args.only_aggregation, args.repeats)))
        return
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = set(parts) - set(PARTS)
    if unknown:
        parser.error(f"unknown part(s) {', '.join(sorted(unknown))}; valid: {', '.join(PARTS)}")
    result = json.loads(args.out.read_text()) if args.out.is_file() else {}
    result["threads"] = args.threads
    if not isinstance(result.get("repeats"), dict):  # parts rerun alone may use other repeats
        result["repeats"] = {}
    for part in parts:
        result["repeats"][PARTS[part]] = args.repeats
        if part == "aggregation":
            result[PARTS[part]] = aggregation_rows(args)
        else:
            result[PARTS[part]] = MEASURES[part](args.repeats)
        print(f"{part}:", result[PARTS[part]], flush=True)
    write_json(args.out, result)
    print(f"wrote {args.out}")


PARTS = {"floor": "synthesis-vs-floor", "image-text": "image-text-vs-image",
         "phases": "phases-vs-local-training", "aggregation": "aggregation"}
MEASURES: dict[str, Callable[[int], dict[str, float]]] = {
    "floor": lambda repeats: synthesis_vs_floor(batch=128, steps=20, repeats=repeats),
    "image-text": lambda repeats: image_text_vs_image(batch=128, steps=20, repeats=repeats),
    "phases": phases_vs_local_training,
}


def aggregation_rows(args: argparse.Namespace) -> list[dict[str, float]]:
    """:func:`aggregation` for each client count, each in a fresh subprocess."""
    rows = []
    for n in (int(c) for c in args.clients.split(",")):
        out = subprocess.run(
            [sys.executable, "-m", "benchmarks.perf", "--out", str(args.out), "--repeats",
             str(args.repeats), "--threads", str(args.threads), "--only-aggregation", str(n)],
            check=True, capture_output=True, text=True,
        )
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    return rows


if __name__ == "__main__":
    main()

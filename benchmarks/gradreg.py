"""Baseline vs interpretable-gradients training (thesis ch. 4): accuracy, gradient similarity, and
AD, AG, AI, insertion, deletion for Grad-CAM, Grad-CAM++ and Score-CAM.

Data and model (no downloads): scikit-learn's handwritten digits (1797 8×8 images) upscaled
to 32×32×3, stratified 1437/360 split; :func:`xai_bridge_builtins.gradreg.small_cnn` (5 conv + BN +
in-place ReLU, max-pooling, GAP; CAM layer ``features.block3``, 8×8). For each seed every λ
starts from the same initialisation and sees the same batches (Adam lr 2e-3, cosine-annealed,
batch 64). NOT CIFAR-100/ImageNet: compare directions with thesis Table 4.1, not values.

Run (CPU)::

    python benchmarks/gradreg.py                       # 3 seeds × λ ∈ {0, 7.5e-3, 0.1, 1}, 10 epochs (docs/gradreg.md)
    python benchmarks/gradreg.py --seeds 0 --lams 0 0.3 --epochs 5 --out out/gradreg-bench
    python benchmarks/gradreg.py --reuse               # evaluate the checkpoints saved by a previous run

Metrics: the project's registered ``average_drop``, ``average_gain``, ``average_increase``,
``insertion_auc`` and ``deletion_auc`` through :func:`xai_bridge.evaluate`, with the ``opticam``
protocol preset (thesis ch. 2–4: class explained = ground-truth label, softmax probability, CAM
at layer resolution upsampled bilinearly then min-max normalised, black masking in pixel space
[0, 1], insertion from a Gaussian blur 11×11 σ = 5) at 32 pixels per insertion/deletion step
(33 points on 32×32 images); insertion/deletion areas are shown ×100.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

import xai_bridge as xb
from xai_bridge.data import digits_split
from xai_bridge.protocols import Protocol, get_protocol
from xai_bridge_builtins.gradreg.regularizer import (
    GradientRegularizer,
    cam_layer,
    evaluate_gradients,
    small_cnn,
    train_regularized,
)

METHODS = ("gradcam", "gradcam++", "scorecam")
METRICS = ("AD", "AG", "AI", "insertion", "deletion")
ARROWS = {"AD": "↓", "AG": "↑", "AI": "↑", "insertion": "↑", "deletion": "↓", "accuracy": "↑", "cosine": "↑"}

# ---------------------------------------------------------------------------------------------
# The project's metrics (xai_bridge.evaluate)
# ---------------------------------------------------------------------------------------------

#: name in the tables → registered metric, and the factor shown (areas are reported ×100 as in thesis Table 4.1).
METRIC_NAMES = {
    "AD": ("average_drop", 1.0),
    "AG": ("average_gain", 1.0),
    "AI": ("average_increase", 1.0),
    "insertion": ("insertion_auc", 100.0),
    "deletion": ("deletion_auc", 100.0),
}


def protocol() -> Protocol:
    """The thesis' evaluation (``opticam`` preset: class = label, softmax, black masking, RISE blur
    for insertion) with 32 pixels per insertion/deletion step for 32×32 images, and constant maps
    (a CAM that is zero everywhere) scored as the all-zero mask instead of raising."""
    return get_protocol("opticam", step=32, constant_maps="zeros", name="gradreg")


def cam_metrics(
    model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, method: str, layer: str | None
) -> dict[str, float]:
    """Mean AD, AG, AI, insertion, deletion over the images for one CAM method (class = label)."""
    explainer = xb.get_explainer(method, model, layer=layer)
    with contextlib.redirect_stderr(io.StringIO()):  # pytorch-grad-cam's own progress bars (Score-CAM)
        results = xb.evaluate(
            model,
            images,
            explainers=[explainer],
            metrics=[m for m, _ in METRIC_NAMES.values()],
            protocol=protocol(),
            labels=labels,
            batch_size=120,
            progress=False,
        )
    return {
        short: results.mean_std(results.explainers[0], name)[0] * factor
        for short, (name, factor) in METRIC_NAMES.items()
    }


# ---------------------------------------------------------------------------------------------
# Training, timing, evaluation
# ---------------------------------------------------------------------------------------------


def train_one(
    seed: int, lam: float, distance: str, epochs: int, train_set: Any, test_set: Any, progress: bool
) -> tuple[torch.nn.Module, list[dict[str, float]]]:
    torch.manual_seed(seed)
    model = small_cnn(10)
    loader = torch.utils.data.DataLoader(
        train_set, batch_size=64, shuffle=True, generator=torch.Generator().manual_seed(seed)
    )
    test_loader = torch.utils.data.DataLoader(test_set, batch_size=360)
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
    history = train_regularized(
        model,
        loader,
        epochs,
        optimizer=optimizer,
        lam=lam,
        distance=distance,
        progress=progress,
        val_loader=test_loader,
        scheduler=scheduler,
    )
    return model.eval(), history


def step_timing(train_set: Any, repeats: int = 10) -> dict[str, float]:
    """Median seconds of one training step (batch 64, small CNN, 32×32): plain CE, λ = 0 with both gradients
    logged, λ > 0."""
    torch.manual_seed(0)
    model = small_cnn(10).train()
    images = torch.stack([train_set[i][0] for i in range(64)])
    labels = torch.stack([train_set[i][1] for i in range(64)])
    params = list(model.parameters())

    def plain() -> None:
        F.cross_entropy(model(images), labels).backward(inputs=params)

    def logged() -> None:
        GradientRegularizer(lam=0.0).loss(model, images, labels)[0].backward(inputs=params)

    def regularised() -> None:
        GradientRegularizer(lam=7.5e-3).loss(model, images, labels)[0].backward(inputs=params)

    out = {}
    for name, fn in (("plain CE", plain), ("λ = 0, both gradients", logged), ("λ > 0 (double backward)", regularised)):
        fn()
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        out[name] = statistics.median(times)
    return out


def lam_key(lam: float) -> str:
    return "0" if lam == 0 else f"{lam:g}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--lams", type=float, nargs="+", default=[0.0, 7.5e-3, 0.1, 1.0])
    parser.add_argument("--distance", default="cosine")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--out", default="out/gradreg-benchmark", help="checkpoints, histories and results.json")
    parser.add_argument(
        "--reuse", action="store_true", help="load checkpoints saved by an earlier run instead of training"
    )
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    train_set, test_set = digits_split(32, seed=0)
    images, labels = test_set.tensors
    layer = cam_layer("smallcnn")

    rows = []
    for seed in args.seeds:
        for lam in args.lams:
            tag = f"seed{seed}_lam{lam_key(lam)}_{args.distance}"
            ckpt = out / f"{tag}.pt"
            start = time.perf_counter()
            if args.reuse and ckpt.exists():
                model = small_cnn(10)
                model.load_state_dict(torch.load(ckpt, weights_only=True))
                model.eval()
                history = json.loads((out / f"{tag}_history.json").read_text())
            else:
                model, history = train_one(
                    seed, lam, args.distance, args.epochs, train_set, test_set, progress=not args.quiet
                )
                torch.save(model.state_dict(), ckpt)
                (out / f"{tag}_history.json").write_text(json.dumps(history, indent=2))
            train_seconds = time.perf_counter() - start
            grads = evaluate_gradients(model, torch.utils.data.DataLoader(test_set, batch_size=360))
            row: dict[str, Any] = {
                "seed": seed,
                "lam": lam,
                "distance": args.distance,
                "epochs": len(history),
                "accuracy": grads["accuracy"] * 100,
                "cosine": grads["cosine"],
                "train_cosine": history[-1]["cosine"],
                "train_seconds": train_seconds,
            }
            for method in METHODS:
                for metric, value in cam_metrics(model, images, labels, method, layer).items():
                    row[f"{method}/{metric}"] = value
            rows.append(row)
            print(
                f"seed {seed} λ={lam:g}: acc {row['accuracy']:.2f}  cos {row['cosine']:.3f}  "
                + "  ".join(f"{m} AD {row[m + '/AD']:.2f} AG {row[m + '/AG']:.2f}" for m in METHODS),
                flush=True,
            )

    timing = step_timing(train_set)
    (out / "results.json").write_text(
        json.dumps({"rows": rows, "step_seconds": timing, "protocol": protocol().as_dict()}, indent=2)
    )
    print()
    print(markdown_table(rows, args.lams))
    print()
    print(
        "seconds per training step (batch 64, 32×32, median of 10): "
        + ", ".join(f"{k} {v * 1000:.1f} ms" for k, v in timing.items())
    )
    return 0


def _mean_std(values: list[float], digits: int) -> str:
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def markdown_table(rows: list[dict[str, Any]], lams: list[float]) -> str:
    """Mean ± standard deviation over seeds, one line per (method, λ)."""
    by_lam = {lam: [r for r in rows if r["lam"] == lam] for lam in lams}
    seeds = len(next(iter(by_lam.values())))
    lines = [
        f"Recognition ({seeds} seed{'s' if seeds > 1 else ''}, mean ± sd)",
        "",
        "| λ | test accuracy % ↑ | test cosine(∂L/∂x, guided), eval mode ↑ | training cosine, train mode (last "
        "epoch) ↑ |",
        "|---|---|---|---|",
    ]
    for lam, rs in by_lam.items():
        lines.append(
            f"| {lam:g} | {_mean_std([r['accuracy'] for r in rs], 2)} | {_mean_std([r['cosine'] for r in rs], 3)} "
            f"| {_mean_std([r['train_cosine'] for r in rs], 3)} |"
        )
    lines += [
        "",
        "| method | λ | " + " | ".join(f"{m} {ARROWS[m]}" for m in METRICS) + " |",
        "|---|---|" + "---|" * len(METRICS),
    ]
    for method in METHODS:
        for lam, rs in by_lam.items():
            lines.append(
                f"| {method} | {lam:g} | "
                + " | ".join(_mean_std([r[f"{method}/{m}"] for r in rs], 2) for m in METRICS)
                + " |"
            )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())

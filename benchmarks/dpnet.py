"""DP-Net (Sicre et al., ICIP 2023): Global vs Parts, the constraint ablation, and faithfulness of ``dpnet-cam``.

1. The λCS sweep: DP-Net with the class-specific constraint alone at several λCS, under two
   normalisations of LCS: the mean ``|V_{i,j}|`` off the class blocks (``1/(P(C−1)) Σ …``, the
   first definition) and the share of a class's ``|V_c|`` off its own parts (the current one).
   Seed 0 only. It is what chose the default λCS.
2. The constraint ablation at the defaults (λ⊥ = 1, λA = 0.1, λCS = 100 when on): accuracy of the
   global baseline (linear on pooled features) and of DP-Net's parts head on the same frozen
   backbone, with no constraint, each one alone, each pair (the slides' ⊥ + Assign, CS + ⊥,
   CS + Assign) and all three, mean ± std over seeds. The published ordering (parts ≥ global;
   constraints move accuracy by at most ~1 point) is checked and reported whichever way it goes.
   Beside accuracy, what each constraint is for: the mean off-diagonal ``|u_iᵀu_j|`` of the
   final parts (parts differ), the assignment entropy of the test regions (regions decisively
   assigned; ``log P`` is undecided), and the share of each class's ``|V_c|`` on its own parts
   (parts specific to their class; ``1/C`` is chance).
3. Faithfulness of ``dpnet-cam`` against Grad-CAM and Opti-CAM (and ``dpnet-part``) on the same
   trained DP-Net (seed 0, all three constraints at the defaults), same layer, with the
   registered metrics (Average Drop, Average Gain, deletion and insertion AUC).

Default data: scikit-learn's handwritten digits (1,437 train / 360 test, upscaled to 128×128), with
the embedded ImageNet EfficientNet-Lite0 frozen (its ``head``: 4×4 regions of 1,280-d at 128²).
**This is not the paper's data** (MIT-67, CUB-200, ImageNet with VGG-16 / ResNet-50): it checks the
direction of the published results on a small, offline, real dataset, not their values. Any
ImageFolder or list file can be given with ``--data`` (and ``--val``).

Run (CPU, one thread; features are cached in ``--cache-dir``; docs/dpnet.md says how long it took)::

    python benchmarks/dpnet.py --json out/dpnet.json --figures docs/img
    python benchmarks/dpnet.py --data /data/cub/train --val /data/cub/test --size 224 --epochs 30

Faithfulness protocol (the Opti-CAM / CA-Stream group's, preset ``opticam``): class explained =
ground-truth label; score = softmax probability; saliency upsampled bilinearly (align_corners False)
and min-max normalised per image (a constant map scores as 0); masking in pixel space [0, 1],
black = 0; AD/AG single step with ``x ⊙ M``; deletion to black, insertion from the RISE blur
(Gaussian 11×11, σ = 5), ``--step`` pixels per step, trapezoid area over the fraction of pixels, ×100.
"""

from __future__ import annotations

import argparse
import contextlib
import inspect
import io
import json
import statistics
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

import xai_bridge as xb  # noqa: E402
import xai_bridge_builtins.dpnet as dpnet  # noqa: E402
import xai_bridge_builtins.dpnet.training as dpnet_training  # noqa: E402
from xai_bridge.evaluation import score_maps  # noqa: E402
from xai_bridge.protocols import get_protocol  # noqa: E402

#: the default constraint weights, read from ``train``'s signature (so the table says what a user gets)
DEFAULTS = {
    name: inspect.signature(dpnet_training.train).parameters[name].default
    for name in ("lambda_orth", "lambda_assign", "lambda_cs")
}
#: constraint subsets of the ablation: name -> which of (⊥, Assign, CS) are on, at their default λ
SUBSETS = {
    "none": (False, False, False),
    "⊥": (True, False, False),
    "Assign": (False, True, False),
    "CS": (False, False, True),
    "⊥ + Assign": (True, True, False),
    "CS + ⊥": (True, False, True),
    "CS + Assign": (False, True, True),
    "all three": (True, True, True),
}
#: the λCS sweep (CS alone, seed 0): normalisation -> λCS values
SWEEP = {"mean": (1.0, 10.0, 100.0, 1000.0), "share": (1.0, 10.0, 30.0, 100.0, 300.0)}
METRICS = {"AD": "average_drop", "AG": "average_gain", "D": "deletion_auc", "I": "insertion_auc"}
EXPLAINERS = {"dpnet-cam": {}, "dpnet-part": {}, "gradcam": {}, "opticam": {}}


def mean_off_block_loss(weight: torch.Tensor, parts_per_class: int) -> torch.Tensor:
    """The first LCS: ``1/(P(C−1)) Σ_i Σ_{j ∉ parts of i} |V_{i,j}|``, the mean ``|V|`` off the class blocks."""
    c, p = weight.shape
    owner = torch.arange(p) // parts_per_class
    off = owner[None, :] != torch.arange(c)[:, None]
    return (weight.abs() * off).sum() / (p * (c - 1))


@contextlib.contextmanager
def cs_normalisation(name: str) -> Iterator[None]:
    """Train with LCS as the ``"share"`` (the library's) or the ``"mean"`` (the first definition)."""
    saved = dpnet_training.class_specific_loss
    if name == "mean":
        dpnet_training.class_specific_loss = mean_off_block_loss
    try:
        yield
    finally:
        dpnet_training.class_specific_loss = saved


def mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def fmt(values: list[float]) -> str:
    m, s = mean_std(values)
    return f"{m:.2f} ± {s:.2f}"


@torch.no_grad()
def diagnostics(model: Any, features: Any) -> dict[str, float]:
    """What the constraints are for: own-part share (%), mean off-diagonal |u_iᵀu_j|, LA on the test regions."""
    from xai_bridge_builtins.dpnet.model import assignment_loss, own_part_share, part_overlap

    entropy = []
    for i in range(0, len(features), 256):
        entropy.append(
            assignment_loss(model.head(features.features[i : i + 256].float()).scores) * min(256, len(features) - i)
        )
    return {
        "own_share": 100.0 * float(own_part_share(model.classifier.weight, model.parts_per_class).mean()),
        "overlap": float(part_overlap(model.parts)),
        "entropy": float(sum(entropy)) / len(features),
    }


def run(
    args: argparse.Namespace, common: dict[str, Any], seed: int, lambdas: tuple[float, float, float]
) -> tuple[dict[str, Any], Any]:
    start = time.perf_counter()
    orth, assign, cs = lambdas
    with warnings.catch_warnings():  # the near-chance warning: the table shows the share
        warnings.filterwarnings("ignore", message="DP-Net: .* near chance")
        result = dpnet.train(
            args.backbone, args.data, lambda_orth=orth, lambda_assign=assign, lambda_cs=cs, seed=seed, **common
        )
    last = result.history[-1]
    row = {
        "seed": seed,
        "parts": last["val_parts_accuracy"],
        "global": last["val_global_accuracy"],
        **diagnostics(result.model, result.val_features),
        "seconds": time.perf_counter() - start,
    }
    return row, result


def describe(row: dict[str, Any]) -> str:
    return (
        f"parts {row['parts']:.2f}  global {row['global']:.2f}  own {row['own_share']:.1f}%  "
        f"|uᵢᵀuⱼ| {row['overlap']:.3f}  H {row['entropy']:.3f}  ({row['seconds']:.0f} s)"
    )


def pick_images(result: Any, data: Any, per_class: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``per_class`` validation images of each class (deterministic, balanced)."""
    features = result.val_features
    labels = features.labels
    keep = torch.cat([torch.nonzero(labels == c)[:per_class, 0] for c in range(int(labels.max()) + 1)]).sort().values
    images = torch.stack([torch.as_tensor(data[int(features.indices[i])][0]) for i in keep])
    return images, labels[keep]


def faithfulness(
    model: Any, images: torch.Tensor, labels: torch.Tensor, step: int, opticam_iter: int, batch: int
) -> dict[str, dict[str, float]]:
    protocol = get_protocol("opticam", step=step, constant_maps="zeros")
    rows: dict[str, dict[str, float]] = {}
    for name, options in EXPLAINERS.items():
        if name == "opticam":
            options = {"max_iter": opticam_iter, "progress": False}
        explainer = xb.get_explainer(name, model, **options)
        start = time.perf_counter()
        values: dict[str, list[torch.Tensor]] = {k: [] for k in METRICS}
        for i in range(0, images.shape[0], batch):
            x, y = images[i : i + batch], labels[i : i + batch]
            with contextlib.redirect_stderr(io.StringIO()):
                maps = explainer.explain(x, y)
            scores = score_maps(model, x, maps, list(METRICS.values()), protocol, y)
            for short, metric in METRICS.items():
                values[short].append(scores[metric])
        row = {k: float(torch.cat(v).mean()) for k, v in values.items()}
        row["D"], row["I"] = row["D"] * 100, row["I"] * 100
        row["seconds"] = time.perf_counter() - start
        layer = getattr(getattr(explainer, "target_layer", None), "name", model.target_layer.name)
        print(
            f"{name:<11} {layer:<14} " + "  ".join(f"{k} {v:6.2f}" for k, v in row.items()), file=sys.stderr, flush=True
        )
        rows[name] = row
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="digits", help="digits (default), an ImageFolder root or a list file")
    parser.add_argument("--val", help="validation data (default: digits' test split, else 20 %% of --data)")
    parser.add_argument("--backbone", default="efficientnet-lite0")
    parser.add_argument("--backbone-weights")
    parser.add_argument("--layer")
    parser.add_argument("--size", type=int, default=128, help="image side fed to the backbone")
    parser.add_argument("--parts-per-class", type=int, default=10)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--images", type=int, default=50, help="images scored for faithfulness (balanced over classes)")
    parser.add_argument("--step", type=int, default=1024, help="pixels per insertion/deletion step (1/16 of 128²)")
    parser.add_argument("--opticam-iter", type=int, default=50, help="Opti-CAM iterations (paper: 100)")
    parser.add_argument("--batch", type=int, default=25, help="images per explainer call")
    parser.add_argument("--cache-dir", default="out/dpnet-cache")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch intra-op threads (1 is fastest on a shared machine)"
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--figures", help="also save an image figure and a class figure of the seed-0 model here")
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument("--no-sweep", action="store_true", help="skip the λCS sweep")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()

    common = dict(
        val_data=args.val,
        layer=args.layer,
        parts_per_class=args.parts_per_class,
        epochs=args.epochs,
        lr=args.lr,
        image_size=args.size,
        backbone_weights=args.backbone_weights,
        cache_dir=args.cache_dir,
        device=args.device,
        progress=False,
    )
    lam = (DEFAULTS["lambda_orth"], DEFAULTS["lambda_assign"], DEFAULTS["lambda_cs"])
    sweep: dict[str, list[dict[str, Any]]] = {}
    if not args.no_sweep:
        for norm, values in SWEEP.items():
            for value in values:
                with cs_normalisation(norm):
                    row, _ = run(args, common, args.seeds[0], (0.0, 0.0, value))
                row["lambda_cs"] = value
                sweep.setdefault(norm, []).append(row)
                print(f"sweep {norm:<5} λCS {value:<6g} {describe(row)}", file=sys.stderr, flush=True)
    sweep_seconds = time.perf_counter() - t0

    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in SUBSETS}
    kept: Any = None
    for seed in args.seeds:
        for name, on in SUBSETS.items():
            row, result = run(args, common, seed, tuple(v if flag else 0.0 for v, flag in zip(lam, on, strict=True)))
            runs[name].append(row)
            print(f"seed {seed} {name:<12} {describe(row)}", file=sys.stderr, flush=True)
            if seed == args.seeds[0] and name == "all three":
                kept = result
    train_seconds = time.perf_counter() - t0
    globals_ = [r["global"] for r in runs["none"]]
    spread = max(abs(r["global"] - g) for name in runs for r, g in zip(runs[name], globals_, strict=True))
    parts_none = mean_std([r["parts"] for r in runs["none"]])[0]
    parts_all = mean_std([r["parts"] for r in runs["all three"]])[0]
    global_mean = mean_std(globals_)[0]
    features = kept.train_features
    val = kept.val_features
    grid = f"{features.grid[0]}×{features.grid[1]}"
    source = kept.model.meta.get("data")
    num_classes, num_parts = kept.model.num_classes, kept.model.num_parts

    lines = [
        f"> NOT the paper's data: {source} at {args.size}×{args.size}, frozen {args.backbone} "
        f"({kept.model.layer_name}: "
        f"{grid} regions of {kept.model.feature_dim}-d); compare directions, not values, with the published tables.",
        "",
        f"{len(features)} training / {len(val)} test images, q = {args.parts_per_class} (P = {num_parts}), "
        f"Adam lr {args.lr}, {args.epochs} epochs; test accuracy (%) after the last epoch. Own-part share: the "
        f"share of each class's \\|V_c\\| on its own parts, mean over classes (chance {100 / num_classes:.0f} %). "
        f"\\|uᵢᵀuⱼ\\|: mean off-diagonal, 0 for orthogonal parts. Assignment entropy: LA on the test regions "
        f"(log P = {torch.log(torch.tensor(float(num_parts))):.2f} is undecided).",
    ]
    if sweep:
        lines += [
            "",
            f'λCS sweep: CS alone (λ⊥ = λA = 0), seed {args.seeds[0]}. "mean": LCS = mean \\|V\\| off the class '
            'blocks (the first definition); "share": LCS = share of \\|V_c\\| off the class\'s own parts (now).',
            "",
            "| LCS | λCS | parts accuracy | global | own-part share | \\|uᵢᵀuⱼ\\| | assignment entropy |",
            "|---|---|---|---|---|---|---|",
        ]
        for norm, rows in sweep.items():
            for r in rows:
                lines.append(
                    f"| {norm} | {r['lambda_cs']:g} | {r['parts']:.2f} | {r['global']:.2f} | {r['own_share']:.1f} % "
                    f"| {r['overlap']:.3f} | {r['entropy']:.3f} |"
                )
    lines += [
        "",
        f"Constraint ablation at the defaults (λ⊥ = {lam[0]:g}, λA = {lam[1]:g}, λCS = {lam[2]:g} with LCS the share, "
        f"when on), seeds {args.seeds}, mean ± std:",
        "",
        "| head | constraints | accuracy | own-part share | \\|uᵢᵀuⱼ\\| | assignment entropy |",
        "|---|---|---|---|---|---|",
        f"| Global | – | {fmt(globals_)} | | | |",
    ]
    for name, rows in runs.items():
        d = {k: mean_std([r[k] for r in rows]) for k in ("own_share", "overlap", "entropy")}
        share = f"{d['own_share'][0]:.1f} ± {d['own_share'][1]:.1f} %"
        lines.append(
            f"| Parts | {name} | {fmt([r['parts'] for r in rows])} | {share} "
            f"| {d['overlap'][0]:.3f} | {d['entropy'][0]:.3f} |"
        )
    checks = [
        ("parts ≥ global (no constraints)", parts_none >= global_mean, f"{parts_none:.2f} vs {global_mean:.2f}"),
        ("parts ≥ global (all three)", parts_all >= global_mean, f"{parts_all:.2f} vs {global_mean:.2f}"),
    ]
    for name in list(SUBSETS)[1:]:
        delta = mean_std([r["parts"] for r in runs[name]])[0] - parts_none
        checks.append((f"{name}: within 1 point of no constraints", abs(delta) <= 1.0, f"{delta:+.2f}"))
    lines += ["", "Published ordering (checked here):", ""]
    lines += [f"- {what}: **{'holds' if ok else 'does not hold'}** ({detail})" for what, ok, detail in checks]
    lines.append(f"- the global head is the same in every run of a seed (largest difference {spread:.2f} points)")

    loaded = dpnet.load_dataset(args.data, size=args.size)
    if loaded.held_out is not None:
        pool = loaded.held_out
    else:  # the validation features index into --val, or into --data when they are a split of it
        pool = dpnet.load_dataset(args.val, size=args.size).dataset if args.val else loaded.dataset
    images, labels = pick_images(kept, pool, max(1, args.images // kept.model.num_classes))
    images, labels = images.to(args.device), labels.to(args.device)
    t1 = time.perf_counter()
    rows = faithfulness(kept.model, images, labels, args.step, args.opticam_iter, args.batch)
    lines += [
        "",
        f"Faithfulness on {images.shape[0]} test images (ground-truth class), seed-{args.seeds[0]} DP-Net with all "
        f"three constraints, every map read at `{kept.model.target_layer.name}`; {args.step} pixels per "
        "insertion/deletion step, "
        f"Opti-CAM {args.opticam_iter} iterations; mean per image.",
        "",
        "| explainer | AD ↓ | AG ↑ | deletion AUC ↓ | insertion AUC ↑ | seconds |",
        "|---|---|---|---|---|---|",
    ]
    for name, m in rows.items():
        lines.append(f"| {name} | {m['AD']:.2f} | {m['AG']:.2f} | {m['D']:.2f} | {m['I']:.2f} | {m['seconds']:.0f} |")
    print("\n".join(lines))
    total = time.perf_counter() - t0
    print(
        f"\n(total {total:.0f} s: λCS sweep {sweep_seconds:.0f} s, ablation {train_seconds - sweep_seconds:.0f} s, "
        f"faithfulness {time.perf_counter() - t1:.0f} s; "
        f"{args.device}, {args.threads} thread(s))"
    )

    if args.figures:
        out = Path(args.figures)
        first = [int(torch.nonzero(labels == c)[0, 0]) for c in (3, 8) if (labels == c).any()]
        for i in first:
            dpnet.image_figure(
                kept.model,
                images[i].cpu(),
                int(labels[i]),
                top_k=3,
                path=out / f"dpnet_image_{int(labels[i])}.png",
                dpi=80,
            )
        dpnet.class_figure(
            kept.model,
            3 if kept.model.num_classes > 3 else 0,
            loaded.dataset,
            features=features,
            top_parts=3,
            crops=5,
            path=out / "dpnet_class_parts.png",
            dpi=80,
        )
    if args.json:
        payload = {
            "caveat": lines[0][2:],
            "defaults": DEFAULTS,
            "sweep": sweep,
            "accuracy": {name: rows_ for name, rows_ in runs.items()},
            "checks": [{"check": w, "holds": ok, "detail": d} for w, ok, d in checks],
            "faithfulness": rows,
            "history_seed0_all": kept.history,
            "seconds": total,
            "args": vars(args),
        }
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(payload, indent=2, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""``xai-bridge`` command line: plugins, explain, evaluate, demo, castream, gradreg, benchmark.

Every sub-command validates its input before doing any work and exits with
status 2 and one sentence saying what was wrong and how to fix it.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .cli_support import add_scoring_arguments, named_with_options, parse_options, torch_device
from .errors import UsageError


# -- plugins ----------------------------------------------------------------------------------
def cmd_plugins(args: argparse.Namespace) -> int:
    import xai_bridge as xb

    explainers = xb.list_explainers()
    metrics = xb.list_metrics()
    host = xb.get_host()
    if args.json:
        payload = {
            "plugins": [
                {"plugin": p.plugin, "distribution": p.distribution, "version": p.version}
                for p in host.providers().values()
            ],
            "explainers": [s.as_dict() for s in explainers],
            "metrics": [s.as_dict() for s in metrics],
            "conflicts": list(host.conflicts),
            "failures": [
                {
                    "plugin": f.provider.plugin,
                    "distribution": f.provider.distribution,
                    "stage": f.stage,
                    "error": f.error,
                }
                for f in host.failures
            ],
        }
        print(json.dumps(payload, indent=2, ensure_ascii=False))
        return 0
    width = max([len(e.name) for e in explainers] + [len(m.name) for m in metrics], default=0)
    family = max((len(s.family) for s in explainers), default=0)
    category = max((len(s.category) for s in metrics), default=0)
    print(f"Explainers ({len(explainers)}):")
    for e in explainers:
        aliases = f" (aliases: {', '.join(e.aliases)})" if e.aliases else ""
        print(f"  {e.name:<{width}}  {e.family:<{family}}  {e.provider}{aliases}")
    print(f"\nMetrics ({len(metrics)}):")
    for m in metrics:
        print(f"  {m.name:<{width}}  {m.arrow} {m.category:<{category}}  {m.provider}")
    if host.failures:
        print(f"\nSkipped plugins ({len(host.failures)}):")
        for f in host.failures:
            print(f"  {f}")
    if host.conflicts:
        print(f"\nName conflicts ({len(host.conflicts)}):")
        for message in host.conflicts:
            print(f"  {message}")
    return 0


# -- explain ----------------------------------------------------------------------------------
def _load_inputs(paths: Sequence[str], images_flag: str | None, size: int) -> tuple[Any, list[str]]:
    import torch

    from .data import ImageLoadError, load_image, sample_images

    if images_flag and paths:
        raise UsageError("give image files or --images default, not both")
    if images_flag:
        if images_flag != "default":
            raise UsageError(
                f"--images {images_flag!r}: only 'default' (the embedded photos) is known; pass files as arguments"
            )
        return sample_images(size=size)
    if not paths:
        raise UsageError("no images: pass image files, or --images default for the embedded photos")
    tensors, names = [], []
    for p in paths:
        try:
            tensors.append(load_image(p, size=size))
        except ImageLoadError as exc:
            raise UsageError(str(exc)) from exc
        names.append(Path(p).stem)
    return torch.stack(tensors), names


def _check_target(target: str | None, num_classes: int) -> Any:
    if target is None:
        return None
    if target.lstrip("-").isdigit():
        index = int(target)
        if not 0 <= index < num_classes:
            raise UsageError(
                f"--target {index}: out of range; the model has {num_classes} classes (0..{num_classes - 1})"
            )
        return index
    from .classes import class_index

    try:
        return class_index(target)
    except ValueError as exc:
        raise UsageError(str(exc).replace("target:", "--target:")) from exc


def cmd_explain(args: argparse.Namespace) -> int:
    import numpy as np
    from tqdm.auto import tqdm

    import xai_bridge as xb

    from .classes import imagenet_classes
    from .registry import UnknownNameError
    from .viz import save_explanation_figure

    try:
        spec = xb.explainer_spec(args.explainer)
    except UnknownNameError as exc:
        raise UsageError(f"--explainer: {exc}") from exc
    options = parse_options(args.option)
    if args.layer:
        options["layer"] = args.layer
    images, names = _load_inputs(args.paths, args.images, args.size)
    model = xb.default_model()
    device = torch_device(args.device)
    model, images = model.to(device), images.to(device)
    target = _check_target(args.target, 1000)
    try:
        explainer = spec.create(model, **options)
    except (ValueError, TypeError) as exc:
        raise UsageError(f"{spec.name}: {exc}") from exc
    if (
        args.quiet and "progress" not in options and hasattr(explainer, "progress")
    ):  # Opti-CAM's own bar; -o progress=… wins
        explainer.progress = False
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    classes = imagenet_classes()
    summary = []
    bar = tqdm(range(0, images.shape[0], args.batch_size), desc=f"{spec.name}", unit="batch", disable=args.quiet)
    for start in bar:
        batch = images[start : start + args.batch_size]
        explanation = explainer.explanation(batch, target)
        probs = explanation.logits.softmax(-1)
        for i in range(batch.shape[0]):
            name = names[start + i]
            cls = int(explanation.targets[i])
            prob = float(probs[i, cls])
            stem = f"{name}_{spec.name}".replace("+", "p")
            np.save(out / f"{stem}.npy", explanation.maps[i].cpu().numpy())
            if explanation.raw is not None:
                np.save(out / f"{stem}_raw.npy", explanation.raw[i].cpu().numpy())
            save_explanation_figure(
                out / f"{stem}.png", batch[i], explanation.maps[i], f"{classes[cls]} ({prob:.1%})", spec.name
            )
            top = probs[i].topk(5)
            summary.append(
                {
                    "image": name,
                    "explained_class": cls,
                    "explained_name": classes[cls],
                    "probability": prob,
                    "top5": [
                        {"class": int(c), "name": classes[int(c)], "probability": float(p)}
                        for p, c in zip(top.values, top.indices, strict=False)
                    ],
                    "figure": f"{stem}.png",
                    "map": f"{stem}.npy",
                }
            )
    (out / "explanations.json").write_text(
        json.dumps(
            {"explainer": spec.name, "options": {k: repr(v) for k, v in options.items()}, "images": summary},
            indent=2,
            ensure_ascii=False,
        )
    )
    for row in summary:
        top = ", ".join(f"{t['name']} {t['probability']:.1%}" for t in row["top5"][:3])
        print(f"{row['image']:<20} explained: {row['explained_name']} ({row['probability']:.1%})   top-3: {top}")
    print(f"wrote {len(summary)} figures and maps to {out}/")
    return 0


# -- evaluate ---------------------------------------------------------------------------------
def cmd_evaluate(args: argparse.Namespace) -> int:

    import xai_bridge as xb

    from .protocols import PRESETS
    from .registry import UnknownNameError

    if args.protocol not in PRESETS:
        raise UsageError(f"--protocol {args.protocol!r}: expected one of {', '.join(PRESETS)}")
    images, names = _load_inputs(args.paths, args.images, args.size)
    device = torch_device(args.device)
    model = xb.default_model().to(device)
    images = images.to(device)
    target = _check_target(args.target, 1000)
    explainers, metrics = [], []
    try:
        for name, options in named_with_options(args.explainers, "--explainers"):
            explainers.append(xb.explainer_spec(name).create(model, **options))
        for name, options in named_with_options(args.metrics, "--metrics"):
            metrics.append(xb.get_metric(name, **options))
    except UnknownNameError as exc:
        raise UsageError(str(exc)) from exc
    except (ValueError, TypeError) as exc:
        raise UsageError(str(exc)) from exc
    boxes = None
    if any("boxes" in getattr(m, "needs", ()) for m in metrics):
        if not args.images:
            raise UsageError("localisation metrics need boxes; they are known for --images default only")
        from .data import photo_boxes

        boxes = photo_boxes(names)
    results = xb.evaluate(
        model,
        images,
        explainers,
        metrics,
        protocol=args.protocol,
        targets=target,
        image_ids=names,
        boxes=boxes,
        progress=not args.quiet,
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results.to_csv(out / "results.csv")
    results.to_json(out / "results.json")
    (out / "summary.md").write_text(results.summary() + "\n")
    print(results.summary())
    print(f"\nwrote results.csv, results.json and summary.md to {out}/")
    return 0


# -- demo -------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="xai-bridge",
        description="Saliency explainers and faithfulness metrics across Captum, pytorch-grad-cam and Quantus.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("plugins", help="list every explainer and metric with the plugin providing it")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_plugins)

    p = sub.add_parser("explain", help="explain images with one explainer on the embedded default model")
    p.add_argument("paths", nargs="*", help="image files (JPEG, PNG, ...)")
    p.add_argument("--explainer", "-e", required=True, help="explainer name, see `xai-bridge plugins`")
    p.add_argument("--images", help="'default' for the embedded photos")
    p.add_argument("--target", help="class index or ImageNet class name (default: the predicted class)")
    p.add_argument("--layer", help="target layer (dotted module name), for CAM methods")
    p.add_argument(
        "--option", "-o", action="append", default=[], metavar="KEY=VALUE", help="explainer option, repeatable"
    )
    p.add_argument("--out", default="out", help="output folder (default: out/)")
    p.add_argument("--size", type=int, default=224, help="image side after resize and centre crop")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--device", default="cpu", help="torch device, e.g. cuda")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_explain)

    p = sub.add_parser(
        "evaluate", help="score explainers with metrics on images (one row per image × explainer × metric)"
    )
    p.add_argument("paths", nargs="*", help="image files (JPEG, PNG, ...)")
    p.add_argument("--images", help="'default' for the embedded photos")
    add_scoring_arguments(p)
    p.add_argument("--target", help="class index or ImageNet class name (default: per protocol)")
    p.add_argument("--out", default="out/evaluate")
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--device", default="cpu")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_evaluate)

    from .runner.cli import add_benchmark_parser  # `benchmark …` (also under torchrun -m xai_bridge)

    add_benchmark_parser(sub)

    from .manager import get_host  # plugins add their own commands (`castream`, …)

    get_host().add_commands(sub)

    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except UsageError as exc:
        print(f"xai-bridge {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

"""``xai-bridge dpnet …``: train a DP-Net and draw its explanations (cheap to import; torch is loaded on use).

::

    xai-bridge dpnet train --data digits --size 128 --epochs 30 --out runs/digits
    xai-bridge dpnet train --data IMAGEFOLDER --backbone efficientnet-lite0 --out runs/mine
    xai-bridge dpnet train --data train.txt --val val.txt --backbone resnet50 --backbone-weights r50.pth --out runs/r50
    xai-bridge dpnet explain --model runs/digits/dpnet.pt --data digits --index 0 1 2 --class 3 --out figures/
    xai-bridge dpnet explain --model runs/mine/dpnet.pt photo.jpg --top-k 4 --out figures/

Nothing is downloaded: ``efficientnet-lite0`` is the embedded ImageNet model; torchvision
backbones get random weights unless ``--backbone-weights`` gives a ``state_dict`` file.
Backbone features are cached under ``--cache-dir`` (default ``OUT/features``). Running the
same ``train`` command again resumes after the last completed epoch (``--no-resume`` starts over).
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path
from typing import Any

#: Default constraint weights λ⊥, λA, λCS; the same as :func:`~xai_bridge_builtins.dpnet.training.train`'s
#: (a test checks it). Written here too so that building the parser imports no torch. λCS was chosen
#: by the sweep in ``benchmarks/dpnet.py`` (docs/dpnet.md).
LAMBDA_ORTH, LAMBDA_ASSIGN, LAMBDA_CS = 1.0, 0.1, 100.0


def add_dpnet_parser(sub: Any) -> None:
    """Add ``dpnet`` (with ``train`` and ``explain``) to the CLI's sub-parsers."""
    p = sub.add_parser("dpnet", help="DP-Net: discriminative parts on a frozen backbone (train, explain)")
    actions = p.add_subparsers(dest="dpnet_command", required=True)

    t = actions.add_parser(
        "train",
        help="train a DP-Net (parts + global baseline) on digits, an ImageFolder or a list file",
        description="Train a DP-Net's parts, classifier and global baseline on a frozen backbone. Running the same "
        "command again resumes after the last completed epoch.",
    )
    t.add_argument("--data", required=True, help="'digits', an ImageFolder root, or a list file of 'PATH LABEL' lines")
    t.add_argument(
        "--val", help="validation data of the same classes (default: digits' test split, else --val-fraction of --data)"
    )
    t.add_argument(
        "--val-fraction",
        type=float,
        default=0.2,
        help="stratified share of --data held out when --val is not given, 0 for none (default: %(default)s)",
    )
    t.add_argument("--out", required=True, help="folder for dpnet.pt (the model), last.pt (resume) and history.json")
    t.add_argument(
        "--backbone",
        default="efficientnet-lite0",
        help="efficientnet-lite0 (embedded ImageNet weights) or a torchvision model name (default: %(default)s)",
    )
    t.add_argument("--backbone-weights", help="state_dict file of a torchvision backbone (default: random weights)")
    t.add_argument("--layer", help="dotted name of the feature layer (default: the architecture's last feature block)")
    t.add_argument(
        "--parts-per-class",
        type=int,
        default=10,
        help="q, parts per class; the model has q × classes parts (default: %(default)s)",
    )
    t.add_argument("--epochs", type=int, default=30, help="total training epochs (default: %(default)s)")
    t.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (default: %(default)s)")
    t.add_argument("--weight-decay", type=float, default=0.0, help="Adam weight decay (default: %(default)s)")
    t.add_argument(
        "--batch-size", type=int, default=64, help="training images per optimiser step (default: %(default)s)"
    )
    t.add_argument(
        "--lambda-orth",
        type=float,
        default=LAMBDA_ORTH,
        help="λ⊥ of the orthogonality loss, 0 disables it (default: %(default)s)",
    )
    t.add_argument(
        "--lambda-assign",
        type=float,
        default=LAMBDA_ASSIGN,
        help="λA of the assignment loss, 0 disables it (default: %(default)s)",
    )
    t.add_argument(
        "--lambda-cs",
        type=float,
        default=LAMBDA_CS,
        help="λCS of the class-specific loss (the share of a class's |V_c| off its own parts), 0 disables it "
        "(default: %(default)s)",
    )
    t.add_argument(
        "--init",
        choices=("kmeans", "random"),
        default="kmeans",
        help="part initialisation: per-class k-means on training regions, or N(0, 1) (default: %(default)s)",
    )
    t.add_argument("--size", type=int, help="image side fed to the backbone (default: 128 for digits, 224 otherwise)")
    t.add_argument("--cache-dir", help="features cache folder (default: OUT/features)")
    t.add_argument(
        "--cache-dtype",
        choices=("float32", "float16", "bfloat16"),
        default="float32",
        help="storage dtype of cached features; float16 halves the disk (default: %(default)s)",
    )
    t.add_argument("--device", default="cpu", help="torch device, e.g. cuda (default: %(default)s)")
    t.add_argument(
        "--workers",
        type=int,
        default=0,
        help="DataLoader worker processes for feature extraction (default: %(default)s)",
    )
    t.add_argument(
        "--threads", type=int, help="torch CPU threads (default: torch's choice; 1 is fastest on a busy machine)"
    )
    t.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed of the part initialisation, the heads and the batch order (default: %(default)s)",
    )
    t.add_argument("--no-resume", action="store_true", help="start over even if OUT/last.pt exists")
    t.add_argument(
        "--quiet",
        action="store_true",
        help="no progress bars (they are shown only when stderr is a terminal anyway)",
    )
    t.set_defaults(func=cmd_dpnet_train)

    e = actions.add_parser("explain", help="figures of a trained DP-Net: an image's top parts, a class's parts")
    e.add_argument("images", nargs="*", help="image files to explain")
    e.add_argument("--model", required=True, help="a trained DP-Net (OUT/dpnet.pt of dpnet train)")
    e.add_argument(
        "--backbone-weights", help="state_dict file of its torchvision backbone, when it was trained with one"
    )
    e.add_argument(
        "--data",
        help="images to explain by --index ('digits' = its test split) and training data for --class crops "
        "(default: the data the model was trained on)",
    )
    e.add_argument("--index", type=int, nargs="*", default=[], help="explain these items of --data")
    e.add_argument("--target", help="class explained (index or name; default: the predicted class)")
    e.add_argument("--top-k", type=int, default=3, help="parts shown per image")
    e.add_argument("--class", dest="classes", nargs="*", default=[], help="draw these classes' parts (index or name)")
    e.add_argument("--top-parts", type=int, default=4, help="parts with crops per class figure")
    e.add_argument("--crops", type=int, default=5, help="most activating training crops per part")
    e.add_argument(
        "--cache-dir",
        help="features cache folder for the training crops (default: the features/ folder next to --model, if any)",
    )
    e.add_argument("--out", default="dpnet-figures", help="folder for the PNG figures and parts.json")
    e.add_argument("--device", default="cpu")
    e.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    e.set_defaults(func=cmd_dpnet_explain)


def _check_positive(**values: Any) -> None:
    from xai_bridge.errors import UsageError

    for flag, value in values.items():
        if value is not None and value < 1:
            raise UsageError(f"--{flag.replace('_', '-')} {value}: expected a positive integer")


def _set_threads(threads: int | None) -> None:
    if threads is not None:
        import torch

        torch.set_num_threads(threads)


def _source_spec(source: str) -> str:
    """``"imagefolder:/root"`` → ``"/root"``: the recorded data as ``--data`` would name it."""
    kind, sep, rest = source.partition(":")
    return rest if sep and kind in ("imagefolder", "list") else source


def cmd_dpnet_train(args: argparse.Namespace) -> int:
    from xai_bridge.cli_support import torch_device
    from xai_bridge.errors import UsageError

    from .training import train

    _check_positive(
        epochs=args.epochs,
        batch_size=args.batch_size,
        parts_per_class=args.parts_per_class,
        size=args.size,
        threads=args.threads,
    )
    _set_threads(args.threads)
    if args.size is not None and args.size < 16:
        raise UsageError(f"--size {args.size}: expected at least 16 pixels")
    if args.lr <= 0:
        raise UsageError(f"--lr {args.lr}: expected a positive learning rate")
    if not 0 <= args.val_fraction < 1:
        raise UsageError(f"--val-fraction {args.val_fraction}: expected a fraction in [0, 1)")
    for flag in ("lambda_orth", "lambda_assign", "lambda_cs", "weight_decay"):
        if getattr(args, flag) < 0:
            raise UsageError(f"--{flag.replace('_', '-')} {getattr(args, flag)}: expected a number ≥ 0 (0 disables it)")
    device = torch_device(args.device)
    out = Path(args.out)
    try:
        with warnings.catch_warnings():  # said below, in one plain line, with the numbers of every epoch
            warnings.filterwarnings("ignore", message="DP-Net: .* near chance")
            result = train(
                args.backbone,
                args.data,
                val_data=args.val,
                val_fraction=args.val_fraction,
                layer=args.layer,
                parts_per_class=args.parts_per_class,
                epochs=args.epochs,
                lr=args.lr,
                weight_decay=args.weight_decay,
                batch_size=args.batch_size,
                lambda_orth=args.lambda_orth,
                lambda_assign=args.lambda_assign,
                lambda_cs=args.lambda_cs,
                init=args.init,
                seed=args.seed,
                image_size=args.size,
                backbone_weights=args.backbone_weights,
                cache_dir=args.cache_dir or out / "features",
                cache_dtype=args.cache_dtype,
                checkpoint_dir=out,
                resume=not args.no_resume,
                device=device,
                num_workers=args.workers,
                progress=False if args.quiet else None,
            )
    except (ValueError, TypeError) as exc:
        message = str(exc)
        for name, flag in (
            ("data:", "--data:"),
            ("val_data:", "--val:"),
            ("backbone:", "--backbone:"),
            ("layer:", "--layer:"),
        ):
            if message.startswith(name):
                message = flag + message[len(name) :]
        raise UsageError(message) from exc
    model = result.model
    (out / "history.json").write_text(json.dumps({"config": model.config, "history": result.history}, indent=2))
    features = result.train_features
    if features is not None:
        origin = "read from the cache" if features.cached else "computed and cached"
        print(f"features: {len(features)} training images, {tuple(features.features.shape[1:])} each, {origin}")
        if features.skipped:
            print(f"skipped {len(features.skipped)} unreadable images, first: {features.skipped[0]}")
    if result.resumed_from:
        print(f"resumed after epoch {result.resumed_from}")
    for row in result.history:
        val = (
            f"   val global {row['val_global_accuracy']:.2f}%  parts {row['val_parts_accuracy']:.2f}%"
            if "val_parts_accuracy" in row
            else ""
        )
        own = f"   own-part share {row['own_share']:.1f}%" if "own_share" in row else ""
        print(
            f"epoch {row['epoch']:>3}  loss {row['loss']:.4f}  "
            f"train global {row['global_accuracy']:.2f}%  parts {row['parts_accuracy']:.2f}%{val}{own}"
        )
    _print_own_share(model)
    print(f"wrote {result.checkpoint} and {out / 'history.json'}")
    return 0


def _print_own_share(model: Any) -> None:
    """One line: the share of each class's |V_c| on its own parts, against chance; a warning when near chance."""
    from .model import near_chance, own_part_share

    shares = own_part_share(model.classifier.weight.detach(), model.parts_per_class)
    share, chance = float(shares.mean()), 1.0 / model.num_classes
    print(
        f"own-part share: {100 * share:.1f}% of each class's |V_c| is on its own parts "
        f"(mean over {model.num_classes} classes, lowest {100 * float(shares.min()):.1f}%; chance {100 * chance:.1f}%)"
    )
    if near_chance(share, model.num_classes):
        print(
            "warning: the own-part share is near chance, so the parts are not specific to their classes "
            "(a class's logit reads other classes' parts as much as its own); train with a larger --lambda-cs "
            "or more --epochs",
            file=sys.stderr,
        )


def _target(value: str | None) -> Any:
    if value is None:
        return None
    return int(value) if value.lstrip("-").isdigit() else value


def cmd_dpnet_explain(args: argparse.Namespace) -> int:
    import torch

    from xai_bridge.cli_support import torch_device
    from xai_bridge.data import load_image
    from xai_bridge.errors import ImageLoadError, UsageError

    from .data import load_dataset
    from .explainers import class_parts, explain_parts
    from .figures import class_figure, image_figure
    from .model import load_dpnet

    _check_positive(top_k=args.top_k, top_parts=args.top_parts, crops=args.crops, threads=args.threads)
    _set_threads(args.threads)
    device = torch_device(args.device)
    try:
        model = load_dpnet(args.model, backbone_weights=args.backbone_weights).to(device).eval()
    except ValueError as exc:
        raise UsageError(f"--model: {exc}") from exc
    if args.top_k > model.num_parts or args.top_parts > model.num_parts:
        raise UsageError(f"--top-k/--top-parts: the model has {model.num_parts} parts")
    size = int(model.meta.get("image_size", 224))
    data_spec = args.data or (
        _source_spec(model.meta["data"]) if model.meta.get("data") not in (None, "dataset", "tensors") else None
    )
    if not args.images and not args.index and not args.classes:
        raise UsageError("nothing to explain: give image files, --data with --index, or --class")

    loaded = None
    if args.index or args.classes:
        if data_spec is None:
            raise UsageError(
                "--data: needed for --index and --class (the model does not record a loadable training set)"
            )
        try:
            loaded = load_dataset(data_spec, size=size, name="--data")
        except (ValueError, TypeError) as exc:
            raise UsageError(str(exc).replace("data:", "--data:", 1)) from exc
        if loaded.classes is not None and len(loaded.classes) != model.num_classes:
            raise UsageError(
                f"--data: has {len(loaded.classes)} classes but the DP-Net has {model.num_classes}; "
                "give the data it was trained on"
            )

    images: list[tuple[str, torch.Tensor]] = []
    for name in args.images:
        try:
            images.append((Path(name).stem, load_image(name, size)))
        except ImageLoadError as exc:
            raise UsageError(str(exc)) from exc
    if args.index:
        assert loaded is not None
        pool = loaded.held_out if loaded.held_out is not None else loaded.dataset
        for i in args.index:
            if not 0 <= i < len(pool):
                raise UsageError(
                    f"--index {i}: out of range; --data has {len(pool)} images to explain (0..{len(pool) - 1})"
                )
            images.append((f"item{i}", torch.as_tensor(pool[i][0])))

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    _print_own_share(model)
    report: dict[str, Any] = {"model": str(args.model), "images": {}, "classes": {}}
    for name, image in images:
        image = image.to(device)
        try:
            ex = explain_parts(model, image[None], _target(args.target))
            image_figure(model, image, ex.targets[0], top_k=args.top_k, path=out / f"{name}_parts.png")
        except ValueError as exc:
            raise UsageError(str(exc).replace("target:", "--target:", 1)) from exc
        c = int(ex.targets[0])
        top = ex.top_parts(0, args.top_k)
        report["images"][name] = {
            "class": c,
            "logit": float(ex.logits[0, c]),
            "bias": float(ex.bias[0]),
            "top_parts": top,
        }
        parts = ", ".join(f"part {r['part']} (class {r['owner_name']}) {r['contribution']:+.2f}" for r in top)
        print(
            f"{name}: class {model.class_names[c] if model.class_names else c}, logit {float(ex.logits[0, c]):.2f}; "
            f"top parts: {parts} -> {out / f'{name}_parts.png'}"
        )
    for c in args.classes:
        try:
            ranked = class_parts(model, _target(c))
        except ValueError as exc:
            raise UsageError(f"--class {c!r}: {exc}") from exc
        assert loaded is not None
        label = ranked.class_name or str(ranked.class_index)
        path = out / f"class_{label}.png"
        cache = args.cache_dir or (
            Path(args.model).parent / "features" if (Path(args.model).parent / "features").is_dir() else None
        )
        class_figure(
            model,
            ranked.class_index,
            loaded.dataset,
            top_parts=args.top_parts,
            crops=args.crops,
            cache_dir=cache,
            path=path,
        )
        report["classes"][label] = {"parts": ranked.top(model.num_parts), "own_share": ranked.own_share}
        print(
            f"class {label}: top parts {', '.join(f'{p} ({w:+.2f})' for p, w in ranked.top(args.top_parts))}; "
            f"{100 * ranked.own_share:.0f}% of |V_c| on its own parts (chance {100 / model.num_classes:.0f}%) -> {path}"
        )
    (out / "parts.json").write_text(json.dumps(report, indent=2))
    return 0

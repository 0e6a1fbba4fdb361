"""``xai-bridge castream …``: the command line of CA-Stream (cheap to import; torch is loaded on use).

::

    xai-bridge castream train --arch resnet18 --data IMAGEFOLDER --epochs 90 --out runs/r18
    xai-bridge castream train --arch efficientnet-lite0 --data IMAGEFOLDER --out runs/lite0
    xai-bridge castream train --arch resnet50 --backbone-weights resnet50.pth --data IMAGEFOLDER --out runs/r50

Nothing is downloaded: torchvision architectures get random weights unless
``--backbone-weights`` gives a ``state_dict`` file; ``efficientnet-lite0`` uses the
embedded ImageNet weights. Running the same command again resumes after the last
completed epoch (``--no-resume`` starts over).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def add_castream_parser(sub: Any) -> None:
    """Add ``castream`` (with its ``train`` sub-command) to the CLI's sub-parsers."""
    p = sub.add_parser("castream", help="CA-Stream: train the cross-attention stream on a frozen backbone")
    actions = p.add_subparsers(dest="castream_command", required=True)
    t = actions.add_parser("train", help="train a CA-Stream on an ImageFolder (backbone and classifier frozen)")
    t.add_argument(
        "--arch", required=True, help="efficientnet-lite0, resnet18/34/50/101/152, convnext_tiny/small/base/large, …"
    )
    t.add_argument("--data", required=True, help="ImageFolder root (one sub-folder per class) for training")
    t.add_argument("--val", help="optional ImageFolder root for per-epoch validation accuracy (GAP vs CA)")
    t.add_argument("--out", required=True, help="folder for last.pt (resume), stream.pt (weights) and history.json")
    t.add_argument("--backbone-weights", help="state_dict file of the torchvision backbone (default: random weights)")
    t.add_argument("--epochs", type=int, default=90, help="total epochs (thesis: 90)")
    t.add_argument("--lr", type=float, default=0.1, help="SGD learning rate (thesis: 0.1)")
    t.add_argument("--momentum", type=float, default=0.9)
    t.add_argument("--weight-decay", type=float, default=1e-4)
    t.add_argument("--step-size", type=int, default=30, help="epochs between lr decays (thesis: 30)")
    t.add_argument("--gamma", type=float, default=0.1, help="lr decay factor (thesis: 0.1)")
    t.add_argument("--batch-size", type=int, default=256, help="thesis: 256 (8 GPUs × 32)")
    t.add_argument("--size", type=int, default=224, help="image side after resize and centre crop")
    t.add_argument(
        "--normalize",
        choices=("auto", "none", "imagenet"),
        default="auto",
        help="auto: imagenet mean/std for torchvision archs, none for efficientnet-lite0 (it folds its own)",
    )
    t.add_argument("--start-stage", default="S0", help="first stage the stream reads, S0…S4 (thesis: S0)")
    t.add_argument("--kv-projection", action="store_true", help="PROJ→CA blocks (projections on keys and values)")
    t.add_argument("--class-specific", action="store_true", help="one CLS token per class")
    t.add_argument("--init", choices=("thesis", "gap"), default="thesis", help="gap: start equal to the GAP model")
    t.add_argument("--device", default="cpu", help="torch device, e.g. cuda")
    t.add_argument("--workers", type=int, default=0, help="DataLoader worker processes")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--no-resume", action="store_true", help="start over even if OUT/last.pt exists")
    t.add_argument("--quiet", action="store_true", help="no progress bars")
    t.set_defaults(func=cmd_castream_train)


class _ToImageNet:
    """Map ImageFolder class indices to ImageNet indices (picklable, for worker processes)."""

    def __init__(self, table: list[int]) -> None:
        self.table = table

    def __call__(self, index: int) -> int:
        return self.table[index]


def _imagenet_indices(classes: list[str]) -> list[int]:
    from xai_bridge.classes import class_index
    from xai_bridge.errors import UsageError

    table = []
    for name in classes:
        if name.isdigit() and int(name) < 1000:
            table.append(int(name))
            continue
        try:
            table.append(class_index(name.replace("_", " ")))
        except ValueError as exc:
            raise UsageError(
                "--data: the backbone has the 1000 ImageNet classes, so class folders must be ImageNet indices "
                f"(0-999) or class names; {name!r} is neither ({exc})"
            ) from exc
    return table


def cmd_castream_train(args: argparse.Namespace) -> int:

    from xai_bridge.cli_support import torch_device
    from xai_bridge.data import image_folder
    from xai_bridge.errors import UsageError
    from xai_bridge_builtins.castream.model import CAModel
    from xai_bridge_builtins.castream.train import backbone_from_name, train_stream

    for flag, value, low in (
        ("--epochs", args.epochs, 1),
        ("--batch-size", args.batch_size, 1),
        ("--size", args.size, 16),
        ("--step-size", args.step_size, 1),
    ):
        if value < low:
            raise UsageError(f"{flag} {value}: expected at least {low}")
    if args.lr <= 0:
        raise UsageError(f"--lr {args.lr}: expected a positive learning rate")
    device = torch_device(args.device)
    lite = args.arch.lower().replace("_", "-") in ("efficientnet-lite0", "default")
    normalize = args.normalize if args.normalize != "auto" else ("none" if lite else "imagenet")
    try:
        train = image_folder(args.data, size=args.size, normalize=normalize)
        val = image_folder(args.val, size=args.size, normalize=normalize) if args.val else None
    except ValueError as exc:
        raise UsageError(str(exc).replace("data:", "--data:", 1)) from exc
    classes = list(train.classes)
    if val is not None and list(val.classes) != classes:
        raise UsageError("--val: its class folders differ from --data's; both need the same sub-folders")
    try:
        backbone = backbone_from_name(
            args.arch, num_classes=None if lite else len(classes), weights=args.backbone_weights
        )
        ca = CAModel(
            backbone,
            arch=args.arch,
            start_stage=args.start_stage,
            kv_projection=args.kv_projection,
            class_specific=args.class_specific,
            init=args.init,
        )
    except (ValueError, TypeError) as exc:
        raise UsageError(str(exc)) from exc
    if ca.num_classes != len(classes):
        if ca.num_classes != 1000:
            raise UsageError(f"--data: has {len(classes)} classes but the backbone's classifier has {ca.num_classes}")
        remap = _ToImageNet(_imagenet_indices(classes))
        train.target_transform = remap
        if val is not None:
            val.target_transform = remap
    out = Path(args.out)
    try:
        result = train_stream(
            ca,
            train,
            epochs=args.epochs,
            lr=args.lr,
            momentum=args.momentum,
            weight_decay=args.weight_decay,
            step_size=args.step_size,
            gamma=args.gamma,
            batch_size=args.batch_size,
            val_data=val,
            checkpoint_dir=out,
            resume=not args.no_resume,
            device=device,
            seed=args.seed,
            num_workers=args.workers,
            progress=not args.quiet,
        )
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    (out / "history.json").write_text(
        json.dumps(
            {"arch": args.arch, "config": result.model.config, "classes": classes, "history": result.history}, indent=2
        )
    )
    if result.resumed_from:
        print(f"resumed after epoch {result.resumed_from}")
    for row in result.history:
        val_part = (
            f"   val GAP {row['val_gap_accuracy']:.2f}%  CA {row['val_ca_accuracy']:.2f}%"
            if "val_ca_accuracy" in row
            else ""
        )
        print(
            f"epoch {row['epoch']:>3}  loss {row['loss']:.4f}  train GAP {row['gap_accuracy']:.2f}%  CA "
            f"{row['ca_accuracy']:.2f}%{val_part}"
        )
    print(f"wrote {result.checkpoint} (stream weights) and {out / 'history.json'}")
    return 0

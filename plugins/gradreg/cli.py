"""``xai-bridge gradreg train``: the command line of the interpretable-gradients regulariser.

::

    xai-bridge gradreg train --data digits --epochs 5 --out out/gradreg
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

from xai_bridge.cli_support import torch_device
from xai_bridge.errors import UsageError

#: The thesis's λ and the error functions, repeated here so that building the parser imports no torch
#: (a test checks they equal :data:`regularizer.DEFAULT_LAMBDA` and :data:`regularizer.ERROR_FUNCTIONS`).
DEFAULT_LAMBDA = 7.5e-3
ERROR_NAMES = ("cosine", "mse", "mae", "histogram", "histogram-eq4.8")


def add_gradreg_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``gradreg`` (with its ``train`` sub-command) to the ``xai-bridge`` sub-parsers."""
    parser = subparsers.add_parser(
        "gradreg",
        help="train with the interpretable-gradients regulariser (thesis ch. 4)",
        description=(
            "Interpretable-gradients training regulariser (thesis ch. 4): CE + λ·E(input gradient, guided input "
            "gradient)."
        ),
    )
    sub = parser.add_subparsers(dest="gradreg_command", required=True)
    p = sub.add_parser(
        "train", help="train a model with the regulariser and save the weights and the per-epoch history"
    )
    p.add_argument(
        "--data", required=True, help="'digits' (scikit-learn's 8×8 digits, upscaled) or an ImageFolder directory"
    )
    p.add_argument(
        "--arch", default="smallcnn", help="'smallcnn' or a torchvision classifier name (random init), e.g. resnet18"
    )
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument(
        "--lam",
        type=float,
        default=DEFAULT_LAMBDA,
        help="regularisation coefficient λ (0: plain cross-entropy; default 7.5e-3)",
    )
    p.add_argument("--distance", default="cosine", help=f"error function E: {', '.join(ERROR_NAMES)}")
    p.add_argument("--out", default="out/gradreg", help="output folder: model.pt, history.json, config.json")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=2e-3, help="Adam learning rate, cosine-annealed to 0 over the epochs")
    p.add_argument("--size", type=int, default=32, help="image side")
    p.add_argument("--val-fraction", type=float, default=0.2, help="held-out fraction (ImageFolder without train/val)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu", help="torch device, e.g. cuda")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_train)
    return parser


def cmd_train(args: argparse.Namespace) -> int:
    """Run ``xai-bridge gradreg train``; bad input raises :class:`xai_bridge.errors.UsageError`."""
    import torch

    from xai_bridge.data import digits_split, image_folder_split

    from .regularizer import _check_distance, build_model, cam_layer, train_regularized

    if args.epochs < 1:
        raise UsageError(f"--epochs {args.epochs}: expected an integer ≥ 1")
    if not math.isfinite(args.lam) or args.lam < 0:
        raise UsageError(f"--lam {args.lam}: expected a number ≥ 0 (the thesis default is 7.5e-3)")
    if args.batch_size < 1 or args.size < 8 or not args.lr > 0:
        raise UsageError(
            f"--batch-size {args.batch_size}, --size {args.size}, --lr {args.lr}: expected a batch size ≥ 1, a "
            "size ≥ 8 and a learning rate > 0"
        )
    try:
        _check_distance(args.distance)
    except ValueError as exc:
        raise UsageError(str(exc).replace("distance:", "--distance:")) from exc
    device = torch_device(args.device)
    if args.data == "digits":
        train_set, val_set = digits_split(args.size, seed=args.seed)
        classes = [str(i) for i in range(10)]
    else:
        try:
            train_set, val_set, classes = image_folder_split(
                args.data, args.size, val_fraction=args.val_fraction, seed=args.seed
            )
        except (ValueError, FileNotFoundError) as exc:
            raise UsageError(str(exc).replace("data:", "--data:").replace("val_fraction:", "--val-fraction:")) from exc
    try:
        model = build_model(args.arch, len(classes), seed=args.seed).to(device)
    except ValueError as exc:
        raise UsageError(str(exc).replace("arch:", "--arch:")) from exc
    generator = torch.Generator().manual_seed(args.seed)
    train_loader = torch.utils.data.DataLoader(train_set, batch_size=args.batch_size, shuffle=True, generator=generator)
    val_loader = torch.utils.data.DataLoader(val_set, batch_size=256)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=args.epochs)
    history = train_regularized(
        model,
        train_loader,
        args.epochs,
        optimizer=optimizer,
        lam=args.lam,
        distance=args.distance,
        device=device,
        progress=not args.quiet,
        val_loader=val_loader,
        scheduler=scheduler,
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), out / "model.pt")
    config = {k: v for k, v in vars(args).items() if k != "func"}
    config.update(classes=classes, cam_layer=cam_layer(args.arch), train_images=len(train_set), val_images=len(val_set))
    (out / "config.json").write_text(json.dumps(config, indent=2))
    (out / "history.json").write_text(json.dumps(history, indent=2))
    last = history[-1]
    print(
        f"{args.arch} on {args.data}, λ={args.lam:g} ({args.distance}), {args.epochs} epochs: "
        f"val accuracy {last['val_accuracy']:.1%}, val cosine(∂L/∂x, guided) {last['val_cosine']:.3f}"
    )
    print(f"wrote model.pt, history.json, config.json to {out}/")
    return 0

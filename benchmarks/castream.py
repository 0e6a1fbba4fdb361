"""GAP vs CA-Stream: AD, AG, AI, insertion and deletion for Grad-CAM, Grad-CAM++ and Score-CAM.

The thesis' Table 3.1 protocol on the one trained model available offline:
scikit-learn's handwritten digits upscaled to 32×32, a torchvision ResNet-10
(CIFAR stem, layer4 = 4×4) trained here as the GAP model, then frozen while a
CA-Stream (thesis recipe: SGD lr 0.1, momentum 0.9, wd 1e-4) is trained on it.
Every CAM method reads the same layer (``layer4.0`` on GAP, ``backbone.layer4.0``
on CA, resolved by the plugins); each model is scored with its own maps. NOT ImageNet: only the
direction of the differences can be compared with the thesis.

Run (CPU, about 10 minutes with the defaults)::

    python benchmarks/castream.py                     # prints a Markdown table
    python benchmarks/castream.py --images 200 --json castream_digits.json

Protocol (stated here because the numbers depend on it): class explained
= ground-truth label; score = softmax probability; saliency = the CAM at layer
resolution (after ReLU), upsampled bilinearly (align_corners False) to 32×32 and
min-max normalised per image (a constant map normalises to 0); masking in pixel
space [0, 1], black = 0. AD/AG/AI single step with ``x ⊙ M``. Deletion: black
replacement of the most salient pixels first; insertion: start from the blurred
image (Gaussian 11×11, σ = 5) and reveal the most salient pixels first; 32 pixels
per step (33 points), trapezoid area over the fraction of pixels, ×100.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

import xai_bridge as xb
from xai_bridge.data import digits_split
from xai_bridge.evaluation import score_maps
from xai_bridge.explainer import upsample
from xai_bridge.protocols import get_protocol
from xai_bridge_builtins.castream.digits import accuracy, digits_resnet, train_classifier
from xai_bridge_builtins.castream.model import CAModel
from xai_bridge_builtins.castream.train import evaluate, train_stream

METHODS = ("gradcam", "gradcam++", "scorecam")


# -- the project's metrics ------------------------------------------------------------------------
METRICS = {
    "AD": "average_drop",
    "AG": "average_gain",
    "AI": "average_increase",
    "I": "insertion_auc",
    "D": "deletion_auc",
}


def score(
    model: nn.Module, images: torch.Tensor, raw: torch.Tensor, targets: torch.Tensor, step: int
) -> dict[str, torch.Tensor]:
    """The five numbers per image (registered metrics on the engine) for feature-resolution maps ``raw``.

    Protocol: the Opti-CAM group's preset (class = label, probabilities, black masking, RISE blur
    insertion) with ``step`` pixels per step and constant maps scored as 0; AUCs ×100.
    """
    protocol = get_protocol("opticam", step=step, constant_maps="zeros")
    maps = upsample(raw, tuple(images.shape[-2:]))
    out = score_maps(model, images, maps, list(METRICS.values()), protocol, targets)
    rows = {short: out[name] for short, name in METRICS.items()}
    rows["I"], rows["D"] = rows["I"] * 100, rows["D"] * 100
    return rows


# -- the benchmark --------------------------------------------------------------------------------
def pick_images(test: Any, per_class: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``per_class`` test images of each class (deterministic, balanced)."""
    images, labels = test.tensors
    keep = torch.cat([torch.nonzero(labels == c)[:per_class, 0] for c in range(int(labels.max()) + 1)]).sort().values
    return images[keep], labels[keep]


def explain_raw(
    name: str, model: nn.Module, images: torch.Tensor, targets: torch.Tensor, batch: int
) -> tuple[torch.Tensor, str]:
    """Feature-resolution maps; the target layer is resolved by the plugins (the same module on GAP and CA)."""
    explainer = xb.get_explainer(name, model)
    layer = explainer.target_layer.name if hasattr(explainer, "target_layer") else "backbone." + model.taps[-1]
    raws = []
    for i in range(0, images.shape[0], batch):
        with contextlib.redirect_stderr(io.StringIO()):  # Score-CAM's own per-image tqdm bars
            raws.append(explainer.explanation(images[i : i + batch], targets[i : i + batch]).raw)
    return torch.cat(raws), layer


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=100, help="images evaluated (balanced over the 10 classes)")
    parser.add_argument("--backbone-epochs", type=int, default=3)
    parser.add_argument("--stream-epochs", type=int, default=5)
    parser.add_argument("--step", type=int, default=32, help="pixels per insertion/deletion step")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch intra-op threads (1 is fastest on a shared machine)"
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    t0 = time.perf_counter()

    train, test = digits_split(size=32)
    gap_model = digits_resnet().to(device)
    train_classifier(gap_model, train, epochs=args.backbone_epochs, progress=True)
    torch.manual_seed(0)
    result = train_stream(
        CAModel(gap_model), train, epochs=args.stream_epochs, batch_size=64, val_data=test, device=device
    )
    ca_model = result.model
    acc = evaluate(ca_model, test)
    assert abs(acc["gap_accuracy"] - accuracy(gap_model, test)) < 1e-9

    images, labels = pick_images(test, max(1, args.images // 10))
    images, labels = images.to(device), labels.to(device)
    rows: dict[str, dict[str, dict[str, float]]] = {}
    for method in (*METHODS, "castream-attention"):
        for pooling, model in (("GAP", gap_model), ("CA", ca_model)):
            if method == "castream-attention" and pooling == "GAP":
                continue
            start = time.perf_counter()
            raw, layer = explain_raw(method, model, images, labels, batch=8 if method == "scorecam" else 64)
            per_image = score(model, images, raw, labels, args.step)
            rows.setdefault(method, {})[pooling] = {k: float(v.mean()) for k, v in per_image.items()}
            rows[method][pooling]["seconds"] = time.perf_counter() - start
            print(
                f"{method:<19} {pooling:<3} {layer:<18} "
                + "  ".join(f"{k} {v:6.2f}" for k, v in rows[method][pooling].items()),
                file=sys.stderr,
            )

    caveat = (
        "NOT ImageNet: scikit-learn digits (32×32), ResNet-10 trained here; compare directions, not values, with "
        "thesis Table 3.1."
    )
    lines = [
        f"> {caveat}",
        "",
        (
            f"Accuracy on the {len(test)} test digits: GAP {acc['gap_accuracy']:.2f}%, CA {acc['ca_accuracy']:.2f}%. "
            f"Metrics over {images.shape[0]} test images (ground-truth class), mean per image."
        ),
        "",
        "| method | pooling | AD ↓ | AG ↑ | AI ↑ | I ↑ | D ↓ |",
        "|---|---|---|---|---|---|---|",
    ]
    for method, by_pool in rows.items():
        for pooling, m in by_pool.items():
            lines.append(
                f"| {method} | {pooling} | {m['AD']:.2f} | {m['AG']:.2f} | {m['AI']:.2f} | {m['I']:.2f} | "
                f"{m['D']:.2f} |"
            )
    print("\n".join(lines))
    print(f"\n(total {time.perf_counter() - t0:.0f} s on {device}, {args.threads} thread(s))")
    if args.json:
        payload = {
            "caveat": caveat,
            "accuracy": acc,
            "stream_history": result.history,
            "images": int(images.shape[0]),
            "protocol": {
                "class": "ground truth",
                "score": "softmax probability",
                "resize": "bilinear, align_corners=False",
                "normalise": "min-max per image, constant → 0",
                "masking": "pixel space, black = 0",
                "insertion_start": "Gaussian blur 11×11 σ=5",
                "step_pixels": args.step,
                "auc": "trapezoid over fraction of pixels, ×100",
            },
            "results": rows,
            "args": vars(args),
        }
        Path(args.json).write_text(json.dumps(payload, indent=2, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Figures of a DP-Net's explanations (Sicre et al., ICIP 2023, DP-Net).

* :func:`image_figure`: one image, its class map ``M_c`` and its top-``k`` parts, each with its
  map, its best box and its contribution ``V_{c,p} b_p``;
* :func:`class_figure`: one class, the participation ``V_{c,p}`` of every part as a bar chart
  (its own parts highlighted), and for its most participating parts the training crops that
  activate them most (each part's best box in the training images with the largest ``b_p``).

Both return a matplotlib ``Figure`` and save it when given ``path``.

Example::

    >>> import torch, torchvision
    >>> from xai_bridge_builtins.dpnet.model import DPNet
    >>> net = DPNet(torchvision.models.resnet18().eval(), parts_per_class=2, num_classes=2).eval()
    >>> fig = image_figure(net, torch.rand(3, 64, 64), top_k=2)
    >>> len(fig.axes)
    3
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from xai_bridge.errors import InvalidArgumentError

from .explainers import class_parts, explain_parts, require_dpnet
from .features import FeatureSet, extract_features
from .model import DPNet


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _rgb(image: torch.Tensor) -> np.ndarray:
    return image.detach().float().cpu().permute(1, 2, 0).numpy().clip(0, 1)


def _overlay(image: torch.Tensor, saliency: torch.Tensor) -> np.ndarray:
    """:func:`xai_bridge.viz.overlay`, with a (numerically) constant map shown as flat rather than as float noise."""
    from xai_bridge.viz import overlay

    lo, hi = float(saliency.min()), float(saliency.max())
    if hi - lo <= 1e-5 * max(1.0, abs(hi), abs(lo)):
        saliency = torch.zeros_like(saliency)
    return overlay(image, saliency)


def _box(ax: Any, box: list[int] | torch.Tensor, color: str = "lime") -> None:
    from matplotlib.patches import Rectangle

    x0, y0, x1, y1 = (int(v) for v in box)
    ax.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, edgecolor=color, linewidth=2))


def _name(net: DPNet, c: int) -> str:
    return net.class_names[c] if net.class_names else str(c)


def _save(fig: Any, path: str | os.PathLike[str] | None, dpi: int) -> None:
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=dpi)


def image_figure(
    model: DPNet,
    image: torch.Tensor,
    target: Any = None,
    *,
    top_k: int = 3,
    path: str | os.PathLike[str] | None = None,
    dpi: int = 100,
) -> Any:
    """The class map and the top-``k`` parts of one image (``3×H×W`` in ``[0, 1]``) for ``target``.

    Panel 1: the image with ``M_c`` (``dpnet-cam``) and the logit decomposition
    ``y_c = Σ_p V_{c,p} b_p + bias``. Then one panel per part, by decreasing contribution:
    its map ``S_p`` upsampled, its best box, the class owning it and ``V_{c,p} b_p``.
    """
    from xai_bridge.explainer import upsample

    net = require_dpnet(model, "image_figure")
    if image.ndim != 3:
        raise InvalidArgumentError(f"image: expected one image 3×H×W, got shape {tuple(image.shape)}")
    if isinstance(top_k, bool) or not isinstance(top_k, int) or not 1 <= top_k <= net.num_parts:
        raise InvalidArgumentError(f"top_k: expected 1..{net.num_parts} (the number of parts), got {top_k!r}")
    ex = explain_parts(net, image[None], target)
    c = int(ex.targets[0])
    cam = torch.einsum("p,phw->hw", net.classifier.weight[c].detach(), ex.maps[0])
    cam = upsample(cam[None], ex.image_size)[0]
    top = ex.top_parts(0, top_k)
    plt = _pyplot()
    fig, axes = plt.subplots(1, top_k + 1, figsize=(2.6 * (top_k + 1), 3.0), constrained_layout=True)
    axes[0].imshow(_overlay(image, cam))
    logit, bias = float(ex.logits[0, c]), float(ex.bias[0])
    axes[0].set_title(
        f"class {_name(net, c)}: dpnet-cam\nlogit {logit:.2f} = Σ {logit - bias:.2f} + bias {bias:.2f}", fontsize=8
    )
    maps = ex.upsampled([row["part"] for row in top])[0]
    for ax, row, part_map in zip(axes[1:], top, maps, strict=True):
        ax.imshow(_overlay(image, part_map))
        _box(ax, row["box"])
        ax.set_title(f"part {row['part']} (class {row['owner_name']})\nV·b = {row['contribution']:+.2f}", fontsize=8)
    for ax in axes:
        ax.axis("off")
    _save(fig, path, dpi)
    return fig


@torch.no_grad()
def most_activating(
    model: DPNet, features: FeatureSet, parts: list[int], k: int = 5, batch_size: int = 256
) -> dict[int, list[tuple[int, int, float]]]:
    """For each part, the ``k`` rows of ``features`` with the largest ``b_p``: ``[(row, best region, b_p), …]``."""
    device = next(model.parameters()).device
    u = model.part_vectors()[parts]
    bags, regions = [], []
    for i in range(0, len(features), batch_size):
        x = features.features[i : i + batch_size].to(device, torch.float32).flatten(2)
        scores = torch.einsum("pd,bdr->bpr", u, x)
        value, where = scores.max(-1)
        bags.append(value.cpu())
        regions.append(where.cpu())
    bag, region = torch.cat(bags), torch.cat(regions)
    out: dict[int, list[tuple[int, int, float]]] = {}
    for j, p in enumerate(parts):
        top = torch.argsort(bag[:, j], descending=True)[:k]
        out[p] = [(int(r), int(region[r, j]), float(bag[r, j])) for r in top]
    return out


def class_figure(
    model: DPNet,
    c: int | str,
    data: Any,
    *,
    features: FeatureSet | None = None,
    top_parts: int = 4,
    crops: int = 5,
    context: float = 1.0,
    cache_dir: str | os.PathLike[str] | None = None,
    path: str | os.PathLike[str] | None = None,
    dpi: int = 100,
) -> Any:
    """Class ``c``'s parts: ``V_{c,p}`` of every part (bars) and the most activating training crops of its top parts.

    Args:
        data: the training images (a dataset, or anything
            :func:`~xai_bridge_builtins.dpnet.data.load_dataset` accepts, at the model's image size).
        features: their features (default: extracted, through the cache when ``cache_dir`` is given).
        top_parts: rows of crops, for the parts with the largest ``V_{c,p}``.
        crops: crops per part.
        context: margin around the best cell, in cells (0: the cell alone).
    """
    from .data import load_dataset
    from .explainers import cell_boxes

    net = require_dpnet(model, "class_figure")
    ranked = class_parts(net, c)
    ci = ranked.class_index
    if isinstance(top_parts, bool) or not isinstance(top_parts, int) or not 1 <= top_parts <= net.num_parts:
        raise InvalidArgumentError(f"top_parts: expected 1..{net.num_parts}, got {top_parts!r}")
    if isinstance(crops, bool) or not isinstance(crops, int) or crops < 1:
        raise InvalidArgumentError(f"crops: expected a positive integer, got {crops!r}")
    size = int(net.meta.get("image_size", 224))
    dataset = data if isinstance(data, torch.utils.data.Dataset) else load_dataset(data, size=size).dataset
    if features is None:
        features = extract_features(net, dataset, cache_dir=cache_dir, progress=False)
    chosen = [int(p) for p in ranked.parts[:top_parts]]
    best = most_activating(net, features, chosen, k=crops)

    plt = _pyplot()
    fig = plt.figure(figsize=(max(6.0, 1.5 * crops + 1.0), 2.4 + 1.5 * top_parts), constrained_layout=True)
    grid = fig.add_gridspec(top_parts + 1, crops, height_ratios=[1.6] + [1.0] * top_parts)
    bars = fig.add_subplot(grid[0, :])
    weights = net.classifier.weight[ci].detach().cpu().numpy()
    colours = np.where(net.part_owner.cpu().numpy() == ci, "tab:orange", "tab:gray")
    bars.bar(np.arange(net.num_parts), weights, color=colours, width=0.9)
    bars.axhline(0, color="black", linewidth=0.5)
    for boundary in range(net.parts_per_class, net.num_parts, net.parts_per_class):
        bars.axvline(boundary - 0.5, color="lightgray", linewidth=0.5)
    bars.set_xlim(-0.5, net.num_parts - 0.5)
    bars.set_title(
        f"class {_name(net, ci)}: participation V_c,p of each part "
        f"(orange: its own parts; {100 * ranked.own_share:.0f}% of |V_c|)",
        fontsize=9,
    )
    bars.set_xlabel("part (grouped by the class owning it)", fontsize=8)
    grid_hw = features.grid
    for row_index, p in enumerate(chosen):
        for col, (row, region, value) in enumerate(best[p]):
            ax = fig.add_subplot(grid[row_index + 1, col])
            image = torch.as_tensor(dataset[int(features.indices[row])][0])
            h, w = int(image.shape[-2]), int(image.shape[-1])
            box = cell_boxes(torch.tensor(region), grid_hw, (h, w)).tolist()
            mx, my = int(round(context * w / grid_hw[1])), int(round(context * h / grid_hw[0]))
            x0, y0, x1, y1 = max(0, box[0] - mx), max(0, box[1] - my), min(w, box[2] + mx), min(h, box[3] + my)
            ax.imshow(_rgb(image[:, y0:y1, x0:x1]))
            _box(ax, [box[0] - x0, box[1] - y0, box[2] - x0, box[3] - y0])
            ax.set_xticks([])
            ax.set_yticks([])
            label = _name(net, int(features.labels[row]))
            ax.set_title(f"b={value:.1f} ({label})", fontsize=7)
            if col == 0:
                ax.set_ylabel(f"part {p}\nV={float(weights[p]):+.2f}", fontsize=8)
    _save(fig, path, dpi)
    return fig

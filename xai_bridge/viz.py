"""Figures a person would rather look at than read: overlays and saliency grids."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch


def _normalise(saliency: np.ndarray) -> np.ndarray:
    """Min-max to [0, 1] for display (a constant map shows as 0), by the engine's own normaliser."""
    from .engine.maps import normalize_maps

    return normalize_maps(torch.as_tensor(saliency)[None], constant="zeros")[0].numpy()


def overlay(image: torch.Tensor, saliency: torch.Tensor, alpha: float = 0.5, cmap: str = "jet") -> np.ndarray:
    """An ``H×W×3`` float image: the photo blended with the min-max normalised map."""
    import matplotlib

    rgb = image.detach().float().cpu().permute(1, 2, 0).numpy().clip(0, 1)
    heat = matplotlib.colormaps[cmap](_normalise(saliency.detach().float().cpu().numpy()))[..., :3]
    return (1 - alpha) * rgb + alpha * heat


def save_explanation_figure(
    path: str | Path,
    image: torch.Tensor,
    saliency: torch.Tensor,
    title: str,
    explainer: str,
) -> Path:
    """``image | overlay`` side by side, the overlay titled with the class and its probability."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(6.4, 3.5), constrained_layout=True)
    axes[0].imshow(image.detach().float().cpu().permute(1, 2, 0).numpy().clip(0, 1))
    axes[0].set_title("image")
    axes[1].imshow(overlay(image, saliency))
    axes[1].set_title(f"{explainer}: {title}", fontsize=9)
    for ax in axes:
        ax.axis("off")
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def save_grid(
    path: str | Path,
    images: torch.Tensor,
    maps: dict[str, torch.Tensor],
    row_titles: Sequence[str],
) -> Path:
    """Images down the rows, one column per explainer: the first thing a reader compares."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    n, cols = images.shape[0], len(maps) + 1
    fig, axes = plt.subplots(n, cols, figsize=(1.9 * cols, 1.9 * n), squeeze=False, constrained_layout=True)
    for i in range(n):
        axes[i, 0].imshow(images[i].detach().float().cpu().permute(1, 2, 0).numpy().clip(0, 1))
        axes[i, 0].set_ylabel(row_titles[i], fontsize=8)
        for j, (name, m) in enumerate(maps.items(), start=1):
            axes[i, j].imshow(overlay(images[i], m[i]))
            if i == 0:
                axes[i, j].set_title(name, fontsize=9)
        for ax in axes[i]:
            ax.set_xticks([])
            ax.set_yticks([])
    axes[0, 0].set_title("image", fontsize=9)
    path = Path(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path

"""The benchmark report's figures: saliency grid, curves, win-rate / Wilcoxon / Spearman heat maps, α bars.

Each ``figure_*`` function draws one PNG from a :class:`~xai_bridge.results.Results` (and, for the
grid, the run's plan and store) and returns its path; :mod:`~xai_bridge.runner.document` places them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .. import stats
from ..results import Results
from ..stats import consistency

if TYPE_CHECKING:  # pragma: no cover
    from .run import Plan
    from .store import Store


def _fmt(value: float, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return f"{value:.{digits}g}" if abs(value) >= 1e4 or (0 < abs(value) < 1e-3) else f"{value:.{digits}f}"


def _arrow(results: Results, metric: str) -> str:
    return "↑" if results.directions.get(metric, True) else "↓"


# -- figures --------------------------------------------------------------------------------------
def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _panels(n: int, width: float = 3.6, height: float = 3.2, max_cols: int = 4) -> tuple[Any, Any]:
    plt = _plt()
    cols = min(max_cols, max(1, n))
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False, constrained_layout=True)
    for ax in axes.flat[n:]:
        ax.axis("off")
    return fig, list(axes.flat)


def _heat(
    ax: Any,
    matrix: np.ndarray,
    names: Sequence[str],
    title: str,
    label: Callable[[float], str],
    fontsize: int = 6,
    **imshow: Any,
) -> Any:
    """A names × names heat map with every off-diagonal value written in its cell (up to 10 names)."""
    im = ax.imshow(matrix, **imshow)
    ax.set_xticks(range(len(names)), names, rotation=60, ha="right", fontsize=7)
    ax.set_yticks(range(len(names)), names, fontsize=7)
    ax.set_title(title, fontsize=9)
    if len(names) <= 10:
        for i in range(len(names)):
            for j in range(len(names)):
                if i != j and not math.isnan(matrix[i, j]):
                    ax.text(j, i, label(matrix[i, j]), ha="center", va="center", fontsize=fontsize)
    return im


def figure_win_rates(results: Results, path: Path) -> Path:
    """One heat map per metric: % of images on which the row explainer beats the column one."""
    plt = _plt()
    metrics = results.metrics
    fig, axes = _panels(len(metrics))
    im = None
    for ax, metric in zip(axes, metrics, strict=False):
        names, w = stats.win_rates(results.by_metric(metric), results.directions.get(metric, True))
        im = _heat(
            ax,
            100 * w,
            names,
            f"{metric} {_arrow(results, metric)}",
            lambda v: f"{v:.0f}",
            cmap="RdBu",
            vmin=0,
            vmax=100,
        )
    if im is not None:
        fig.colorbar(im, ax=list(axes)[: len(metrics)], shrink=0.6, label="row beats column (% of images)")
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def figure_wilcoxon(results: Results, path: Path) -> Path:
    """One heat map per metric: two-sided Wilcoxon signed-rank p-values, log scale."""
    plt = _plt()
    from matplotlib.colors import LogNorm

    metrics = results.metrics
    fig, axes = _panels(len(metrics))
    im = None
    for ax, metric in zip(axes, metrics, strict=False):
        names, p = stats.wilcoxon_pvalues(results.by_metric(metric))
        p = np.clip(p, 1e-30, 1.0)
        im = _heat(
            ax,
            p,
            names,
            f"{metric} {_arrow(results, metric)}",
            lambda v: f"{v:.0e}" if v < 0.01 else f"{v:.2f}",
            fontsize=5,
            cmap="Greens_r",
            norm=LogNorm(vmin=1e-6, vmax=1.0),
        )
    if im is not None:
        fig.colorbar(im, ax=list(axes)[: len(metrics)], shrink=0.6, label="Wilcoxon p (darker = more significant)")
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def figure_curves(results: Results, path: Path) -> Path | None:
    """Mean insertion / deletion curves per explainer (score vs fraction of pixels)."""
    metrics = [m for m in results.metrics if any(key[1] == m for key in results.curves)]
    if not metrics:
        return None
    plt = _plt()
    fig, axes = _panels(len(metrics), width=4.6, height=3.4, max_cols=2)
    for ax, metric in zip(axes, metrics, strict=False):
        for explainer in results.explainers:
            curve = results.curves.get((explainer, metric))
            if curve:
                mean = results.mean_std(explainer, metric)[0]
                ax.plot(curve["fractions"], curve["mean"], label=f"{explainer} ({_fmt(mean)})")
        verb = {"insertion": "inserted", "deletion": "deleted"}.get(results.curve_kinds.get(metric, ""), "perturbed")
        ax.set_xlabel(f"fraction of pixels {verb}")
        ax.set_ylabel("score of the explained class")
        ax.set_title(f"{metric} {_arrow(results, metric)}", fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def figure_cost(results: Results, path: Path) -> Path | None:
    """Faithfulness against cost: per metric, each explainer's mean value against its seconds per image (log x).

    The picture for choosing an explainer: up-left (or down-left for ↓ metrics) is good and cheap.
    ``None`` when fewer than one explainer has a measured cost.
    """
    timed = [e for e in results.explainers if results.costs.get(e, {}).get("seconds", 0) > 0]
    if not timed:
        return None
    plt = _plt()
    metrics = results.metrics
    fig, axes = _panels(len(metrics), width=4.0, height=3.3, max_cols=3)
    for ax, metric in zip(axes, metrics, strict=False):
        for explainer in timed:
            mean = results.mean_std(explainer, metric)[0]
            if math.isnan(mean):
                continue
            seconds = results.costs[explainer]["seconds"]
            ax.scatter([seconds], [mean], s=30)
            ax.annotate(explainer, (seconds, mean), fontsize=7, xytext=(3, 3), textcoords="offset points")
        ax.set_xscale("log")
        ax.set_xlabel("seconds per image (explaining, log scale)")
        ax.set_ylabel("mean over images")
        ax.set_title(f"{metric} {_arrow(results, metric)}", fontsize=10)
        ax.grid(alpha=0.3, which="both")
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def figure_reliability(results: Results, path: Path, alphas: dict[str, dict[str, tuple[float, float, float]]]) -> Path:
    """Krippendorff's α per metric (bars, 95 % interval over image subsets), one bar per explainer set."""
    plt = _plt()
    metrics = results.metrics
    fig, ax = plt.subplots(figsize=(max(5.0, 0.9 * len(metrics) + 2), 3.6), constrained_layout=True)
    width = 0.8 / max(1, len(alphas))
    for k, (label, table) in enumerate(alphas.items()):
        xs = np.arange(len(metrics)) + (k - (len(alphas) - 1) / 2) * width
        vals = np.array([table[m][0] for m in metrics])
        lo = np.array([table[m][1] for m in metrics])
        hi = np.array([table[m][2] for m in metrics])
        err = np.where(np.isnan(lo), 0, np.vstack([np.clip(vals - lo, 0, None), np.clip(hi - vals, 0, None)]))
        ax.bar(xs, np.nan_to_num(vals), width, yerr=err, capsize=2, label=label)
    ax.axhline(0, color="k", lw=0.6)
    ax.set_xticks(
        range(len(metrics)), [f"{m} {_arrow(results, m)}" for m in metrics], rotation=30, ha="right", fontsize=8
    )
    ax.set_ylabel("Krippendorff's α (ordinal)")
    ax.set_title("Inter-rater reliability: do images rank the explainers alike?", fontsize=10)
    ax.legend(fontsize=8)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def figure_consistency(results: Results, path: Path) -> Path:
    """Spearman's ρ between metrics: all explanations pooled, then per explainer.

    As in Grabska-Barwińska et al., Fig. 11.
    """
    plt = _plt()
    groups: list[str | None] = [None, *results.explainers]
    fig, axes = _panels(len(groups), width=3.4, height=3.2)
    im = None
    for ax, group in zip(axes, groups, strict=False):
        names, rho = consistency(results, group)
        im = _heat(
            ax,
            rho,
            names,
            "all explanations" if group is None else group,
            lambda v: f"{v:.2f}",
            cmap="PuOr",
            vmin=-1,
            vmax=1,
        )
    if im is not None:
        fig.colorbar(im, ax=list(axes)[: len(groups)], shrink=0.6, label="Spearman ρ (+ = metrics agree)")
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def figure_grid(path: Path, plan: Plan, store: Store, results: Results) -> Path | None:
    """Images down, explainers across: the stored maps of the grid images."""
    import torch

    from ..viz import save_grid
    from .data import load_batch

    maps = store.maps(plan.config_hash)
    items = []
    for item in plan.source.items:
        if all((item.id, e.key) in maps for e in plan.explainers):
            items.append(item)
        if len(items) >= plan.config.grid_images:
            break
    if not items:
        return None
    images, kept = load_batch(items, plan.config.size, lambda item, reason: None)
    if images is None:
        return None
    by_label = {e.label: torch.stack([torch.from_numpy(maps[(i.id, e.key)][0]) for i in kept]) for e in plan.explainers}
    titles = [maps[(i.id, plan.explainers[0].key)][1] for i in kept]
    return save_grid(path, images, by_label, titles)


# -- the report -----------------------------------------------------------------------------------

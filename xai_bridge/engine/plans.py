"""Planners: the feature orders, fill values, segments and formulas of the toolkits' faithfulness metrics.

Everything here is NumPy (and scikit-image for superpixels) and imports no toolkit. The accelerated
Quantus and pytorch-grad-cam classes (:mod:`xai_bridge.accelerate`) and the registered metrics (the
built-in ``toolkit_metrics`` plugin) are thin adapters over these functions, so each method is written
once. A *plan* is ``(ranks, fills, steps)``: ``ranks`` has the input's shape and gives the step at which
each feature is replaced (``≥ steps``: never), ``fills[i, s]`` the value features of image ``i`` take at
step ``s`` (see :func:`~xai_bridge.engine.sequences.ranked_replacement_logits`).

Inputs are ``B×C×…``: channel features and random subsets work on any layout; square patches work on
images ``B×C×H×W`` and on series ``B×C×T`` (seen as ``B×C×1×T``, as Quantus does); superpixels and ROAD's
imputation need images. Where a layout cannot be planned, :class:`LayoutError` names it.

The orders reproduce Quantus 0.6.0's NumPy calls (the same ``np.argsort`` ties, the same padding, the same
draws of NumPy's global random state), so its numbers are reproduced bit for bit before the forward pass.

>>> import numpy as np
>>> x = np.arange(6, dtype=np.float32).reshape(1, 1, 6)           # one series of six samples
>>> a = np.array([[[0.1, 0.9, 0.3, 0.8, 0.2, 0.0]]])
>>> ranks, fills, steps = feature_sequence(2, 0.0, {}, x, a)
>>> ranks.tolist(), steps                                          # two most relevant first
([[[2, 0, 1, 0, 1, 2]]], 3)

Pixel-Flipping: Bach et al. 2015, "On pixel-wise explanations for non-linear classifier decisions by
layer-wise relevance propagation". Region Perturbation: Samek et al. 2017, "Evaluating the visualization of
what a deep neural network has learned". Infidelity: Yeh et al. 2019, "On the (in)fidelity and sensitivity of
explanations". IROF: Rieger and Hansen 2020, "IROF: a low resource evaluation metric for explanation methods".
ROAD: Rong et al. 2022, "A consistent and efficient evaluation strategy for attribution methods".
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..errors import InvalidArgumentError, LayoutError
from .imputation import solve_imputation

__all__ = [
    "LayoutError",
    "QuantusOrder",
    "attribution_changes",
    "auc",
    "call_fill",
    "feature_sequence",
    "group_ranks",
    "group_sums",
    "infidelity_scores",
    "irof_scores",
    "is_deterministic",
    "mean_squared_error",
    "patch_sequence",
    "replacement_fills",
    "road_imputation",
    "segment_ranks",
    "step_subsets",
]


# -- fill values -------------------------------------------------------------------------------------------------
def replacement_fills(
    baseline: Any, bounds: dict[str, float], arr: np.ndarray, ranks: np.ndarray, steps: int, draw: bool = True
) -> np.ndarray:
    """``B×steps`` values Quantus writes at each step, for the flat array ``arr`` it perturbs in place.

    Quantus evaluates the baseline on the *current* (already perturbed) array at every step:
    ``"black"``/``"white"`` are its minimum/maximum (which replacing by them does not change),
    ``"mean"`` drifts as features are replaced (computed here as a running sum), ``"uniform"``
    is a fresh draw per image and step. A baseline string always draws ``np.random.uniform``
    (size B) per step, as Quantus's ``get_baseline_dict`` does, so NumPy's random state
    advances exactly as in the toolkit (``draw=False``: the caller draws as its toolkit metric does).

    >>> arr = np.array([[1.0, 2.0, 3.0, 6.0]])  # step 1 writes the mean of (3, 3, 3, 6)
    >>> replacement_fills("mean", {}, arr, np.array([[0, 0, 1, 1]]), 2, draw=False).tolist()
    [[3.0, 3.75]]
    """
    b, n = arr.shape
    uniform = None
    if not isinstance(baseline, str):
        return np.full((b, steps), float(baseline))
    if draw and steps:
        uniform = np.stack([np.random.uniform(size=b, **bounds) for _ in range(steps)], 1)
    kind = baseline.lower()
    if kind == "black":
        return np.repeat(arr.min(1, keepdims=True), steps, 1)
    if kind == "white":
        return np.repeat(arr.max(1, keepdims=True), steps, 1)
    if kind == "uniform":
        if uniform is None and steps:
            raise InvalidArgumentError("draw: the 'uniform' baseline's values are drawn here; call with draw=True")
        return uniform if uniform is not None else np.zeros((b, 0))
    # "mean": mean of the current array, whose replaced features hold earlier fills
    valid = ranks < steps
    removed_sum = np.zeros((b, steps))
    removed_cnt = np.zeros((b, steps))
    for i in range(b):
        removed_sum[i] = np.bincount(ranks[i][valid[i]], weights=arr[i][valid[i]].astype(np.float64), minlength=steps)
        removed_cnt[i] = np.bincount(ranks[i][valid[i]], minlength=steps)
    fills = np.zeros((b, steps))
    total = arr.astype(np.float64).sum(1)
    for s in range(steps):
        fills[:, s] = (total / n).astype(arr.dtype)  # Quantus writes it into the array's dtype
        total = total - removed_sum[:, s] + fills[:, s] * removed_cnt[:, s]
    return fills


def call_fill(baseline: Any, bounds: dict[str, float], arr: np.ndarray) -> np.ndarray:
    """The ``B`` values one call of Quantus's perturb function writes into the flat *unperturbed* ``arr``.

    Like Quantus's ``get_baseline_dict``, a baseline string draws ``np.random.uniform`` (size B) at every
    call, whichever baseline it is, so NumPy's random state advances as in the toolkit.

    >>> call_fill(0.5, {}, np.zeros((2, 3))).tolist()
    [0.5, 0.5]
    """
    if not isinstance(baseline, str):
        return np.full(arr.shape[0], float(baseline))
    uniform = np.asarray(np.random.uniform(size=arr.shape[0], **bounds))
    kind = baseline.lower()
    if kind == "uniform":
        return uniform
    if kind == "mean":
        return np.asarray(arr.mean(axis=1))
    return np.asarray(arr.min(axis=1) if kind == "black" else arr.max(axis=1))


def is_deterministic(baseline: Any) -> bool:
    """Whether two calls of the perturb function with the same indices give the same image."""
    return not (isinstance(baseline, str) and baseline.lower() == "uniform")


# -- feature orders ----------------------------------------------------------------------------------------------
def group_ranks(order: np.ndarray, per_step: int) -> np.ndarray:
    """``B×n``: the step at which each feature goes when ``order`` (``B×n``) is taken ``per_step`` at a time.

    >>> group_ranks(np.array([[2, 0, 1]]), 2).tolist()
    [[0, 1, 0]]
    """
    b, n = order.shape
    ranks = np.empty((b, n), dtype=np.int64)
    np.put_along_axis(ranks, order, np.broadcast_to(np.arange(n) // per_step, (b, n)), 1)
    return ranks


def group_sums(flat: np.ndarray, order: np.ndarray, per_step: int) -> np.ndarray:
    """``B×steps``: the sum of ``flat`` over each group of ``order`` taken ``per_step`` at a time, added in the
    toolkits' order (so the sums are theirs to the last bit)."""
    rows = np.arange(flat.shape[0])[:, None]
    steps = -(-order.shape[1] // per_step)
    return np.stack([flat[rows, order[:, s * per_step : (s + 1) * per_step]].sum(-1) for s in range(steps)], 1)


def step_subsets(order: np.ndarray, per_step: int) -> np.ndarray:
    """``B×steps×per_step`` groups of ``order`` (``B×n``) taken ``per_step`` at a time; the last group is padded
    by repeating its own last index (replacing a feature twice by the same value changes nothing).

    >>> step_subsets(np.array([[3, 1, 0, 2, 4]]), 2).tolist()
    [[[3, 1], [0, 2], [4, 4]]]
    """
    b, n = order.shape
    steps = -(-n // per_step)
    pad = steps * per_step - n
    if pad:
        order = np.concatenate([order, np.repeat(order[:, -1:], pad, 1)], 1)
    return order.reshape(b, steps, per_step)


def feature_sequence(
    per_step: int, baseline: Any, bounds: dict[str, float], x_batch: np.ndarray, a: np.ndarray, descending: bool = True
) -> tuple[np.ndarray, np.ndarray, int]:
    """Plan of Pixel-Flipping on any ``B×C×…`` layout: ``per_step`` features at a time in attribution order."""
    b = x_batch.shape[0]
    flat = a.reshape(b, -1)
    order = np.argsort(-flat if descending else flat, axis=1)  # the toolkit's call: the same ties
    steps = -(-flat.shape[1] // per_step)
    ranks = group_ranks(order, per_step)
    fills = replacement_fills(baseline, bounds, x_batch.reshape(b, -1), ranks, steps)
    return ranks.reshape(x_batch.shape), fills, steps


def padding_size(dim: int, patch_size: int) -> tuple[int, int]:
    """``(before, after)`` padding that makes ``dim`` a multiple of ``patch_size``, the odd one after.

    >>> padding_size(10, 4)
    (1, 1)
    >>> padding_size(1, 4)
    (1, 2)
    """
    total = -dim % patch_size
    return math.floor(total / 2), math.ceil(total / 2)


def block_indices(shape: tuple[int, ...], patch_size: int) -> np.ndarray:
    """``P×(C·p·p)`` flat indices (into one ``C×H×W`` input) of each ``p×p`` block over all channels, blocks in
    row-major order and each block's indices channel by channel, row by row (the order Quantus walks them).

    >>> block_indices((1, 2, 4), 2).tolist()
    [[0, 1, 4, 5], [2, 3, 6, 7]]
    """
    c, h, w = shape
    idx = np.arange(c * h * w).reshape(c, h // patch_size, patch_size, w // patch_size, patch_size)
    return idx.transpose(1, 3, 0, 2, 4).reshape((h // patch_size) * (w // patch_size), -1)


def image_view(x: np.ndarray, name: str = "x_batch") -> np.ndarray:
    """``x`` as images ``B×C×H×W``: a series ``B×C×T`` becomes ``B×C×1×T`` (Quantus's view for patches)."""
    if x.ndim == 3:
        return x[:, :, None]
    if x.ndim != 4:
        raise LayoutError(f"{name}: square patches need images B×C×H×W or series B×C×T, got shape {tuple(x.shape)}")
    return x


def patch_sequence(
    patch_size: int,
    baseline: Any,
    bounds: dict[str, float],
    x_batch: np.ndarray,
    a: np.ndarray,
    order: str,
    regions: int | None,
) -> tuple[np.ndarray, np.ndarray, int]:
    """Plan of ``patch_size`` patches (over all channels) removed in Quantus's order, with its padding.

    ``x_batch`` is ``B×C×H×W`` or ``B×C×T``; ``a`` has its shape. ``order``: ``"morf"``/``"lerf"`` by the
    patches' attribution sums, ``"random"`` (one NumPy permutation per image) or ``"raster"`` (the toolkit's
    block order, Infidelity). Patches cover the zero-padded input; fills are computed on the edge-padded one.
    """
    shape = x_batch.shape
    x4, a4 = image_view(x_batch), image_view(a, "a_batch")
    b, c, h, w = x4.shape
    pad_h, pad_w = padding_size(h, patch_size), padding_size(w, patch_size)
    width = ((0, 0), (0, 0), pad_h, pad_w)
    a_pad = np.pad(a4, width, mode="constant")
    hp, wp = a_pad.shape[-2:]
    patches = block_indices((c, hp, wp), patch_size)  # P × (C·p·p), the same for every image
    att_sums = np.stack([a_pad.reshape(b, -1)[:, block].sum(-1) for block in patches], -1)
    if order == "random":
        ordering = np.array([np.random.permutation(patches.shape[0]) for _ in range(b)])
    elif order == "morf":
        ordering = np.argsort(-att_sums, -1)
    elif order == "lerf":
        ordering = np.argsort(att_sums, -1)
    elif order == "raster":
        ordering = np.broadcast_to(np.arange(patches.shape[0]), (b, patches.shape[0]))
    else:
        raise InvalidArgumentError(f"order: expected 'morf', 'lerf', 'random' or 'raster', got {order!r}")
    ordered = patches[ordering]  # B × P × (C·p·p)
    steps = ordered.shape[1] if regions is None else len(range(ordered.shape[1])[:regions])
    x_edge = np.pad(x4, width, mode="edge").reshape(b, -1)
    ranks = np.full(x_edge.shape, steps, dtype=np.int64)
    step_of = np.repeat(np.arange(steps), ordered.shape[2])
    np.put_along_axis(ranks, ordered[:, :steps].reshape(b, -1), np.broadcast_to(step_of, (b, step_of.size)), 1)
    fills = replacement_fills(baseline, bounds, x_edge, ranks, steps)
    ranks = ranks.reshape(b, c, hp, wp)[:, :, pad_h[0] : hp - pad_h[1], pad_w[0] : wp - pad_w[1]]
    return np.ascontiguousarray(ranks.reshape(shape)), fills, steps


def superpixel_segments(img: np.ndarray, method: str) -> np.ndarray:
    """``H×W`` superpixel labels of the ``H×W×C`` image ``img``: scikit-image's ``slic`` (labels from 0) or
    ``felzenszwalb`` with their defaults, the segmentation Quantus calls."""
    from skimage.segmentation import felzenszwalb, slic

    return np.asarray(slic(img, start_label=0) if method == "slic" else felzenszwalb(img))


def segment_ranks(x_batch: np.ndarray, a: np.ndarray, method: str) -> tuple[np.ndarray, list[int]]:
    """``B×H×W`` step at which each pixel's superpixel is removed in IROF, and each image's number of superpixels.

    The superpixels are :func:`superpixel_segments` of the ``H×W×C`` image in double precision, ordered by their
    mean attribution over all channels, descending, with ``np.argsort``'s ties (Rieger and Hansen 2020).
    """
    if x_batch.ndim != 4:
        raise LayoutError(f"x_batch: superpixels need images B×C×H×W, got shape {tuple(x_batch.shape)}")
    if method not in ("slic", "felzenszwalb"):
        raise InvalidArgumentError(f"segmentation_method: expected 'slic' or 'felzenszwalb', got {method!r}")
    b, _, h, w = x_batch.shape
    counts, ranks = [], np.empty((b, h, w), dtype=np.int64)
    for i, (x, ai) in enumerate(zip(x_batch, a, strict=True)):
        segments = superpixel_segments(np.moveaxis(x, 0, -1).astype("double"), method)
        count = len(np.unique(segments))
        if count < 2:
            raise InvalidArgumentError(f"x_batch: image {i} has {count} superpixel; IROF needs more than one")
        means = np.array([np.mean(ai[:, segments == s]) for s in range(count)])  # the toolkit's expression
        position = np.empty(count, dtype=np.int64)
        position[np.argsort(-means)] = np.arange(count)
        ranks[i] = position[segments]
        counts.append(count)
    return ranks, counts


def attribution_changes(
    x_batch: np.ndarray, a: np.ndarray, ranks: np.ndarray, fills: np.ndarray, steps: int
) -> np.ndarray:
    """``B×steps``: ``Σ a·(x − x̃)`` after each step of a ranked replacement (features of rank ``s`` take
    ``fills[:, s]``), in float64: Infidelity's attribution-weighted input change (Yeh et al. 2019).

    >>> x, a = np.array([[1.0, 2.0]]), np.array([[3.0, 1.0]])
    >>> attribution_changes(x, a, np.array([[0, 1]]), np.zeros((1, 2)), 2).tolist()
    [[3.0, 5.0]]
    """
    b = x_batch.shape[0]
    flat_ranks = ranks.reshape(b, -1)
    flat_x = x_batch.reshape(b, -1).astype(np.float64)
    rank_fill = np.take_along_axis(fills.astype(np.float64), np.minimum(flat_ranks, steps - 1), 1)
    change = np.where(flat_ranks < steps, a.reshape(b, -1).astype(np.float64) * (flat_x - rank_fill), 0.0)
    step_sums = np.stack([np.bincount(flat_ranks[i], change[i], minlength=steps + 1) for i in range(b)])
    return np.cumsum(step_sums[:, :steps], axis=1)


def road_imputation(x: np.ndarray, indices: np.ndarray, noise: float) -> np.ndarray:
    """ROAD's noisy linear imputation of the pixels ``indices`` (flat, into ``H·W``) of one ``C×H×W`` image, with
    ``noise · np.random.randn`` added to the solution: Quantus's ``noisy_linear_imputation`` values and draw, with
    the sparse system assembled at once (:mod:`xai_bridge.engine.imputation`)."""
    if x.ndim != 3:
        raise LayoutError(f"x_batch: ROAD's imputation needs images B×C×H×W, got an input of shape {x.shape}")
    flat = x.reshape(x.shape[0], -1)
    solution = np.transpose(solve_imputation((x.shape[-2], x.shape[-1]), indices, flat))
    out = np.copy(flat)
    out[:, indices] = solution + noise * np.random.randn(*solution.shape)
    return out.reshape(*x.shape)


# -- final formulas ----------------------------------------------------------------------------------------------
def auc(curves: np.ndarray) -> np.ndarray:
    """Area under each row of ``curves`` by the trapezoid rule with unit spacing (Quantus's ``calculate_auc``).

    >>> auc(np.array([[1.0, 0.5, 0.0]])).tolist()
    [1.0]
    """
    return np.asarray(np.trapezoid(np.asarray(curves), dx=1, axis=-1))


def irof_scores(curves: np.ndarray, counts: Sequence[int]) -> np.ndarray:
    """IROF per image: ``n − trapezoid(curve[:n])``, the area over its own curve of ``n`` segments (Rieger and
    Hansen 2020), ``curves`` being the score after each step relative to the unperturbed one.

    >>> irof_scores(np.array([[0.5, 0.0, 9.0]]), [2]).tolist()
    [1.75]
    """
    curves = np.asarray(curves, dtype=np.float64)
    return np.array([n - np.trapezoid(curves[i, :n], dx=1) for i, n in enumerate(counts)])


def mean_squared_error(a: np.ndarray, b: np.ndarray, **kwargs: Any) -> np.ndarray:
    """Row-wise mean squared difference (Quantus's default ``loss_func`` for Infidelity, ``batched=True``)."""
    return np.asarray(np.mean((np.asarray(a) - np.asarray(b)) ** 2, axis=-1))


def infidelity_scores(
    drops: Sequence[np.ndarray],
    changes: Sequence[np.ndarray],
    loss: Callable[..., Any] = mean_squared_error,
) -> np.ndarray:
    """Infidelity per image (Yeh et al. 2019): ``loss`` of the score drops ``f(x) − f(x̃)`` against the
    attribution-weighted input changes ``Σ a·(x − x̃)``, one pair ``B×steps`` per patch size, averaged over them.

    >>> infidelity_scores([np.array([[1.0, 2.0]])], [np.array([[1.0, 0.0]])]).tolist()
    [2.0]
    """
    per_size = [loss(a=d, b=c, batched=True) for d, c in zip(drops, changes, strict=True)]
    return np.asarray(np.mean(np.stack(per_size, axis=1), axis=-1))


# -- the planner of the registered metrics ------------------------------------------------------------------------
@dataclass(frozen=True)
class QuantusOrder:
    """The planner of a :class:`~xai_bridge.engine.Ranked` request: Quantus's order and fill values.

    Attributes:
        unit: ``"features"`` (``size`` channel features per step, Pixel-Flipping), ``"patches"``
            (``size × size`` patches over all channels, Quantus's padding; Region Perturbation, Selectivity,
            Infidelity) or ``"segments"`` (the superpixels of ``segmentation``, one per step; IROF).
        size: features per step, or the patch side (unused for segments).
        order: ``"morf"``, ``"lerf"`` or ``"raster"`` (patches in the toolkit's block order).
        baseline: ``"black"``, ``"white"``, ``"mean"`` (evaluated on the current input at every step,
            as Quantus does) or a number.
        abs: rank the absolute attributions (Quantus's ``abs=True``).
        segmentation: ``"slic"`` or ``"felzenszwalb"`` (segments only).

    Example::

        >>> import torch
        >>> plan = QuantusOrder("features", 2, "morf", 0.0)
        >>> ranks, fills, steps = plan(torch.zeros(1, 1, 4), torch.tensor([[0.1, 0.4, 0.3, 0.2]]), None)
        >>> ranks.tolist(), steps
        ([[[1, 0, 0, 1]]], 2)
    """

    unit: str
    size: int
    order: str
    baseline: str | float
    abs: bool = False
    segmentation: str = "slic"

    def __call__(self, images: torch.Tensor, maps: torch.Tensor, steps: int | None) -> tuple[Any, Any, int]:
        x = images.detach().float().cpu().numpy()
        a = maps.detach().float().cpu().numpy()[:, None]
        if self.abs:
            a = np.abs(a)
        a = np.broadcast_to(a, x.shape)
        bounds = {"low": 0.0, "high": 1.0}
        state = np.random.get_state()  # a baseline string draws as Quantus does; leave the caller's state alone
        try:
            if self.unit == "segments":
                pixel_ranks, counts = segment_ranks(x, a, self.segmentation)
                s = max(counts)
                ranks = np.repeat(pixel_ranks[:, None], x.shape[1], 1)
                flat = x.reshape(x.shape[0], -1)
                fills = replacement_fills(self.baseline, bounds, flat, ranks.reshape(flat.shape), s, draw=False)
            elif self.unit == "features":
                ranks, fills, s = feature_sequence(self.size, self.baseline, bounds, x, a, self.order == "morf")
                if steps is not None and steps < s:
                    fills, s = fills[:, :steps], steps
            else:
                ranks, fills, s = patch_sequence(self.size, self.baseline, bounds, x, a, self.order, steps)
        finally:
            np.random.set_state(state)
        return torch.from_numpy(np.ascontiguousarray(ranks)), torch.from_numpy(np.ascontiguousarray(fills)).float(), s

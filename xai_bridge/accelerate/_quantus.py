"""Quantus 0.6.0 faithfulness metrics on the perturbation engine.

Each accelerated class subclasses the Quantus class and overrides only ``evaluate_batch``:
Quantus's own ``__call__`` still does the preprocessing (``normalise``, ``abs``, explaining
when ``a_batch`` is None), the batching and the aggregation. ``evaluate_batch`` computes the
toolkit's feature order on the host with the toolkit's own NumPy calls (so ties and random
permutations are the same), consumes NumPy's global random state exactly as the toolkit does
(Quantus draws one ``np.random.uniform(size=B)`` per perturbation step whatever the baseline
string), and hands the sequence to :func:`~xai_bridge.engine.sequences.ranked_replacement_logits`.

Pixel-Flipping: Bach et al. 2015, "On pixel-wise explanations for non-linear classifier decisions
by layer-wise relevance propagation". Region Perturbation: Samek et al. 2017, "Evaluating the
visualization of what a deep neural network has learned". Selectivity: Montavon, Samek and
Müller 2018, "Methods for interpreting and understanding deep neural networks".
"""

from __future__ import annotations

import copy
import functools
import numbers
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import quantus
import torch
from quantus.functions.perturb_func import (
    baseline_replacement_by_mask,
    batch_baseline_replacement_by_indices,
    noisy_linear_imputation,
)
from quantus.helpers import asserts as qasserts
from quantus.helpers import utils as qutils

from ..engine import Engine
from ..engine.imputation import solve_imputation
from ..engine.sequences import ranked_replacement_logits, subset_replacement_logits
from ..errors import ToolkitDefectWarning, UnsupportedMetricError
from ..targets import check_model_ready

__all__ = [
    "AcceleratedPixelFlipping",
    "AcceleratedRegionPerturbation",
    "AcceleratedSelectivity",
    "AcceleratedFaithfulnessEstimate",
    "AcceleratedMonotonicityCorrelation",
    "AcceleratedFaithfulnessCorrelation",
    "AcceleratedMonotonicity",
    "AcceleratedSensitivityN",
    "AcceleratedIROF",
    "AcceleratedROAD",
    "AcceleratedInfidelity",
    "ACCELERATED",
]

_BASELINE_STRINGS = ("black", "white", "mean", "uniform")
_BASELINE_KWARGS = ("perturb_baseline", "uniform_low", "uniform_high")


def _perturb_keywords(metric: Any, expected: Callable[..., Any]) -> dict[str, Any]:
    """The keywords of the metric's ``perturb_func``; refuses any function but the toolkit's default ``expected``."""
    func = metric.perturb_func
    if not isinstance(func, functools.partial) or func.func is not expected or func.args:
        raise UnsupportedMetricError(
            f"perturb_func: {type(metric).__name__} is accelerated only with Quantus's {expected.__name__} (the "
            f"default), got {getattr(func, 'func', func)!r}; pass fallback=True to run the toolkit's own code"
        )
    return dict(func.keywords)


def _baseline(
    metric: Any, expected: Callable[..., Any] = batch_baseline_replacement_by_indices
) -> tuple[Any, dict[str, float]]:
    """The toolkit's ``perturb_baseline`` and ``uniform_low/high``; refuses any other perturb function."""
    name = type(metric).__name__
    keywords = _perturb_keywords(metric, expected)
    extra = sorted(set(keywords) - set(_BASELINE_KWARGS))
    if extra:
        raise UnsupportedMetricError(
            f"perturb_func_kwargs: {name} is accelerated with {list(_BASELINE_KWARGS)} only, got {extra}; "
            "pass fallback=True to run the toolkit's own code"
        )
    baseline = keywords.get("perturb_baseline", "black")
    ok = isinstance(baseline, numbers.Real) and not isinstance(baseline, bool)
    if isinstance(baseline, str):
        ok = baseline.lower() in _BASELINE_STRINGS
    if not ok:
        raise UnsupportedMetricError(
            f"perturb_baseline: {name} is accelerated with {list(_BASELINE_STRINGS)} or a number, got {baseline!r}; "
            "pass fallback=True to run the toolkit's own code"
        )
    bounds = {"low": keywords.get("uniform_low", 0.0), "high": keywords.get("uniform_high", 1.0)}
    return baseline, bounds


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
    """
    b, n = arr.shape
    uniform = None
    if isinstance(baseline, str):
        if draw and steps:
            uniform = np.stack([np.random.uniform(size=b, **bounds) for _ in range(steps)], 1)
        kind = baseline.lower()
    else:
        return np.full((b, steps), float(baseline))
    if kind == "black":
        return np.repeat(arr.min(1, keepdims=True), steps, 1)
    if kind == "white":
        return np.repeat(arr.max(1, keepdims=True), steps, 1)
    if kind == "uniform":
        if uniform is None and steps:
            raise ValueError("replacement_fills: the 'uniform' baseline's values are drawn here; call with draw=True")
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


def _is_deterministic(baseline: Any) -> bool:
    """Whether two calls of the perturb function with the same indices give the same image."""
    return not (isinstance(baseline, str) and baseline.lower() == "uniform")


def _step_subsets(order: np.ndarray, per_step: int) -> np.ndarray:
    """``B×steps×per_step`` groups of ``order`` (``B×n``) taken ``per_step`` at a time; the last group is padded
    by repeating its own last index (replacing a feature twice by the same value changes nothing)."""
    b, n = order.shape
    steps = -(-n // per_step)
    pad = steps * per_step - n
    if pad:
        order = np.concatenate([order, np.repeat(order[:, -1:], pad, 1)], 1)
    return order.reshape(b, steps, per_step)


class _Accelerated:
    """Mixin: the engine, the model checks and the toolkit's score (softmax or logit) of class ``y``."""

    _xb_budget: Any = None
    _xb_batch_size: int | None = None
    forward_samples: int = 0

    def _xb_engine(self, model: Any) -> Engine:
        net = model.get_model() if hasattr(model, "get_model") else model
        if not isinstance(net, torch.nn.Module):
            raise TypeError(f"model: expected a torch.nn.Module classifier, got {type(net).__name__}")
        check_model_ready(net)
        if getattr(model, "model_predict_kwargs", None):
            raise UnsupportedMetricError(
                "model_predict_kwargs: the accelerated metric calls the model with the images only; "
                "pass fallback=True to accelerate() to run the toolkit's own code"
            )
        engine = getattr(self, "_xb_engine_obj", None)
        if engine is None or engine.model is not net:
            engine = Engine(net, budget=self._xb_budget, batch_size=self._xb_batch_size, progress=False)
            self._xb_engine_obj = engine
        return engine

    @staticmethod
    def _xb_inputs(x_batch: np.ndarray, y_batch: np.ndarray, a_batch: np.ndarray) -> np.ndarray:
        if x_batch.ndim != 4:
            raise ValueError(f"x_batch: expected images B×C×H×W, got shape {x_batch.shape}")
        if a_batch.shape[0] != x_batch.shape[0] or len(np.asarray(y_batch).reshape(-1)) != x_batch.shape[0]:
            raise ValueError(
                f"a_batch, y_batch: expected one attribution and one label per image ({x_batch.shape[0]}), got "
                f"{a_batch.shape[0]} and {len(np.asarray(y_batch).reshape(-1))}"
            )
        try:
            a = np.broadcast_to(a_batch, x_batch.shape)
        except ValueError:
            raise ValueError(
                f"a_batch: shape {a_batch.shape} does not broadcast to x_batch {x_batch.shape}; "
                "expected B×1×H×W or B×C×H×W"
            ) from None
        if not np.isfinite(a).all():
            bad = np.nonzero(~np.isfinite(a.reshape(a.shape[0], -1)).all(1))[0].tolist()
            raise ValueError(f"a_batch: attribution(s) {bad} contain NaN or inf; check the explainer")
        return a

    def _xb_score(self, model: Any, logits: torch.Tensor, y_batch: np.ndarray) -> np.ndarray:
        """``B×…`` scores of class ``y`` from ``B×…×K`` logits, as Quantus's ``model.predict`` gives them."""
        values = logits.softmax(-1) if getattr(model, "softmax", False) else logits
        y = torch.as_tensor(np.asarray(y_batch).reshape(-1), device=values.device).long()
        y = y.view(-1, *([1] * (values.ndim - 1))).expand(*values.shape[:-1], 1)
        return values.gather(-1, y)[..., 0].cpu().numpy()

    def _xb_forward(self, model: Any, call: Callable[[Engine], torch.Tensor]) -> torch.Tensor:
        """``call(engine)``'s logits, with the images it sent through the model added to ``forward_samples``."""
        engine = self._xb_engine(model)
        before = engine.forward_samples
        logits = call(engine)
        self.forward_samples += engine.forward_samples - before
        return logits

    def _xb_logits(self, model: Any, images: np.ndarray) -> torch.Tensor:
        """Logits of ``images`` (``N×C×H×W``) as they are, in the engine's chunks."""
        stack = torch.as_tensor(np.ascontiguousarray(images), dtype=torch.float32)
        return self._xb_forward(
            model, lambda engine: engine.forward_chunks(len(stack), lambda s, e: stack[s:e].to(engine.device), stack)
        )

    def _xb_curve(
        self,
        model: Any,
        x_batch: np.ndarray,
        y_batch: np.ndarray,
        ranks: np.ndarray,
        fills: np.ndarray,
        steps: int,
        insert: bool = False,
    ) -> np.ndarray:
        """``B×steps`` scores of class ``y`` along a ranked sequence (see ``ranked_replacement_logits``)."""
        images = torch.as_tensor(np.ascontiguousarray(x_batch), dtype=torch.float32)
        ranks_t, fills_t = torch.from_numpy(np.ascontiguousarray(ranks)), torch.from_numpy(fills).float()
        logits = self._xb_forward(
            model, lambda engine: ranked_replacement_logits(engine, images, ranks_t, fills_t, steps, insert=insert)
        )
        return self._xb_score(model, logits, y_batch)

    def _xb_subsets(
        self, model: Any, x_batch: np.ndarray, y_batch: np.ndarray, subsets: np.ndarray, fills: np.ndarray
    ) -> np.ndarray:
        """``B×R`` scores of class ``y`` with each subset of features replaced (see ``subset_replacement_logits``)."""
        images = torch.as_tensor(np.ascontiguousarray(x_batch), dtype=torch.float32)
        subsets_t, fills_t = torch.from_numpy(np.ascontiguousarray(subsets)), torch.from_numpy(fills).float()
        logits = self._xb_forward(model, lambda engine: subset_replacement_logits(engine, images, subsets_t, fills_t))
        return self._xb_score(model, logits, y_batch)

    def _xb_similarity(self, a: np.ndarray, b: np.ndarray) -> list[float]:
        """The toolkit's ``similarity_func(a=…, b=…, batched=True).tolist()``."""
        func: Any = self.similarity_func  # type: ignore[attr-defined]  # set by the Quantus class
        return list(np.asarray(func(a=a, b=b, batched=True)).tolist())

    def _xb_base(self, model: Any, x_batch: np.ndarray, y_batch: np.ndarray) -> np.ndarray:
        """``B`` scores of class ``y`` on the unperturbed images."""
        return self._xb_score(model, self._xb_logits(model, x_batch), y_batch)


def group_ranks(order: np.ndarray, per_step: int) -> np.ndarray:
    """``B×n``: the step at which each feature goes when ``order`` (``B×n``) is taken ``per_step`` at a time."""
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


def feature_sequence(
    per_step: int, baseline: Any, bounds: dict[str, float], x_batch: np.ndarray, a: np.ndarray, descending: bool = True
) -> tuple[np.ndarray, np.ndarray, int]:
    """Ranks (``B×C×H×W``) and fills of Pixel-Flipping: ``per_step`` features at a time in attribution order."""
    b = x_batch.shape[0]
    flat = a.reshape(b, -1)
    order = np.argsort(-flat if descending else flat, axis=1)  # the toolkit's call: the same ties
    steps = -(-flat.shape[1] // per_step)
    ranks = group_ranks(order, per_step)
    fills = replacement_fills(baseline, bounds, x_batch.reshape(b, -1), ranks, steps)
    return ranks.reshape(x_batch.shape), fills, steps


def _patch_sequence(
    metric: Any, x_batch: np.ndarray, a: np.ndarray, order: str, regions: int | None
) -> tuple[np.ndarray, np.ndarray, int]:
    """Ranks (``B×C×H×W``) and fills of Region Perturbation / Selectivity, as the toolkit orders patches."""
    baseline, bounds = _baseline(metric)
    return patch_sequence(metric.patch_size, baseline, bounds, x_batch, a, order, regions)


def patch_sequence(
    patch_size: int,
    baseline: Any,
    bounds: dict[str, float],
    x_batch: np.ndarray,
    a: np.ndarray,
    order: str,
    regions: int | None,
) -> tuple[np.ndarray, np.ndarray, int]:
    """Ranks (``B×C×H×W``) and fills of ``patch_size`` patches removed in Quantus's order (with its padding).

    ``order``: ``"morf"``/``"lerf"`` by the patches' attribution sums, ``"random"`` (one NumPy permutation per
    image) or ``"raster"`` (the toolkit's block order). Fills are computed on the edge-padded image.
    """
    b = x_batch.shape[0]
    h, w = x_batch.shape[-2:]
    pad_h, pad_w = qutils.get_padding_size(h, patch_size), qutils.get_padding_size(w, patch_size)
    padding: list[tuple[int, int]] = [(0, 0), (0, 0), pad_h, pad_w]
    axes = [0, 1, 2, 3]
    x_pad: np.ndarray = qutils._pad_array(x_batch, padding, mode="constant", padded_axes=axes)
    a_pad: np.ndarray = qutils._pad_array(a, padding, mode="constant", padded_axes=axes)
    patches: np.ndarray = np.stack(list(qutils.get_block_indices(x_pad, patch_size)), 1)  # B × P × (C·p·p)
    rows = np.arange(b)[:, None, None]
    att_sums = a_pad.reshape(b, -1)[rows, patches].sum(-1)
    if order == "random":
        ordering = np.array([np.random.permutation(patches.shape[1]) for _ in range(b)])
    elif order == "morf":
        ordering = np.argsort(-att_sums, -1)
    elif order == "lerf":
        ordering = np.argsort(att_sums, -1)
    elif order == "raster":  # the toolkit's block order (Infidelity)
        ordering = np.broadcast_to(np.arange(patches.shape[1]), (b, patches.shape[1]))
    else:
        raise UnsupportedMetricError(f"order: expected 'morf', 'lerf' or 'random', got {order!r}")
    ordered = patches[np.arange(b)[:, None], ordering]  # B × P × (C·p·p)
    steps = ordered.shape[1] if regions is None else len(range(ordered.shape[1])[:regions])
    x_edge: np.ndarray = qutils._pad_array(x_batch, padding, mode="edge", padded_axes=axes)
    x_edge = x_edge.reshape(b, -1)
    ranks = np.full(x_edge.shape, steps, dtype=np.int64)
    step_of = np.repeat(np.arange(steps), ordered.shape[2])
    np.put_along_axis(ranks, ordered[:, :steps].reshape(b, -1), np.broadcast_to(step_of, (b, step_of.size)), 1)
    fills = replacement_fills(baseline, bounds, x_edge, ranks, steps)
    hp, wp = x_pad.shape[-2:]
    ranks = ranks.reshape(b, x_batch.shape[1], hp, wp)[:, :, pad_h[0] : hp - pad_h[1], pad_w[0] : wp - pad_w[1]]
    return np.ascontiguousarray(ranks), fills, steps


# Quantus marks its metric classes @final; subclassing is how the result stays a quantus.PixelFlipping.
class AcceleratedPixelFlipping(_Accelerated, quantus.PixelFlipping):  # type: ignore[misc]
    """Quantus ``PixelFlipping`` (Bach et al. 2015) on the engine: same order, same fills, same curve.

    Example::

        >>> import quantus, xai_bridge as xb
        >>> pf = xb.accelerate(quantus.PixelFlipping(features_in_step=3 * 224, disable_warnings=True))
        >>> pf.features_in_step
        672
    """

    def evaluate_batch(
        self, model: Any, x_batch: np.ndarray, y_batch: np.ndarray, a_batch: np.ndarray, **kwargs: Any
    ) -> list[Any]:
        a = self._xb_inputs(x_batch, y_batch, a_batch)
        baseline, bounds = _baseline(self)
        ranks, fills, steps = feature_sequence(self.features_in_step, baseline, bounds, x_batch, a)
        preds = self._xb_curve(model, x_batch, y_batch, ranks, fills, steps)
        if self.return_auc_per_sample:
            return np.trapezoid(preds, dx=1, axis=1).tolist()  # Quantus's calculate_auc (np.trapz)
        return preds.tolist()


# Quantus marks its metric classes @final; subclassing is how the result stays a quantus.RegionPerturbation.
class AcceleratedRegionPerturbation(_Accelerated, quantus.RegionPerturbation):  # type: ignore[misc]
    """Quantus ``RegionPerturbation`` (Samek et al. 2017) on the engine: ``f(x) − f(x^{(k)})`` per region.

    Example::

        >>> import quantus, xai_bridge as xb
        >>> rp = xb.accelerate(quantus.RegionPerturbation(patch_size=16, order="lerf", disable_warnings=True))
        >>> rp.order
        'lerf'
    """

    # Quantus's own evaluate_batch returns this ndarray too, although it is annotated List[List[float]]
    def evaluate_batch(  # type: ignore[override]
        self, model: Any, x_batch: np.ndarray, y_batch: np.ndarray, a_batch: np.ndarray, **kwargs: Any
    ) -> np.ndarray:
        a = self._xb_inputs(x_batch, y_batch, a_batch)
        base = self._xb_base(model, x_batch, y_batch)
        ranks, fills, steps = _patch_sequence(self, x_batch, a, self.order, self.regions_evaluation)
        preds = self._xb_curve(model, x_batch, y_batch, ranks, fills, steps)
        return base[:, None] - preds


# Quantus marks its metric classes @final; subclassing is how the result stays a quantus.Selectivity.
class AcceleratedSelectivity(_Accelerated, quantus.Selectivity):  # type: ignore[misc]
    """Quantus ``Selectivity`` (Montavon et al. 2018) on the engine: the score after each patch removed.

    Example::

        >>> import quantus, xai_bridge as xb
        >>> sel = xb.accelerate(quantus.Selectivity(patch_size=56, disable_warnings=True))
        >>> sel.patch_size
        56
    """

    # Quantus's own evaluate_batch returns this ndarray too, although it is annotated List[List[float]]
    def evaluate_batch(  # type: ignore[override]
        self, model: Any, x_batch: np.ndarray, y_batch: np.ndarray, a_batch: np.ndarray, **kwargs: Any
    ) -> np.ndarray:
        a = self._xb_inputs(x_batch, y_batch, a_batch)
        ranks, fills, steps = _patch_sequence(self, x_batch, a, "morf", None)
        preds = self._xb_curve(model, x_batch, y_batch, ranks, fills, steps)
        return preds.astype(np.float64)


# Quantus marks its metric classes @final; subclassing is how the result stays a quantus.FaithfulnessEstimate.
class AcceleratedFaithfulnessEstimate(_Accelerated, quantus.FaithfulnessEstimate):  # type: ignore[misc]
    """Quantus ``FaithfulnessEstimate`` (Alvarez-Melis and Jaakkola 2018, "Towards robust interpretability with
    self-explaining neural networks") on the engine: the correlation of each group's attribution sum with the score
    drop when that group alone is replaced, groups of ``features_in_step`` in attribution order.

    Example::

        >>> import quantus, xai_bridge as xb
        >>> fe = xb.accelerate(quantus.FaithfulnessEstimate(features_in_step=224 * 56, disable_warnings=True))
        >>> isinstance(fe, quantus.FaithfulnessEstimate)
        True
    """

    def evaluate_batch(
        self, model: Any, x_batch: np.ndarray, y_batch: np.ndarray, a_batch: np.ndarray, **kwargs: Any
    ) -> list[float]:
        a = self._xb_inputs(x_batch, y_batch, a_batch)
        b = x_batch.shape[0]
        flat_a = a.reshape(b, -1)
        order = np.argsort(-flat_a, axis=1)  # the toolkit's call: the same ties
        y_pred = self._xb_base(model, x_batch, y_batch)
        subsets = _step_subsets(order, self.features_in_step)
        baseline, bounds = _baseline(self)
        arr = x_batch.reshape(b, -1)
        fills = np.stack([call_fill(baseline, bounds, arr) for _ in range(subsets.shape[1])], 1)
        pred_deltas = y_pred[:, None] - self._xb_subsets(model, x_batch, y_batch, subsets, fills)
        return self._xb_similarity(group_sums(flat_a, order, self.features_in_step), pred_deltas)


# Quantus marks its metric classes @final; subclassing is how the result stays a quantus.MonotonicityCorrelation.
class AcceleratedMonotonicityCorrelation(_Accelerated, quantus.MonotonicityCorrelation):  # type: ignore[misc]
    """Quantus ``MonotonicityCorrelation`` (Nguyen and Rodríguez Martínez 2020, "On quantitative aspects of model
    interpretability") on the engine: the rank correlation of each group's attribution sum with the variance of the
    score when that group alone is replaced, groups of ``features_in_step`` in ascending attribution order.

    With a deterministic baseline (``"black"``, ``"white"``, ``"mean"``, a number) the ``nr_samples`` perturbed
    images of a group are identical; the engine scores each once (the toolkit ``nr_samples`` times).

    Example::

        >>> import quantus, xai_bridge as xb
        >>> mc = xb.accelerate(quantus.MonotonicityCorrelation(features_in_step=224 * 56, nr_samples=3,
        ...                                                    disable_warnings=True))
        >>> mc.nr_samples
        3
    """

    def evaluate_batch(
        self, model: Any, x_batch: np.ndarray, y_batch: np.ndarray, a_batch: np.ndarray, **kwargs: Any
    ) -> list[float]:
        a = self._xb_inputs(x_batch, y_batch, a_batch)
        b = x_batch.shape[0]
        y_pred = self._xb_base(model, x_batch, y_batch)
        inv_pred = np.ones(b)
        inv_pred[np.abs(y_pred) >= self.eps] = 1.0 / np.abs(y_pred)  # the toolkit's expression
        inv_pred = inv_pred**2
        flat_a = a.reshape(b, -1)
        order = np.argsort(flat_a, axis=1)  # ascending, the toolkit's call
        subsets = _step_subsets(order, self.features_in_step)
        steps, samples = subsets.shape[1], self.nr_samples
        baseline, bounds = _baseline(self)
        arr = x_batch.reshape(b, -1)
        fills = np.stack([call_fill(baseline, bounds, arr) for _ in range(steps * samples)], 1).reshape(b, steps, -1)
        if _is_deterministic(baseline):  # identical images per group: score each once
            preds = self._xb_subsets(model, x_batch, y_batch, subsets, fills[:, :, 0])
            preds = np.repeat(preds[:, :, None], samples, 2)
        else:
            repeated = np.repeat(subsets, samples, 1)
            preds = self._xb_subsets(model, x_batch, y_batch, repeated, fills.reshape(b, -1)).reshape(b, steps, -1)
        variances = np.stack(
            [np.mean((preds[:, s] - y_pred[:, None]) ** 2, axis=1) * inv_pred for s in range(steps)], 1
        )
        return self._xb_similarity(group_sums(flat_a, order, self.features_in_step), variances)


# Quantus marks its metric classes @final; subclassing is how the result stays a quantus.FaithfulnessCorrelation.
class AcceleratedFaithfulnessCorrelation(_Accelerated, quantus.FaithfulnessCorrelation):  # type: ignore[misc]
    """Quantus ``FaithfulnessCorrelation`` (Bhatt, Weller and Moura 2020, "Evaluating and aggregating feature-based
    model explanations") on the engine: the correlation of random subsets' attribution sums with the score drop when
    the subset is replaced, ``nr_runs`` subsets of ``subset_size`` features drawn with the toolkit's NumPy calls.

    Example::

        >>> import quantus, xai_bridge as xb
        >>> fc = xb.accelerate(quantus.FaithfulnessCorrelation(nr_runs=10, subset_size=224, disable_warnings=True))
        >>> fc.nr_runs
        10
    """

    def evaluate_batch(
        self, model: Any, x_batch: np.ndarray, y_batch: np.ndarray, a_batch: np.ndarray, **kwargs: Any
    ) -> list[float]:
        a = self._xb_inputs(x_batch, y_batch, a_batch)
        b = x_batch.shape[0]
        flat_a = a.reshape(b, -1)
        n = flat_a.shape[1]
        y_pred = self._xb_base(model, x_batch, y_batch)
        baseline, bounds = _baseline(self)
        arr = x_batch.reshape(b, -1)
        subsets, fills = [], []
        for _ in range(self.nr_runs):  # the toolkit's draws, in its order: the subsets, then the baseline
            subsets.append(np.stack([np.random.choice(n, self.subset_size, replace=False) for _ in range(b)], 0))
            fills.append(call_fill(baseline, bounds, arr))
        chosen = np.stack(subsets, 1)
        pred_deltas = y_pred[:, None] - self._xb_subsets(model, x_batch, y_batch, chosen, np.stack(fills, 1))
        rows = np.arange(b)[:, None]
        att_sums = np.stack([flat_a[rows, ix].sum(axis=-1) for ix in subsets], 1)
        return self._xb_similarity(att_sums, pred_deltas)


_WARNED: set[str] = set()


def _warn_defect_once(name: str, message: str) -> None:
    """One :class:`~xai_bridge.errors.ToolkitDefectWarning` per metric class and process."""
    if name not in _WARNED:
        _WARNED.add(name)
        warnings.warn(f"{name}: {message} (see docs/quantus.md, 'Toolkit defects')", ToolkitDefectWarning, stacklevel=3)


# Quantus marks its metric classes @final; subclassing is how the result stays a quantus.Monotonicity.
class AcceleratedMonotonicity(_Accelerated, quantus.Monotonicity):  # type: ignore[misc]
    """Monotonicity (Arya et al. 2019, "One explanation does not fit all: a toolkit and taxonomy of AI
    explainability techniques"): starting from the baseline image, the features are *inserted* (given back their
    values) ``features_in_step`` at a time in ascending attribution order; the explanation is monotonic when the
    score never decreases.

    Quantus 0.6.0 replaces the features of the baseline image by the baseline value again instead of the image's:
    with ``"black"``, ``"white"``, ``"mean"`` or a number its image never changes and the metric is always True;
    with ``"uniform"`` the features get fresh random values. This class computes the published definition (it
    warns once with :class:`~xai_bridge.errors.ToolkitDefectWarning`); the baseline image and NumPy's random draws
    are Quantus's.

    Example::

        >>> import quantus, xai_bridge as xb
        >>> mono = xb.accelerate(quantus.Monotonicity(features_in_step=224 * 56, disable_warnings=True))
        >>> isinstance(mono, quantus.Monotonicity)
        True
    """

    # the toolkit's own evaluate_batch returns these booleans too, although it is annotated List[float]
    def evaluate_batch(  # type: ignore[override]
        self, model: Any, x_batch: np.ndarray, y_batch: np.ndarray, a_batch: np.ndarray, **kwargs: Any
    ) -> list[bool]:
        _warn_defect_once(
            "Monotonicity",
            "Quantus 0.6.0 perturbs the baseline image with the baseline value, never inserting the image's features "
            "(always True with a deterministic baseline); computing the published definition",
        )
        a = self._xb_inputs(x_batch, y_batch, a_batch)
        b = x_batch.shape[0]
        flat = a.reshape(b, -1)
        order = np.argsort(flat, axis=1)  # ascending, the toolkit's call
        n = flat.shape[1]
        steps = -(-n // self.features_in_step)
        baseline, bounds = _baseline(self)
        arr = x_batch.reshape(b, -1)
        # the toolkit's baseline image: one value per image, from get_baseline_value without the uniform bounds
        start = call_fill(baseline, {"low": 0.0, "high": 1.0}, arr)
        for _ in range(steps):  # the toolkit's perturb function draws once per step
            call_fill(baseline, bounds, arr)
        ranks = group_ranks(order, self.features_in_step).reshape(x_batch.shape)
        fills = np.repeat(start[:, None].astype(np.float64), steps, 1)
        preds = self._xb_curve(model, x_batch, y_batch, ranks, fills, steps, insert=True)
        return list(np.all(np.diff(preds) >= 0, axis=1).tolist())


# Quantus marks its metric classes @final; subclassing is how the result stays a quantus.SensitivityN.
class AcceleratedSensitivityN(_Accelerated, quantus.SensitivityN):  # type: ignore[misc]
    """Sensitivity-n (Ancona et al. 2018, "Towards better understanding of gradient-based attribution methods for
    deep neural networks"): for each ``n``, the correlation across images of the score drop when a set ``S`` of
    ``n`` features is removed with the sum of the attributions over the same ``S``.

    Quantus 0.6.0 removes the features cumulatively (``S`` = the ``n`` most relevant) but pairs the score drop with
    the attribution sum of the last step's group only, and keeps the first batch's images only. This class pairs
    the drop with the sum over all of ``S`` and correlates over every image (it warns once with
    :class:`~xai_bridge.errors.ToolkitDefectWarning`). The sets ``S`` are Quantus's (the top-``n`` by attribution),
    not random subsets as in the paper; the removal and NumPy's draws are Quantus's.

    Example::

        >>> import quantus, xai_bridge as xb
        >>> sn = xb.accelerate(quantus.SensitivityN(features_in_step=224 * 56, disable_warnings=True))
        >>> isinstance(sn, quantus.SensitivityN)
        True
    """

    # the toolkit's own evaluate_batch returns this list of one dict too (annotated List[Dict[str, List[float]]])
    def evaluate_batch(  # type: ignore[override]
        self, model: Any, x_batch: np.ndarray, y_batch: np.ndarray, a_batch: np.ndarray, **kwargs: Any
    ) -> list[dict[str, np.ndarray]]:
        _warn_defect_once(
            "SensitivityN",
            "Quantus 0.6.0 pairs cumulative score drops with per-step attribution sums and keeps the first batch "
            "only; computing the published definition over all images",
        )
        a = self._xb_inputs(x_batch, y_batch, a_batch)
        b = x_batch.shape[0]
        flat = a.reshape(b, -1)
        order = np.argsort(-flat, axis=1)  # descending, the toolkit's call
        n = flat.shape[1]
        f = self.features_in_step
        steps = -(-n // f)
        y_pred = self._xb_base(model, x_batch, y_batch)
        ranks = group_ranks(order, f)
        baseline, bounds = _baseline(self)
        fills = replacement_fills(baseline, bounds, x_batch.reshape(b, -1), ranks, steps)
        preds = self._xb_curve(model, x_batch, y_batch, ranks.reshape(x_batch.shape), fills, steps)
        step_sums = group_sums(flat, order, f)
        return [{"att_sums": np.cumsum(step_sums, axis=1), "pred_deltas": y_pred[:, None] - preds}]

    def custom_postprocess(self, x_batch: np.ndarray, **kwargs: Any) -> None:
        """Per ``n``: ``similarity_func`` across all images (every batch) of score drops and attribution sums."""
        max_features = int(self.n_max_percentage * np.prod(x_batch.shape[2:]) // self.features_in_step)
        pred_deltas = np.concatenate([r["pred_deltas"] for r in self.evaluation_scores], 0)
        att_sums = np.concatenate([r["att_sums"] for r in self.evaluation_scores], 0)
        func: Any = self.similarity_func
        self.evaluation_scores = func(a=pred_deltas[:, :max_features].T, b=att_sums[:, :max_features].T, batched=True)


def _noise_keyword(metric: Any) -> float:
    """ROAD's ``noise``; refuses any perturb function but Quantus's ``noisy_linear_imputation``."""
    keywords = _perturb_keywords(metric, noisy_linear_imputation)
    extra = sorted(set(keywords) - {"noise"})
    if extra:
        raise UnsupportedMetricError(
            f"perturb_func_kwargs: ROAD is accelerated with ['noise'] only, got {extra}; "
            "pass fallback=True to run the toolkit's own code"
        )
    return float(keywords.get("noise", 0.01))


def segment_ranks(x_batch: np.ndarray, a: np.ndarray, method: str) -> tuple[np.ndarray, list[int]]:
    """``B×H×W`` step at which each pixel's superpixel is removed in IROF, and each image's number of superpixels.

    The superpixels are the toolkit's (``get_superpixel_segments``), ordered by their mean attribution over all
    channels, descending, with ``np.argsort``'s ties (Rieger and Hansen 2020).
    """
    b, _, h, w = x_batch.shape
    counts, ranks = [], np.empty((b, h, w), dtype=np.int64)
    for i, (x, ai) in enumerate(zip(x_batch, a, strict=True)):
        segments = qutils.get_superpixel_segments(
            img=np.moveaxis(x, 0, -1).astype("double"), segmentation_method=method
        )
        count = len(np.unique(segments))
        qasserts.assert_nr_segments(nr_segments=count)
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
    ``fills[:, s]``), in float64: Infidelity's attribution-weighted input change (Yeh et al. 2019)."""
    b = x_batch.shape[0]
    flat_ranks = ranks.reshape(b, -1)
    flat_x = x_batch.reshape(b, -1).astype(np.float64)
    rank_fill = np.take_along_axis(fills.astype(np.float64), np.minimum(flat_ranks, steps - 1), 1)
    change = np.where(flat_ranks < steps, a.reshape(b, -1).astype(np.float64) * (flat_x - rank_fill), 0.0)
    step_sums = np.stack([np.bincount(flat_ranks[i], change[i], minlength=steps + 1) for i in range(b)])
    return np.cumsum(step_sums[:, :steps], axis=1)


# Quantus marks its metric classes @final; subclassing is how the result stays a quantus.IROF.
class AcceleratedIROF(_Accelerated, quantus.IROF):  # type: ignore[misc]
    """IROF (Rieger and Hansen 2020, "IROF: a low resource evaluation metric for explanation methods") on the
    engine: the image is cut into superpixels (the toolkit's ``get_superpixel_segments``), which are replaced
    one more per step in descending order of their mean attribution; the score is the area over the curve of the
    class score relative to the unperturbed image's, ``n_segments − trapezoid(curve)``.

    Quantus 0.6.0 cannot run it on colour images (its segment mask has one channel and the replacement asserts
    equal shapes), integrates with ``np.trapz`` (absent from NumPy 2.4), computes the replacement value over the
    whole batch (so an image's score depends on the other images in its batch) and integrates the zeros that pad
    the curves of images with fewer segments than the batch's largest. This class removes each superpixel from all
    channels, takes the baseline per image and integrates each image's own curve (it warns once with
    :class:`~xai_bridge.errors.ToolkitDefectWarning`); with one image per batch on one-channel images its values
    are the toolkit's. ``perturb_baseline="uniform"`` (per-pixel noise) is not accelerated.

    Example::

        >>> import quantus, xai_bridge as xb
        >>> irof = xb.accelerate(quantus.IROF(disable_warnings=True))
        >>> irof.segmentation_method
        'slic'
    """

    def evaluate_batch(  # type: ignore[override]
        self, model: Any, x_batch: np.ndarray, y_batch: np.ndarray, a_batch: np.ndarray, **kwargs: Any
    ) -> np.ndarray:
        _warn_defect_once(
            "IROF",
            "Quantus 0.6.0 fails on colour images, calls np.trapz (absent from NumPy 2.4), takes the baseline over "
            "the whole batch and integrates the padding of shorter curves; computing the published definition per "
            "image",
        )
        a = self._xb_inputs(x_batch, y_batch, a_batch)
        _irof_check(self)
        baseline, bounds = _baseline(self, baseline_replacement_by_mask)
        b, c = x_batch.shape[:2]
        y_pred = self._xb_base(model, x_batch, y_batch)
        ranks, counts = segment_ranks(x_batch, a, self.segmentation_method)
        steps = max(counts)
        flat_ranks = np.repeat(ranks[:, None], c, 1).reshape(b, -1)
        if isinstance(baseline, str):
            # the toolkit draws uniform noise the size of the batch at every step and discards it; advance NumPy's
            # state by as much (a double takes two 32-bit words, as 8 random bytes do), without making the doubles
            for _ in range(steps):
                np.random.bytes(8 * x_batch.size)
        fills = replacement_fills(baseline, bounds, x_batch.reshape(b, -1), flat_ranks, steps, draw=False)
        preds = self._xb_curve(model, x_batch, y_batch, flat_ranks.reshape(x_batch.shape), fills, steps)
        curves = (preds / y_pred[:, None]).astype(np.float64)  # the toolkit divides in float32
        return np.array([n - np.trapezoid(curves[i, :n], dx=1) for i, n in enumerate(counts)])


def _road_imputation(x: np.ndarray, indices: np.ndarray, noise: float) -> np.ndarray:
    """Quantus's ``noisy_linear_imputation(arr=x, indices=indices, noise=noise)``, the same values and the same
    ``np.random.randn`` draw, with the sparse system assembled at once (:mod:`xai_bridge.engine.imputation`)."""
    flat = x.reshape(x.shape[0], -1)
    solution = np.transpose(solve_imputation((x.shape[-2], x.shape[-1]), indices, flat))
    out = np.copy(flat)
    out[:, indices] = solution + noise * np.random.randn(*solution.shape)
    return out.reshape(*x.shape)


# Quantus marks its metric classes @final; subclassing is how the result stays a quantus.ROAD.
class AcceleratedROAD(_Accelerated, quantus.ROAD):  # type: ignore[misc]
    """ROAD (Rong et al. 2022, "A consistent and efficient evaluation strategy for attribution methods"): for each
    percentage ``p``, the ``p`` % most relevant pixels are replaced by the toolkit's noisy linear imputation and the
    score is the fraction of images whose predicted class is still ``y``. The imputation solves the toolkit's own
    system (assembled at once instead of entry by entry: the same solution bit for bit) and draws its noise in the
    toolkit's order, so ``np.random.seed`` gives the same images; the forward passes of all images and percentages
    go through the engine together.

    Quantus 0.6.0 ranks the channel-broadcast attribution of a colour image (``C·H·W`` indices into an ``H·W``
    image: ``IndexError``) and averages the first batch's images only. This class ranks pixels by their attribution
    summed over channels and averages every image (it warns once with
    :class:`~xai_bridge.errors.ToolkitDefectWarning`); on one-channel images in one batch its values are the
    toolkit's.

    Example::

        >>> import quantus, xai_bridge as xb
        >>> road = xb.accelerate(quantus.ROAD(percentages=[10, 50, 90], disable_warnings=True))
        >>> road.percentages
        [10, 50, 90]
    """

    def evaluate_batch(  # type: ignore[override]
        self, model: Any, x_batch: np.ndarray, y_batch: np.ndarray, a_batch: np.ndarray, **kwargs: Any
    ) -> list[np.ndarray]:
        _warn_defect_once(
            "ROAD",
            "Quantus 0.6.0 fails on colour images (it ranks the channel-broadcast attribution) and keeps the first "
            "batch's scores only; ranking pixels and averaging every image",
        )
        self._xb_inputs(x_batch, y_batch, a_batch)
        b = x_batch.shape[0]
        pixels = int(np.prod(x_batch.shape[2:]))
        relevance = np.broadcast_to(a_batch, (b, a_batch.shape[1], *x_batch.shape[2:])).reshape(b, a_batch.shape[1], -1)
        order = np.argsort(-(relevance[:, 0] if relevance.shape[1] == 1 else relevance.sum(1)), axis=1)
        noise = _noise_keyword(self)
        perturbed = [
            _road_imputation(x, top, noise)  # the toolkit's imputation and noise draws, in its order
            for p in self.percentages
            for x, top in zip(x_batch, order[:, : int(pixels * p / 100)], strict=True)
        ]
        logits = self._xb_logits(model, np.stack(perturbed))
        predicted = logits.argmax(-1).cpu().numpy().reshape(len(self.percentages), b).T
        return [(np.asarray(y_batch).reshape(-1, 1) == predicted).astype(int)]

    def custom_postprocess(self, **kwargs: Any) -> None:
        """The fraction of every image (all batches) still predicted as ``y``, per percentage."""
        scores = np.concatenate([np.asarray(r) for r in self.evaluation_scores], 0).mean(0)
        self.evaluation_scores = dict(zip(self.percentages, scores, strict=True))


# Quantus marks its metric classes @final; subclassing is how the result stays a quantus.Infidelity.
class AcceleratedInfidelity(_Accelerated, quantus.Infidelity):  # type: ignore[misc]
    """Infidelity (Yeh et al. 2019, "On the (in)fidelity and sensitivity of explanations") as Quantus computes it:
    for each patch size, square patches are replaced one more per step in the toolkit's block order, and
    ``loss_func`` compares the score drops with the attribution-weighted input changes ``Σ a·(x − x̃)``, averaged
    over patch sizes and ``n_perturb_samples``.

    Quantus 0.6.0 fails when the image's height or width is not a multiple of the patch size (it perturbs the
    unpadded image with indices of the padded one) and repeats identical work for each of its
    ``n_perturb_samples`` when the baseline is deterministic. This class pads as the toolkit intends (edge values,
    cropped afterwards; it warns once with :class:`~xai_bridge.errors.ToolkitDefectWarning`) and scores each
    distinct perturbation once; NumPy's random draws are the toolkit's.

    Example::

        >>> import quantus, xai_bridge as xb
        >>> inf = xb.accelerate(quantus.Infidelity(perturb_patch_sizes=[56], n_perturb_samples=2,
        ...                                        disable_warnings=True))
        >>> inf.perturb_patch_sizes
        [56]
    """

    # the toolkit's own evaluate_batch returns this ndarray too, although it is annotated List[float]
    def evaluate_batch(  # type: ignore[override]
        self, model: Any, x_batch: np.ndarray, y_batch: np.ndarray, a_batch: np.ndarray, **kwargs: Any
    ) -> np.ndarray:
        h, w = x_batch.shape[-2:]
        if any(h % p or w % p for p in self.perturb_patch_sizes):
            _warn_defect_once(
                "Infidelity",
                "Quantus 0.6.0 fails when the image size is not a multiple of the patch size; padding the image "
                "with its edge values as the toolkit intends",
            )
        a = self._xb_inputs(x_batch, y_batch, a_batch)
        baseline, bounds = _baseline(self)
        y_pred = self._xb_base(model, x_batch, y_batch)
        done: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # per patch size: scores and Σ a·(x − x̃) per step
        loss: Any = self.loss_func
        results = []
        for _ in range(self.n_perturb_samples):
            per_patch = []
            for size in self.perturb_patch_sizes:
                if size in done and _is_deterministic(baseline):  # the same perturbations again: only draw
                    if isinstance(baseline, str):  # as the toolkit's perturb function does at every step
                        for _ in range(done[size][0].shape[1]):
                            np.random.uniform(size=x_batch.shape[0], **bounds)
                else:
                    ranks, fills, steps = patch_sequence(size, baseline, bounds, x_batch, a, "raster", None)
                    scores = self._xb_curve(model, x_batch, y_batch, ranks, fills, steps)
                    done[size] = scores, attribution_changes(x_batch, a, ranks, fills, steps)
                scores, a_sums = done[size]
                per_patch.append(loss(a=y_pred[:, None] - scores, b=a_sums, batched=True))
            results.append(np.mean(np.stack(per_patch, axis=1), axis=-1))
        return np.asarray(np.mean(np.stack(results, axis=1), axis=-1))


def _irof_check(metric: Any) -> None:
    baseline, _ = _baseline(metric, baseline_replacement_by_mask)
    if isinstance(baseline, str) and baseline.lower() == "uniform":
        raise UnsupportedMetricError(
            "perturb_baseline: IROF with 'uniform' (fresh noise for every pixel) is not accelerated; "
            "pass fallback=True to run the toolkit's own code"
        )


def _make(cls: type, check: Callable[[Any], Any] = _baseline) -> Callable[..., Any]:
    def make(metric: Any, *, budget: Any = None, batch_size: int | None = None) -> Any:
        check(metric)  # refuse what cannot be reproduced now, not at the first call
        out: Any = object.__new__(cls)  # the same configuration, not re-initialised (no warnings, no new draws)
        out.__dict__.update(copy.copy(metric.__dict__))
        out._xb_budget, out._xb_batch_size = budget, batch_size
        out._xb_engine_obj = None
        out.forward_samples = 0
        return out

    return make


ACCELERATED = {
    quantus.PixelFlipping: _make(AcceleratedPixelFlipping),
    quantus.RegionPerturbation: _make(AcceleratedRegionPerturbation),
    quantus.Selectivity: _make(AcceleratedSelectivity),
    quantus.FaithfulnessEstimate: _make(AcceleratedFaithfulnessEstimate),
    quantus.MonotonicityCorrelation: _make(AcceleratedMonotonicityCorrelation),
    quantus.FaithfulnessCorrelation: _make(AcceleratedFaithfulnessCorrelation),
    quantus.Monotonicity: _make(AcceleratedMonotonicity),
    quantus.SensitivityN: _make(AcceleratedSensitivityN),
    quantus.IROF: _make(AcceleratedIROF, _irof_check),
    quantus.ROAD: _make(AcceleratedROAD, _noise_keyword),
    quantus.Infidelity: _make(AcceleratedInfidelity),
}

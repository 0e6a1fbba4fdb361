"""Quantus 0.6.0 faithfulness metrics on the perturbation engine.

Each accelerated class subclasses the Quantus class and overrides only ``evaluate_batch``:
Quantus's own ``__call__`` still does the preprocessing (``normalise``, ``abs``, explaining
when ``a_batch`` is None), the batching and the aggregation. ``evaluate_batch`` computes the
toolkit's order with the planners of :mod:`xai_bridge.engine.plans` (the toolkit's own NumPy
calls, so ties and random permutations are the same), consumes NumPy's global random state
exactly as the toolkit does (Quantus draws one ``np.random.uniform(size=B)`` per perturbation
step whatever the baseline string), and hands the sequence to
:func:`~xai_bridge.engine.sequences.ranked_replacement_logits`. The engine, the forward count
and the decision to fall back at a call belong to :class:`~xai_bridge.accelerate._bridge.Bridge`.

Pixel-Flipping: Bach et al. 2015, "On pixel-wise explanations for non-linear classifier decisions
by layer-wise relevance propagation". Region Perturbation: Samek et al. 2017, "Evaluating the
visualization of what a deep neural network has learned". Selectivity: Montavon, Samek and
Müller 2018, "Methods for interpreting and understanding deep neural networks".
"""

from __future__ import annotations

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

from ..engine.plans import (
    attribution_changes,
    auc,
    call_fill,
    feature_sequence,
    group_ranks,
    group_sums,
    infidelity_scores,
    irof_scores,
    is_deterministic,
    patch_sequence,
    replacement_fills,
    road_imputation,
    segment_ranks,
    step_subsets,
)
from ..engine.sequences import ranked_replacement_logits, subset_replacement_logits
from ..errors import InvalidArgumentError, ToolkitDefectWarning, UnsupportedMetricError
from ._bridge import Bridge

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


class QuantusBridge(Bridge):
    """The bridge on Quantus's side: its call, the checks of its batch, its scores of class ``y``."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        model = kwargs["model"] if "model" in kwargs else (args[0] if args else None)
        x_batch = kwargs["x_batch"] if "x_batch" in kwargs else (args[1] if len(args) > 1 else None)
        reason = self._xb_refusal(model, x_batch, "x_batch")
        if reason is None and kwargs.get("model_predict_kwargs"):
            reason = "model_predict_kwargs: the accelerated metric calls the model with the inputs only"
        toolkit_call = super().__call__  # type: ignore[misc]  # the Quantus class's, next in the MRO
        return self._xb_dispatch(
            reason,
            lambda: toolkit_call(*args, **kwargs),
            lambda toolkit: toolkit(*args, **kwargs),
        )

    @staticmethod
    def _xb_inputs(x_batch: np.ndarray, y_batch: np.ndarray, a_batch: np.ndarray) -> np.ndarray:
        """``a_batch`` broadcast to ``x_batch`` (any ``B×C×…`` layout), checked."""
        b = x_batch.shape[0]
        if a_batch.shape[0] != b or len(np.asarray(y_batch).reshape(-1)) != b:
            raise InvalidArgumentError(
                f"a_batch, y_batch: expected one attribution and one label per input ({b}), got "
                f"{a_batch.shape[0]} and {len(np.asarray(y_batch).reshape(-1))}"
            )
        try:
            a = np.broadcast_to(a_batch, x_batch.shape)
        except ValueError:
            raise InvalidArgumentError(
                f"a_batch: shape {a_batch.shape} does not broadcast to x_batch {x_batch.shape}; "
                "expected one channel or every channel of each input"
            ) from None
        if not np.isfinite(a).all():
            bad = np.nonzero(~np.isfinite(a.reshape(b, -1)).all(1))[0].tolist()
            raise InvalidArgumentError(f"a_batch: attribution(s) {bad} contain NaN or inf; check the explainer")
        return a

    def _xb_score(self, model: Any, logits: torch.Tensor, y_batch: np.ndarray) -> np.ndarray:
        """``B×…`` scores of class ``y`` from ``B×…×K`` logits, as Quantus's ``model.predict`` gives them."""
        values = logits.softmax(-1) if getattr(model, "softmax", False) else logits
        y = torch.as_tensor(np.asarray(y_batch).reshape(-1), device=values.device).long()
        y = y.view(-1, *([1] * (values.ndim - 1))).expand(*values.shape[:-1], 1)
        return values.gather(-1, y)[..., 0].cpu().numpy()

    def _xb_logits(self, model: Any, inputs: np.ndarray) -> torch.Tensor:
        """Logits of ``inputs`` as they are, in the engine's chunks."""
        return self._xb_stack_logits(model, torch.as_tensor(np.ascontiguousarray(inputs), dtype=torch.float32))

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
        """``B`` scores of class ``y`` on the unperturbed inputs."""
        return self._xb_score(model, self._xb_logits(model, x_batch), y_batch)

    def _xb_ranked_groups(
        self, x_batch: np.ndarray, a: np.ndarray, descending: bool
    ) -> tuple[np.ndarray, np.ndarray, int]:
        """The attributions flat ``B×n``, their order (the toolkit's ``np.argsort``) and the number of groups of
        ``features_in_step`` (Monotonicity, Sensitivity-n)."""
        flat = a.reshape(x_batch.shape[0], -1)
        order = np.argsort(-flat if descending else flat, axis=1)
        f: int = self.features_in_step  # type: ignore[attr-defined]  # set by the Quantus class
        return flat, order, -(-flat.shape[1] // f)


class _AUC:
    """Quantus's ``get_auc_score`` (the mean area under each curve) without ``np.trapz`` (absent from NumPy 2.4)."""

    evaluation_scores: Any

    @property
    def get_auc_score(self) -> Any:
        """The mean over the curves of ``evaluation_scores`` of their trapezoid area (unit spacing), a
        ``np.float64`` as the toolkit's."""
        return np.float64(np.mean([auc(np.asarray(curve)) for curve in self.evaluation_scores]))


def _patch_sequence(
    metric: Any, x_batch: np.ndarray, a: np.ndarray, order: str, regions: int | None
) -> tuple[np.ndarray, np.ndarray, int]:
    """Ranks (``B×C×H×W``) and fills of Region Perturbation / Selectivity, as the toolkit orders patches."""
    baseline, bounds = _baseline(metric)
    return patch_sequence(metric.patch_size, baseline, bounds, x_batch, a, order, regions)


# Quantus marks its metric classes @final; subclassing is how the result stays a quantus.PixelFlipping.
class AcceleratedPixelFlipping(_AUC, QuantusBridge, quantus.PixelFlipping):  # type: ignore[misc]
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
            return list(auc(preds).tolist())  # Quantus's calculate_auc, without np.trapz
        return preds.tolist()


# Quantus marks its metric classes @final; subclassing is how the result stays a quantus.RegionPerturbation.
class AcceleratedRegionPerturbation(_AUC, QuantusBridge, quantus.RegionPerturbation):  # type: ignore[misc]
    """Quantus ``RegionPerturbation`` (Samek et al. 2017) on the engine: ``f(x) − f(x^{(k)})`` per region.

    Example::

        >>> import quantus, xai_bridge as xb
        >>> rp = xb.accelerate(quantus.RegionPerturbation(patch_size=16, order="lerf", disable_warnings=True))
        >>> rp.order
        'lerf'
    """

    _xb_ndims = (3, 4)  # patches: images, or series as B×C×1×T

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
class AcceleratedSelectivity(_AUC, QuantusBridge, quantus.Selectivity):  # type: ignore[misc]
    """Quantus ``Selectivity`` (Montavon et al. 2018) on the engine: the score after each patch removed.

    Example::

        >>> import quantus, xai_bridge as xb
        >>> sel = xb.accelerate(quantus.Selectivity(patch_size=56, disable_warnings=True))
        >>> sel.patch_size
        56
    """

    _xb_ndims = (3, 4)  # patches: images, or series as B×C×1×T

    # Quantus's own evaluate_batch returns this ndarray too, although it is annotated List[List[float]]
    def evaluate_batch(  # type: ignore[override]
        self, model: Any, x_batch: np.ndarray, y_batch: np.ndarray, a_batch: np.ndarray, **kwargs: Any
    ) -> np.ndarray:
        a = self._xb_inputs(x_batch, y_batch, a_batch)
        ranks, fills, steps = _patch_sequence(self, x_batch, a, "morf", None)
        preds = self._xb_curve(model, x_batch, y_batch, ranks, fills, steps)
        return preds.astype(np.float64)


# Quantus marks its metric classes @final; subclassing is how the result stays a quantus.FaithfulnessEstimate.
class AcceleratedFaithfulnessEstimate(QuantusBridge, quantus.FaithfulnessEstimate):  # type: ignore[misc]
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
        subsets = step_subsets(order, self.features_in_step)
        baseline, bounds = _baseline(self)
        arr = x_batch.reshape(b, -1)
        fills = np.stack([call_fill(baseline, bounds, arr) for _ in range(subsets.shape[1])], 1)
        pred_deltas = y_pred[:, None] - self._xb_subsets(model, x_batch, y_batch, subsets, fills)
        return self._xb_similarity(group_sums(flat_a, order, self.features_in_step), pred_deltas)


# Quantus marks its metric classes @final; subclassing is how the result stays a quantus.MonotonicityCorrelation.
class AcceleratedMonotonicityCorrelation(QuantusBridge, quantus.MonotonicityCorrelation):  # type: ignore[misc]
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
        subsets = step_subsets(order, self.features_in_step)
        steps, samples = subsets.shape[1], self.nr_samples
        baseline, bounds = _baseline(self)
        arr = x_batch.reshape(b, -1)
        fills = np.stack([call_fill(baseline, bounds, arr) for _ in range(steps * samples)], 1).reshape(b, steps, -1)
        if is_deterministic(baseline):  # identical images per group: score each once
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
class AcceleratedFaithfulnessCorrelation(QuantusBridge, quantus.FaithfulnessCorrelation):  # type: ignore[misc]
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


def _warn_defect_once(name: str, message: str, key: str | None = None) -> None:
    """One :class:`~xai_bridge.errors.ToolkitDefectWarning` per metric class (or ``key``) and process."""
    if (key or name) not in _WARNED:
        _WARNED.add(key or name)
        warnings.warn(f"{name}: {message} (see docs/quantus.md, 'Toolkit defects')", ToolkitDefectWarning, stacklevel=3)


# Quantus marks its metric classes @final; subclassing is how the result stays a quantus.Monotonicity.
class AcceleratedMonotonicity(QuantusBridge, quantus.Monotonicity):  # type: ignore[misc]
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
        flat, order, steps = self._xb_ranked_groups(x_batch, a, descending=False)
        baseline, bounds = _baseline(self)
        arr = x_batch.reshape(x_batch.shape[0], -1)
        # the toolkit's baseline image: one value per image, from get_baseline_value without the uniform bounds
        start = call_fill(baseline, {"low": 0.0, "high": 1.0}, arr)
        for _ in range(steps):  # the toolkit's perturb function draws once per step
            call_fill(baseline, bounds, arr)
        ranks = group_ranks(order, self.features_in_step).reshape(x_batch.shape)
        fills = np.repeat(start[:, None].astype(np.float64), steps, 1)
        preds = self._xb_curve(model, x_batch, y_batch, ranks, fills, steps, insert=True)
        return list(np.all(np.diff(preds) >= 0, axis=1).tolist())


# Quantus marks its metric classes @final; subclassing is how the result stays a quantus.SensitivityN.
class AcceleratedSensitivityN(QuantusBridge, quantus.SensitivityN):  # type: ignore[misc]
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
        flat, order, steps = self._xb_ranked_groups(x_batch, a, descending=True)
        y_pred = self._xb_base(model, x_batch, y_batch)
        ranks = group_ranks(order, self.features_in_step)
        baseline, bounds = _baseline(self)
        fills = replacement_fills(baseline, bounds, x_batch.reshape(x_batch.shape[0], -1), ranks, steps)
        preds = self._xb_curve(model, x_batch, y_batch, ranks.reshape(x_batch.shape), fills, steps)
        step_sums = group_sums(flat, order, self.features_in_step)
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


class AcceleratedIROF(QuantusBridge, quantus.IROF):  # type: ignore[misc]
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

    _xb_ndims = (4,)  # images only

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
        return irof_scores(preds / y_pred[:, None], counts)  # the toolkit divides in float32


class AcceleratedROAD(QuantusBridge, quantus.ROAD):  # type: ignore[misc]
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

    _xb_ndims = (4,)  # images only

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
            road_imputation(x, top, noise)  # the toolkit's imputation and noise draws, in its order
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
class AcceleratedInfidelity(QuantusBridge, quantus.Infidelity):  # type: ignore[misc]
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

    _xb_ndims = (3, 4)  # patches: images, or series as B×C×1×T

    # the toolkit's own evaluate_batch returns this ndarray too, although it is annotated List[float]
    def evaluate_batch(  # type: ignore[override]
        self, model: Any, x_batch: np.ndarray, y_batch: np.ndarray, a_batch: np.ndarray, **kwargs: Any
    ) -> np.ndarray:
        if x_batch.ndim == 3:
            _warn_defect_once(
                "Infidelity",
                "Quantus 0.6.0 fails on series B×C×T (its padding assumes images); padding the series seen as "
                "B×C×1×T with its edge values, as the toolkit pads images",
                key="Infidelity series",
            )
        elif any(x_batch.shape[-2] % p or x_batch.shape[-1] % p for p in self.perturb_patch_sizes):
            _warn_defect_once(
                "Infidelity",
                "Quantus 0.6.0 fails when the image size is not a multiple of the patch size; padding the image "
                "with its edge values as the toolkit intends",
            )
        a = self._xb_inputs(x_batch, y_batch, a_batch)
        baseline, bounds = _baseline(self)
        y_pred = self._xb_base(model, x_batch, y_batch)
        done: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # per patch size: scores and Σ a·(x − x̃) per step
        results = []
        for _ in range(self.n_perturb_samples):
            for size in self.perturb_patch_sizes:
                if size in done and is_deterministic(baseline):  # the same perturbations again: only draw
                    if isinstance(baseline, str):  # as the toolkit's perturb function does at every step
                        for _ in range(done[size][0].shape[1]):
                            np.random.uniform(size=x_batch.shape[0], **bounds)
                else:
                    ranks, fills, steps = patch_sequence(size, baseline, bounds, x_batch, a, "raster", None)
                    scores = self._xb_curve(model, x_batch, y_batch, ranks, fills, steps)
                    done[size] = y_pred[:, None] - scores, attribution_changes(x_batch, a, ranks, fills, steps)
            drops, changes = zip(*(done[size] for size in self.perturb_patch_sizes), strict=True)
            results.append(infidelity_scores(drops, changes, self.loss_func))
        return np.asarray(np.mean(np.stack(results, axis=1), axis=-1))


def _irof_check(metric: Any) -> None:
    baseline, _ = _baseline(metric, baseline_replacement_by_mask)
    if isinstance(baseline, str) and baseline.lower() == "uniform":
        raise UnsupportedMetricError(
            "perturb_baseline: IROF with 'uniform' (fresh noise for every pixel) is not accelerated; "
            "pass fallback=True to run the toolkit's own code"
        )


def _make(cls: type[Bridge], check: Callable[[Any], Any] = _baseline) -> Callable[..., Any]:
    def make(metric: Any, *, budget: Any = None, batch_size: int | None = None, fallback: bool = False) -> Any:
        check(metric)  # refuse what cannot be reproduced now, not at the first call
        return cls.bridge(metric, budget=budget, batch_size=batch_size, fallback=fallback)

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

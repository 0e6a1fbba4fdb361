"""Quantus's Pixel-Flipping, Region Perturbation, Selectivity, Infidelity and IROF as xai-bridge metrics.

Each metric asks the engine for a :class:`~xai_bridge.engine.Ranked` sequence whose order and fill
values are Quantus 0.6.0's (the same ``np.argsort`` ties, the same patch padding, the same per-step
``"black"``/``"white"``/``"mean"`` baselines; see :mod:`xai_bridge.accelerate`), and turns the score
after each step into one value per image: the area under Quantus's curve (its ``calculate_auc`` /
``get_auc_score``, the trapezoid rule with unit spacing). The options mirror the toolkit's arguments.

Metrics on the same sequence share their forward passes: ``selectivity`` and ``region_perturbation``
with ``order="morf"`` and the same ``patch_size`` and ``perturb_baseline`` walk the same patches, so
one evaluation runs Selectivity's sequence once and Region Perturbation reads its first
``regions_evaluation`` steps.

Infidelity and IROF are registered in the forms :mod:`xai_bridge.accelerate` computes (Quantus's numbers
where Quantus runs; see docs/quantus.md for where and why they differ).

Pixel-Flipping: Bach et al. 2015, "On pixel-wise explanations for non-linear classifier decisions by
layer-wise relevance propagation". Region Perturbation: Samek et al. 2017, "Evaluating the visualization
of what a deep neural network has learned". Selectivity: Montavon, Samek and Müller 2018, "Methods for
interpreting and understanding deep neural networks". Infidelity: Yeh et al. 2019, "On the (in)fidelity and
sensitivity of explanations". IROF: Rieger and Hansen 2020, "IROF: a low resource evaluation metric for
explanation methods".

Example::

    >>> import xai_bridge as xb
    >>> xb.get_metric("region_perturbation", patch_size=56, regions_evaluation=4).regions_evaluation
    4
"""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np
import torch

from xai_bridge.engine import Ranked
from xai_bridge.engine.plans import QuantusOrder, attribution_changes, auc, infidelity_scores, irof_scores
from xai_bridge.errors import InvalidArgumentError
from xai_bridge.metric import Metric, MetricContext

_BASELINES = ("black", "white", "mean")


def _check_baseline(perturb_baseline: Any) -> str | float:
    if isinstance(perturb_baseline, str) and perturb_baseline.lower() in _BASELINES:
        return perturb_baseline.lower()
    if isinstance(perturb_baseline, numbers.Real) and not isinstance(perturb_baseline, bool):
        return float(perturb_baseline)
    raise InvalidArgumentError(
        f"perturb_baseline: expected one of {list(_BASELINES)} or a number, got {perturb_baseline!r} "
        "(a random baseline needs NumPy's global random state: use xb.accelerate on the Quantus metric)"
    )


class _QuantusCurve(Metric):
    """Score after each step of a Quantus sequence; one value per image: the area under the curve."""

    category = "Faithfulness"
    unit = "features"
    order = "morf"

    def __init__(
        self, protocol: Any = None, *, perturb_baseline: Any = "black", abs: bool = False, softmax: bool = True
    ) -> None:
        super().__init__(protocol)
        self.perturb_baseline = _check_baseline(perturb_baseline)
        self.abs = bool(abs)
        self.softmax = bool(softmax)

    def _size(self) -> int:
        raise NotImplementedError

    def _steps(self) -> int | None:
        return None

    def request(self) -> Ranked:
        """The engine request: Quantus's sequence for these options."""
        planner = QuantusOrder(self.unit, self._size(), self.order, self.perturb_baseline, self.abs)
        return Ranked(planner, steps=self._steps())

    def requests(self, protocol: Any) -> list[Any]:
        return [self.request()]

    def scores(self, ctx: MetricContext) -> torch.Tensor:
        """``B×S``: Quantus's score (softmax probability or logit, per ``softmax``) after each step."""
        return ctx[self.request()].get("probability" if self.softmax else "logit")

    def curve_values(self, ctx: MetricContext) -> torch.Tensor:
        return self.scores(ctx)

    def compute(self, ctx: MetricContext) -> torch.Tensor:
        values = self.curve_values(ctx).double()
        return torch.as_tensor(auc(values.cpu().numpy()), device=values.device)  # Quantus's calculate_auc


class PixelFlipping(_QuantusCurve):
    """Quantus ``PixelFlipping``: the score as ``features_in_step`` channel features at a time are replaced, most
    relevant first; the value is the area under that curve (Quantus's ``return_auc_per_sample=True``; lower is
    better).

    Example::

        >>> import xai_bridge as xb
        >>> xb.get_metric("pixel_flipping", features_in_step=224 * 56).features_in_step
        12544
    """

    name, higher_is_better = "pixel_flipping", False

    def __init__(
        self,
        protocol: Any = None,
        *,
        features_in_step: int = 1,
        perturb_baseline: Any = "black",
        abs: bool = False,
        softmax: bool = True,
    ) -> None:
        super().__init__(protocol, perturb_baseline=perturb_baseline, abs=abs, softmax=softmax)
        if int(features_in_step) < 1:
            raise InvalidArgumentError(f"features_in_step: expected a positive integer, got {features_in_step!r}")
        self.features_in_step = int(features_in_step)

    def _size(self) -> int:
        return self.features_in_step


class RegionPerturbation(_QuantusCurve):
    """Quantus ``RegionPerturbation``: ``f(x) − f(x^(k))`` as ``patch_size`` patches are replaced one at a time in
    ``order`` (``"morf"`` or ``"lerf"``) for ``regions_evaluation`` steps; the value is the area under that curve
    (Quantus's ``get_auc_score`` per image; higher is better for MoRF, lower for LeRF).

    Example::

        >>> import xai_bridge as xb
        >>> xb.get_metric("region_perturbation", order="lerf").higher_is_better
        False
    """

    name, higher_is_better, unit = "region_perturbation", True, "patches"

    def __init__(
        self,
        protocol: Any = None,
        *,
        patch_size: int = 8,
        regions_evaluation: int = 100,
        order: str = "morf",
        perturb_baseline: Any = "black",
        abs: bool = False,
        softmax: bool = True,
    ) -> None:
        super().__init__(protocol, perturb_baseline=perturb_baseline, abs=abs, softmax=softmax)
        if order not in ("morf", "lerf"):
            raise InvalidArgumentError(
                f"order: expected 'morf' or 'lerf', got {order!r} (a random order needs NumPy's global random "
                "state: use xb.accelerate on the Quantus metric)"
            )
        if int(patch_size) < 1 or int(regions_evaluation) < 1:
            raise InvalidArgumentError(
                f"patch_size, regions_evaluation: expected positive integers, got {patch_size!r}, "
                f"{regions_evaluation!r}"
            )
        self.patch_size, self.regions_evaluation, self.order = int(patch_size), int(regions_evaluation), order
        self.higher_is_better = order == "morf"

    def _size(self) -> int:
        return self.patch_size

    def _steps(self) -> int | None:
        return self.regions_evaluation

    def curve_values(self, ctx: MetricContext) -> torch.Tensor:
        base = ctx.logits.float()
        base = base.softmax(-1) if self.softmax else base
        return base.gather(-1, ctx.targets.view(-1, 1)) - self.scores(ctx)


class Selectivity(_QuantusCurve):
    """Quantus ``Selectivity``: the score as ``patch_size`` patches are replaced, most relevant first, until none is
    left; the value is the area under that curve (Quantus's ``get_auc_score`` per image; lower is better).

    Example::

        >>> import xai_bridge as xb
        >>> xb.get_metric("selectivity", patch_size=56).patch_size
        56
    """

    name, higher_is_better, unit = "selectivity", False, "patches"

    def __init__(
        self,
        protocol: Any = None,
        *,
        patch_size: int = 8,
        perturb_baseline: Any = "black",
        abs: bool = False,
        softmax: bool = True,
    ) -> None:
        super().__init__(protocol, perturb_baseline=perturb_baseline, abs=abs, softmax=softmax)
        if int(patch_size) < 1:
            raise InvalidArgumentError(f"patch_size: expected a positive integer, got {patch_size!r}")
        self.patch_size = int(patch_size)

    def _size(self) -> int:
        return self.patch_size


class Infidelity(_QuantusCurve):
    """Quantus ``Infidelity`` (Yeh et al. 2019): for each patch size, patches are replaced one more per step in
    the toolkit's block order (edge padding where the image is not a multiple of the patch), and the value is the
    mean squared difference between the score drops ``f(x) − f(x̃)`` and ``Σ a·(x − x̃)``, averaged over patch
    sizes (lower is better). With a deterministic baseline Quantus's ``n_perturb_samples`` repeat the same
    perturbation, so it has no option here. ``normalise=True`` divides each map by its largest absolute value
    (Quantus divides by the batch's, which is the same with one image per batch).

    Example::

        >>> import xai_bridge as xb
        >>> xb.get_metric("infidelity", perturb_patch_sizes=[56, 112]).perturb_patch_sizes
        (56, 112)
    """

    name, higher_is_better, unit, order = "infidelity", False, "patches", "raster"

    def __init__(
        self,
        protocol: Any = None,
        *,
        perturb_patch_sizes: Any = (4,),
        perturb_baseline: Any = "black",
        abs: bool = False,
        normalise: bool = False,
        softmax: bool = False,
    ) -> None:
        super().__init__(protocol, perturb_baseline=perturb_baseline, abs=abs, softmax=softmax)
        sizes = tuple(int(p) for p in np.atleast_1d(perturb_patch_sizes))
        if not sizes or min(sizes) < 1:
            raise InvalidArgumentError(
                f"perturb_patch_sizes: expected positive patch sides, got {perturb_patch_sizes!r}"
            )
        self.perturb_patch_sizes, self.normalise = sizes, bool(normalise)

    def _planner(self, size: int) -> QuantusOrder:
        return QuantusOrder(self.unit, size, self.order, self.perturb_baseline, self.abs)

    def requests(self, protocol: Any) -> list[Any]:
        return [Ranked(self._planner(size)) for size in self.perturb_patch_sizes]

    def compute(self, ctx: MetricContext) -> torch.Tensor:
        x = ctx.images.detach().float().cpu().numpy()
        a = ctx.maps.detach().float().cpu().numpy()[:, None].astype(np.float64)
        if self.normalise:
            peak = np.abs(a).reshape(a.shape[0], -1).max(1).reshape(-1, *([1] * (a.ndim - 1)))
            a = np.divide(a, peak, out=np.zeros_like(a), where=peak > 0)
        if self.abs:
            a = np.abs(a)
        a = np.broadcast_to(a, x.shape)
        base = ctx.logits.float()
        base = (base.softmax(-1) if self.softmax else base).gather(-1, ctx.targets.view(-1, 1))
        drops, changes = [], []
        for size in self.perturb_patch_sizes:
            result = ctx[Ranked(self._planner(size))]  # the scores and the plan they followed
            drops.append((base - result.get("probability" if self.softmax else "logit")).double().cpu().numpy())
            ranks, fills = result.ranks.cpu().numpy(), result.fills.cpu().numpy()
            changes.append(attribution_changes(x, a, ranks, fills, fills.shape[1]))
        return torch.as_tensor(infidelity_scores(drops, changes), dtype=torch.float64, device=ctx.logits.device)


class IROF(_QuantusCurve):
    """IROF (Rieger and Hansen 2020): the image's superpixels (Quantus's ``get_superpixel_segments``) are removed
    one more per step, highest mean attribution first, from every channel; the value is the area over the curve
    of the score relative to the unperturbed image's, ``n_segments − trapezoid(curve)`` (higher is better). The
    baseline is taken per image (see :class:`xai_bridge.accelerate._quantus.AcceleratedIROF` for how Quantus 0.6.0
    differs).

    Example::

        >>> import xai_bridge as xb
        >>> xb.get_metric("irof", segmentation_method="felzenszwalb").segmentation_method
        'felzenszwalb'
    """

    name, higher_is_better, unit = "irof", True, "segments"

    def __init__(
        self,
        protocol: Any = None,
        *,
        segmentation_method: str = "slic",
        perturb_baseline: Any = "mean",
        abs: bool = False,
        softmax: bool = True,
    ) -> None:
        super().__init__(protocol, perturb_baseline=perturb_baseline, abs=abs, softmax=softmax)
        if segmentation_method not in ("slic", "felzenszwalb"):
            raise InvalidArgumentError(
                f"segmentation_method: expected 'slic' or 'felzenszwalb', got {segmentation_method!r}"
            )
        self.segmentation_method = segmentation_method

    def _size(self) -> int:
        return 0

    def request(self) -> Ranked:
        planner = QuantusOrder(self.unit, 0, self.order, self.perturb_baseline, self.abs, self.segmentation_method)
        return Ranked(planner)

    def compute(self, ctx: MetricContext) -> torch.Tensor:
        base = ctx.logits.float()
        base = (base.softmax(-1) if self.softmax else base).gather(-1, ctx.targets.view(-1, 1))
        result = ctx[self.request()]
        curves = result.get("probability" if self.softmax else "logit") / base  # float32 division, as Quantus
        ranks = result.ranks.reshape(result.ranks.shape[0], -1)  # the plan the engine followed: the segments
        counts = [int(r.max()) + 1 for r in ranks]  # each image's own curve length
        return torch.as_tensor(irof_scores(curves.cpu().numpy(), counts), device=base.device)


METRICS: dict[str, type[Metric]] = {
    cls.name: cls for cls in (PixelFlipping, RegionPerturbation, Selectivity, Infidelity, IROF)
}

__all__ = ["IROF", "METRICS", "Infidelity", "PixelFlipping", "QuantusOrder", "RegionPerturbation", "Selectivity"]

"""Run a Quantus or pytorch-grad-cam metric on the perturbation engine, with the toolkit's numbers.

``accelerate(metric)`` reads the configuration of a toolkit metric instance (steps, patch
sizes, baselines, ``abs``, ``normalise``, ``return_aggregate``, …) and returns an object of the
same class (so still a ``quantus.Metric``, or with grad-cam's call signature) whose
perturbation loop is replaced by the engine: the perturbed images are built on the model's
device from the order the toolkit computes, and go through the model in chunks that fit the
memory budget. Everything else (Quantus's preprocessing, ``normalise``/``abs``, batching,
``return_aggregate``, ``quantus.evaluate``) is the toolkit's own code, so the results are the
toolkit's (within float32 batch-size noise, about 1e-6).

A configuration that cannot be reproduced exactly (a user's own ``perturb_func``, a metric not
listed below) raises :class:`~xai_bridge.errors.UnsupportedMetricError` naming the argument;
``fallback=True`` then returns the metric unchanged, so the toolkit's code runs. What only a call
can tell (a TensorFlow model, an input layout the metric's planner does not take) is decided at
each call: with ``fallback=True`` that call runs the toolkit's own code with one
:class:`~xai_bridge.errors.ToolkitFallbackWarning` saying why, otherwise it raises
:class:`~xai_bridge.errors.UnsupportedMetricError` naming the argument.

Inputs are ``B×C×…``: images ``B×C×H×W`` and series ``B×C×T`` for every metric whose definition
does not depend on the layout (patches of a series are Quantus's ``B×C×1×T`` view); IROF and
ROAD need images. The orders, fills and formulas are :mod:`xai_bridge.engine.plans`, shared with
the registered metrics.

Supported: Quantus ``PixelFlipping``, ``RegionPerturbation`` (``order`` ``"morf"``, ``"lerf"``,
``"random"``, with the same NumPy draws), ``Selectivity``, ``FaithfulnessEstimate``,
``MonotonicityCorrelation``, ``FaithfulnessCorrelation`` (the same random subsets),
``Infidelity`` (each distinct perturbation scored once), and ``Monotonicity``, ``SensitivityN``,
``IROF`` and ``ROAD`` as their papers define them (Quantus 0.6.0's code differs, see docs/quantus.md;
a :class:`~xai_bridge.errors.ToolkitDefectWarning` says so once); pytorch-grad-cam
``CamMultImageConfidenceChange``, ``DropInConfidence``, ``IncreaseInConfidence``,
``ROADMostRelevantFirst``, ``ROADLeastRelevantFirst``, their ``…Average`` variants and
``ROADCombined``.

Example::

    >>> import quantus, xai_bridge as xb
    >>> pf = xb.accelerate(quantus.PixelFlipping(features_in_step=224, perturb_baseline="black",
    ...                                          disable_warnings=True))
    >>> isinstance(pf, quantus.PixelFlipping)
    True
"""

from __future__ import annotations

import sys
import types
from typing import Any

from ..errors import UnsupportedMetricError

__all__ = ["accelerate", "supported_metrics", "QuantusBridge", "GradCamBridge"]

#: Toolkit metrics that are not accelerated yet: accelerate() names them and offers fallback=True.
NOT_YET = {
    "quantus": ("Sufficiency",),
}


def _table() -> dict[type, Any]:
    """Toolkit class → function returning the accelerated instance (toolkits imported lazily)."""
    table: dict[type, Any] = {}
    try:
        from . import _quantus
    except ImportError:  # quantus not installed
        pass
    else:
        table.update(_quantus.ACCELERATED)
    try:
        from . import _gradcam
    except ImportError:  # pytorch-grad-cam not installed
        pass
    else:
        table.update(_gradcam.ACCELERATED)
    return table


def supported_metrics() -> list[str]:
    """Qualified names of the toolkit metric classes :func:`accelerate` supports."""
    return sorted(f"{cls.__module__.split('.')[0]}.{cls.__name__}" for cls in _table())


def accelerate(
    metric: Any,
    *,
    fallback: bool = False,
    budget: int | float | str | None = None,
    batch_size: int | None = None,
) -> Any:
    """The same toolkit metric, computed on the perturbation engine.

    Args:
        metric: a configured instance of a supported Quantus or pytorch-grad-cam metric.
        fallback: when the metric or one of its settings cannot be reproduced exactly, return
            ``metric`` itself (the toolkit's own code runs) instead of raising; when a call brings a model or
            an input layout the engine cannot take, run the toolkit's own code for that call (one
            :class:`~xai_bridge.errors.ToolkitFallbackWarning`) instead of raising.
        budget: memory for one chunk of perturbed images (see :class:`~xai_bridge.engine.Engine`).
        batch_size: fixed number of images per forward pass instead of the budget.

    Returns:
        An instance of the metric's own class (``isinstance`` holds; ``quantus.evaluate`` takes
        it) whose ``forward_samples`` counts the images the engine sent through the model.

    Raises:
        UnsupportedMetricError: the metric type or a setting (named in the message) is not
            supported and ``fallback`` is False (at a call: the model or the input layout).

    Example::

        >>> import quantus, xai_bridge as xb
        >>> rp = xb.accelerate(quantus.RegionPerturbation(patch_size=16, regions_evaluation=10,
        ...                                               disable_warnings=True))
        >>> type(rp).__name__
        'AcceleratedRegionPerturbation'
    """
    table = _table()
    make = table.get(type(metric))
    try:
        if make is None:
            name = type(metric).__name__
            toolkit = type(metric).__module__.split(".")[0]
            if toolkit in NOT_YET and name in NOT_YET[toolkit]:
                raise UnsupportedMetricError(
                    f"metric: {toolkit}.{name} is not accelerated yet; pass fallback=True to run the toolkit's own code"
                )
            raise UnsupportedMetricError(
                f"metric: expected an instance of a supported toolkit metric ({', '.join(supported_metrics())}), "
                f"got {type(metric).__module__}.{type(metric).__name__}; pass fallback=True to run it unchanged"
            )
        return make(metric, budget=budget, batch_size=batch_size, fallback=fallback)
    except UnsupportedMetricError:
        if fallback:
            return metric
        raise


def __getattr__(name: str) -> Any:
    """``QuantusBridge`` and ``GradCamBridge``: the mixins an accelerated metric class derives from (see
    docs/extending-the-engine.md); their toolkit is imported when they are first asked for."""
    if name == "QuantusBridge":
        from ._quantus import QuantusBridge

        return QuantusBridge
    if name == "GradCamBridge":
        from ._gradcam import GradCamBridge

        return GradCamBridge
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class _CallableModule(types.ModuleType):
    """``import xai_bridge.accelerate`` binds the package on ``xai_bridge``; keep ``xb.accelerate(...)`` working."""

    def __call__(self, metric: Any, **kwargs: Any) -> Any:
        return accelerate(metric, **kwargs)


sys.modules[__name__].__class__ = _CallableModule

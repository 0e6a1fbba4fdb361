"""The typed lookups users call (never the raw hook relay)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

from .manager import get_host
from .registry import ExplainerSpec, MetricSpec

if TYPE_CHECKING:  # pragma: no cover - the return types; importing them needs torch
    from torch import nn

    from .explainer import Explainer
    from .metric import Metric


def list_explainers() -> list[ExplainerSpec]:
    """Every registered explainer, sorted by name.

    Returns:
        One frozen :class:`~xai_bridge.registry.ExplainerSpec` per explainer (name, aliases,
        family, description, the plugin that provides it). Loading the plugins imports no torch.

    >>> import xai_bridge as xb
    >>> "gradcam" in [spec.name for spec in xb.list_explainers()]
    True
    """
    return get_host().registry.explainers.sorted()


def list_metrics() -> list[MetricSpec]:
    """Every registered metric, sorted by name.

    Returns:
        One frozen :class:`~xai_bridge.registry.MetricSpec` per metric (name, aliases,
        direction, Quantus category, extra inputs it needs, the plugin that provides it).
    """
    return get_host().registry.metrics.sorted()


def explainer_spec(name: str) -> ExplainerSpec:
    """The descriptor of an explainer by name or alias (close matches suggested)."""
    return get_host().registry.explainers.get(name)


def metric_spec(name: str) -> MetricSpec:
    """The descriptor of a metric by name or alias (close matches suggested)."""
    return get_host().registry.metrics.get(name)


def get_explainer(name: str, model: nn.Module, **options: Any) -> Explainer:
    """A configured explainer for ``model``.

    Args:
        name: a registered name or alias (``xai-bridge plugins`` lists them).
        model: the classifier to explain, in eval mode.
        **options: the explainer's options (``layer=``, ``max_iter=``, …).

    Returns:
        An :class:`~xai_bridge.explainer.Explainer`: ``explainer.explain(images, target)``.

    Raises:
        UnknownNameError: no plugin registered ``name`` (close matches are suggested).
        UnknownOptionError: an option the explainer does not accept (those it does are listed).

    >>> import xai_bridge as xb
    >>> explainer = xb.get_explainer("gradcam", xb.default_model())
    >>> explainer.target_layer.name
    'head'
    """
    return cast("Explainer", explainer_spec(name).create(model, **options))


def get_metric(name: str, **options: Any) -> Metric:
    """A configured metric, e.g. ``get_metric("delta", metric="deletion_auc")``.

    Args:
        name: a registered name or alias.
        **options: the metric's options (``protocol=``, and its own, e.g. ``fraction=``).

    Returns:
        A :class:`~xai_bridge.metric.Metric`, for :func:`~xai_bridge.evaluate` or
        :func:`~xai_bridge.score_maps`.

    Raises:
        UnknownNameError: no plugin registered ``name`` (close matches are suggested).
        UnknownOptionError: an option the metric does not accept (those it does are listed).
    """
    return cast("Metric", metric_spec(name).create(**options))

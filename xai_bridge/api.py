"""The typed lookups users call (never the raw hook relay)."""

from __future__ import annotations

from typing import Any

from .manager import get_host
from .registry import ExplainerSpec, MetricSpec


def list_explainers() -> list[ExplainerSpec]:
    """Every registered explainer, sorted by name.

    >>> import xai_bridge as xb
    >>> "gradcam" in [spec.name for spec in xb.list_explainers()]
    True
    """
    return get_host().registry.explainers.sorted()


def list_metrics() -> list[MetricSpec]:
    """Every registered metric, sorted by name."""
    return get_host().registry.metrics.sorted()


def explainer_spec(name: str) -> ExplainerSpec:
    """The descriptor of an explainer by name or alias (close matches suggested)."""
    return get_host().registry.explainers.get(name)


def metric_spec(name: str) -> MetricSpec:
    """The descriptor of a metric by name or alias (close matches suggested)."""
    return get_host().registry.metrics.get(name)


def get_explainer(name: str, model: Any, **options: Any) -> Any:
    """A configured explainer for ``model``.

    >>> import xai_bridge as xb
    >>> explainer = xb.get_explainer("gradcam", xb.default_model())
    >>> explainer.target_layer.name
    'head'
    """
    return explainer_spec(name).create(model, **options)


def get_metric(name: str, **options: Any) -> Any:
    """A configured metric, e.g. ``get_metric("delta", metric="deletion_auc")``."""
    return metric_spec(name).create(**options)

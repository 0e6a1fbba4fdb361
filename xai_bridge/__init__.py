"""xai-bridge: new saliency methods and faithfulness metrics for Captum, pytorch-grad-cam and Quantus.

Importing this package is cheap (torch is imported only when a model, an
explainer or a metric is used)::

    import xai_bridge as xb
    xb.list_explainers(); xb.list_metrics()
    model = xb.default_model(); images, names = xb.sample_images()
    explainer = xb.get_explainer("gradcam", model)
    maps = explainer.explain(images, target=None)      # B×H×W
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .api import explainer_spec, get_explainer, get_metric, list_explainers, list_metrics, metric_spec
from .errors import NameConflictError, PluginError, PluginLoadWarning, UnknownNameError, UsageError
from .hookspecs import hookimpl
from .manager import get_host
from .registry import ExplainerSpec, MetricSpec

__version__ = "0.1.0"

# Heavy names, imported on first access (PEP 562).
_LAZY = {
    "default_model": "xai_bridge.models",
    "sample_images": "xai_bridge.data",
    "load_image": "xai_bridge.data",
    "Explainer": "xai_bridge.explainer",
    "LayerExplainer": "xai_bridge.explainer",
    "Explanation": "xai_bridge.explainer",
    "MapOutput": "xai_bridge.explainer",
    "TargetLayer": "xai_bridge.layers",
    "find_layer": "xai_bridge.layers",
    "imagenet_classes": "xai_bridge.classes",
    "evaluate": "xai_bridge.evaluation",
    "score_maps": "xai_bridge.evaluation",
    "Results": "xai_bridge.results",
    "Protocol": "xai_bridge.protocols",
    "get_protocol": "xai_bridge.protocols",
    "Metric": "xai_bridge.metric",
    "MetricContext": "xai_bridge.metric",
    "Engine": "xai_bridge.engine",
    "accelerate": "xai_bridge.accelerate",
}

__all__ = [
    "ExplainerSpec",
    "MetricSpec",
    "NameConflictError",
    "PluginError",
    "PluginLoadWarning",
    "UnknownNameError",
    "UsageError",
    "explainer_spec",
    "get_explainer",
    "get_host",
    "get_metric",
    "hookimpl",
    "list_explainers",
    "list_metrics",
    "metric_spec",
    *_LAZY,
]

if TYPE_CHECKING:  # pragma: no cover - the lazy names, for type checkers
    from .accelerate import accelerate  # noqa: F401
    from .classes import imagenet_classes  # noqa: F401
    from .data import load_image, sample_images  # noqa: F401
    from .engine import Engine  # noqa: F401
    from .evaluation import evaluate, score_maps  # noqa: F401
    from .explainer import Explainer, Explanation, LayerExplainer, MapOutput  # noqa: F401
    from .layers import TargetLayer, find_layer  # noqa: F401
    from .metric import Metric, MetricContext  # noqa: F401
    from .models import default_model  # noqa: F401
    from .protocols import Protocol, get_protocol  # noqa: F401
    from .results import Results  # noqa: F401


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'xai_bridge' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))

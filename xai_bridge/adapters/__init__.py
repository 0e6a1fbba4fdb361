"""Every registered explainer and metric, inside the toolkits users already have.

* :func:`xai_bridge.adapters.captum.as_attribution` — a Captum ``Attribution``
  (works in ``NoiseTunnel``, ``captum.metrics`` and ``captum.attr.visualization``);
* :func:`xai_bridge.adapters.gradcam.as_cam` — a pytorch-grad-cam ``BaseCAM``
  (grad-cam targets, ``show_cam_on_image``, ROAD and the confidence metrics);
* :func:`xai_bridge.adapters.quantus.explain_func` — a Quantus ``explain_func``, and
  :func:`xai_bridge.adapters.quantus.as_quantus_metric` — any registered metric as a ``quantus.Metric``.

Each module imports its toolkit only when imported itself; this package imports nothing heavy.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..errors import InvalidArgumentError, InvalidTypeError

if TYPE_CHECKING:
    from torch import nn

    from ..explainer import Explainer

__all__ = ["resolve_explainer"]


def resolve_explainer(
    explainer: str | Explainer, model: nn.Module | None, options: dict[str, Any], *, argument: str = "name"
) -> Explainer:
    """A configured explainer from a registered name (built for ``model`` with ``options``) or an explainer object.

    An explainer object is used as it is; ``options`` must then be empty, and
    ``model``, when given, must be the explainer's own model.
    """
    from ..api import get_explainer
    from ..explainer import Explainer

    if isinstance(explainer, str):
        if model is None:
            raise InvalidArgumentError(f"model: building the explainer {explainer!r} needs the classifier it explains")
        return get_explainer(explainer, model, **options)
    if isinstance(explainer, Explainer) or hasattr(explainer, "explanation"):
        if options:
            raise InvalidTypeError(
                f"{argument}: options {sorted(options)} cannot reconfigure an explainer object; "
                "pass its registered name with the options instead"
            )
        if model is not None and getattr(explainer, "model", model) is not model:
            raise InvalidArgumentError(
                f"model: the {argument} given explains another model; build it with get_explainer(name, model)"
            )
        return explainer
    raise InvalidTypeError(
        f"{argument}: expected a registered explainer name (see xai_bridge.list_explainers()) "
        f"or an explainer from get_explainer(), got {type(explainer).__name__}"
    )

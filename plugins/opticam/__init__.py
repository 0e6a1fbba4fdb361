"""Built-in plugin: Opti-CAM, saliency maps optimised for the classifier (Zhang et al. 2024; thesis ch. 2).

The map is a convex combination of the target layer's feature maps ``A^k``
(computed once, no gradient into the backbone) with weights ``softmax(u)``; the
per-image variable ``u`` maximises the logit of the explained class on the image
masked by the map (pixel space)::

    S(u) = Σ_k softmax(u)_k A^k            F(u) = y_c(x ⊙ n(up(S(u))))

Adam (lr 0.1) runs at most ``max_iter`` steps; an image stops on its own when its
objective changes by less than ``tolerance``. Images of a batch are independent
problems solved together: an image that has stopped keeps its ``u`` and leaves
the working batch at the next checkpoint.

This module only registers (cheap to import); the algorithm and the explainer class live in
:mod:`xai_bridge_builtins.opticam.explainer` and are importable from here too
(``from xai_bridge_builtins.opticam import OptiCAM, optimise``).
"""

from __future__ import annotations

from collections.abc import Callable

from xai_bridge import hookimpl
from xai_bridge.lazy import lazy_factory, lazy_getattr

__getattr__ = lazy_getattr(__name__, "xai_bridge_builtins.opticam.explainer")
_create = lazy_factory("xai_bridge_builtins.opticam.explainer", "OptiCAM")


@hookimpl
def register_explainers(register: Callable[..., None]) -> None:
    register(
        "opticam",
        _create,
        aliases=("opti-cam",),
        family="optimisation",
        needs_layer=True,
        description=(
            "Opti-CAM: CAM weights softmax(u) optimised with Adam to maximise the class logit of the masked image "
            "(Zhang et al. 2024)."
        ),
    )

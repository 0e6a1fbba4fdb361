"""Built-in plugin: DeepMaps, hidden-layer attributions summed over layers
(Grabska-Barwińska, Rivasplata, Rannen-Triki & György, "Towards Better Visual Explanations for
Deep Image Classifiers", §3).

At every chosen layer ``l`` with output ``x^l`` (``B×Φ×h×w``)::

    a^l_ij = Σ_φ x^l_ijφ · ∂f_c/∂x^l_ijφ          Ψ(a) = up(n(|a|))          s = Σ_l Ψ(a^l)

with ``n`` the per-image min-max normalisation and ``up`` bilinear upsampling to the
input (``align_corners=False``). All layers come from one forward and one backward pass.

Default layer sets: EfficientNet-Lite0 (``stem`` and every block ``blocks.0`` …
``blocks.15``: 17 layers), torchvision ResNets (stem ReLU ``relu`` and every residual
block: 17 for ResNet-50, as in the paper), torchvision VGG (every ReLU of ``features``:
13 for VGG-16). Any other model: ``layers=[names]``.

This module only registers (cheap to import); the explainer lives in
:mod:`xai_bridge_builtins.deepmaps.explainers` (also importable from here).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from xai_bridge import hookimpl
from xai_bridge.lazy import lazy_factory, lazy_getattr

__getattr__ = lazy_getattr(__name__, "xai_bridge_builtins.deepmaps.explainers")


def _factory(class_name: str) -> Callable[..., Any]:
    return lazy_factory("xai_bridge_builtins.deepmaps.explainers", class_name)


@hookimpl
def register_explainers(register: Callable[..., None]) -> None:
    register(
        "deepmaps",
        _factory("DeepMaps"),
        aliases=("deep-maps",),
        family="gradient",
        description="DeepMaps: gradient × activation summed over channels at every block, |·|, min-max, "
        "upsampled and summed over layers (Grabska-Barwińska et al.).",
    )

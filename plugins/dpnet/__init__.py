"""Built-in plugin: DP-Net, discriminative parts on a frozen backbone (Sicre et al., ICIP 2023, DP-Net).

Registration only, cheap to import (no torch here). The code lives in the sibling modules
:mod:`~xai_bridge_builtins.dpnet.model` (the network, its losses, save/load),
:mod:`~xai_bridge_builtins.dpnet.features` (frozen-backbone features and their on-disk cache),
:mod:`~xai_bridge_builtins.dpnet.data` (digits, ImageFolder, list files),
:mod:`~xai_bridge_builtins.dpnet.training`, :mod:`~xai_bridge_builtins.dpnet.explainers`,
:mod:`~xai_bridge_builtins.dpnet.figures` and :mod:`~xai_bridge_builtins.dpnet.cli`.

* explainers ``dpnet-cam`` (the class map ``Σ_p V_{c,p} S_p``) and ``dpnet-part`` (one part's map);
* ``resolve_target_layer``: on a :class:`~xai_bridge_builtins.dpnet.model.DPNet`, its feature layer
  inside ``backbone``, so Grad-CAM, Opti-CAM … read the layer the parts read;
* command ``xai-bridge dpnet train|explain``.

The Python API is reachable from here without importing the submodules by hand::

    import xai_bridge_builtins.dpnet as dpnet
    result = dpnet.train("efficientnet-lite0", "digits", image_size=128, epochs=20)   # doctest: +SKIP (trains)
    dpnet.explain_parts(result.model, images, target=None)                           # doctest: +SKIP
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from typing import Any

from xai_bridge import hookimpl

_MODEL = "xai_bridge_builtins.dpnet.model"

#: public name -> submodule holding it (PEP 562 lazy attributes: importing this package stays cheap).
#: There is deliberately no ``__dir__`` listing them: pluggy reads every name ``dir()`` gives when it
#: registers a plugin, which would import torch and the whole implementation at start-up.
_LAZY = {
    "DPNet": "model",
    "DPNetOutput": "model",
    "GlobalClassifier": "model",
    "save_dpnet": "model",
    "load_dpnet": "model",
    "backbone_from_name": "model",
    "orthogonality_loss": "model",
    "assignment_loss": "model",
    "class_specific_loss": "model",
    "train": "training",  # the module is not called train.py: importing it would shadow this function
    "TrainResult": "training",
    "evaluate": "training",
    "extract_features": "features",
    "FeatureSet": "features",
    "load_dataset": "data",
    "explain_parts": "explainers",
    "class_parts": "explainers",
    "PartExplanation": "explainers",
    "ClassParts": "explainers",
    "DPNetCAM": "explainers",
    "DPNetPart": "explainers",
    "image_figure": "figures",
    "class_figure": "figures",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'xai_bridge_builtins.dpnet' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def _dpnet_cam(model: Any, **options: Any) -> Any:
    from xai_bridge_builtins.dpnet.explainers import DPNetCAM

    return DPNetCAM(model, **options)


def _dpnet_part(model: Any, **options: Any) -> Any:
    from xai_bridge_builtins.dpnet.explainers import DPNetPart

    return DPNetPart(model, **options)


@hookimpl
def register_explainers(register: Callable[..., None]) -> None:
    register(
        "dpnet-cam",
        _dpnet_cam,
        aliases=("dp-net-cam",),
        family="cam",
        description="DP-Net class map Σ_p V_cp S_p: the parts' region scores weighted by their class weights "
        "(Sicre et al., ICIP 2023).",
    )
    register(
        "dpnet-part",
        _dpnet_part,
        aliases=("dp-net-part",),
        family="other",
        description="DP-Net part map S_p: one part's score at every region; default part = the largest contribution "
        "V_cp b_p (Sicre et al., ICIP 2023).",
    )


@hookimpl
def register_commands(subparsers: Any) -> None:
    from xai_bridge_builtins.dpnet.cli import add_dpnet_parser  # argparse only: cheap

    add_dpnet_parser(subparsers)


@hookimpl
def resolve_target_layer(model: Any) -> Any:
    module = sys.modules.get(_MODEL)  # not imported yet: the model cannot be a DPNet
    if module is None or not isinstance(model, module.DPNet):
        return None
    return model.target_layer

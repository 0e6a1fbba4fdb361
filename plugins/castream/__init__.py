"""Built-in plugin: CA-Stream (thesis ch. 3) — its raw attention, and CAM targets on CA models.

Registration only (cheap to import); the code lives in
:mod:`xai_bridge_builtins.castream.model` (the model),
:mod:`xai_bridge_builtins.castream.train` (training) and
:mod:`xai_bridge_builtins.castream.explainers` (explanations).

* explainer ``castream-attention``: the raw attention of the last stream block.
* ``resolve_target_layer``: on a ``CAModel`` the GAP model's target layer, inside
  ``backbone`` (``backbone.layer4.1`` for a ResNet, ``backbone.head`` for the default
  EfficientNet-Lite0), so every CAM method reads the same layer on GAP and CA models.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from xai_bridge import hookimpl

_MODULE = "xai_bridge_builtins.castream.model"


def _raw_attention(model: Any, **options: Any) -> Any:
    from xai_bridge_builtins.castream.explainers import make_raw_attention

    return make_raw_attention(model, **options)


@hookimpl
def register_explainers(register: Callable[..., None]) -> None:
    register(
        "castream-attention",
        _raw_attention,
        aliases=("ca-attention", "castream-raw-attention"),
        family="attention",
        description=(
            "CA-Stream raw attention of the last block: the weights that replace GAP (class agnostic; Torres et "
            "al. 2024)."
        ),
    )


@hookimpl
def register_commands(subparsers: Any) -> None:
    from xai_bridge_builtins.castream.cli import add_castream_parser  # argparse only: cheap

    add_castream_parser(subparsers)


@hookimpl
def resolve_target_layer(model: Any) -> Any:
    module = sys.modules.get(_MODULE)  # not imported yet: model cannot be a CAModel
    if module is None or not isinstance(model, module.CAModel):
        return None
    from xai_bridge_builtins.castream.explainers import ca_target_layer

    return ca_target_layer(model)

"""Built-in plugin: the interpretable-gradients training regulariser (Torres Figueroa, PhD thesis, 2024, ch. 4).

``L = CE + λ · E(∂L_C/∂x, ∂_G L_C/∂x)``: the standard input gradient is pulled towards the
guided-backpropagation input gradient (detached), with ``E`` cosine (default), MSE, MAE or
histogram intersection. It is a training method, so it brings no explainer: it brings the
``xai-bridge gradreg train`` command and the Python API in
:mod:`xai_bridge_builtins.gradreg.regularizer` (importable from here too)::

    >>> from xai_bridge_builtins.gradreg import GradientRegularizer, small_cnn
    >>> GradientRegularizer("cosine").lam
    0.0075

This module only registers (cheap to import: argparse, no torch).
"""

from __future__ import annotations

from typing import Any

from xai_bridge import hookimpl
from xai_bridge.lazy import lazy_getattr

__getattr__ = lazy_getattr(__name__, "xai_bridge_builtins.gradreg.regularizer")


@hookimpl
def register_commands(subparsers: Any) -> None:
    from xai_bridge_builtins.gradreg.cli import add_gradreg_parser

    add_gradreg_parser(subparsers)

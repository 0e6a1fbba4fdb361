"""Helpers shared by every ``xai-bridge`` sub-command, the host's and the plugins'.

* :func:`parse_options` turns ``KEY=VALUE`` words into keyword arguments;
* :func:`torch_device` checks a ``--device`` value before any work starts.

Both raise :class:`xai_bridge.errors.UsageError` naming the flag, which ``xai-bridge``
prints as one line (exit status 2).

>>> parse_options(["n_steps=20", "layer=blocks.15", "abs=True"])
{'n_steps': 20, 'layer': 'blocks.15', 'abs': True}
"""

from __future__ import annotations

import argparse
import ast
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from .errors import UsageError

if TYPE_CHECKING:  # pragma: no cover
    import torch


def parse_options(pairs: Sequence[str], flag: str = "--option") -> dict[str, Any]:
    """``["n_steps=20", "layer=blocks.15"]`` → ``{"n_steps": 20, "layer": "blocks.15"}``.

    Values are Python literals when they parse as one, plain strings otherwise
    (a layer name needs no quotes).

    >>> parse_options(["bad"], flag="--protocol-option")
    Traceback (most recent call last):
    ...
    xai_bridge.errors.UsageError: --protocol-option 'bad': expected KEY=VALUE, e.g. --protocol-option step=0.05
    """
    options: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.isidentifier():
            example = "step=0.05" if "protocol" in flag else "n_steps=20"
            raise UsageError(f"{flag} {pair!r}: expected KEY=VALUE, e.g. {flag} {example}")
        try:
            options[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            options[key] = value
    return options


def named_with_options(items: Sequence[str], flag: str) -> list[tuple[str, dict[str, Any]]]:
    """``["gradcam", "opticam:max_iter=20", "delta:metric=n_morf"]`` → names with their options.

    >>> named_with_options(["gradcam", "opticam:max_iter=20,objective='diff'"], "--explainers")
    [('gradcam', {}), ('opticam', {'max_iter': 20, 'objective': 'diff'})]
    """
    out = []
    for item in items:
        name, _, rest = item.partition(":")
        out.append((name, parse_options([p for p in rest.split(",") if p], flag=f"{flag} {name}:") if rest else {}))
    return out


def add_scoring_arguments(parser: argparse.ArgumentParser) -> None:
    """``--explainers/-e``, ``--metrics/-m`` (names with options) and ``--protocol/-p``, for every command that scores.

    >>> p = argparse.ArgumentParser(); add_scoring_arguments(p)
    >>> p.parse_args(["-e", "gradcam", "-m", "average_gain", "delta:metric=n_morf"]).metrics
    ['average_gain', 'delta:metric=n_morf']
    """
    parser.add_argument(
        "--explainers",
        "-e",
        nargs="+",
        required=True,
        metavar="NAME[:KEY=VALUE,...]",
        help="e.g. gradcam opticam:max_iter=30",
    )
    parser.add_argument(
        "--metrics",
        "-m",
        nargs="+",
        required=True,
        metavar="NAME[:KEY=VALUE,...]",
        help="e.g. average_gain delta:metric=n_morf",
    )
    parser.add_argument(
        "--protocol", "-p", default="default", help="preset: default, opticam, rise, tutorial, deepmaps, quantus"
    )


def torch_device(value: str | None, flag: str = "--device") -> torch.device:
    """The torch device ``value`` names, checked: an unknown name or a CUDA device on a machine without one
    is a :class:`~xai_bridge.errors.UsageError`. ``None`` means the CPU.

    >>> torch_device("cpu")
    device(type='cpu')
    >>> torch_device("tpu")
    Traceback (most recent call last):
    ...
    xai_bridge.errors.UsageError: --device 'tpu': not a torch device (e.g. cpu, cuda, cuda:1)
    """
    import torch

    try:
        device = torch.device(value or "cpu")
    except (RuntimeError, ValueError) as exc:
        raise UsageError(f"{flag} {value!r}: not a torch device (e.g. cpu, cuda, cuda:1)") from exc
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UsageError(
                f"{flag} {value!r}: CUDA is not available in this torch build or on this machine; use {flag} cpu"
            )
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UsageError(f"{flag} {value!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return device

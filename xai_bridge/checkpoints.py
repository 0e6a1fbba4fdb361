"""Saving and resuming training runs, for plugins that train (CA-Stream, DP-Net, …).

* :func:`atomic_save` never leaves half a file: an interrupted save keeps the previous one.
* :func:`load_checkpoint` loads with ``weights_only=True`` and checks the file's ``format`` tag.
* :func:`check_resume` refuses to resume a run whose configuration or recipe differs, naming
  what differs and the two ways out.

>>> import tempfile, pathlib
>>> path = atomic_save({"format": "demo/1", "epoch": 3}, pathlib.Path(tempfile.mkdtemp()) / "last.pt")
>>> load_checkpoint(path, format="demo/1", what="demo run")["epoch"]
3
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from .errors import InvalidArgumentError


def atomic_save(obj: Any, path: str | os.PathLike[str]) -> Path:
    """``torch.save`` to a temporary file in the same folder, then rename over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as handle:
        torch.save(obj, handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    return path


def load_checkpoint(
    path: str | os.PathLike[str], *, format: str, what: str, map_location: Any = "cpu"
) -> dict[str, Any]:
    """Load ``path`` with ``weights_only=True``; it must be a dict tagged ``{"format": format, ...}``.

    ``what`` names the kind of file in the errors (e.g. ``"CA-Stream checkpoint"``).
    """
    path = Path(path)
    if not path.is_file():
        raise InvalidArgumentError(f"path: no {what} at {str(path)!r}")
    state = torch.load(path, map_location=map_location, weights_only=True)
    if not isinstance(state, dict) or state.get("format") != format:
        raise InvalidArgumentError(f"path: {str(path)!r} is not a {what} (expected format {format!r})")
    return state


def check_resume(
    path: str | os.PathLike[str],
    *,
    what: str,
    config_diff: Sequence[str],
    saved_recipe: Mapping[str, Any],
    recipe: Mapping[str, Any],
    recipe_keys: Sequence[str],
) -> None:
    """Refuse to resume from ``path`` when the model's configuration or the training recipe changed.

    >>> check_resume("last.pt", what="DP-Net", config_diff=[], saved_recipe={"lr": 0.1}, recipe={"lr": 0.01},
    ...              recipe_keys=["lr"])  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    xai_bridge.errors.InvalidArgumentError: checkpoint_dir: 'last.pt' was trained with another recipe or data...
    """
    if config_diff:
        raise InvalidArgumentError(
            f"checkpoint_dir: {str(path)!r} holds a {what} of another configuration "
            f"(differs in {', '.join(config_diff)}); use another folder or resume=False"
        )
    changed = [k for k in recipe_keys if saved_recipe.get(k) != recipe.get(k)]
    if changed:
        saved = ", ".join(f"{k}={saved_recipe.get(k)!r}" for k in changed)
        raise InvalidArgumentError(
            f"checkpoint_dir: {str(path)!r} was trained with another recipe or data ({saved}); "
            "use the same options, another folder, or resume=False"
        )

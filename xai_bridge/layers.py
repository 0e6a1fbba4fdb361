"""Which layer a CAM-style explainer reads: explicit choice, plugin hook, close-match errors."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .errors import InvalidArgumentError, InvalidTypeError
from .registry import suggest

if TYPE_CHECKING:
    import torch
    from torch import nn


@dataclass(frozen=True)
class TargetLayer:
    """A module of the model, its dotted name, and how to turn its output into ``B×C×h×w``.

    ``reshape`` is ``None`` for convolutional layers; for transformers it maps the
    token sequence ``B×(1+N)×D`` to a grid (see :func:`vit_tokens_to_grid`).
    """

    module: nn.Module
    name: str
    reshape: Callable[[torch.Tensor], torch.Tensor] | None = None


def vit_tokens_to_grid(tokens: torch.Tensor, prefix_tokens: int = 1) -> torch.Tensor:
    """``B×(P+N)×D`` tokens → ``B×D×√N×√N``, dropping the ``P`` class/register tokens."""
    patches = tokens[:, prefix_tokens:, :]
    n = patches.shape[1]
    side = int(round(n**0.5))
    if side * side != n:
        raise InvalidArgumentError(f"cannot reshape {n} patch tokens into a square grid; pass layer=... with a reshape")
    return patches.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], side, side)


def _name_of(model: nn.Module, module: nn.Module) -> str | None:
    for name, m in model.named_modules():
        if m is module:
            return name
    return None


def find_layer(model: nn.Module, layer: Any = None, *, reshape: Callable | None = None) -> TargetLayer:
    """Resolve the target layer of ``model``.

    ``layer`` may be a module of the model, its dotted name (``"layer4.2"`` or
    ``"layer4[-1]"`` style indices) or a :class:`TargetLayer`; when it is ``None``
    the ``resolve_target_layer`` hook of the installed plugins decides.

    >>> import torchvision
    >>> find_layer(torchvision.models.resnet18()).name
    'layer4.1'
    """
    from torch import nn

    if isinstance(layer, TargetLayer):
        return layer
    if isinstance(layer, nn.Module):
        name = _name_of(model, layer)
        if name is None:
            raise InvalidArgumentError(
                "layer: the module given is not part of the model (pass a submodule of it, or its dotted name)"
            )
        return TargetLayer(layer, name, reshape)
    if isinstance(layer, str):
        return TargetLayer(get_submodule(model, layer), layer, reshape)
    if layer is not None:
        raise InvalidTypeError(
            f"layer: expected None, a module of the model or its dotted name, got {type(layer).__name__}"
        )

    from .manager import get_host

    found = get_host().resolve_target_layer(model)
    if found is None:
        raise InvalidArgumentError(
            f"layer: no plugin knows the target layer of a {type(model).__name__}. Pass layer=<module or "
            "dotted name> (usually the last convolutional block), or teach xai-bridge with a plugin "
            "implementing the resolve_target_layer hook."
        )
    if isinstance(found, TargetLayer):
        return found
    return find_layer(model, found, reshape=reshape)


def get_submodule(model: nn.Module, dotted: str) -> nn.Module:
    """``model.get_submodule`` that also accepts ``[i]`` indices and suggests close names."""
    path = dotted.replace("[", ".").replace("]", "")
    module = model
    walked: list[str] = []
    for part in [p for p in path.split(".") if p]:
        children = dict(module.named_children())
        if part.lstrip("-").isdigit() and part not in children:
            keys = list(children)
            index = int(part)
            if -len(keys) <= index < len(keys):
                part = keys[index]
        if part not in children:
            names = [n for n, _ in model.named_modules() if n]
            close = suggest(dotted, names, n=5)
            hint = f" Close matches: {', '.join(close)}." if close else ""
            where = ".".join(walked) or "the model"
            raise InvalidArgumentError(
                f"layer: {dotted!r} is not a module of the model ({part!r} not found under {where}).{hint}"
            )
        module = children[part]
        walked.append(part)
    return module

"""The deepmaps explainers (implementation; the plugin's ``__init__`` only registers them)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from xai_bridge.engine.maps import normalize_maps
from xai_bridge.errors import InvalidArgumentError
from xai_bridge.explainer import Explainer, MapOutput

NORMALIZE = ("layer", "none")


def default_layers(model: nn.Module) -> list[str]:
    """Dotted names of the DeepMaps layers of ``model``'s architecture.

    >>> import torchvision
    >>> len(default_layers(torchvision.models.resnet50()))
    17
    """

    cls, module = type(model).__name__, type(model).__module__
    if module == "xai_bridge.models" and cls == "EfficientNetLite0":
        return ["stem"] + [f"blocks.{i}" for i in range(len(model.blocks))]
    if module.startswith("torchvision.models"):
        from torchvision import models as tvm

        if isinstance(model, tvm.ResNet):
            return ["relu"] + [
                f"{stage}.{i}"
                for stage in ("layer1", "layer2", "layer3", "layer4")
                for i in range(len(getattr(model, stage)))
            ]
        if isinstance(model, tvm.VGG):
            return [f"features.{name}" for name, m in model.features.named_children() if isinstance(m, nn.ReLU)]
    raise InvalidArgumentError(
        f"layers: DeepMaps has no default layer set for a {cls}; pass layers=[dotted module names] "
        "(e.g. the output of the stem and of every block), as printed by `[n for n, _ in model.named_modules()]`"
    )


def _resolve(model: nn.Module, layers: Sequence[Any] | None) -> list[tuple[str, nn.Module]]:

    from xai_bridge.layers import get_submodule

    if layers is None:
        names: list[Any] = default_layers(model)
    elif isinstance(layers, (str, nn.Module)) or not isinstance(layers, Sequence) or len(layers) == 0:
        raise InvalidArgumentError(
            f"layers: expected a non-empty list of module names or modules of the model, got {layers!r}"
        )
    else:
        names = list(layers)
    resolved: list[tuple[str, nn.Module]] = []
    by_id = {id(m): n for n, m in model.named_modules()}
    for item in names:
        if isinstance(item, str):
            resolved.append((item, get_submodule(model, item)))
        elif isinstance(item, nn.Module):
            if id(item) not in by_id:
                raise InvalidArgumentError(
                    "layers: a module given is not part of the model (pass submodules of it, or their dotted names)"
                )
            resolved.append((by_id[id(item)], item))
        else:
            raise InvalidArgumentError(f"layers: expected module names or modules, got {type(item).__name__} {item!r}")
    seen = [id(m) for _, m in resolved]
    if len(set(seen)) != len(seen):
        raise InvalidArgumentError(f"layers: a module is listed twice in {[n for n, _ in resolved]}")
    return resolved


def layer_attributions(
    model: nn.Module, images: torch.Tensor, targets: torch.Tensor, layers: Sequence[tuple[str, nn.Module]]
) -> list[torch.Tensor]:
    """``a^l`` (``B×h_l×w_l``, signed) at each layer, from one forward and one backward pass.

    The forward hooks are removed before returning; only ``autograd.grad`` is used, so
    the model's ``.grad`` are untouched.
    """

    outputs: dict[int, list[torch.Tensor]] = {i: [] for i in range(len(layers))}
    handles = []
    try:
        for i, (_, module) in enumerate(layers):
            handles.append(module.register_forward_hook(lambda m, args, out, i=i: outputs[i].append(out)))
        with torch.enable_grad():
            logits = model(images.detach().requires_grad_(True))
    finally:
        for handle in handles:
            handle.remove()
    captured = []
    for i, (name, _) in enumerate(layers):
        if len(outputs[i]) != 1:
            raise InvalidArgumentError(
                f"layers: {name!r} ran {len(outputs[i])} times in one forward pass; DeepMaps needs modules that run "
                "exactly once (a module reused inside a block: pick the block instead)"
            )
        out = outputs[i][0]
        if not isinstance(out, torch.Tensor) or out.ndim != 4:
            raise InvalidArgumentError(
                f"layers: {name!r} must output a B×C×h×w tensor, got {getattr(out, 'shape', type(out).__name__)}"
            )
        captured.append(out)
    score = logits.gather(1, targets[:, None]).sum()
    grads = torch.autograd.grad(score, captured, allow_unused=True)
    attributions = []
    for (name, _), out, grad in zip(layers, captured, grads, strict=False):
        if grad is None:
            raise InvalidArgumentError(f"layers: the class score does not depend on {name!r}")
        attributions.append((out.detach() * grad).sum(dim=1))
    return attributions


def combine(attributions: Sequence[torch.Tensor], size: tuple[int, int], normalize: str = "layer") -> torch.Tensor:
    """``s = Σ_l up(n(|a^l|))`` (``normalize="layer"``) or ``Σ_l up(|a^l|)`` (``"none"``), ``B×H×W``.

    A constant ``|a^l|`` normalises to 0.
    """

    from xai_bridge.explainer import upsample

    total = None
    for a in attributions:
        a = a.abs()
        if normalize == "layer":
            a = normalize_maps(a, constant="zeros")
        part = upsample(a, size)
        total = part if total is None else total + part
    assert total is not None
    return total


class DeepMaps(Explainer):
    """DeepMaps: Σ over layers of the min-max normalised |gradient × activation| (summed over channels).

    Args:
        model: classifier in eval mode.
        layers: dotted names (or modules) of the layers to read; the architecture's default
            set when omitted (see :func:`default_layers`).
        normalize: ``"layer"`` min-max each layer's ``|a^l|`` before summing (the paper),
            or ``"none"`` to sum the raw magnitudes.

    ``info["layers"]`` lists the layers used.

    Example::

        >>> import xai_bridge as xb
        >>> model = xb.default_model(); images, _ = xb.sample_images(["chelsea"])
        >>> e = xb.get_explainer("deepmaps", model).explanation(images)
        >>> e.maps.shape, len(e.info["layers"])
        (torch.Size([1, 224, 224]), 17)
    """

    def __init__(
        self, model: Any, *, layers: Sequence[Any] | None = None, normalize: str = "layer", class_names: Any = None
    ) -> None:
        super().__init__(model, class_names=class_names)
        if normalize not in NORMALIZE:
            raise InvalidArgumentError(f"normalize: {normalize!r} is not known; expected one of {NORMALIZE}")
        self.layers = _resolve(model, layers)
        self.normalize = normalize

    def attribute(self, images: torch.Tensor, targets: torch.Tensor) -> MapOutput:
        attributions = layer_attributions(self.model, images, targets, self.layers)
        maps = combine(attributions, tuple(images.shape[-2:]), self.normalize)
        return MapOutput(maps, info={"layers": [name for name, _ in self.layers]})

    def __repr__(self) -> str:
        return f"<DeepMaps {self.name!r} layers={len(self.layers)}>"

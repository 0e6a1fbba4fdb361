"""Explanations of a DP-Net at image and class level (Sicre et al., ICIP 2023, DP-Net).

Image level, for class ``c`` of one image (``S`` the part scores, ``b`` the bag of parts):

* part ``p``'s **contribution** ``V_{c,p} b_p``; the contributions sum to the logit minus the
  bias, ``y_c − bias_c = Σ_p V_{c,p} b_p`` (exactly: the logit is that linear function);
* part ``p``'s **map** ``S_p`` (its score at every region, ``h×w``; upsampled for display);
* part ``p``'s **best box**: its most activating cell mapped back to pixels, the cell's footprint
  ``[x0, y0, x1, y1)`` on the image (``x1``, ``y1`` exclusive);
* the class map ``M_c = Σ_p V_{c,p} S_p``: explainer ``dpnet-cam``.

Class level: part ``p``'s participation in class ``c`` is ``V_{c,p}``; :func:`class_parts`
ranks the parts of a class by it.

The explainers are ordinary :class:`xai_bridge.Explainer` subclasses, so every metric, toolkit
adapter and the benchmark runner take them:

* :class:`DPNetCAM` (``dpnet-cam``): ``M_c``, signed (metrics min-max normalise it per image);
* :class:`DPNetPart` (``dpnet-part``): ``S_p`` of one part, ``part=`` an index, or by default the
  part with the largest contribution ``V_{c,p} b_p`` to the explained class of each image.

Example::

    >>> import torch, torchvision, xai_bridge as xb
    >>> from xai_bridge_builtins.dpnet.model import DPNet
    >>> net = DPNet(torchvision.models.resnet18().eval(), parts_per_class=2, num_classes=3).eval()
    >>> x = torch.rand(2, 3, 64, 64)
    >>> xb.get_explainer("dpnet-cam", net).explanation(x, target=1).raw.shape
    torch.Size([2, 2, 2])
    >>> ex = explain_parts(net, x, target=1)
    >>> torch.allclose(ex.contributions.sum(1), ex.logits[:, 1] - ex.bias, atol=1e-4)
    True
    >>> class_parts(net, 1).parts.shape
    torch.Size([6])
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from xai_bridge.errors import InvalidArgumentError
from xai_bridge.explainer import Explainer, MapOutput, upsample
from xai_bridge.targets import Target, check_images, check_model_ready, resolve_targets

from .model import DPNet


def require_dpnet(model: Any, what: str) -> DPNet:
    """``model`` if it is a :class:`DPNet`, else a ``ValueError`` saying how to get one."""
    if not isinstance(model, DPNet):
        raise InvalidArgumentError(
            f"model: {what} explains a DP-Net (xai_bridge_builtins.dpnet.DPNet), got a {type(model).__name__}. "
            "Train one with xai_bridge_builtins.dpnet.train(...) or `xai-bridge dpnet train`, "
            "or load one with load_dpnet(path)."
        )
    return model


def cell_boxes(best_region: torch.Tensor, grid: tuple[int, int], image_size: tuple[int, int]) -> torch.Tensor:
    """Pixel boxes ``[x0, y0, x1, y1)`` (long, ``…×4``) of flat cell indices on an ``h×w`` grid over an ``H×W`` image.

    >>> cell_boxes(torch.tensor([0, 5]), (2, 4), (64, 128)).tolist()     # cells (0, 0) and (1, 1)
    [[0, 0, 32, 32], [32, 32, 64, 64]]
    """
    h, w = grid
    big_h, big_w = image_size
    row, col = best_region // w, best_region % w
    x0 = torch.div(col * big_w, w, rounding_mode="floor")
    x1 = torch.div((col + 1) * big_w, w, rounding_mode="floor")
    y0 = torch.div(row * big_h, h, rounding_mode="floor")
    y1 = torch.div((row + 1) * big_h, h, rounding_mode="floor")
    return torch.stack([x0, y0, x1, y1], dim=-1).long()


@dataclass
class PartExplanation:
    """What :func:`explain_parts` returns for a batch (all on the images' device).

    Attributes:
        targets: ``(B,)`` the class explained per image.
        logits: ``B×C`` logits.
        bias: ``(B,)`` the classifier bias of each image's explained class.
        contributions: ``B×P``, ``V_{c,p} b_p``; ``contributions.sum(1) == logits[c] − bias``.
        bag: ``B×P``, ``b_p``.
        maps: ``B×P×h×w``, ``S_p`` at feature resolution (:meth:`upsampled` for pixels).
        boxes: ``B×P×4`` long, each part's best box ``[x0, y0, x1, y1)`` in pixels.
        owners: ``(P,)`` the class owning each part.
        image_size: ``(H, W)``.
        class_names: the model's class names (or ``None``).
    """

    targets: torch.Tensor
    logits: torch.Tensor
    bias: torch.Tensor
    contributions: torch.Tensor
    bag: torch.Tensor
    maps: torch.Tensor
    boxes: torch.Tensor
    owners: torch.Tensor
    image_size: tuple[int, int]
    class_names: list[str] | None = None

    def upsampled(self, parts: Sequence[int] | None = None) -> torch.Tensor:
        """``B×K×H×W``: the maps of ``parts`` (default all) resized bilinearly to the image."""
        maps = self.maps if parts is None else self.maps[:, list(parts)]
        b, k, h, w = maps.shape
        return upsample(maps.reshape(b * k, h, w), self.image_size).reshape(b, k, *self.image_size)

    def top_parts(self, index: int = 0, k: int = 3) -> list[dict[str, Any]]:
        """The ``k`` parts with the largest contribution to image ``index``'s explained class.

        Each: ``part``, ``owner`` (class index), ``owner_name``, ``contribution``, ``score`` (``b_p``), ``box``.
        """
        order = torch.argsort(self.contributions[index], descending=True)[:k]
        rows = []
        for p in order.tolist():
            owner = int(self.owners[p])
            rows.append(
                {
                    "part": p,
                    "owner": owner,
                    "owner_name": self.class_names[owner] if self.class_names else str(owner),
                    "contribution": float(self.contributions[index, p]),
                    "score": float(self.bag[index, p]),
                    "box": [int(v) for v in self.boxes[index, p]],
                }
            )
        return rows


def explain_parts(model: DPNet, images: torch.Tensor, target: Target = None) -> PartExplanation:
    """Per-image part contributions to ``target`` (default: the predicted class), each part's map and best box.

    ``images``: ``B×3×H×W`` in ``[0, 1]``; ``target`` as everywhere in xai-bridge (None, an index,
    a class name, or one per image).
    """
    net = require_dpnet(model, "explain_parts")
    check_model_ready(net)
    check_images(images)
    with torch.no_grad():
        out = net.run(images)
        targets = resolve_targets(
            target, images.shape[0], logits=out.logits, class_names=net.class_names, device=images.device
        )
        weights = net.classifier.weight[targets]  # B×P
        contributions = weights * out.bag
        bias = net.classifier.bias[targets]
    grid = (int(out.scores.shape[-2]), int(out.scores.shape[-1]))
    size = (int(images.shape[-2]), int(images.shape[-1]))
    return PartExplanation(
        targets=targets,
        logits=out.logits,
        bias=bias,
        contributions=contributions,
        bag=out.bag,
        maps=out.scores,
        boxes=cell_boxes(out.best_region, grid, size),
        owners=net.part_owner.clone(),
        image_size=size,
        class_names=list(net.class_names) if net.class_names else None,
    )


@dataclass
class ClassParts:
    """The parts of one class ranked by their participation ``V_{c,p}`` (largest first).

    Attributes:
        class_index, class_name: the class.
        parts: ``(P,)`` part indices, by decreasing ``V_{c,p}``.
        weights: ``(P,)`` ``V_{c,p}`` in that order.
        owners: ``(P,)`` the class owning each of those parts.
    """

    class_index: int
    class_name: str | None
    parts: torch.Tensor
    weights: torch.Tensor
    owners: torch.Tensor

    @property
    def own_share(self) -> float:
        """Fraction of ``Σ_p |V_{c,p}|`` on the class's own parts (1 for perfectly class-specific parts)."""
        total = float(self.weights.abs().sum())
        return float(self.weights[self.owners == self.class_index].abs().sum()) / total if total > 0 else 0.0

    def top(self, k: int = 5) -> list[tuple[int, float]]:
        """``[(part, V_{c,p}), …]`` for the ``k`` most participating parts."""
        return [(int(p), float(w)) for p, w in zip(self.parts[:k], self.weights[:k], strict=True)]


def class_parts(model: DPNet, c: int | str) -> ClassParts:
    """Rank the parts of class ``c`` (an index or a class name) by ``V_{c,p}``."""
    net = require_dpnet(model, "class_parts")
    index = int(resolve_targets(c, 1, num_classes=net.num_classes, class_names=net.class_names)[0])
    with torch.no_grad():
        row = net.classifier.weight[index].detach().cpu()
    order = torch.argsort(row, descending=True)
    name = net.class_names[index] if net.class_names else None
    return ClassParts(index, name, order, row[order], net.part_owner.cpu()[order])


class DPNetCAM(Explainer):
    """``dpnet-cam``: the class map ``M_c = Σ_p V_{c,p} S_p`` of a DP-Net (Sicre et al., ICIP 2023).

    The map lives on the feature grid (``Explanation.raw``, ``h×w``) and is upsampled bilinearly.
    It is signed: regions matching parts with negative weight for ``c`` pull it down. No
    gradient is needed; one forward pass explains a batch.

    >>> import torch, torchvision
    >>> net = DPNet(torchvision.models.resnet18().eval(), parts_per_class=1, num_classes=2).eval()
    >>> DPNetCAM(net).explain(torch.rand(1, 3, 64, 64)).shape
    torch.Size([1, 64, 64])
    """

    needs_grad = False

    def __init__(self, model: nn.Module, *, class_names: Sequence[str] | None = None) -> None:
        net = require_dpnet(model, "dpnet-cam")
        super().__init__(model, class_names=class_names if class_names is not None else net.class_names)

    def attribute(self, images: torch.Tensor, targets: torch.Tensor) -> MapOutput:
        net: DPNet = self.model  # type: ignore[assignment]
        out = net.run(images)
        weights = net.classifier.weight[targets]
        maps = torch.einsum("bp,bphw->bhw", weights, out.scores)
        return MapOutput(maps, raw=maps, info={"layer": net.target_layer.name})


class DPNetPart(Explainer):
    """``dpnet-part``: one part's map ``S_p`` (its score at every region), upsampled.

    Args:
        part: a part index ``0 … P−1``; ``None`` (default) picks, per image, the part with the
            largest contribution ``V_{c,p} b_p`` to the explained class ``c``.

    ``Explanation.info["part"]`` holds the part shown for each image and ``info["contribution"]``
    its contribution.

    >>> import torch, torchvision
    >>> net = DPNet(torchvision.models.resnet18().eval(), parts_per_class=2, num_classes=2).eval()
    >>> DPNetPart(net, part=3).explanation(torch.rand(1, 3, 64, 64)).info["part"].tolist()
    [3]
    """

    needs_grad = False

    def __init__(self, model: nn.Module, *, part: int | None = None, class_names: Sequence[str] | None = None) -> None:
        net = require_dpnet(model, "dpnet-part")
        super().__init__(model, class_names=class_names if class_names is not None else net.class_names)
        if part is not None and (isinstance(part, bool) or not isinstance(part, int) or not 0 <= part < net.num_parts):
            raise InvalidArgumentError(
                f"part: expected None (the largest contribution) or a part index 0..{net.num_parts - 1}, got {part!r}"
            )
        self.part = part

    def attribute(self, images: torch.Tensor, targets: torch.Tensor) -> MapOutput:
        net: DPNet = self.model  # type: ignore[assignment]
        out = net.run(images)
        contributions = net.classifier.weight[targets] * out.bag
        if self.part is None:
            chosen = contributions.argmax(dim=1)
        else:
            chosen = torch.full_like(targets, self.part)
        rows = torch.arange(images.shape[0], device=images.device)
        maps = out.scores[rows, chosen]
        info = {"part": chosen, "contribution": contributions[rows, chosen], "layer": net.target_layer.name}
        return MapOutput(maps, raw=maps, info=info)

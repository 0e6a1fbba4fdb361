"""Ablation-CAM on the executor (Desai & Ramaswamy, "Ablation-CAM: Visual Explanations for Deep
Convolutional Network via Gradient-free Localization", WACV 2020).

The weight of channel ``k`` is the relative drop of the class score when the channel is ablated::

    w_k = (y_c − y_c^{(k)}) / y_c          S = ReLU(Σ_k w_k A^k)

Ablating follows pytorch-grad-cam's ``AblationLayer``: the channel is set to 0 when the image's
activations have minimum 0 (after a ReLU), and to ``min − 1e7`` otherwise. Only the network after
the layer runs on the ablated activations (:func:`~xai_bridge_builtins.perturbation.split.tail_after`);
where the model cannot be split there, every ablation is a full forward pass with the layer's
output replaced (one :class:`~xai_bridge.errors.ForwardModeWarning` says so). The ablated
activations do not depend on the class: one pass per (image, channel) serves every class.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch

from xai_bridge.errors import ForwardModeWarning, InvalidArgumentError
from xai_bridge.explainer import LayerExplainer, MapOutput

from .common import (
    cam_maps,
    check_positive_int,
    layer_activations,
    one_per_image,
    scores_in_blocks,
    target_sets,
)
from .split import ReplacedLayer, tail_after

#: what pytorch-grad-cam's AblationLayer subtracts from the minimum when it is not 0
ABLATION_OFFSET = 1e7


def ablation_values(acts: torch.Tensor) -> torch.Tensor:
    """Per image: 0 when its activations' minimum is 0, else ``min − 1e7`` (pytorch-grad-cam's rule).

    >>> ablation_values(torch.tensor([[[[0.0, 2.0]]], [[[-1.0, 2.0]]]])).tolist()
    [0.0, -10000001.0]
    """
    low = acts.flatten(1).amin(1)
    return torch.where(low == 0, torch.zeros_like(low), low - ABLATION_OFFSET)


class AblationCAM(LayerExplainer):
    """Ablation-CAM on the executor; maps equal pytorch-grad-cam's ``AblationCAM`` at the same layer.

    Args:
        model: classifier in eval mode.
        layer: target layer (module or dotted name); resolved per architecture when omitted. Its
            output must be ``B×C×h×w``.
        batch_size, compile: for the executor of the network after the layer.

    Attributes:
        tail_executor: the :class:`~xai_bridge.engine.Executor` that runs the ablated activations
            through the rest of the network (its ``samples`` count the ablations).
        split: whether the model runs from the layer onward (``False``: full passes).

    Example::

        >>> import xai_bridge as xb
        >>> model = xb.default_model(); images, _ = xb.sample_images(["chelsea"])
        >>> cam = xb.get_explainer("ablationcam", model)
        >>> cam.explain(images, target="top2").shape, cam.split, cam.tail_executor.samples
        (torch.Size([1, 2, 224, 224]), True, 1280)
    """

    needs_grad = False
    multi_target = True

    def __init__(
        self,
        model: Any,
        *,
        layer: Any = None,
        batch_size: int | None = None,
        compile: str = "auto",
        class_names: Any = None,
    ) -> None:
        super().__init__(model, layer=layer, class_names=class_names)
        if self.target_layer.reshape is not None:
            raise InvalidArgumentError(
                f"layer: Ablation-CAM ablates channels of a B×C×h×w output; {self.target_layer.name!r} gives tokens "
                "(a reshape); pick a convolutional layer"
            )
        if batch_size is not None:
            check_positive_int("batch_size", batch_size)
        self.batch_size, self.compile = batch_size, compile
        self._tail: Any = None
        self._tail_executor: Any = None
        self.split: bool | None = None
        self.reason = ""

    def _prepare(self, acts: torch.Tensor, logits: torch.Tensor) -> None:
        from xai_bridge.engine import Executor

        if self._tail_executor is not None:
            return
        tail, reason = tail_after(self.model, self.layer)
        if tail is not None:
            with torch.no_grad():
                same = tail(acts)
            if not isinstance(same, torch.Tensor) or not torch.allclose(same, logits, rtol=1e-4, atol=1e-4):
                tail, reason = None, "the traced rest of the network does not reproduce the model's logits"
        self.split, self.reason = tail is not None, reason
        if tail is None:
            warnings.warn(
                f"ablationcam: cannot run {type(self.model).__name__} from layer {self.target_layer.name!r} onward "
                f"({reason}); every ablation is a full forward pass",
                ForwardModeWarning,
                stacklevel=4,
            )
            tail = ReplacedLayer(self.model, self.layer)
        self._tail = tail
        self._tail_executor = Executor(
            tail, batch_size=self.batch_size, compile=self.compile if self.split else "eager"
        )

    @property
    def tail_executor(self) -> Any:
        """The executor of the network after the layer (made at the first call)."""
        return self._tail_executor

    def ablated_scores(self, acts: torch.Tensor, sets: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
        """``B×C×k``: the class logits with each channel ablated in turn."""
        b, c = acts.shape[:2]
        value = ablation_values(acts)
        ex = self._tail_executor
        scores = torch.zeros(b, c, sets.shape[1], device=acts.device)
        per_image = not self.split  # the fallback replays one image at a time

        def run(first: int, count: int, image: int | None) -> None:
            def build(start: int, stop: int) -> torch.Tensor:
                pair = torch.arange(first + start, first + stop, device=acts.device)
                img, ch = pair // c, pair % c
                out = acts[img].clone()
                out[torch.arange(len(pair), device=acts.device), ch] = value[img][:, None, None]
                return out

            def reduce(start: int, stop: int, logits: torch.Tensor) -> None:
                pair = torch.arange(first + start, first + stop, device=acts.device)
                img, ch = pair // c, pair % c
                scores[img, ch] = logits.float().gather(1, sets[img])

            scores_in_blocks(ex, count, build, reduce)

        ex.plan(b * c)
        with ex.progress_bar(b * c, desc="ablationcam"):
            if per_image:
                for i in range(b):
                    self._tail.image = images[i : i + 1]
                    run(i * c, c, i)
            else:
                run(0, b * c, None)
        return scores

    def attribute(self, images: torch.Tensor, targets: torch.Tensor) -> MapOutput:
        sets, squeeze = target_sets(targets)
        acts, logits = layer_activations(self.model, images, self.target_layer)
        if acts.ndim != 4:
            raise InvalidArgumentError(
                f"layer: {self.target_layer.name!r} gives activations of shape {tuple(acts.shape)}; expected B×C×h×w"
            )
        self._prepare(acts, logits)
        original = logits.float().gather(1, sets)[:, None, :]  # B×1×k
        weights = (original - self.ablated_scores(acts, sets, images)) / original
        maps, raw = cam_maps(weights, acts, tuple(images.shape[-2:]))
        info = {"layer": self.target_layer.name, "split": bool(self.split)}
        return MapOutput(one_per_image(maps, squeeze), raw=one_per_image(raw, squeeze), info=info)

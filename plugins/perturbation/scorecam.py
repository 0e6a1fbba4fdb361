"""Score-CAM on the executor (Wang et al., "Score-CAM: Score-Weighted Visual Explanations for CNNs", CVPRW 2020).

For every channel ``k`` of the layer, the activation map ``A^k`` is upsampled to the image
(bilinear, ``align_corners=True``, as pytorch-grad-cam's ``ScoreCAM``), min-max normalised
(``(U − min)/(max − min + 1e-8)``) into a mask ``M_k``, and the image masked by it is scored
(the class logit). The weights are the softmax of those scores over channels::

    s_k = y_c(x ⊙ M_k)        w = softmax_k(s)        S = ReLU(Σ_k w_k A^k)

The masked inputs are built on the device a block at a time and do not depend on the class:
one pass per (image, channel) serves every class. A channel whose map is constant gives the
all-zero mask, hence the black image: it is scored once for the whole batch.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from xai_bridge.errors import InvalidArgumentError
from xai_bridge.explainer import LayerExplainer, MapOutput

from .common import ExecutorOwner, cam_maps, layer_activations, one_per_image, scores_in_blocks, target_sets


def layer_maps(explainer: LayerExplainer, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(A, logits)``: the layer's activations ``B×C×h×w`` (after the layer's ``reshape``) and the logits."""
    raw, logits = layer_activations(explainer.model, images, explainer.target_layer)
    acts = explainer.target_layer.reshape(raw) if explainer.target_layer.reshape is not None else raw
    if acts.ndim != 4:
        raise InvalidArgumentError(
            f"layer: {explainer.target_layer.name!r} gives activations of shape {tuple(acts.shape)}; expected B×C×h×w"
        )
    return acts, logits


class ScoreCAM(ExecutorOwner, LayerExplainer):
    """Score-CAM on the executor; maps equal pytorch-grad-cam's ``ScoreCAM`` at the same layer.

    Args:
        model: classifier in eval mode taking images in pixel space.
        layer: target layer (module or dotted name); resolved per architecture when omitted.
        executor: the :class:`~xai_bridge.engine.Executor` to run on (default: one of its own).
        batch_size, compile: for the explainer's own executor.

    ``explain`` returns pytorch-grad-cam's map (normalised, ``[0, 1]``); ``raw`` is
    ``ReLU(Σ_k w_k A^k)`` at the layer's resolution; ``info["constant_channels"]`` counts the
    (image, channel) pairs whose mask is all zero (scored by one pass of the black image).

    Example::

        >>> import xai_bridge as xb
        >>> model = xb.default_model(); images, _ = xb.sample_images(["chelsea"])
        >>> cam = xb.get_explainer("scorecam", model, layer="blocks.15")
        >>> e = cam.explanation(images, target="top3")
        >>> e.maps.shape, e.raw.shape, cam.executor.samples <= 320 + 1
        (torch.Size([1, 3, 224, 224]), torch.Size([1, 3, 7, 7]), True)
    """

    needs_grad = False
    multi_target = True

    def __init__(
        self,
        model: Any,
        *,
        layer: Any = None,
        executor: Any = None,
        batch_size: int | None = None,
        compile: str = "auto",
        class_names: Any = None,
    ) -> None:
        super().__init__(model, layer=layer, class_names=class_names)
        self._init_executor(executor, batch_size, compile)

    def channel_scores(self, images: torch.Tensor, acts: torch.Tensor, sets: torch.Tensor) -> torch.Tensor:
        """``B×C×k``: the logit of each class on the image masked by each channel's normalised map."""
        b, c = acts.shape[:2]
        size = tuple(images.shape[-2:])
        device = images.device
        span = acts.flatten(2)
        constant = span.amax(-1) == span.amin(-1)  # these masks are all zero: the black image
        pairs = (~constant).flatten().nonzero().squeeze(1)  # (image, channel) pairs with a real mask
        ex = self.executor
        n = int(pairs.numel())
        self.constant_channels = int(constant.sum())
        ex.plan(n + int(bool(constant.any())))
        scores = torch.zeros(b * c, sets.shape[1], device=device)
        targets_of_pair = sets.repeat_interleave(c, 0)  # (B·C)×k

        def build(start: int, stop: int) -> torch.Tensor:
            index = pairs[start:stop]
            up = F.interpolate(acts.flatten(0, 1)[index, None], size=size, mode="bilinear", align_corners=True)
            flat = up.flatten(1)
            low, high = flat.amin(1)[:, None, None, None], flat.amax(1)[:, None, None, None]
            return images[index // c] * ((up - low) / (high - low + 1e-8))

        def reduce(start: int, stop: int, logits: torch.Tensor) -> None:
            index = pairs[start:stop]
            scores[index] = logits.float().gather(1, targets_of_pair[index])

        with ex.progress_bar(n, desc="scorecam"):
            scores_in_blocks(ex, n, build, reduce)
        if bool(constant.any()):
            black = ex.logits(1, lambda s, e: torch.zeros_like(images[:1])).float()[0]
            where = constant.flatten().nonzero().squeeze(1)
            scores[where] = black[targets_of_pair[where]]
        return scores.reshape(b, c, -1)

    def attribute(self, images: torch.Tensor, targets: torch.Tensor) -> MapOutput:
        sets, squeeze = target_sets(targets)
        acts, _ = layer_maps(self, images)
        scores = self.channel_scores(images, acts, sets)
        maps, raw = cam_maps(scores.softmax(1), acts, tuple(images.shape[-2:]))
        info = {"layer": self.target_layer.name, "constant_channels": self.constant_channels}
        return MapOutput(one_per_image(maps, squeeze), raw=one_per_image(raw, squeeze), info=info)

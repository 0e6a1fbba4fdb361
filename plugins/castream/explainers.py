"""Explanations with CA-Stream: its raw attention, and any CAM method run on GAP vs CA.

* :class:`RawAttention` (registered as ``castream-attention``): the attention
  ``a_L = softmax(F_L q_L / √d_L)`` of the last stream block — the weights CA-Stream
  pools ``F_L`` with — reshaped to the stage's ``h×w`` grid. Class agnostic (one
  token); a class-specific model uses the token of the explained class.
* :func:`gap_vs_ca`: the same registered explainer on the GAP model (the backbone)
  and on the CA model, same target layer, same classes — the thesis' comparison
  (Table 3.1) in one call. Gradients reach the layer through the attention pooling.

Example::

    >>> import torch, torchvision, xai_bridge as xb
    >>> from xai_bridge_builtins.castream.model import CAModel
    >>> ca = CAModel(torchvision.models.resnet18(num_classes=10).eval()).eval()
    >>> x = torch.rand(2, 3, 64, 64)
    >>> xb.get_explainer("castream-attention", ca).explanation(x).raw.shape   # layer4 grid at 64²
    torch.Size([2, 2, 2])
    >>> pair = gap_vs_ca("gradcam", ca, x)
    >>> pair["gap"].maps.shape, pair["ca"].maps.shape
    (torch.Size([2, 64, 64]), torch.Size([2, 64, 64]))
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from xai_bridge.errors import InvalidArgumentError, InvalidTypeError
from xai_bridge.explainer import Explainer, Explanation, MapOutput
from xai_bridge.targets import Target, resolve_targets
from xai_bridge_builtins.castream.model import STAGE_LABELS, CAModel


def require_ca_model(model: Any, what: str) -> CAModel:
    """``model`` if it is a :class:`CAModel`, else a ``ValueError`` saying how to make one."""
    if not isinstance(model, CAModel):
        raise InvalidArgumentError(
            f"model: {what} needs a CA-Stream model (xai_bridge_builtins.castream.model.CAModel), got a "
            f"{type(model).__name__}. Wrap the GAP model with CAModel(backbone) and train its stream "
            "(xai-bridge castream train, or castream_train.train_stream)."
        )
    return model


class RawAttention(Explainer):
    """Raw cross attention of a CA-Stream block: the pooling weights over ``F_ℓ``.

    Args:
        model: a :class:`CAModel` in eval mode.
        stage: which stream block, ``-1`` (default, the last: what replaces GAP) or a
            stage index / label ``"S0"``…``"S4"`` the stream reads.

    The map of each image sums to 1 over the ``h×w`` positions (a softmax); it does not
    depend on the explained class unless the model is class specific.

    >>> import torch, torchvision
    >>> ca = CAModel(torchvision.models.resnet18(num_classes=3).eval()).eval()
    >>> round(RawAttention(ca).explanation(torch.rand(1, 3, 64, 64)).raw.sum().item(), 5)  # a distribution
    1.0
    """

    needs_grad = False

    def __init__(self, model: nn.Module, *, stage: int | str = -1, class_names: Sequence[str] | None = None) -> None:
        super().__init__(model, class_names=class_names)
        ca = require_ca_model(model, "castream-attention")
        first, n = ca.start_stage, len(ca.stage_widths)
        if isinstance(stage, str):
            label = stage.strip().upper()
            if label not in STAGE_LABELS[first:n]:
                raise InvalidArgumentError(f"stage: the stream reads stages {STAGE_LABELS[first:n]}, got {stage!r}")
            self.block = STAGE_LABELS.index(label) - first
        elif isinstance(stage, int) and not isinstance(stage, bool):
            if stage == -1:
                self.block = n - 1 - first
            elif first <= stage < n:
                self.block = stage - first
            else:
                raise InvalidArgumentError(
                    f"stage: expected -1 (last) or a stage the stream reads ({first}..{n - 1}), got {stage}"
                )
        else:
            raise InvalidTypeError(f"stage: expected an int or a label such as 'S4', got {type(stage).__name__}")

    def attribute(self, images: torch.Tensor, targets: torch.Tensor) -> MapOutput:
        ca: CAModel = self.model  # type: ignore[assignment]
        out = ca.run(images, query_class=targets if ca.class_specific else None)
        attention = out.attention[self.block][:, 0]  # one token per image here
        label = STAGE_LABELS[ca.start_stage + self.block]
        return MapOutput(attention, raw=attention, info={"stage": label, "layer": f"backbone.{ca.taps[self.block]}"})


def make_raw_attention(model: Any, **options: Any) -> RawAttention:
    """Factory registered as ``castream-attention``."""
    return RawAttention(model, **options)


def gap_vs_ca(
    explainer: str,
    model: CAModel,
    images: torch.Tensor,
    target: Target = None,
    *,
    layer: Any = None,
    **options: Any,
) -> dict[str, Explanation]:
    """Explain ``images`` with the registered ``explainer`` on the GAP model and on the CA model.

    Args:
        explainer: a registered explainer name (``"gradcam"``, ``"gradcam++"``, ``"scorecam"``…).
        model: the :class:`CAModel`; its ``backbone`` is the GAP model.
        target: the class(es) explained, the same on both models; ``None`` means the
            class the *GAP* model predicts, so both maps answer the same question.
        layer: the GAP model's target layer (module or dotted name inside the backbone);
            ``None`` resolves it per architecture. The CA model reads the same module.
        options: explainer options, passed to both.

    Returns:
        ``{"gap": Explanation, "ca": Explanation}``.
    """
    import xai_bridge as xb
    from xai_bridge.layers import find_layer

    ca = require_ca_model(model, "gap_vs_ca")
    gap_model = ca.backbone
    if layer is None:  # the GAP model's layer as the plugins resolve it (the last tap when none knows it)
        inner = ca_target_layer(ca)
        gap_layer = find_layer(gap_model, inner.name[len("backbone.") :], reshape=inner.reshape)
    else:
        gap_layer = find_layer(gap_model, layer)
    if target is None:
        with torch.no_grad():
            target = ca.classify(ca.stage_features(images)[-1].mean((2, 3))).argmax(-1)
    targets = resolve_targets(target, images.shape[0], num_classes=ca.num_classes, device=images.device)
    gap = xb.get_explainer(explainer, gap_model, layer=gap_layer.name, **options).explanation(images, targets)
    on_ca = xb.get_explainer(explainer, ca, layer=f"backbone.{gap_layer.name}", **options).explanation(images, targets)
    return {"gap": gap, "ca": on_ca}


def ca_target_layer(model: Any) -> Any:
    """The ``resolve_target_layer`` answer for a :class:`CAModel`: the GAP model's layer, inside ``backbone``.

    The GAP model's layer comes from the installed plugins; when none knows the
    backbone, the last tapped stage is used.
    """
    from xai_bridge.layers import TargetLayer, find_layer

    try:
        inner = find_layer(model.backbone)
    except ValueError:
        inner = find_layer(model.backbone, model.adapter.taps[-1])
    return TargetLayer(inner.module, f"backbone.{inner.name}", inner.reshape)

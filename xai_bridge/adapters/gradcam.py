"""Any xai-bridge explainer as a pytorch-grad-cam :class:`~pytorch_grad_cam.base_cam.BaseCAM`.

``as_cam(name, model, **options)`` returns an :class:`XaiBridgeCAM`, called like every
grad-cam CAM::

    grayscale_cams = cam(input_tensor=images, targets=[ClassifierOutputTarget(281)])

and returning what grad-cam returns: a float32 numpy array ``B×H×W`` in [0, 1] (per-image
min-max of the explainer's map; a constant map gives zeros), ready for
``show_cam_on_image`` and grad-cam's metrics (``ROADMostRelevantFirst``,
``CamMultImageConfidenceChange``, …). ``aug_smooth=True`` works as in grad-cam (the
explainer runs on each test-time augmentation).

Targets: grad-cam's classifier targets (``ClassifierOutputTarget``,
``ClassifierOutputSoftmaxTarget``, ``ClassifierOutputReST`` — anything with an integer
``category``) select the class; ``targets=None`` explains the predicted class. Other
grad-cam targets (segmentation, similarity) are scalar functions of the output that an
explainer of one class cannot honour: they are refused with a clear error.

Example::

    >>> import torch, torchvision
    >>> from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
    >>> from xai_bridge.adapters.gradcam import as_cam
    >>> model = torchvision.models.resnet18(num_classes=10).eval()
    >>> cam = as_cam("fakecam", model)
    >>> cam(input_tensor=torch.rand(2, 3, 32, 32), targets=[ClassifierOutputTarget(3)] * 2).shape
    (2, 32, 32)
"""

from __future__ import annotations

import numbers
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from pytorch_grad_cam.base_cam import BaseCAM
from torch import nn

from ..engine.maps import normalize_maps
from ..errors import InvalidArgumentError, InvalidTypeError
from ..explainer import Explainer
from . import resolve_explainer

__all__ = ["XaiBridgeCAM", "as_cam", "target_categories"]


def target_categories(targets: list[Callable] | None, batch: int) -> list[int] | None:
    """The class of each grad-cam target (its integer ``category``); ``None`` stays ``None``."""
    if targets is None:
        return None
    if not isinstance(targets, (list, tuple)):
        raise InvalidTypeError(
            f"targets: expected a list of grad-cam targets (one per image), got {type(targets).__name__}"
        )
    if len(targets) != batch:
        raise InvalidArgumentError(
            f"targets: {len(targets)} targets for {batch} images; give one per image, e.g. "
            f"[ClassifierOutputTarget(k)] * {batch}"
        )
    out = []
    for i, t in enumerate(targets):
        category = getattr(t, "category", None)
        if isinstance(category, numbers.Integral) and not isinstance(category, bool):
            out.append(int(category))
            continue
        if isinstance(category, (np.ndarray, torch.Tensor)) and np.ndim(category) == 0:
            out.append(int(category))
            continue
        raise InvalidTypeError(
            f"targets[{i}]: {type(t).__name__} has no integer class ('category'); xai-bridge explainers explain one "
            "class of a classifier — use ClassifierOutputTarget(k), or targets=None for the predicted class"
        )
    return out


class XaiBridgeCAM(BaseCAM):
    """A pytorch-grad-cam CAM backed by an xai-bridge :class:`~xai_bridge.Explainer`.

    ``target_layers`` and ``reshape_transform`` report the explainer's layer (empty for
    methods without one); the CAM registers no hooks of its own, so the model is left as
    it was between calls. ``outputs`` holds the logits of the last call, like grad-cam's.
    """

    def __init__(self, explainer: Explainer) -> None:
        if not hasattr(explainer, "explanation"):
            raise InvalidTypeError(
                f"explainer: expected an explainer from xai_bridge.get_explainer(), got {type(explainer).__name__}"
            )
        target = getattr(explainer, "target_layer", None)
        layers = [] if target is None else [target.module]
        reshape = None if target is None else target.reshape
        # No layers for grad-cam's own hooks: the explainer records what it needs.
        super().__init__(
            model=explainer.model,
            target_layers=[],
            reshape_transform=reshape,
            uses_gradients=bool(getattr(explainer, "needs_grad", True)),
        )
        self.target_layers = layers
        self.explainer = explainer

    def forward(
        self, input_tensor: torch.Tensor, targets: list[Callable] | None, eigen_smooth: bool = False
    ) -> np.ndarray:
        if eigen_smooth:
            raise InvalidArgumentError(
                "eigen_smooth: the principal-component smoothing applies to grad-cam's own activation maps; "
                "xai-bridge explainers return finished maps. Call with eigen_smooth=False"
            )
        if not isinstance(input_tensor, torch.Tensor) or input_tensor.ndim != 4:
            raise InvalidArgumentError(
                "input_tensor: expected images B×C×H×W, "
                f"got {getattr(input_tensor, 'shape', type(input_tensor).__name__)}"
            )
        images = input_tensor.detach().to(self.device)
        explanation = self.explainer.explanation(images, target=target_categories(targets, images.shape[0]))
        self.outputs = explanation.logits
        cams = normalize_maps(explanation.maps, "zeros")
        return cams.cpu().numpy().astype(np.float32)

    def __repr__(self) -> str:
        return f"<XaiBridgeCAM {getattr(self.explainer, 'name', type(self.explainer).__name__)!r}>"


def as_cam(name: str | Explainer, model: nn.Module | None = None, **options: Any) -> XaiBridgeCAM:
    """Any registered explainer as a pytorch-grad-cam CAM.

    Args:
        name: a registered explainer name (``"opticam"``, ``"deepmaps"``, …; see
            :func:`xai_bridge.list_explainers`) or an explainer object.
        model: the classifier (``nn.Module`` in eval mode); not needed with an explainer object.
        **options: the explainer's options; ``layer=`` takes a module or its dotted name,
            like grad-cam's ``target_layers=[...]`` (one layer).

    Example::

        >>> import torch, torchvision
        >>> from pytorch_grad_cam.utils.image import show_cam_on_image
        >>> model = torchvision.models.resnet18(num_classes=10).eval()
        >>> image = torch.rand(1, 3, 64, 64)
        >>> with as_cam("gradcam", model, layer=model.layer4) as cam:
        ...     grayscale = cam(input_tensor=image, targets=None)[0]
        >>> show_cam_on_image(image[0].permute(1, 2, 0).numpy(), grayscale, use_rgb=True).shape
        (64, 64, 3)
    """
    return XaiBridgeCAM(resolve_explainer(name, model, options))

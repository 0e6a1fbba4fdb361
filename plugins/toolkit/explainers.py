"""Wrappers that run pytorch-grad-cam and Captum methods behind the :class:`~xai_bridge.Explainer` contract.

The wrappers add nothing to the maths: a map from here equals the toolkit's
own output for the same model, layer and class (``tests/test_toolkit_explainers.py``).
They add batching limits, target resolution, the feature-resolution map, and
cleanliness: hooks are released and parameter gradients restored after each call.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from xai_bridge.errors import InvalidArgumentError
from xai_bridge.explainer import Explainer, LayerExplainer, MapOutput

#: How a Captum attribution ``B×C×H×W`` becomes a map ``B×H×W``.
CHANNEL_REDUCTIONS = ("sum_of_abs", "abs_of_sum", "sum", "max_abs")


def reduce_channels(attribution: torch.Tensor, how: str) -> torch.Tensor:
    """Collapse the channel axis of a ``B×C×H×W`` attribution.

    ``sum_of_abs`` (default) Σ_c |a_c|; ``abs_of_sum`` |Σ_c a_c| (Captum's
    ``visualize_image_attr(sign="absolute_value")``); ``sum`` Σ_c a_c (signed);
    ``max_abs`` max_c |a_c| (Simonyan et al.).
    """
    if how == "sum_of_abs":
        return attribution.abs().sum(1)
    if how == "abs_of_sum":
        return attribution.sum(1).abs()
    if how == "sum":
        return attribution.sum(1)
    if how == "max_abs":
        return attribution.abs().amax(1)
    raise InvalidArgumentError(f"reduce: {how!r} is not a channel reduction; expected one of {CHANNEL_REDUCTIONS}")


def _chunks(n: int, size: int | None) -> list[slice]:
    size = n if not size or size <= 0 else size
    return [slice(i, min(n, i + size)) for i in range(0, n, size)]


class GradCamExplainer(LayerExplainer):
    """Any ``pytorch_grad_cam`` CAM class as an explainer.

    Args:
        model: classifier in eval mode.
        cam_class: the class name in ``pytorch_grad_cam`` (``"GradCAM"``, ``"ScoreCAM"``, ...).
        layer: target layer (module or dotted name); resolved per architecture when omitted.
        images_per_call: split the batch into calls of at most this many images
            (Score-CAM builds ``B×K`` masked images at once; default 2 for it).
        aug_smooth, eigen_smooth: grad-cam's call options.
        **cam_options: passed to the CAM constructor (e.g. ``batch_size`` for AblationCAM).

    Example::

        >>> import xai_bridge as xb
        >>> model = xb.default_model(); images, _ = xb.sample_images(["chelsea"])
        >>> xb.get_explainer("gradcam", model).explain(images, target="tabby cat").shape
        torch.Size([1, 224, 224])
    """

    def __init__(
        self,
        model: nn.Module,
        cam_class: str,
        *,
        layer: Any = None,
        class_names: Sequence[str] | None = None,
        images_per_call: int | None = None,
        aug_smooth: bool = False,
        eigen_smooth: bool = False,
        **cam_options: Any,
    ) -> None:
        import pytorch_grad_cam

        self.cam_class = getattr(pytorch_grad_cam, cam_class)
        self.uses_layer = cam_class != "FullGrad"
        if self.uses_layer:
            super().__init__(model, layer=layer, class_names=class_names)
        else:
            Explainer.__init__(self, model, class_names=class_names)
            self.target_layer = None  # type: ignore[assignment]
        self.images_per_call = (
            images_per_call if images_per_call is not None else (2 if cam_class == "ScoreCAM" else None)
        )
        self.aug_smooth = aug_smooth
        self.eigen_smooth = eigen_smooth
        self.cam_options = cam_options
        self._check_cam_options(cam_class)

    def _check_cam_options(self, cam_class: str) -> None:
        """An option neither this wrapper nor the toolkit's constructor takes fails now, not at the first call."""
        import inspect

        from xai_bridge.errors import UnknownOptionError
        from xai_bridge.registry import accepted_options, did_you_mean

        toolkit = [
            p
            for p in inspect.signature(self.cam_class.__init__).parameters
            if p not in ("self", "model", "target_layers", "reshape_transform")
        ]
        for option in self.cam_options:
            if option not in toolkit:
                accepted = [*accepted_options(self)[1:], *toolkit]  # [1:]: cam_class is fixed by the name
                raise UnknownOptionError(
                    f"explainer for pytorch_grad_cam.{cam_class}: unknown option {option!r}."
                    f"{did_you_mean(option, accepted)} It accepts: {', '.join(accepted)}."
                )

    def make_cam(self) -> Any:
        """A fresh toolkit CAM object on this model (release its hooks when done)."""
        layers = [self.target_layer.module] if self.uses_layer else []
        reshape = self.target_layer.reshape if self.uses_layer else None
        return self.cam_class(model=self.model, target_layers=layers, reshape_transform=reshape, **self.cam_options)

    def attribute(self, images: torch.Tensor, targets: torch.Tensor) -> MapOutput:
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

        cam = self.make_cam()
        raw_parts: list[np.ndarray] = []
        toolkit_cam_image = cam.get_cam_image

        def capture_raw(*args: Any, **kwargs: Any) -> np.ndarray:
            # The layer-resolution map, before grad-cam's ReLU, min-max and resize.
            out = toolkit_cam_image(*args, **kwargs)
            raw_parts.append(np.maximum(out, 0))
            return out

        cam.get_cam_image = capture_raw  # instance attribute: the class is untouched
        maps = []
        try:
            for part in _chunks(images.shape[0], self.images_per_call):
                chunk_targets = [ClassifierOutputTarget(int(t)) for t in targets[part]]
                maps.append(
                    cam(
                        input_tensor=images[part],
                        targets=chunk_targets,
                        aug_smooth=self.aug_smooth,
                        eigen_smooth=self.eigen_smooth,
                    )
                )
        finally:
            cam.activations_and_grads.release()
        full = torch.from_numpy(np.concatenate(maps)).to(images.device)
        raw = None
        if raw_parts and sum(len(r) for r in raw_parts) == images.shape[0]:
            raw = torch.from_numpy(np.concatenate(raw_parts)).to(images.device)
        return MapOutput(full, raw=raw)


class CaptumExplainer(Explainer):
    """Base of the Captum wrappers: build the attribution, call it, reduce channels.

    Args:
        reduce: channel reduction (see :func:`reduce_channels`).
        **attribute_options: passed to Captum's ``attribute`` (``n_steps``, ``baselines``, ...).
    """

    captum_class: str = ""
    default_options: dict[str, Any] = {}

    def __init__(
        self,
        model: nn.Module,
        *,
        reduce: str = "sum_of_abs",
        class_names: Sequence[str] | None = None,
        **attribute_options: Any,
    ) -> None:
        super().__init__(model, class_names=class_names)
        if reduce not in CHANNEL_REDUCTIONS:
            raise InvalidArgumentError(
                f"reduce: {reduce!r} is not a channel reduction; expected one of {CHANNEL_REDUCTIONS}"
            )
        self.reduce = reduce
        self.attribute_options = {**self.default_options, **attribute_options}

    def make(self) -> Any:
        import captum.attr

        return getattr(captum.attr, self.captum_class)(self.model)

    def captum_attribute(self, images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """The toolkit's own attribution ``B×C×H×W``, exactly as Captum returns it."""
        if self.needs_grad:  # Captum warns when it has to switch requires_grad on itself
            images = images.detach().requires_grad_(True)
        return self.make().attribute(images, target=targets, **self.attribute_options)

    def attribute(self, images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return reduce_channels(self.captum_attribute(images, targets), self.reduce)


class SaliencyExplainer(CaptumExplainer):
    captum_class = "Saliency"


class InputXGradientExplainer(CaptumExplainer):
    captum_class = "InputXGradient"


class IntegratedGradientsExplainer(CaptumExplainer):
    """Black baseline (Captum's default zeros, black in pixel space); 32 images per internal batch."""

    captum_class = "IntegratedGradients"
    default_options = {"n_steps": 50, "internal_batch_size": 32}


class GuidedBackpropExplainer(CaptumExplainer):
    captum_class = "GuidedBackprop"


class DeepLiftExplainer(CaptumExplainer):
    """Captum DeepLift (rescale rule), black baseline. Every non-linearity module must be used once."""

    captum_class = "DeepLift"

    def captum_attribute(self, images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        try:
            return super().captum_attribute(images, targets)
        except RuntimeError as exc:
            if "used more than once" not in str(exc):
                raise
            raise InvalidArgumentError(
                "model: DeepLift needs every activation module (ReLU, ...) to be used once in the forward pass, "
                "but this model applies one module more than once (torchvision's ResNet blocks reuse their ReLU). "
                "Use integrated-gradients or input-x-gradient, or give each use its own module."
            ) from exc


class SmoothGradExplainer(CaptumExplainer):
    """``NoiseTunnel(Saliency)`` with ``nt_type="smoothgrad"``; noise σ in pixel units of [0,1]."""

    captum_class = "NoiseTunnel"
    default_options = {"nt_type": "smoothgrad", "nt_samples": 16, "stdevs": 0.15, "nt_samples_batch_size": 8}

    def make(self) -> Any:
        import captum.attr

        return captum.attr.NoiseTunnel(captum.attr.Saliency(self.model))


class OcclusionExplainer(CaptumExplainer):
    """A 16×16 black window sliding by 8 pixels over all channels."""

    captum_class = "Occlusion"
    needs_grad = False
    default_options = {
        "sliding_window_shapes": (3, 16, 16),
        "strides": (3, 8, 8),
        "baselines": 0.0,
        "perturbations_per_eval": 64,
    }


class LayerGradCamExplainer(LayerExplainer):
    """Captum's ``LayerGradCam`` on the resolved layer; ReLU applied as in Grad-CAM (``relu_attributions=True``)."""

    def __init__(
        self,
        model: nn.Module,
        *,
        layer: Any = None,
        class_names: Sequence[str] | None = None,
        relu_attributions: bool = True,
    ) -> None:
        super().__init__(model, layer=layer, class_names=class_names)
        self.relu_attributions = relu_attributions

    def make(self) -> Any:
        import captum.attr

        return captum.attr.LayerGradCam(self.model, self.target_layer.module)

    def captum_attribute(self, images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return self.make().attribute(images, target=targets, relu_attributions=self.relu_attributions)

    def attribute(self, images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return self.captum_attribute(images, targets)[:, 0]


CAPTUM_EXPLAINERS: dict[str, type[Explainer]] = {
    "Saliency": SaliencyExplainer,
    "InputXGradient": InputXGradientExplainer,
    "IntegratedGradients": IntegratedGradientsExplainer,
    "GuidedBackprop": GuidedBackpropExplainer,
    "DeepLift": DeepLiftExplainer,
    "LayerGradCam": LayerGradCamExplainer,
    "NoiseTunnel": SmoothGradExplainer,
    "Occlusion": OcclusionExplainer,
}

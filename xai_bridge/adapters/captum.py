"""Any xai-bridge explainer as a Captum :class:`~captum.attr.Attribution`.

``as_attribution(name, model, **options)`` returns an :class:`XaiBridgeAttribution`:
a real Captum attribution whose ``attribute(inputs, target=..., additional_forward_args=...)``
works wherever Captum takes one — inside :class:`~captum.attr.NoiseTunnel`, with
:func:`captum.metrics.sensitivity_max` and :func:`captum.metrics.infidelity` (which
call it under ``no_grad``; gradient methods switch gradients back on themselves), and
with :mod:`captum.attr.visualization`.

Attributions follow Captum's contract, *the shape of the inputs*: the explainer's
``B×H×W`` map is copied into every channel (``B×C×H×W``). Create the adapter with
``as_attribution(..., keepdim=True)`` (an option of the adapter, not of ``attribute``) for
``B×1×H×W``, the shape ``LayerAttribution.interpolate`` gives Captum's own
``LayerGradCam``. Values are the explainer's maps at input resolution, not rescaled.

Example::

    >>> import torch, torchvision
    >>> from captum.attr import NoiseTunnel
    >>> from xai_bridge.adapters.captum import as_attribution
    >>> model = torchvision.models.resnet18(num_classes=10).eval()
    >>> cam = as_attribution("gradcam", model)
    >>> cam.attribute(torch.rand(2, 3, 64, 64), target=3).shape
    torch.Size([2, 3, 64, 64])
    >>> NoiseTunnel(cam).attribute(torch.rand(2, 3, 64, 64), nt_type="smoothgrad", nt_samples=4, target=3).shape
    torch.Size([2, 3, 64, 64])
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from captum.attr import Attribution
from captum.log import log_usage
from torch import nn

from ..errors import InvalidArgumentError, InvalidTypeError
from ..explainer import Explainer
from . import resolve_explainer

__all__ = ["XaiBridgeAttribution", "as_attribution"]


class _BoundForward(nn.Module):
    """``model(x, *extra)`` seen as ``f(x)``: how explainers meet ``additional_forward_args``.

    The model stays a submodule, so layers the explainer hooks are the same modules.
    """

    def __init__(self, model: nn.Module, extra: tuple[Any, ...]) -> None:
        super().__init__()
        self.model = model
        self.extra = extra
        self.training = model.training  # mirror, without switching the user's model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x, *self.extra)


def _captum_target(target: Any) -> Any:
    """Captum's ``target`` → xai-bridge's (None, int, or one class per image)."""
    if target is None or isinstance(target, (int, str)) and not isinstance(target, bool):
        return target
    if isinstance(target, torch.Tensor):
        if target.is_floating_point():
            raise InvalidTypeError("target: class indices must be integers, got a floating-point tensor")
        return target.reshape(-1)[0].item() if target.numel() == 1 else target.reshape(-1)
    if isinstance(target, tuple):
        raise InvalidTypeError(
            f"target: {target!r} indexes a multi-dimensional output; xai-bridge explainers explain "
            "one class of a B×K classifier — pass an int, or one class per image"
        )
    if isinstance(target, Sequence):
        if any(isinstance(t, tuple) for t in target):
            raise InvalidTypeError("target: tuples index multi-dimensional outputs; pass one class index per image")
        return list(target)
    raise InvalidTypeError(f"target: expected None, an int or one class per image, got {type(target).__name__}")


class XaiBridgeAttribution(Attribution):
    """A Captum attribution backed by an xai-bridge :class:`~xai_bridge.Explainer`.

    Args:
        explainer: the configured explainer (from :func:`xai_bridge.get_explainer`).
        keepdim: return ``B×1×H×W`` instead of the inputs' shape.

    ``target=None`` explains each input's predicted class (xai-bridge's convention),
    so under ``NoiseTunnel`` every noisy copy explains its own prediction; pass the
    class to keep it fixed.
    """

    def __init__(self, explainer: Explainer, *, keepdim: bool = False) -> None:
        if not hasattr(explainer, "explanation"):
            raise InvalidTypeError(
                f"explainer: expected an explainer from xai_bridge.get_explainer(), got {type(explainer).__name__}"
            )
        super().__init__(explainer.model)
        self.explainer = explainer
        self.keepdim = bool(keepdim)

    @property
    def multiplies_by_inputs(self) -> bool:
        return False

    def has_convergence_delta(self) -> bool:
        return False

    @log_usage()
    def attribute(
        self,
        inputs: torch.Tensor | tuple[torch.Tensor],
        target: Any = None,
        additional_forward_args: Any = None,
    ) -> torch.Tensor | tuple[torch.Tensor]:
        """Attributions for ``inputs`` (``B×C×H×W``, or a 1-tuple of it, as Captum passes).

        Args:
            inputs: the images, or a tuple holding them.
            target: an int, one class per image (list or tensor), or ``None`` for the prediction.
            additional_forward_args: extra arguments of ``model(inputs, *args)``, passed
                unchanged to every forward pass of the explainer.

        Returns:
            A tensor shaped like ``inputs`` (``B×1×H×W`` when the adapter was made with
            ``as_attribution(..., keepdim=True)``), on their
            device and dtype; a 1-tuple when ``inputs`` was one.
        """
        is_tuple = isinstance(inputs, tuple)
        if is_tuple:
            if len(inputs) != 1:
                raise InvalidArgumentError(
                    f"inputs: xai-bridge explainers take one image tensor, got a tuple of {len(inputs)}; "
                    "pass the images alone (other model inputs go in additional_forward_args)"
                )
            images = inputs[0]
        else:
            images = inputs  # type: ignore[assignment]  # a tensor: the tuple case is the branch above
        if not isinstance(images, torch.Tensor) or images.ndim != 4:
            raise InvalidArgumentError(
                f"inputs: expected images B×C×H×W, got {getattr(images, 'shape', type(images).__name__)}"
            )
        explain_target = _captum_target(target)
        extra = additional_forward_args
        if extra is not None and not isinstance(extra, tuple):
            extra = (extra,)
        model = self.explainer.model
        if extra:
            self.explainer.model = _BoundForward(model, extra)
        try:
            maps = self.explainer.explain(images.detach(), target=explain_target)
        finally:
            self.explainer.model = model
        maps = maps[:, None].to(dtype=images.dtype)
        out = maps if self.keepdim else maps.repeat(1, images.shape[1], 1, 1)
        return (out,) if is_tuple else out

    def __repr__(self) -> str:
        return f"<XaiBridgeAttribution {getattr(self.explainer, 'name', type(self.explainer).__name__)!r}>"


def as_attribution(
    name: str | Explainer, model: nn.Module | None = None, *, keepdim: bool = False, **options: Any
) -> XaiBridgeAttribution:
    """Any registered explainer as a Captum attribution.

    Args:
        name: a registered explainer name (``"opticam"``, ``"gradcam"``, …; see
            :func:`xai_bridge.list_explainers`) or an explainer object.
        model: the classifier (``nn.Module`` in eval mode); not needed with an explainer object.
        keepdim: return ``B×1×H×W`` instead of the inputs' shape ``B×C×H×W``.
        **options: the explainer's options (``layer=``, ``max_iter=``, …).

    Example::

        >>> import torch, torchvision
        >>> from captum.metrics import sensitivity_max
        >>> model = torchvision.models.resnet18(num_classes=10).eval()
        >>> attr = as_attribution("fakecam", model)
        >>> float(sensitivity_max(attr.attribute, torch.rand(1, 3, 32, 32), target=0, n_perturb_samples=2))
        0.0
    """
    return XaiBridgeAttribution(resolve_explainer(name, model, options), keepdim=keepdim)

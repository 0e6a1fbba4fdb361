"""Extremal Perturbation through TorchRay (Fong, Patrick & Vedaldi, "Understanding Deep Networks via
Extremal Perturbations and Smooth Masks", ICCV 2019).

The method optimises a smooth mask of a fixed area (a fraction of the image) so that the image,
blurred (or faded) outside the mask, keeps the class score as high as possible. The optimisation
is TorchRay's own ``torchray.attribution.extremal_perturbation.extremal_perturbation`` (the
authors' reference implementation), an optional extra: ``pip install 'xai-bridge[torchray]'``.

TorchRay runs its own gradient loop, one image at a time, calling the model directly: its
forward and backward passes do not go through an :class:`~xai_bridge.engine.Executor` and are
not counted by one, and nothing is batched across images.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from xai_bridge.errors import InvalidArgumentError, InvalidTypeError, PluginError
from xai_bridge.explainer import Explainer

from .common import check_positive_int

#: the message when the optional extra is missing
MISSING = "extremal-perturbation needs TorchRay: pip install 'xai-bridge[torchray]' (or pip install torchray)"

PERTURBATIONS = ("blur", "fade")
VARIANTS = ("preserve", "delete", "dual")
REWARDS = ("contrastive", "simple")


def load_torchray() -> Any:
    """TorchRay's ``extremal_perturbation`` module, or :class:`~xai_bridge.errors.PluginError` naming the extra."""
    try:
        from torchray.attribution import extremal_perturbation as module
    except ImportError as exc:
        raise PluginError(MISSING) from exc
    return module


class ExtremalPerturbation(Explainer):
    """Extremal Perturbation: TorchRay's optimised smooth mask of a given area, per image.

    Each image is handed to TorchRay's ``extremal_perturbation(model, x, target, areas=...)``; the
    map is its ``K×1×H×W`` mask summed over the ``K`` areas (the single mask for one area). The
    model's ``requires_grad`` flags, which TorchRay switches off, are restored afterwards.

    Args:
        model: classifier in eval mode.
        areas: fractions of the image the masks keep (default ``(0.12,)``, TorchRay's example;
            its function's own default is ``[0.1]``).
        max_iter: optimisation steps per image (default 800, TorchRay's default).
        reward_func: ``"contrastive"`` (default, as TorchRay's example: the class score minus the
            best other class's), ``"simple"`` (the class score; TorchRay's function default), or a
            callable ``(logits, target, variant) -> reward`` as TorchRay takes.
        perturbation: what happens outside the mask: ``"blur"`` (default) or ``"fade"`` (to black).
        variant: ``"preserve"`` (default: keep the score), ``"delete"`` or ``"dual"``.
        smooth: Gaussian smoothing of the final mask, as a fraction of its side (default 0).
        step, sigma: the mask's control-point spacing and smoothing in pixels (TorchRay's 7 and 21).

    Raises:
        PluginError: TorchRay is not installed (the message names the extra).

    Example::

        >>> from importlib.util import find_spec
        >>> import torch, xai_bridge as xb
        >>> model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
        ...                             torch.nn.Linear(4, 3)).eval()
        >>> images = torch.rand(1, 3, 32, 32)
        >>> if find_spec("torchray") is not None:  # the optional extra is installed
        ...     maps = xb.get_explainer("extremal", model, max_iter=3).explain(images, target=1)
        ...     assert maps.shape == (1, 32, 32) and 0 <= maps.min() <= maps.max() <= 1
    """

    needs_grad = True

    def __init__(
        self,
        model: Any,
        *,
        areas: Sequence[float] | float = (0.12,),
        max_iter: int = 800,
        reward_func: str | Callable[..., torch.Tensor] = "contrastive",
        perturbation: str = "blur",
        variant: str = "preserve",
        smooth: float = 0.0,
        step: int = 7,
        sigma: float = 21.0,
        class_names: Any = None,
    ) -> None:
        super().__init__(model, class_names=class_names)
        self._torchray = load_torchray()
        values = (areas,) if isinstance(areas, (int, float)) and not isinstance(areas, bool) else tuple(areas)
        if not values or not all(isinstance(a, (int, float)) and not isinstance(a, bool) and 0 < a < 1 for a in values):
            raise InvalidArgumentError(f"areas: expected fractions in (0, 1), got {areas!r}")
        check_positive_int("max_iter", max_iter)
        check_positive_int("step", step)
        if isinstance(reward_func, str):
            if reward_func not in REWARDS:
                raise InvalidArgumentError(f"reward_func: {reward_func!r} is unknown; expected one of {REWARDS}")
        elif not callable(reward_func):
            raise InvalidTypeError(f"reward_func: expected one of {REWARDS} or a callable, got {reward_func!r}")
        if perturbation not in PERTURBATIONS:
            raise InvalidArgumentError(f"perturbation: {perturbation!r} is unknown; expected one of {PERTURBATIONS}")
        if variant not in VARIANTS:
            raise InvalidArgumentError(f"variant: {variant!r} is unknown; expected one of {VARIANTS}")
        for name, value in (("smooth", smooth), ("sigma", sigma)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise InvalidArgumentError(f"{name}: expected a non-negative number, got {value!r}")
        if sigma == 0:
            raise InvalidArgumentError("sigma: expected a positive number, got 0")
        self.areas = [float(a) for a in values]
        self.max_iter, self.reward_func, self.perturbation = max_iter, reward_func, perturbation
        self.variant, self.smooth, self.step, self.sigma = variant, float(smooth), step, float(sigma)

    def masks(self, image: torch.Tensor, target: int) -> torch.Tensor:
        """TorchRay's ``K×1×H×W`` masks (one per area) for one ``1×C×H×W`` image and class."""
        ep = self._torchray
        reward = self.reward_func
        if isinstance(reward, str):
            reward = ep.contrastive_reward if reward == "contrastive" else ep.simple_reward
        flags = [(p, p.requires_grad) for p in self.model.parameters()]
        try:
            masks, _ = ep.extremal_perturbation(
                self.model,
                image,
                target,
                areas=list(self.areas),
                perturbation=self.perturbation,
                max_iter=self.max_iter,
                step=self.step,
                sigma=self.sigma,
                variant=self.variant,
                reward_func=reward,
                smooth=self.smooth,
            )
        finally:
            for p, flag in flags:  # TorchRay switches them off and leaves them so
                p.requires_grad_(flag)
        return masks.detach()

    def attribute(self, images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        maps = [self.masks(images[i : i + 1], int(targets[i])).sum(dim=(0, 1)) for i in range(images.shape[0])]
        return torch.stack(maps)

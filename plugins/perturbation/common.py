"""What the perturbation explainers share: an executor, several classes per call, block-wise scoring.

The masked inputs of RISE, Score-CAM, Ablation-CAM and Occlusion do not depend on the class
explained, so each explainer takes ``B×k`` targets (:attr:`~xai_bridge.Explainer.multi_target`)
and reads every class's score from the same forward passes. Inputs are built on the device a
block at a time and reduced at once (:func:`scores_in_blocks`): memory does not grow with the
number of masks or channels.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from xai_bridge.errors import InvalidArgumentError, InvalidTypeError

#: inputs sent forward per block before their scores are reduced (bounds the logits kept at once)
BLOCK = 1024


def target_sets(targets: torch.Tensor) -> tuple[torch.Tensor, bool]:
    """``(B×k targets, was_one_per_image)``: the explainers compute with ``B×k`` whatever they got.

    >>> target_sets(torch.tensor([3, 4]))[0].tolist(), target_sets(torch.tensor([[3, 4]]))[1]
    ([[3], [4]], False)
    """
    if targets.ndim == 1:
        return targets[:, None], True
    return targets, False


def one_per_image(maps: torch.Tensor, squeeze: bool) -> torch.Tensor:
    """``B×k×…`` maps back to ``B×…`` when the caller gave one class per image."""
    return maps[:, 0] if squeeze else maps


def gradcam_normalise(maps: torch.Tensor) -> torch.Tensor:
    """pytorch-grad-cam's ``scale_cam_image`` without the resize: ``(S − min) / (1e-7 + max(S − min))`` per map.

    >>> gradcam_normalise(torch.tensor([[[1.0, 3.0]]])).tolist()
    [[[0.0, 1.0]]]
    """
    flat = maps.flatten(-2)
    shifted = flat - flat.amin(-1, keepdim=True)
    return (shifted / (1e-7 + shifted.amax(-1, keepdim=True))).reshape(maps.shape)


def cam_maps(
    weights: torch.Tensor, activations: torch.Tensor, size: tuple[int, int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(maps, raw)`` of a CAM from channel weights ``B×C×k`` and activations ``B×C×h×w``.

    ``raw = ReLU(Σ_c w_c A^c)`` (``B×k×h×w``), and ``maps`` what pytorch-grad-cam's ``BaseCAM``
    returns for one layer: ``raw`` normalised, resized bilinearly (half-pixel centres, like
    ``cv2.resize``) to ``size`` and normalised again (``B×k×H×W``).
    """
    raw = torch.einsum("bck,bchw->bkhw", weights.to(activations.dtype), activations).clamp_min(0)
    b, k, h, w = raw.shape
    first = gradcam_normalise(raw).reshape(b * k, 1, h, w)
    if (h, w) != tuple(size):
        first = nn.functional.interpolate(first, size=size, mode="bilinear", align_corners=False)
    return gradcam_normalise(first.reshape(b, k, *size)), raw


def check_positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidTypeError(f"{name}: expected a positive int, got {value!r}")
    if value < 1:
        raise InvalidArgumentError(f"{name}: expected a positive int, got {value}")
    return value


def scores_in_blocks(
    executor: Any,
    n: int,
    build: Callable[[int, int], torch.Tensor],
    reduce: Callable[[int, int, torch.Tensor], None],
    block: int = BLOCK,
) -> None:
    """Send ``n`` inputs forward ``block`` at a time; ``reduce(start, stop, logits)`` consumes each block's logits.

    ``build(start, stop)`` makes inputs ``start … stop-1`` on the device (the executor chunks them
    further). At most ``block`` logits rows are alive at once.

    >>> from xai_bridge.engine import Executor
    >>> ex = Executor(torch.nn.Linear(2, 3).eval())
    >>> seen = []
    >>> scores_in_blocks(ex, 5, lambda s, e: torch.ones(e - s, 2), lambda s, e, y: seen.append((s, e, y.shape[0])), 2)
    >>> seen, ex.samples
    ([(0, 2, 2), (2, 4, 2), (4, 5, 1)], 5)
    """
    for start in range(0, n, block):
        stop = min(n, start + block)

        def part(s: int, e: int, offset: int = start) -> torch.Tensor:
            return build(offset + s, offset + e)

        reduce(start, stop, executor.logits(stop - start, part))


class ExecutorOwner:
    """Mixin: the executor an explainer runs its forward passes on, made lazily for its model.

    ``executor`` given: that one (it must run this explainer's model); otherwise one is created
    on first use with ``batch_size`` and ``compile`` and reused across calls.
    """

    model: nn.Module

    def _init_executor(self, executor: Any, batch_size: int | None, compile: str) -> None:
        from xai_bridge.engine.executor import check_executor

        self._executor = check_executor(self.model, executor)
        if batch_size is not None:
            check_positive_int("batch_size", batch_size)
        self.batch_size = batch_size
        self.compile = compile

    @property
    def executor(self) -> Any:
        """The :class:`~xai_bridge.engine.Executor` every forward pass of this explainer goes through."""
        if self._executor is None:
            from xai_bridge.engine import Executor

            self._executor = Executor(self.model, batch_size=self.batch_size, compile=self.compile)
        return self._executor


def layer_activations(model: nn.Module, images: torch.Tensor, target_layer: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """``(raw output of the layer, logits)`` of one no-grad pass (the hook is removed whatever happens)."""
    captured: list[Any] = []
    handle = target_layer.module.register_forward_hook(lambda _m, _i, out: captured.append(out))
    try:
        with torch.no_grad():
            logits = model(images)
    finally:
        handle.remove()
    if len(captured) != 1 or not isinstance(captured[0], torch.Tensor):
        raise InvalidArgumentError(
            f"layer: {target_layer.name!r} ran {len(captured)} times in one forward pass (or did not return a "
            "tensor); pick a module that runs exactly once"
        )
    return captured[0].detach(), logits.detach()

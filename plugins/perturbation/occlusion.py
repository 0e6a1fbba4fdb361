"""Occlusion on the executor (Zeiler & Fergus, "Visualizing and Understanding Convolutional Networks", ECCV 2014).

A window (channels included) slides over the image with the given strides and is replaced by the
baseline; every element's attribution is the drop of the class score, averaged over the windows
that cover it. Windows are placed as Captum's ``Occlusion`` places them: ``⌈(D − w)/s⌉ + 1``
positions per dimension, starting at multiples of the stride, the last ones truncated at the
border. The windows are shared by every image of the batch and every class: ``B`` images and
``W`` windows cost ``B·W`` forward passes (plus ``B`` for the unoccluded scores).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Any

import torch

from xai_bridge.errors import InvalidArgumentError, InvalidTypeError
from xai_bridge.explainer import Explainer

from .common import BLOCK, ExecutorOwner, one_per_image, scores_in_blocks, target_sets

#: How an attribution ``B×C×H×W`` becomes a map (the Captum wrappers' reductions).
REDUCTIONS = ("sum_of_abs", "abs_of_sum", "sum", "max_abs")


def window_starts(shape: Sequence[int], window: Sequence[int], strides: Sequence[int]) -> torch.Tensor:
    """``W×3`` start of every window over a ``C×H×W`` input, first dimension fastest (Captum's order).

    >>> window_starts((1, 6, 4), (1, 3, 3), (1, 2, 2)).tolist()  # rows 0, 2, 4 (the last cut to 2); columns 0, 2
    [[0, 0, 0], [0, 2, 0], [0, 4, 0], [0, 0, 2], [0, 2, 2], [0, 4, 2]]
    """
    counts = [math.ceil((d - w) / s) + 1 for d, w, s in zip(shape, window, strides, strict=True)]
    grid = itertools.product(*(range(n) for n in reversed(counts)))
    return torch.tensor([[j * s for j, s in zip(reversed(idx), strides, strict=True)] for idx in grid])


class Occlusion(ExecutorOwner, Explainer):
    """Occlusion on the executor; the attribution equals Captum's ``Occlusion`` for the same settings.

    Args:
        model: classifier in eval mode.
        sliding_window_shapes: window ``(C, h, w)`` (default ``(3, 16, 16)``: all channels).
        strides: ``(C, h, w)`` steps of the window (default ``(3, 8, 8)``).
        baselines: what fills the window: a number or a tensor broadcastable to the images (default 0).
        reduce: how the ``C×H×W`` attribution becomes a map: ``"sum_of_abs"`` (default, as the
            Captum wrapper), ``"abs_of_sum"``, ``"sum"``, ``"max_abs"``.
        executor: the :class:`~xai_bridge.engine.Executor` to run on (default: one of its own).
        batch_size, compile: for the explainer's own executor.

    Example::

        >>> import xai_bridge as xb
        >>> model = xb.default_model(); images, _ = xb.sample_images(["chelsea"])
        >>> occ = xb.get_explainer("occlusion", model, sliding_window_shapes=(3, 56, 56), strides=(3, 56, 56))
        >>> occ.explain(images, target="top5").shape, occ.executor.samples
        (torch.Size([1, 5, 224, 224]), 17)
    """

    needs_grad = False
    multi_target = True

    def __init__(
        self,
        model: Any,
        *,
        sliding_window_shapes: Sequence[int] = (3, 16, 16),
        strides: Sequence[int] | int = (3, 8, 8),
        baselines: float | torch.Tensor = 0.0,
        reduce: str = "sum_of_abs",
        executor: Any = None,
        batch_size: int | None = None,
        compile: str = "auto",
        class_names: Any = None,
    ) -> None:
        super().__init__(model, class_names=class_names)
        self._init_executor(executor, batch_size, compile)
        window = tuple(sliding_window_shapes)
        steps = (strides,) * len(window) if isinstance(strides, int) else tuple(strides)
        for name, value in (("sliding_window_shapes", window), ("strides", steps)):
            if len(value) != 3 or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value):
                raise InvalidArgumentError(f"{name}: expected three positive ints (C, h, w), got {value!r}")
        if not isinstance(baselines, (int, float, torch.Tensor)) or isinstance(baselines, bool):
            raise InvalidTypeError(f"baselines: expected a number or a tensor, got {type(baselines).__name__}")
        if reduce not in REDUCTIONS:
            raise InvalidArgumentError(f"reduce: {reduce!r} is not a channel reduction; expected one of {REDUCTIONS}")
        self.window, self.strides, self.baselines, self.reduce = window, steps, baselines, reduce

    def occlusion(self, images: torch.Tensor, sets: torch.Tensor) -> torch.Tensor:
        """``B×k×C×H×W`` attributions for ``B×k`` classes (Captum's ``Occlusion.attribute`` per class)."""
        b, k = sets.shape
        shape = tuple(images.shape[1:])
        if any(w > d for w, d in zip(self.window, shape, strict=True)):
            raise InvalidArgumentError(
                f"sliding_window_shapes: {self.window} is larger than the images' {shape} in some dimension"
            )
        device = images.device
        starts = window_starts(shape, self.window, self.strides).to(device)
        n_windows = starts.shape[0]
        base = self.baselines
        baseline = base.to(device=device, dtype=images.dtype) if isinstance(base, torch.Tensor) else float(base)
        axes = [torch.arange(d, device=device) for d in shape]
        window = torch.tensor(self.window, device=device)

        def masks(first: int, last: int) -> torch.Tensor:
            s = starts[first:last]
            inside = [(a >= s[:, i, None]) & (a < s[:, i, None] + window[i]) for i, a in enumerate(axes)]
            return (inside[0][:, :, None, None] & inside[1][:, None, :, None] & inside[2][:, None, None, :]).float()

        ex = self.executor
        ex.plan(b * (n_windows + 1))
        initial = ex.logits(b, lambda s, e: images[s:e]).float().gather(1, sets)  # B×k
        total = torch.zeros(b, k, *shape, device=device)
        counts = torch.zeros(shape, device=device)
        per_block = max(1, BLOCK // b)
        with ex.progress_bar(b * n_windows, desc="occlusion"):
            for first in range(0, n_windows, per_block):
                last = min(n_windows, first + per_block)
                m = masks(first, last)  # M×C×H×W, shared by the B images

                def build(start: int, stop: int, m: torch.Tensor = m) -> torch.Tensor:
                    i = torch.arange(start, stop, device=device)  # window-major: input i = window i // B, image i % B
                    mask = m[i // b]
                    if isinstance(baseline, torch.Tensor):
                        fill = baseline.expand(b, *shape)[i % b] if baseline.ndim == 4 else baseline.expand(shape)
                    else:
                        fill = torch.full((), baseline, device=device)
                    return images[i % b] * (1 - mask) + fill * mask

                def reduce(start: int, stop: int, logits: torch.Tensor, m: torch.Tensor = m) -> None:
                    scores = logits.float().reshape(m.shape[0], b, -1).gather(2, sets[None].expand(m.shape[0], b, k))
                    drop = initial[None] - scores  # M×B×k
                    total.add_(torch.einsum("mbk,mchw->bkchw", drop, m))

                scores_in_blocks(ex, b * m.shape[0], build, reduce, block=b * m.shape[0])
                counts.add_(m.sum(0))
        return total / counts

    def attribute(self, images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        sets, squeeze = target_sets(targets)
        attribution = self.occlusion(images, sets)
        how = self.reduce
        if how == "sum_of_abs":
            maps = attribution.abs().sum(2)
        elif how == "abs_of_sum":
            maps = attribution.sum(2).abs()
        elif how == "sum":
            maps = attribution.sum(2)
        else:
            maps = attribution.abs().amax(2)
        return one_per_image(maps, squeeze)

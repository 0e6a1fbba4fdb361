"""RISE: saliency from the scores of randomly masked images (Petsiuk, Das & Saenko, BMVC 2018).

Petsiuk, Das & Saenko, "RISE: Randomized Input Sampling for Explanation of Black-box Models".
``N`` binary grids of ``s×s`` cells, each cell kept with probability ``p1``, are upsampled
bilinearly to ``(s+1)·cell`` pixels (``cell = ⌈H/s⌉``) and cropped at a random shift in
``[0, cell)²`` to soft masks ``m_i`` of the image's size, as the authors' ``explanations.py``
does (``skimage.transform.resize``, order 1, mode ``reflect``: the grid is mirrored at its
border). The saliency of class ``c`` is the mean of the masks weighted by the class
probability of the masked image::

    S_c = Σ_i p_c(x ⊙ m_i) · m_i / (N · p1)

The masks are made on the device a block at a time, shared by every image of the batch and
every class: ``N`` masks cost ``B·N`` forward passes whatever the number of classes.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from xai_bridge.errors import InvalidArgumentError, InvalidTypeError
from xai_bridge.explainer import Explainer, MapOutput

from .common import BLOCK, ExecutorOwner, check_positive_int, one_per_image, scores_in_blocks, target_sets


def interpolation_matrix(out_size: int, in_size: int) -> torch.Tensor:
    """``out_size × in_size`` weights of linear resizing with half-pixel centres and a mirrored border.

    Row ``o`` samples the input at ``(o + ½)·in/out − ½``; a position outside ``[0, in − 1]``
    reads the input mirrored about its first or last sample (``… c b | a b c … | … b a``), which
    is what ``skimage.transform.resize(order=1, mode="reflect")`` (SciPy's ``mirror``) does.

    >>> interpolation_matrix(4, 2)
    tensor([[0.7500, 0.2500],
            [0.7500, 0.2500],
            [0.2500, 0.7500],
            [0.2500, 0.7500]], dtype=torch.float64)
    """
    position = (torch.arange(out_size, dtype=torch.float64) + 0.5) * in_size / out_size - 0.5
    low = position.floor()
    frac = position - low
    low = low.long()
    weights = torch.zeros(out_size, in_size, dtype=torch.float64)

    def mirror(index: torch.Tensor) -> torch.Tensor:
        if in_size == 1:
            return torch.zeros_like(index)
        period = 2 * (in_size - 1)
        index = index.remainder(period)
        return torch.where(index >= in_size, period - index, index)

    rows = torch.arange(out_size)
    weights.index_put_((rows, mirror(low)), 1 - frac, accumulate=True)
    weights.index_put_((rows, mirror(low + 1)), frac, accumulate=True)
    return weights


#: the most bytes of masks made at once (256 masks of 224×224 in float32, 51 MB)
MASK_BYTES = 256 * 224 * 224 * 4


class MaskGenerator:
    """RISE's masks for images of ``size``: ``N`` grids and shifts drawn once, masks made on demand.

    Args:
        n_masks: ``N``.
        grid: ``s``, cells per side.
        p1: probability of keeping a cell.
        size: ``(H, W)`` of the images.
        seed: seed of the CPU generator that draws grids and shifts (the same masks on every device).

    ``masks(start, stop, device)`` makes masks ``start … stop-1`` (``M×H×W``, float32) on the
    device: ``R_y[shift_y] · grid · R_x[shift_x]ᵀ`` with the rows of the interpolation matrices
    (:func:`interpolation_matrix`) the crop keeps.

    >>> gen = MaskGenerator(10, grid=2, p1=0.5, size=(4, 4), seed=0)
    >>> gen.masks(0, 3, torch.device("cpu")).shape, gen.cell
    (torch.Size([3, 4, 4]), (2, 2))
    """

    def __init__(self, n_masks: int, grid: int, p1: float, size: tuple[int, int], seed: int) -> None:
        h, w = size
        self.size = (h, w)
        self.cell = (math.ceil(h / grid), math.ceil(w / grid))
        generator = torch.Generator().manual_seed(seed)
        #: ``N×s×s`` kept cells (1.0) and dropped ones (0.0)
        self.grids = (torch.rand(n_masks, grid, grid, generator=generator) < p1).float()
        #: ``N×2`` crop offsets (rows, columns), each in ``[0, cell)``
        self.shifts = torch.stack(
            [
                torch.randint(0, self.cell[0], (n_masks,), generator=generator),
                torch.randint(0, self.cell[1], (n_masks,), generator=generator),
            ],
            1,
        )
        self.rows = interpolation_matrix((grid + 1) * self.cell[0], grid).float()
        self.cols = interpolation_matrix((grid + 1) * self.cell[1], grid).float()
        self._on: dict[torch.device, tuple[torch.Tensor, ...]] = {}

    def masks(self, start: int, stop: int, device: torch.device) -> torch.Tensor:
        if device not in self._on:
            self._on = {device: tuple(t.to(device) for t in (self.grids, self.shifts, self.rows, self.cols))}
        grids, shifts, rows, cols = self._on[device]
        h, w = self.size
        y = shifts[start:stop, 0, None] + torch.arange(h, device=device)
        x = shifts[start:stop, 1, None] + torch.arange(w, device=device)
        return rows[y] @ grids[start:stop] @ cols[x].transpose(1, 2)


class RISE(ExecutorOwner, Explainer):
    """RISE (Petsiuk, Das & Saenko 2018): probability-weighted mean of random soft masks.

    Args:
        model: classifier in eval mode taking images in pixel space (masking multiplies the input).
        n_masks: ``N``, masks per image (default 4000).
        grid: ``s``, cells per side of the random grid (default 7).
        p1: probability of keeping a cell (default 0.5).
        seed: seed of the masks (default 0; the same masks for every call and device).
        masks: a user tensor ``N×H×W`` (or ``N×1×H×W``) of masks used instead of the generator.
        executor: the :class:`~xai_bridge.engine.Executor` to run on (default: one of its own).
        batch_size, compile: for the explainer's own executor.

    ``explain(images, target="top5")`` gives ``B×5×H×W`` maps from the same ``B·N`` passes as one class.

    Example::

        >>> import xai_bridge as xb
        >>> model = xb.default_model(); images, _ = xb.sample_images(["chelsea"])
        >>> rise = xb.get_explainer("rise", model, n_masks=64)
        >>> rise.explain(images, target="top2").shape, rise.executor.samples
        (torch.Size([1, 2, 224, 224]), 64)
    """

    needs_grad = False
    multi_target = True

    def __init__(
        self,
        model: Any,
        *,
        n_masks: int = 4000,
        grid: int = 7,
        p1: float = 0.5,
        seed: int = 0,
        masks: torch.Tensor | None = None,
        executor: Any = None,
        batch_size: int | None = None,
        compile: str = "auto",
        class_names: Any = None,
    ) -> None:
        super().__init__(model, class_names=class_names)
        self._init_executor(executor, batch_size, compile)
        self.grid = check_positive_int("grid", grid)
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise InvalidArgumentError(f"seed: expected an int >= 0, got {seed!r}")
        self.seed = seed
        if isinstance(p1, bool) or not isinstance(p1, (int, float)):
            raise InvalidTypeError(f"p1: expected a probability in (0, 1], got {p1!r}")
        if not 0 < p1 <= 1:
            raise InvalidArgumentError(f"p1: expected a probability in (0, 1], got {p1}")
        self.p1 = float(p1)
        if masks is not None:
            if not isinstance(masks, torch.Tensor) or not masks.is_floating_point():
                raise InvalidTypeError(f"masks: expected a float tensor N×H×W, got {type(masks).__name__}")
            if masks.ndim == 4 and masks.shape[1] == 1:
                masks = masks[:, 0]
            if masks.ndim != 3 or masks.shape[0] == 0:
                raise InvalidArgumentError(f"masks: expected N×H×W (N ≥ 1), got shape {tuple(masks.shape)}")
            n_masks = masks.shape[0]
        self.n_masks = check_positive_int("n_masks", n_masks)
        self.user_masks = masks
        self._generator: MaskGenerator | None = None

    def generator(self, size: tuple[int, int]) -> MaskGenerator:
        """The mask generator for images of ``size`` (made once per size)."""
        if self._generator is None or self._generator.size != tuple(size):
            self._generator = MaskGenerator(self.n_masks, self.grid, self.p1, size, self.seed)
        return self._generator

    def _masks(self, size: tuple[int, int], device: torch.device) -> Any:
        if self.user_masks is None:
            gen = self.generator(size)
            return lambda start, stop: gen.masks(start, stop, device)
        if tuple(self.user_masks.shape[-2:]) != tuple(size):
            raise InvalidArgumentError(
                f"masks: they are {tuple(self.user_masks.shape[-2:])}, the images {tuple(size)}; give N×H×W masks"
            )
        user = self.user_masks.to(device=device, dtype=torch.float32)
        return lambda start, stop: user[start:stop]

    def attribute(self, images: torch.Tensor, targets: torch.Tensor) -> MapOutput:
        sets, squeeze = target_sets(targets)
        b, k = sets.shape
        h, w = images.shape[-2:]
        device = images.device
        make = self._masks((h, w), device)
        ex = self.executor
        ex.plan(b * self.n_masks)
        saliency = torch.zeros(b, k, h, w, device=device)
        # masks made at once: BLOCK inputs' worth, and at most MASK_BYTES of masks (peak memory flat in N)
        per_block = max(1, min(BLOCK // b, MASK_BYTES // (4 * h * w)))
        with ex.progress_bar(b * self.n_masks, desc="rise"):
            for first in range(0, self.n_masks, per_block):
                last = min(self.n_masks, first + per_block)
                masks = make(first, last)  # M×H×W, shared by the B images

                def build(start: int, stop: int, masks: torch.Tensor = masks) -> torch.Tensor:
                    i = torch.arange(start, stop, device=device)  # mask-major: input i = mask i // B on image i % B
                    return images[i % b] * masks[i // b, None]

                def reduce(start: int, stop: int, logits: torch.Tensor, masks: torch.Tensor = masks) -> None:
                    p = logits.float().softmax(-1).reshape(masks.shape[0], b, -1)
                    p = p.gather(2, sets[None].expand(masks.shape[0], b, k))  # M×B×k
                    saliency.add_(torch.einsum("mbk,mhw->bkhw", p, masks))

                scores_in_blocks(ex, b * masks.shape[0], build, reduce, block=b * masks.shape[0])
        saliency /= self.n_masks * self.p1
        return MapOutput(one_per_image(saliency, squeeze), info={"n_masks": self.n_masks})

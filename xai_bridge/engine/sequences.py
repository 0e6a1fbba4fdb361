"""General perturbation sequences given as explicit per-feature ranks, and arbitrary image sets.

:class:`~xai_bridge.engine.Curve` ranks pixels or cells by a saliency map. The toolkits'
metrics perturb *features* (every channel of every pixel, in an order the toolkit computes,
possibly random) and fill them with a value that may change at every step (Quantus's
``"mean"`` and ``"uniform"`` baselines). :func:`ranked_replacement_logits` takes that order
as data: ``ranks[i, c, y, x]`` is the step at which feature ``(c, y, x)`` of image ``i`` is
replaced (a value ``≥ steps`` means never) and ``fills[i, s]`` the value it takes at step
``s``. Image ``i`` after step ``s`` is ``where(ranks[i] ≤ s, fills[i, ranks[i]], x[i])``;
all ``B × steps`` images are built chunk by chunk on the model's device and go through the
model in the engine's chunks (memory budget, out-of-memory back-off).

>>> import torch
>>> from xai_bridge.engine import Engine
>>> from xai_bridge.engine.sequences import ranked_replacement_logits
>>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 2 * 2, 4)).eval()
>>> x = torch.rand(2, 3, 2, 2)
>>> ranks = torch.arange(12).view(1, 3, 2, 2).expand(2, -1, -1, -1) // 4   # 4 features per step
>>> ranked_replacement_logits(Engine(model), x, ranks, torch.zeros(2, 3), steps=3).shape
torch.Size([2, 3, 4])
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import torch

from ..errors import InvalidArgumentError

if TYPE_CHECKING:
    from .engine import Engine
    from .executor import Executor

__all__ = ["ranked_replacement_logits", "subset_replacement_logits", "image_set_logits"]


def ranked_replacement_logits(
    engine: Engine | Executor,
    images: torch.Tensor,
    ranks: torch.Tensor,
    fills: torch.Tensor,
    steps: int,
    *,
    insert: bool = False,
) -> torch.Tensor:
    """Logits ``B×steps×K`` of every image after each step of a ranked replacement sequence.

    Args:
        engine: the :class:`~xai_bridge.engine.Engine` whose model and chunking are used.
        images: ``B×C×…`` (images ``B×C×H×W``, series ``B×C×T``, any layout).
        ranks: the images' shape: integer step of each feature's replacement (``≥ steps``: never).
        fills: ``B×steps`` replacement value of the features replaced at each step.
        steps: the number of steps (one forward sample per image and step).
        insert: the reverse sequence: image ``i`` after step ``s`` is
            ``where(ranks[i] ≤ s, x[i], fills[i, s])``: it starts from the fill value and the
            features of rank ``≤ s`` are revealed (Monotonicity's insertion of features).
    """
    if ranks.shape != images.shape:
        raise InvalidArgumentError(f"ranks: expected the images' shape {tuple(images.shape)}, got {tuple(ranks.shape)}")
    b = images.shape[0]
    if fills.shape != (b, steps):
        raise InvalidArgumentError(f"fills: expected shape {(b, steps)}, got {tuple(fills.shape)}")
    images, ranks, fills = _on_device(engine, images, ranks, fills)

    column = (-1,) + (1,) * (images.ndim - 1)  # one value per input, broadcast over its features

    def build(i: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        r = ranks[i]
        if insert:
            return torch.where(r <= t.view(column), images[i], fills[i, t].view(column))
        fill = fills[i].gather(1, r.clamp(max=steps - 1).flatten(1)).view_as(r)
        return torch.where(r <= t.view(column), fill, images[i])

    return _pair_logits(engine, images, steps, build)


def subset_replacement_logits(
    engine: Engine | Executor, images: torch.Tensor, subsets: torch.Tensor, fills: torch.Tensor
) -> torch.Tensor:
    """Logits ``B×R×K`` of every image with each of its ``R`` feature subsets replaced (one at a time).

    Image ``(i, r)`` is ``x[i]`` with the flat features ``subsets[i, r]`` (indices into one input's flattened features)
    set to ``fills[i, r]``; the other features keep their values. Subsets of different sizes
    are padded by repeating one of their own indices. This is the request of the metrics that
    perturb disjoint groups in attribution order or random subsets, each from the unperturbed
    image (Faithfulness Estimate, Faithfulness Correlation, Monotonicity Correlation).

    Args:
        engine: the :class:`~xai_bridge.engine.Engine` whose model and chunking are used.
        images: ``B×C×…`` (any layout).
        subsets: ``B×R×k`` integer indices into the flattened features of one input.
        fills: ``B×R`` replacement value of each subset.

    Example::

        >>> import torch
        >>> from xai_bridge.engine import Engine
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 2 * 2, 4)).eval()
        >>> subsets = torch.tensor([[[0, 1], [2, 3], [4, 4]]]).expand(2, -1, -1)  # the last one pads by repeating
        >>> subset_replacement_logits(Engine(model), torch.rand(2, 3, 2, 2), subsets, torch.zeros(2, 3)).shape
        torch.Size([2, 3, 4])
    """
    if subsets.ndim != 3 or subsets.shape[0] != images.shape[0]:
        raise InvalidArgumentError(
            f"subsets: expected B×R×k indices with B={images.shape[0]}, got {tuple(subsets.shape)}"
        )
    b, r = subsets.shape[:2]
    if fills.shape != (b, r):
        raise InvalidArgumentError(f"fills: expected shape {(b, r)}, got {tuple(fills.shape)}")
    n = images[0].numel()
    if subsets.numel() and (int(subsets.min()) < 0 or int(subsets.max()) >= n):
        raise InvalidArgumentError(f"subsets: indices must be in [0, {n}) (the features of one image)")
    images, subsets, fills = _on_device(engine, images, subsets, fills)

    def build(i: torch.Tensor, j: torch.Tensor) -> torch.Tensor:
        idx = subsets[i, j]
        flat = images[i].flatten(1).clone()
        flat.scatter_(1, idx, fills[i, j][:, None].expand_as(idx))
        return flat.view(-1, *images.shape[1:])

    return _pair_logits(engine, images, r, build)


def _on_device(
    engine: Engine | Executor, images: torch.Tensor, index: torch.Tensor, fills: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``images``, integer ``index`` and ``fills`` (in the images' dtype) on the engine's device."""
    device = engine.device
    images = images.to(device)
    return images, index.to(device=device, dtype=torch.long), fills.to(device=device, dtype=images.dtype)


def _pair_logits(
    engine: Engine | Executor,
    images: torch.Tensor,
    count: int,
    build: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
) -> torch.Tensor:
    """Logits ``B×count×K`` of the ``B·count`` images ``build(i, j)`` (image ``i[k]``, item ``j[k]``), image-major,
    made and sent through the model a chunk at a time."""
    b, device = images.shape[0], engine.device
    if b * count == 0:
        return torch.empty(b, count, 0, device=device)
    img_idx = torch.arange(b, device=device).repeat_interleave(count)
    item_idx = torch.arange(count, device=device).repeat(b)
    logits = engine.forward_chunks(b * count, lambda s, e: build(img_idx[s:e], item_idx[s:e]), images)
    return logits.view(b, count, -1)


def image_set_logits(
    engine: Engine | Executor, n: int, build: Callable[[int, int], torch.Tensor], sample: torch.Tensor
) -> torch.Tensor:
    """Logits ``n×K`` of an arbitrary set of ``n`` images made by ``build(start, stop)`` (a chunk at a time)."""
    return engine.forward_chunks(n, build, sample.to(engine.device))

"""Saliency maps → soft masks and pixel ranks; replacement images.

Everything here is batched tensor work on the images' device: no Python loop over
images or pixels.

>>> import torch
>>> from xai_bridge.engine.maps import normalize_maps, rank_units
>>> s = torch.tensor([[[0.0, 2.0], [1.0, 4.0]]])
>>> normalize_maps(s)
tensor([[[0.0000, 0.5000],
         [0.2500, 1.0000]]])
>>> rank_units(s, order="morf")[0]           # rank 0 = removed first
tensor([[3, 1],
        [2, 0]], dtype=torch.int32)
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F

from ..protocols import Replacement

ConstantPolicy = Literal["error", "zeros", "ones"]


def check_maps(maps: torch.Tensor, images: torch.Tensor | None = None, name: str = "maps") -> torch.Tensor:
    """Validate ``B×H×W`` maps (``B×1×H×W`` is accepted) against the images; returns ``B×H×W`` float."""
    if not isinstance(maps, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor B×H×W, got {type(maps).__name__}")
    if maps.ndim == 4 and maps.shape[1] == 1:
        maps = maps[:, 0]
    if maps.ndim != 3:
        raise ValueError(f"{name}: expected shape B×H×W (one map per image), got {tuple(maps.shape)}")
    if images is not None:
        b, _, h, w = images.shape
        if maps.shape[0] != b:
            raise ValueError(f"{name}: {maps.shape[0]} maps for {b} images; expected one map per image")
        if tuple(maps.shape[-2:]) != (h, w):
            raise ValueError(
                f"{name}: maps are {tuple(maps.shape[-2:])} but images are {(h, w)}; upsample them first "
                "(xai_bridge.explainer.upsample) or pass Explanation.maps, which are at input resolution"
            )
    bad = ~torch.isfinite(maps).flatten(1).all(1)
    if bad.any():
        raise ValueError(f"{name}: map(s) {bad.nonzero().flatten().tolist()} contain NaN or inf; check the explainer")
    return maps.float()


def normalize_maps(maps: torch.Tensor, constant: ConstantPolicy = "error") -> torch.Tensor:
    """Per-image min-max to [0, 1]: ``n(S) = (S − min)/(max − min)``.

    A constant map has no order: ``constant="error"`` refuses it (naming the
    images), ``"zeros"`` maps it to 0 (nothing kept), ``"ones"`` to 1 (everything kept).
    """
    flat = maps.flatten(1)
    lo = flat.min(1).values.view(-1, 1, 1)
    hi = flat.max(1).values.view(-1, 1, 1)
    span = hi - lo
    const = (span <= 0).view(-1)
    if const.any():
        if constant == "error":
            raise ValueError(
                f"maps: map(s) {const.nonzero().flatten().tolist()} are constant, so min-max normalisation "
                "is undefined; set protocol constant_maps='zeros' or 'ones' to score them anyway"
            )
        if constant not in ("zeros", "ones"):
            raise ValueError(f"constant: expected 'error', 'zeros' or 'ones', got {constant!r}")
    out = (maps - lo) / torch.where(span > 0, span, torch.ones_like(span))
    if const.any():
        out[const] = 0.0 if constant == "zeros" else 1.0
    return out


def cell_scores(maps: torch.Tensor, cell: int) -> torch.Tensor:
    """Mean saliency of each ``cell×cell`` block (the last partial block included): ``B×gh×gw``."""
    h, w = maps.shape[-2:]
    gh, gw = math.ceil(h / cell), math.ceil(w / cell)
    padded = F.pad(maps[:, None], (0, gw * cell - w, 0, gh * cell - h), value=float("nan"))
    blocks = padded.view(-1, gh, cell, gw, cell).permute(0, 1, 3, 2, 4).flatten(-2)
    return blocks.nanmean(-1)


def rank_units(maps: torch.Tensor, order: Literal["morf", "lerf"] = "morf", cell: int | None = None) -> torch.Tensor:
    """Rank of every pixel's unit (``B×H×W`` int32): the ``t`` first-removed units are ``rank < t``.

    Units are pixels (``cell=None``) or ``cell×cell`` blocks ranked by their mean
    saliency. Ties keep raster order (a stable sort), so results are deterministic.
    """
    if order not in ("morf", "lerf"):
        raise ValueError(f"order: expected 'morf' or 'lerf', got {order!r}")
    scores = maps if cell is None else cell_scores(maps, cell)
    flat = scores.flatten(1)
    key = -flat if order == "morf" else flat
    idx = torch.argsort(key, dim=1, stable=True)
    ranks = torch.empty_like(idx, dtype=torch.int32)
    ranks.scatter_(
        1, idx, torch.arange(flat.shape[1], device=flat.device, dtype=torch.int32).expand_as(idx).contiguous()
    )
    ranks = ranks.view_as(scores)
    if cell is not None:
        h, w = maps.shape[-2:]
        ranks = ranks.repeat_interleave(cell, 1).repeat_interleave(cell, 2)[:, :h, :w]
    return ranks


def num_units(height: int, width: int, cell: int | None) -> int:
    return height * width if cell is None else math.ceil(height / cell) * math.ceil(width / cell)


def step_counts(units: int, step: int | float, stop: float = 1.0) -> torch.Tensor:
    """Units removed after each step: ``0, k, 2k, …`` up to ``stop·N`` (rounded up to a whole
    step; the full schedule ends at ``N``, its last step possibly partial).

    ``step`` is a number of units (int) or a fraction of all units (float, at least one unit).
    """
    if isinstance(step, bool) or not isinstance(step, (int, float)) or step <= 0:
        raise ValueError(f"step: expected a positive number of pixels/cells (int) or a fraction (float), got {step!r}")
    if not 0 < stop <= 1:
        raise ValueError(f"stop: expected a fraction in (0, 1], got {stop!r}")
    k = int(step) if isinstance(step, int) else max(1, round(step * units))
    steps = math.ceil(units / k) if stop >= 1 else math.ceil(stop * units / k - 1e-9)
    # a shorter schedule is always a prefix of the full one, so requests can share passes
    return (torch.arange(steps + 1, dtype=torch.long) * k).clamp_(max=units)


def gaussian_kernel(kernel: int, sigma: float) -> torch.Tensor:
    x = torch.arange(kernel, dtype=torch.float64) - (kernel - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    return (g / g.sum()).float()


def _separable(images: torch.Tensor, k1d: torch.Tensor) -> torch.Tensor:
    c = images.shape[1]
    k = k1d.to(images)
    pad = k.numel() // 2
    x = F.pad(images, (pad, pad, pad, pad), mode="reflect")
    x = F.conv2d(x, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(x, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def make_replacement(
    images: torch.Tensor, replacement: Replacement, tensor: torch.Tensor | None = None
) -> torch.Tensor:
    """The image each removed pixel takes its value from, ``B×C×H×W`` (same device and dtype).

    >>> import torch
    >>> from xai_bridge.protocols import Replacement
    >>> make_replacement(torch.ones(1, 3, 4, 4), Replacement("constant", value=(0.5, 0.0, 1.0)))[0, :, 0, 0]
    tensor([0.5000, 0.0000, 1.0000])
    """
    kind = replacement.kind
    b, c, h, w = images.shape
    if kind == "black":
        return torch.zeros_like(images)
    if kind == "min":  # Quantus's "black": the per-sample minimum over C×H×W
        return images.flatten(1).min(1).values.view(b, 1, 1, 1).expand_as(images).clone()
    if kind == "constant" or (kind == "mean" and replacement.value is not None):
        value = torch.as_tensor(
            replacement.value if replacement.value is not None else 0.0, dtype=images.dtype, device=images.device
        )
        if value.numel() not in (1, c):
            raise ValueError(f"replacement.value: expected one number or {c} (one per channel), got {value.numel()}")
        return value.reshape(1, -1, 1, 1).expand_as(images).clone()
    if kind == "mean":  # each image's own mean colour
        return images.mean((2, 3), keepdim=True).expand_as(images).clone()
    if kind == "blur":
        kernel, sigma = replacement.kernel or 11, replacement.sigma or 5.0
        if kernel % 2 == 0 or kernel < 1:
            raise ValueError(f"replacement.kernel: expected an odd size, got {kernel}")
        return _separable(images, gaussian_kernel(kernel, sigma))
    if kind == "box_blur":
        kernel = replacement.kernel or 45
        if kernel % 2 == 0 or kernel < 1:
            raise ValueError(f"replacement.kernel: expected an odd size, got {kernel}")
        return _separable(images, torch.full((kernel,), 1.0 / kernel))
    if kind == "noise":
        g = torch.Generator(device=images.device).manual_seed(replacement.seed)
        return torch.rand(images.shape, generator=g, device=images.device, dtype=images.dtype)
    if kind == "tensor":
        if tensor is None:
            raise ValueError("replacement: kind='tensor' needs the replacement tensor (replacement_tensor=...)")
        t = tensor.to(device=images.device, dtype=images.dtype)
        if t.ndim == 3:
            t = t.unsqueeze(0)
        if t.ndim != 4 or t.shape[1:] != images.shape[1:] or t.shape[0] not in (1, b):
            raise ValueError(
                f"replacement_tensor: expected shape C×H×W or {b}×C×H×W = {tuple(images.shape)}, "
                f"got {tuple(tensor.shape)}"
            )
        return t.expand_as(images).clone()
    raise ValueError(f"replacement.kind: unknown {kind!r}")

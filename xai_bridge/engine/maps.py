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

from ..errors import InvalidArgumentError, InvalidTypeError
from ..protocols import Replacement

ConstantPolicy = Literal["error", "zeros", "ones"]


def check_maps(maps: torch.Tensor, images: torch.Tensor | None = None, name: str = "maps") -> torch.Tensor:
    """Validate ``B×H×W`` maps (``B×1×H×W`` is accepted) against the images; returns ``B×H×W`` float."""
    if not isinstance(maps, torch.Tensor):
        raise InvalidTypeError(f"{name}: expected a torch.Tensor B×H×W, got {type(maps).__name__}")
    if maps.ndim == 4 and maps.shape[1] == 1:
        maps = maps[:, 0]
    if maps.ndim != 3:
        raise InvalidArgumentError(f"{name}: expected shape B×H×W (one map per image), got {tuple(maps.shape)}")
    if images is not None:
        b, _, h, w = images.shape
        if maps.shape[0] != b:
            raise InvalidArgumentError(f"{name}: {maps.shape[0]} maps for {b} images; expected one map per image")
        if tuple(maps.shape[-2:]) != (h, w):
            raise InvalidArgumentError(
                f"{name}: maps are {tuple(maps.shape[-2:])} but images are {(h, w)}; upsample them first "
                "(xai_bridge.explainer.upsample) or pass Explanation.maps, which are at input resolution"
            )
    bad = ~torch.isfinite(maps).flatten(1).all(1)
    if bad.any():
        raise InvalidArgumentError(
            f"{name}: map(s) {bad.nonzero().flatten().tolist()} contain NaN or inf; check the explainer"
        )
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
            raise InvalidArgumentError(
                f"maps: map(s) {const.nonzero().flatten().tolist()} are constant, so min-max normalisation "
                "is undefined; set protocol constant_maps='zeros' or 'ones' to score them anyway"
            )
        if constant not in ("zeros", "ones"):
            raise InvalidArgumentError(f"constant: expected 'error', 'zeros' or 'ones', got {constant!r}")
    out = (maps - lo) / torch.where(span > 0, span, torch.ones_like(span))
    if const.any():
        out[const] = 0.0 if constant == "zeros" else 1.0
    return out


def cell_scores(maps: torch.Tensor, cell: int) -> torch.Tensor:
    """Mean saliency of each ``cell×cell`` block (the last partial block included): ``B×gh×gw``.

    Computed in float64, so a block of equal values (a coarse map upsampled by nearest
    neighbour) gives back exactly its value.
    """
    h, w = maps.shape[-2:]
    gh, gw = math.ceil(h / cell), math.ceil(w / cell)
    padded = F.pad(maps[:, None].double(), (0, gw * cell - w, 0, gh * cell - h), value=float("nan"))
    blocks = padded.view(-1, gh, cell, gw, cell).permute(0, 1, 3, 2, 4).flatten(-2)
    return blocks.nanmean(-1).to(maps.dtype)


def tiles(grid: torch.Tensor | None, maps: torch.Tensor, cell: int | None) -> bool:
    """Whether ``grid`` (``B×h×w``) tiles ``maps`` (``B×H×W``) in blocks of ``cell×cell`` pixels exactly."""
    if grid is None or cell is None:
        return False
    h, w = maps.shape[-2:]
    return (
        grid.shape[0] == maps.shape[0]
        and tuple(grid.shape[-2:]) == (h // cell, w // cell)
        and h % cell == w % cell == 0
    )


def unit_saliency(maps: torch.Tensor, cell: int | None = None, grid: torch.Tensor | None = None) -> torch.Tensor:
    """Saliency of every unit, ``B×h×w`` in raster order of the units.

    Units are pixels (``cell=None``) or ``cell×cell`` blocks. A block's saliency is the value of
    ``grid`` when ``grid`` tiles the maps in such blocks (the explainer's own map, e.g. a 7×7
    Grad-CAM over 32×32 blocks of a 224² image: its cells are ranked by their own values, as
    the saliency-map tutorial of Gomez & Mouchère does), else the block's mean over ``maps``.
    """
    if cell is None:
        return maps
    if tiles(grid, maps, cell):
        return grid.to(device=maps.device, dtype=maps.dtype)  # type: ignore[union-attr]
    return cell_scores(maps, cell)


def rank_units(
    maps: torch.Tensor,
    order: Literal["morf", "lerf"] = "morf",
    cell: int | None = None,
    grid: torch.Tensor | None = None,
) -> torch.Tensor:
    """Rank of every pixel's unit (``B×H×W`` int32): the ``t`` first-removed units are ``rank < t``.

    Units are pixels (``cell=None``) or ``cell×cell`` blocks ranked by their saliency
    (:func:`unit_saliency`: ``grid``'s values when it tiles the maps, else block means).
    Ties keep raster order (a stable sort), so results are deterministic.
    """
    if order not in ("morf", "lerf"):
        raise InvalidArgumentError(f"order: expected 'morf' or 'lerf', got {order!r}")
    scores = unit_saliency(maps, cell, grid)
    ranks = unit_ranks(scores, order).view_as(scores)
    if cell is not None:
        h, w = maps.shape[-2:]
        ranks = ranks.repeat_interleave(cell, 1).repeat_interleave(cell, 2)[:, :h, :w]
    return ranks


def unit_ranks(scores: torch.Tensor, order: Literal["morf", "lerf"] = "morf") -> torch.Tensor:
    """Rank of every unit (``B×N`` int32, from ``B×…`` unit saliency): 0 = removed first; ties in raster order."""
    flat = scores.flatten(1)
    key = -flat if order == "morf" else flat
    idx = torch.argsort(key, dim=1, stable=True)
    ranks = torch.empty_like(idx, dtype=torch.int32)
    ranks.scatter_(
        1, idx, torch.arange(flat.shape[1], device=flat.device, dtype=torch.int32).expand_as(idx).contiguous()
    )
    return ranks


def num_units(height: int, width: int, cell: int | None) -> int:
    return height * width if cell is None else math.ceil(height / cell) * math.ceil(width / cell)


def step_counts(units: int, step: int | float | None, stop: float = 1.0, max_steps: int = 196) -> torch.Tensor:
    """Units removed after each step: ``0, k, 2k, …`` up to ``stop·N`` (rounded up to a whole
    step; the full schedule ends at ``N``, its last step possibly partial).

    ``step`` is a number of units (int), a fraction of all units (float, at least one unit), or
    ``None``: ``k = N // min(max_steps, N)``, at most ``max_steps`` steps of whole units (the
    saliency-map tutorial's package: one cell per step for grids up to 14×14, 256 pixels per
    step for a 224² map).
    """
    if step is None:
        if isinstance(max_steps, bool) or not isinstance(max_steps, int) or max_steps < 1:
            raise InvalidArgumentError(f"max_steps: expected a positive number of steps, got {max_steps!r}")
    elif isinstance(step, bool) or not isinstance(step, (int, float)) or step <= 0:
        raise InvalidArgumentError(
            f"step: expected a positive number of pixels/cells (int), a fraction (float) or None, got {step!r}"
        )
    if not 0 < stop <= 1:
        raise InvalidArgumentError(f"stop: expected a fraction in (0, 1], got {stop!r}")
    if step is None:
        k = units // min(max_steps, units)
    else:
        k = int(step) if isinstance(step, int) else max(1, round(step * units))
    steps = math.ceil(units / k) if stop >= 1 else math.ceil(stop * units / k - 1e-9)
    # a shorter schedule is always a prefix of the full one, so requests can share passes
    return (torch.arange(steps + 1, dtype=torch.long) * k).clamp_(max=units)


def gaussian_kernel(kernel: int, sigma: float) -> torch.Tensor:
    """Sampled Gaussian of ``kernel`` taps, truncated to them and renormalised (``tails="truncate"``)."""
    x = torch.arange(kernel, dtype=torch.float64) - (kernel - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    return (g / g.sum()).float()


def folded_gaussian_kernel(kernel: int, sigma: float, truncate: float = 4.0) -> torch.Tensor:
    """RISE's kernel (Petsiuk et al., "RISE: Randomized Input Sampling for Explanation of Black-box
    Models", 2018; ``tails="fold"``): a Dirac at the centre of ``kernel`` taps smoothed by a Gaussian
    of ``sigma`` that reaches ``truncate·sigma`` taps out, the part beyond the window reflected back
    into it (half-sample symmetric, as ``scipy.ndimage.gaussian_filter`` pads). The 2-D kernel is
    the outer product of this one with itself.
    """
    radius = int(truncate * sigma + 0.5)
    j = torch.arange(-radius, radius + 1, dtype=torch.float64)
    weights = torch.exp(-(j**2) / (2 * sigma**2))
    weights /= weights.sum()
    centre = kernel // 2
    out = torch.zeros(kernel, dtype=torch.float64)
    period = 2 * kernel
    for i in range(kernel):  # out[i] = Σ_j w_j · δ[reflect(i + j) = centre]
        pos = (i + j.long()) % period
        pos = torch.where(pos >= kernel, period - 1 - pos, pos)
        out[i] = weights[pos == centre].sum()
    return out.float()


def _separable(images: torch.Tensor, k1d: torch.Tensor, padding: str = "reflect") -> torch.Tensor:
    c = images.shape[1]
    k = k1d.to(images)
    pad = k.numel() // 2
    mode = "reflect" if padding == "reflect" else "constant"
    x = F.pad(images, (pad, pad, pad, pad), mode=mode)
    x = F.conv2d(x, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(x, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def box_kernel_size(height: int) -> int:
    """Side of the tutorial's box blur: ``max(H // 5, 9)``, made odd (45 at 224²)."""
    side = max(height // 5, 9)
    return side + 1 if side % 2 == 0 else side


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
            raise InvalidArgumentError(
                f"replacement.value: expected one number or {c} (one per channel), got {value.numel()}"
            )
        return value.reshape(1, -1, 1, 1).expand_as(images).clone()
    if kind == "mean":  # each image's own mean colour
        return images.mean((2, 3), keepdim=True).expand_as(images).clone()
    if kind == "blur":
        kernel, sigma = replacement.kernel or 11, replacement.sigma or 5.0
        if kernel % 2 == 0 or kernel < 1:
            raise InvalidArgumentError(f"replacement.kernel: expected an odd size, got {kernel}")
        k1d = folded_gaussian_kernel(kernel, sigma) if replacement.tails == "fold" else gaussian_kernel(kernel, sigma)
        return _separable(images, k1d, replacement.padding)
    if kind == "box_blur":
        kernel = replacement.kernel or box_kernel_size(h)
        if kernel % 2 == 0 or kernel < 1:
            raise InvalidArgumentError(f"replacement.kernel: expected an odd size, got {kernel}")
        return _separable(images, torch.full((kernel,), 1.0 / kernel), replacement.padding)
    if kind == "noise":
        g = torch.Generator(device=images.device).manual_seed(replacement.seed)
        return torch.rand(images.shape, generator=g, device=images.device, dtype=images.dtype)
    if kind == "tensor":
        if tensor is None:
            raise InvalidArgumentError(
                "replacement: kind='tensor' needs the replacement tensor (replacement_tensor=...)"
            )
        t = tensor.to(device=images.device, dtype=images.dtype)
        if t.ndim == 3:
            t = t.unsqueeze(0)
        if t.ndim != 4 or t.shape[1:] != images.shape[1:] or t.shape[0] not in (1, b):
            raise InvalidArgumentError(
                f"replacement_tensor: expected shape C×H×W or {b}×C×H×W = {tuple(images.shape)}, "
                f"got {tuple(tensor.shape)}"
            )
        return t.expand_as(images).clone()
    raise InvalidArgumentError(f"replacement.kind: unknown {kind!r}")

"""The baselines explainers (implementation; the plugin's ``__init__`` only registers them)."""

from __future__ import annotations

import hashlib
from typing import Any

import torch

from xai_bridge.errors import InvalidArgumentError
from xai_bridge.explainer import Explainer


def fake_cam(batch: int, height: int, width: int, device: Any = None) -> torch.Tensor:
    """``B×H×W`` ones with ``[:, 0, 0] = 0``.

    >>> fake_cam(1, 2, 2)
    tensor([[[0., 1.],
             [1., 1.]]])
    """

    maps = torch.ones(batch, height, width, device=device)
    maps[:, 0, 0] = 0.0
    return maps


def image_seed(image: torch.Tensor, seed: int) -> int:
    """A 63-bit generator seed from ``seed`` and the bytes of ``image`` (C×H×W)."""
    digest = hashlib.blake2b(
        image.detach().to("cpu").contiguous().numpy().tobytes(), digest_size=8, key=str(int(seed)).encode()
    )
    return int.from_bytes(digest.digest(), "little") & ((1 << 63) - 1)


def random_maps(images: torch.Tensor, seed: int = 0, grid: int | None = None) -> torch.Tensor:
    """Uniform ``[0,1)`` maps, one per image, drawn from a generator seeded by ``(seed, image)``.

    ``grid``: draw a ``grid×grid`` map instead (the caller upsamples it), for blob-like noise.
    """

    h, w = (grid, grid) if grid else tuple(images.shape[-2:])
    maps = [torch.rand(h, w, generator=torch.Generator().manual_seed(image_seed(image, seed))) for image in images]
    return torch.stack(maps).to(images.device)


def center_gaussian(batch: int, height: int, width: int, sigma: float = 0.25, device: Any = None) -> torch.Tensor:
    """``B×H×W`` copies of ``exp(−((x − W/2)²/W² + (y − H/2)²/H²) / (2σ²))`` at pixel centres ``(x, y)``.

    >>> round(center_gaussian(1, 2, 2, sigma=0.5)[0, 0, 0].item(), 6), round(__import__("math").exp(-0.25), 6)
    (0.778801, 0.778801)
    """

    ys = (torch.arange(height, dtype=torch.float64) + 0.5 - height / 2) / height
    xs = (torch.arange(width, dtype=torch.float64) + 0.5 - width / 2) / width
    d2 = ys[:, None] ** 2 + xs[None, :] ** 2
    single = torch.exp(-d2 / (2 * sigma**2)).to(torch.float32)
    return single.expand(batch, height, width).clone().to(device)


class FakeCAM(Explainer):
    """Fake-CAM: ones with the top-left pixel 0 (a map that masks one pixel).

    Example::

        >>> import torch, xai_bridge as xb
        >>> m = xb.get_explainer("fakecam", xb.default_model()).explain(torch.rand(1, 3, 224, 224))
        >>> m[0, 0, 0].item(), m.sum().item() == 224 * 224 - 1
        (0.0, True)
    """

    needs_grad = False

    def attribute(self, images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        b, _, h, w = images.shape
        return fake_cam(b, h, w, device=images.device)


class RandomMap(Explainer):
    """Uniform random maps, reproducible per ``(seed, image)``.

    Args:
        seed: the seed (default 0).
        grid: draw ``grid×grid`` values upsampled bilinearly (default: one value per pixel).

    Example::

        >>> import torch, xai_bridge as xb
        >>> e = xb.get_explainer("random", xb.default_model(), seed=3)
        >>> x = torch.rand(2, 3, 224, 224)
        >>> torch.equal(e.explain(x), e.explain(x)), torch.equal(e.explain(x)[1], e.explain(x[1:])[0])
        (True, True)
    """

    needs_grad = False

    def __init__(self, model: Any, *, seed: int = 0, grid: int | None = None, class_names: Any = None) -> None:
        super().__init__(model, class_names=class_names)
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise InvalidArgumentError(f"seed: expected an integer, got {seed!r}")
        if grid is not None and (isinstance(grid, bool) or not isinstance(grid, int) or grid < 1):
            raise InvalidArgumentError(f"grid: expected None (one value per pixel) or a positive integer, got {grid!r}")
        self.seed, self.grid = seed, grid

    def attribute(self, images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return random_maps(images, self.seed, self.grid)


class CenterGaussian(Explainer):
    """A Gaussian bump at the image centre, the same for every image.

    Args:
        sigma: standard deviation as a fraction of the image side (default 0.25).

    Example::

        >>> import torch, xai_bridge as xb
        >>> m = xb.get_explainer("center-gaussian", xb.default_model(), sigma=0.1).explain(torch.rand(1, 3, 224, 224))
        >>> bool(m[0, 112, 112] > m[0, 0, 0])
        True
    """

    needs_grad = False

    def __init__(self, model: Any, *, sigma: float = 0.25, class_names: Any = None) -> None:
        super().__init__(model, class_names=class_names)
        if isinstance(sigma, bool) or not isinstance(sigma, (int, float)) or not sigma > 0:
            raise InvalidArgumentError(
                f"sigma: expected a positive number (a fraction of the image side), got {sigma!r}"
            )
        self.sigma = float(sigma)

    def attribute(self, images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        b, _, h, w = images.shape
        return center_gaussian(b, h, w, self.sigma, device=images.device)

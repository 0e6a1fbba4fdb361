"""The perturbation engine: every masked, deleted or inserted image of a request set
goes through the model in large batches on the model's device.

The toolkits loop over images and over steps around each forward pass. Here the
(image, step) pairs of all requests are laid out once, perturbed images are built
chunk by chunk with tensor operations (``where(rank < t, replacement, image)``),
and the forward passes run in the :class:`~xai_bridge.engine.executor.Executor`'s chunks.
Requests are a protocol (:mod:`xai_bridge.engine.requests`): the engine groups them by their
sharing key, runs each group's sequence once (a shorter request reads a prefix), and hands
the results back by request. It keeps nothing of a run on itself: a run's state is its
:class:`~xai_bridge.engine.context.RunContext`.

>>> import torch, xai_bridge as xb
>>> from xai_bridge.engine import Engine, Curve, Flip
>>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 4)).eval()
>>> images, maps = torch.rand(2, 3, 8, 8), torch.rand(2, 8, 8)
>>> out = Engine(model, progress=False).run(images, maps, targets=None, requests=[Curve(step=8), Flip(step=8)])
>>> out[Curve(step=8)].probs.shape            # 2 images × (64 / 8 + 1) points
torch.Size([2, 9])
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from typing import Any

import torch
from torch import nn

from ..errors import InvalidArgumentError, InvalidTypeError
from ..models import model_device
from ..targets import check_images, check_model_ready
from .context import RunContext
from .executor import Executor, GiB, ladder, parse_budget
from .maps import check_maps
from .requests import Request


class Engine:
    """Batched, device-resident evaluation of perturbed images for one model.

    Args:
        model: a classifier returning logits, in eval mode (it is never modified), or the
            :class:`~xai_bridge.engine.executor.Executor` to run the forward passes on (then the
            other arguments must be left out: the executor already has its settings).
        budget, batch_size, compile, precision, autocast, tune, progress: the settings of the
            executor made for ``model`` (see :class:`~xai_bridge.engine.executor.Executor`).

    ``describe()`` says how the forward passes were computed; :func:`~xai_bridge.evaluate`
    records it in :attr:`Results.forward <xai_bridge.results.Results.forward>`.
    """

    def __init__(
        self,
        model: nn.Module | Executor,
        *,
        budget: int | float | str | None = None,
        batch_size: int | None = None,
        autocast: bool = False,
        compile: str = "auto",
        precision: str | None = None,
        tune: bool = True,
        progress: bool | None = None,
    ) -> None:
        if isinstance(model, Executor):
            self.executor = model
        else:
            if not isinstance(model, nn.Module):
                raise InvalidTypeError(f"model: expected a torch.nn.Module classifier, got {type(model).__name__}")
            self.executor = Executor(
                model,
                budget=budget,
                batch_size=batch_size,
                compile=compile,
                precision=precision,
                autocast=autocast,
                tune=tune,
                progress=progress,
            )

    # the executor's settings and counters, read through the engine
    @property
    def model(self) -> nn.Module:
        return self.executor.model

    @property
    def device(self) -> torch.device:
        return self.executor.device

    @property
    def forward_samples(self) -> int:
        """Images that went through the model (the executor's count)."""
        return self.executor.samples

    @property
    def forward_seconds(self) -> float:
        """Seconds inside the model's forward passes (the executor's count)."""
        return self.executor.seconds

    @property
    def forward_pass(self) -> Any:
        return self.executor.forward_pass

    def describe(self) -> dict[str, Any]:
        """How the forward passes are computed: graph mode asked for and used, precision, chunk size.

        >>> Engine(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3, 2)).eval()).describe()
        {'compile': 'auto', 'graph': 'eager', 'precision': 'float32', 'chunk': None, 'planned': 0}
        """
        return self.executor.describe()

    def chunk_size(self, sample: torch.Tensor) -> int:
        """Images per forward pass (see :meth:`~xai_bridge.engine.executor.Executor.chunk_size`)."""
        return self.executor.chunk_size(sample)

    def forward_chunks(self, n: int, build: Any, sample: torch.Tensor | None = None) -> torch.Tensor:
        """Logits of ``n`` inputs made by ``build(start, stop)``, through the executor."""
        return self.executor.logits(n, build, sample)

    # -- the public entry point -------------------------------------------------------------
    def run(
        self,
        images: torch.Tensor,
        maps: torch.Tensor,
        targets: torch.Tensor | Iterable[int] | int | None,
        requests: Iterable[Request],
        *,
        constant_maps: str = "error",
        replacement_tensor: torch.Tensor | None = None,
        base_logits: torch.Tensor | None = None,
        masks: torch.Tensor | None = None,
        grid: torch.Tensor | None = None,
    ) -> dict[Request, Any]:
        """Compute every request for a batch; returns ``{request: result}``.

        Args:
            images: ``B×C×H×W`` in the masking space (what the model takes).
            maps: ``B×H×W`` saliency at input resolution (any scale; ranks use its order,
                ``Masked`` uses ``n(S)``).
            targets: class scored per image; ``None`` = the predicted class.
            requests: any :class:`~xai_bridge.engine.requests.Request` (the built-in ones:
                ``Masked``, ``Curve``, ``Flip``, ``Ranked``, ``Subsets``; or a plugin's own).
            constant_maps: what a constant map becomes for ``Masked`` (see
                :func:`~xai_bridge.engine.maps.normalize_maps`); ranks of a constant map
                are raster order.
            replacement_tensor: the image for ``Replacement("tensor")``.
            base_logits: logits of the unperturbed images when already known.
            masks: ``B×H×W`` soft masks ``M`` for ``Masked`` (default ``n(maps)``).
            grid: ``B×h×w`` map whose values rank the cells of cell-level requests whose
                ``cell×cell`` blocks it tiles (the explainer's raw map); other requests rank
                block means of ``maps``.
        """
        executor = self.executor
        check_model_ready(executor.model)
        check_images(images)
        images = images.to(executor.device)
        maps = check_maps(maps, images).to(executor.device)
        if masks is not None:
            masks = check_maps(masks, images, name="masks").to(executor.device)
        if grid is not None:
            grid = check_maps(grid, name="grid").to(executor.device)
            if grid.shape[0] != images.shape[0]:
                raise InvalidArgumentError(f"grid: {grid.shape[0]} maps for {images.shape[0]} images")
        requests = list(dict.fromkeys(requests))
        for r in requests:
            if not isinstance(r, Request):
                raise InvalidTypeError(
                    f"requests: expected xai_bridge.engine.Request objects (Masked, Curve, Flip, Ranked, Subsets or "
                    f"a subclass of Request), got {type(r).__name__}"
                )
        b = images.shape[0]
        if base_logits is None:
            base_logits = executor.logits(b, lambda s, e: images[s:e], images)
        base_logits = base_logits.to(executor.device).float()
        ctx = RunContext(
            executor=executor,
            images=images,
            maps=maps,
            targets=self._targets(targets, base_logits),
            base_logits=base_logits,
            constant_maps=constant_maps,
            masks=masks,
            grid=grid,
            replacement_tensor=replacement_tensor,
        )
        groups: dict[Hashable, dict[type[Request], list[Request]]] = {}
        for r in requests:
            ctx.keys[r] = r.key
            groups.setdefault(r.key, {}).setdefault(type(r), []).append(r)
        total = sum(r.planned(ctx) for r in requests)
        executor.plan(total)  # the work is known now: auto weighs compiling against all that was announced
        with executor.progress_bar(total, "perturbation engine"):
            for phase in sorted({kind.phase for by_type in groups.values() for kind in by_type}):
                for by_type in groups.values():
                    for kind, members in by_type.items():
                        if kind.phase == phase:
                            ctx.results.update(kind.execute(members, ctx))
        return {r: ctx.results[r] for r in requests}

    def _targets(self, targets: Any, logits: torch.Tensor) -> torch.Tensor:
        b, k = logits.shape
        if targets is None:
            return logits.argmax(1)
        t = torch.as_tensor(targets, device=self.device).long().flatten()
        if t.numel() == 1:
            t = t.expand(b)
        if t.numel() != b:
            raise InvalidArgumentError(f"targets: expected one class per image ({b}), got {t.numel()}")
        if (t < 0).any() or (t >= k).any():
            raise InvalidArgumentError(f"targets: class indices must be in [0, {k}) for this model, got {t.tolist()}")
        return t


def auc(values: torch.Tensor, fractions: torch.Tensor) -> torch.Tensor:
    """Trapezoid area under ``values`` (``B×S``) over ``fractions`` (``S``), per row."""
    return torch.trapezoid(values, fractions.to(values), dim=-1)


def pearson(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Row-wise Pearson correlation of ``B×N`` tensors (0 where either row is constant)."""
    a = a - a.mean(-1, keepdim=True)
    b = b - b.mean(-1, keepdim=True)
    den = (a.square().sum(-1) * b.square().sum(-1)).sqrt()
    return torch.where(den > 0, (a * b).sum(-1) / den.clamp_min(1e-30), torch.zeros_like(den))


__all__ = ["Engine", "GiB", "auc", "ladder", "pearson", "parse_budget", "model_device"]

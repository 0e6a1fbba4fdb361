"""What one engine run knows: the inputs, the targets, the executor, and what earlier groups computed.

A :class:`RunContext` is made by :meth:`Engine.run <xai_bridge.engine.Engine.run>` for one call
and handed to every request (see :mod:`xai_bridge.engine.requests`); nothing of a run is kept on
the engine. It caches what several requests of the run use (replacement images, unit ranks, soft
masks), so each is computed once per run.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

import torch

from ..protocols import Replacement
from .executor import Executor
from .maps import make_replacement, normalize_maps, num_units, rank_units, step_counts
from .requests import Scores

__all__ = ["RunContext"]

R = TypeVar("R")
S = TypeVar("S", bound=Scores)


@dataclass
class RunContext:
    """One run's inputs and shared work.

    Attributes:
        executor: runs the forward passes (:meth:`logits`).
        images: ``B×C×…`` inputs in the masking space, on the executor's device.
        maps: ``B×…`` saliency at input resolution (one value per position, channels excluded).
        targets: ``(B,)`` class scored per image.
        base_logits: ``B×K`` logits of the unperturbed inputs.
        constant_maps: what a constant map becomes for soft masks (``"error"``, ``"zeros"``, ``"ones"``).
        masks: ``B×…`` soft masks given by the caller (default ``n(maps)``).
        grid: ``B×h×w`` map ranking the cells it tiles (the explainer's raw map), or ``None``.
        replacement_tensor: the image for ``Replacement("tensor")``.
        results: every result computed so far in this run, by request.
        keys: the sharing key of each request of this run.
    """

    executor: Executor
    images: torch.Tensor
    maps: torch.Tensor
    targets: torch.Tensor
    base_logits: torch.Tensor
    constant_maps: str = "error"
    masks: torch.Tensor | None = None
    grid: torch.Tensor | None = None
    replacement_tensor: torch.Tensor | None = None
    results: dict[Any, Any] = field(default_factory=dict)
    keys: dict[Any, Hashable] = field(default_factory=dict)
    _cache: dict[Hashable, Any] = field(default_factory=dict, repr=False)

    @property
    def batch(self) -> int:
        """``B``, the number of inputs."""
        return int(self.images.shape[0])

    @property
    def device(self) -> torch.device:
        return self.images.device

    @property
    def base_pred(self) -> torch.Tensor:
        """The predicted class of each unperturbed input."""
        return self.base_logits.argmax(1)

    def cached(self, key: Hashable, make: Callable[[], R]) -> R:
        """``make()`` once per run and ``key``: what several requests share (a plugin's own too)."""
        if key not in self._cache:
            self._cache[key] = make()
        value: R = self._cache[key]
        return value

    # -- forward passes --------------------------------------------------------------------------
    def logits(self, n: int, build: Callable[[int, int], torch.Tensor]) -> torch.Tensor:
        """``n×K`` logits of the inputs ``build(start, stop)`` makes, through the executor."""
        return self.executor.logits(n, build, self.images)

    def scores(self, logits: torch.Tensor) -> Any:
        """The target logit, probability and predicted class of ``B×…×K`` logits (image-major rows)."""
        t = self.targets.view(-1, *([1] * (logits.ndim - 1))).expand(*logits.shape[:-1], 1)
        return Scores(logits.gather(-1, t)[..., 0], logits.softmax(-1).gather(-1, t)[..., 0], logits.argmax(-1))

    # -- shared pieces of the perturbations ------------------------------------------------------
    def replacement(self, rep: Replacement) -> torch.Tensor:
        """The replacement inputs of ``rep`` (black, blur, mean, …), made once per run."""
        return self.cached(("replacement", rep), lambda: make_replacement(self.images, rep, self.replacement_tensor))

    def rank(self, order: Literal["morf", "lerf"], cell: int | None) -> torch.Tensor:
        """The rank of every unit of each map in ``order`` (``"morf"``/``"lerf"``), made once per run."""
        return self.cached(("rank", order, cell), lambda: rank_units(self.maps, order, cell, self.grid))

    def soft_masks(self) -> torch.Tensor:
        """``B×1×…`` soft masks: the caller's ``masks`` or ``n(maps)`` under the constant-map policy."""
        return self.cached(
            ("soft masks",),
            lambda: (normalize_maps(self.maps, self.constant_maps) if self.masks is None else self.masks)[:, None],  # type: ignore[arg-type]
        )

    def num_units(self, cell: int | None) -> int:
        """Pixels (``cell=None``) or ``cell×cell`` blocks of one map."""
        return num_units(self.maps.shape[-2], self.maps.shape[-1], cell)

    def step_counts(self, step: int | float | None, cell: int | None, stop: float, max_steps: int) -> torch.Tensor:
        """Units removed at each point of a progressive sequence (see :func:`~xai_bridge.engine.maps.step_counts`)."""
        return step_counts(self.num_units(cell), step, stop, max_steps)

    def longest_result(self, key: Hashable, kind: type[S]) -> S | None:
        """The result of type ``kind`` with the most points among this run's requests of ``key``."""
        best: Any = None
        for request, result in self.results.items():
            if self.keys.get(request) == key and isinstance(result, kind):
                if best is None or result.predicted.shape[-1] > best.predicted.shape[-1]:
                    best = result
        answer: S | None = best
        return answer

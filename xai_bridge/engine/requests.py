"""What a metric asks the engine for, and what it gets back.

Requests are frozen (hashable) dataclasses, so identical requests from several
metrics collapse into one, and requests that walk the same perturbation
sequence (same order, replacement, step and units) share their forward passes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import torch

from ..protocols import BLACK, Replacement


@dataclass(frozen=True)
class Masked:
    """Score of the soft-masked image: ``x·M + r·(1−M)`` (``keep=True``) or ``x·(1−M) + r·M``.

    ``M = n(S)`` per image. AD, AG, AI use ``keep=True``; ADD uses ``keep=False``.
    Its result is a :class:`Scores` of shape ``(B,)``.

    Attributes:
        keep: ``True`` keeps the salient pixels (``x·M + r·(1−M)``); ``False`` removes them.
        replacement: what ``r`` is (usually ``protocol.mask_replacement``).
    """

    keep: bool = True
    replacement: Replacement = BLACK


@dataclass(frozen=True)
class Curve:
    """A progressive curve: ``kind="deletion"`` starts from the image and replaces units in
    ``order``; ``"insertion"`` starts from the replacement and reveals them.

    Units are pixels (``cell=None``) or ``cell×cell`` blocks; ``step`` is units per step
    (int), a fraction of all units (float) or ``None`` (``units // min(max_steps, units)``);
    the curve stops at ``stop`` (a fraction). Its result is a :class:`CurveResult`.

    Attributes:
        kind: ``"deletion"`` or ``"insertion"``.
        order: ``"morf"`` (most relevant first) or ``"lerf"`` (least relevant first).
        replacement: what replaces removed pixels (deletion) or the start image (insertion),
            usually ``protocol.deletion`` or ``protocol.insertion``.
        step: units per step (int), a fraction of all units (float), or ``None``: at most
            ``max_steps`` steps of ``units // min(max_steps, units)`` units.
        cell: ``None`` for pixels, else the side of the square blocks that are the units.
        stop: the fraction of units at which the curve ends (``1.0``: all of them).
        max_steps: the bound of ``step=None`` (196: the saliency-map tutorial's package).
    """

    kind: Literal["deletion", "insertion"] = "deletion"
    order: Literal["morf", "lerf"] = "morf"
    replacement: Replacement = BLACK
    step: int | float | None = 224
    cell: int | None = None
    stop: float = 1.0
    max_steps: int = 196

    def __post_init__(self) -> None:
        if self.kind not in ("deletion", "insertion"):
            raise ValueError(f"Curve.kind: expected 'deletion' or 'insertion', got {self.kind!r}")
        if self.order not in ("morf", "lerf"):
            raise ValueError(f"Curve.order: expected 'morf' or 'lerf', got {self.order!r}")
        if not 0 < self.stop <= 1:
            raise ValueError(f"Curve.stop: expected a fraction in (0, 1], got {self.stop!r}")

    @property
    def sequence(self) -> tuple:
        """Requests with the same sequence share forward passes (a shorter one is a prefix)."""
        return (self.kind, self.order, self.replacement, self.step, self.cell, self.max_steps)


@dataclass(frozen=True)
class Flip:
    """Decision flip: the fraction of units removed (deleted in ``order``) at the first step where
    the predicted class differs from the unperturbed image's. Images stop being evaluated once
    they flipped. Its result is a :class:`FlipResult`.

    Attributes:
        order: ``"morf"`` (n_MoRF) or ``"lerf"`` (n_LeRF).
        replacement: what replaces removed pixels (usually ``protocol.removal``).
        step: units per step (int), a fraction of all units (float) or ``None`` (as :class:`Curve`).
        cell: ``None`` for pixels, else the side of the square blocks that are the units.
        max_steps: the bound of ``step=None``.
    """

    order: Literal["morf", "lerf"] = "morf"
    replacement: Replacement = BLACK
    step: int | float | None = 224
    cell: int | None = None
    max_steps: int = 196

    @property
    def sequence(self) -> tuple:
        """The deletion sequence this request walks (shared with a :class:`Curve` on the same one)."""
        return ("deletion", self.order, self.replacement, self.step, self.cell, self.max_steps)


#: ``planner(images, maps, steps)`` → ``(ranks B×C×H×W, fills B×S, S)``: a feature order and its fill values
#: (see :func:`~xai_bridge.engine.sequences.ranked_replacement_logits`), ``steps`` the most steps wanted
#: (``None``: all). A planner is a frozen dataclass (hashable), so equal planners mean one sequence.
Planner = Callable[[torch.Tensor, torch.Tensor, "int | None"], tuple[torch.Tensor, torch.Tensor, int]]


@dataclass(frozen=True)
class Ranked:
    """A ranked feature-replacement sequence whose order and fill values a ``planner`` computes (the toolkits'
    Pixel-Flipping, Region Perturbation and Selectivity orders over channel features or padded patches, with
    their per-step baselines). Its result is a :class:`RankedResult` of shape ``(B, S)``: the score after each
    step, with the plan it followed.

    Requests with the same ``planner`` and ``insert`` share their forward passes; a request with fewer
    ``steps`` reads a prefix of the longest one.

    Attributes:
        planner: a hashable callable ``planner(images, maps, steps) -> (ranks, fills, S)``.
        steps: the number of steps wanted (``None``: all the planner makes).
        insert: reveal the features on the fill instead of replacing them
            (``ranked_replacement_logits(..., insert=True)``).
    """

    planner: Any
    steps: int | None = None
    insert: bool = False

    @property
    def sequence(self) -> tuple:
        """Requests with the same sequence share forward passes (a shorter one is a prefix)."""
        return (self.planner, self.insert)


Request = Masked | Curve | Flip | Ranked


@dataclass
class Scores:
    """Target logit, target probability and predicted class; shape ``(B, …)``.

    Attributes:
        logits: the target class's logit.
        probs: the target class's softmax probability.
        predicted: the predicted class (argmax of the logits).
    """

    logits: torch.Tensor
    probs: torch.Tensor
    predicted: torch.Tensor

    def get(self, score: str) -> torch.Tensor:
        """``score="probability"`` or ``"logit"``."""
        if score not in ("probability", "logit"):
            raise ValueError(f"score: expected 'probability' or 'logit', got {score!r}")
        return self.probs if score == "probability" else self.logits


@dataclass
class RankedResult(Scores):
    """A :class:`Ranked` sequence's scores ``(B, S)`` and the plan they were computed from: ``ranks``
    (``B×C×H×W``, the step at which each feature is replaced) and ``fills`` (``B×steps``) as the planner
    returned them for the whole sequence, so a metric that needs them (Infidelity's ``Σ a·(x − x̃)``, IROF's
    segment counts) reads them instead of planning again."""

    ranks: torch.Tensor = None  # type: ignore[assignment]
    fills: torch.Tensor = None  # type: ignore[assignment]


@dataclass
class CurveResult(Scores):
    """A curve: ``fractions`` ``(S+1,)`` from 0 to ``stop``; scores ``(B, S+1)``;
    ``counts`` the units removed/revealed at each point and ``units`` the total."""

    fractions: torch.Tensor = None  # type: ignore[assignment]
    counts: torch.Tensor = None  # type: ignore[assignment]
    units: int = 0

    def prefix(self, points: int) -> CurveResult:
        return CurveResult(
            self.logits[:, :points],
            self.probs[:, :points],
            self.predicted[:, :points],
            self.fractions[:points],
            self.counts[:points],
            self.units,
        )


@dataclass
class FlipResult:
    """``fraction`` ``(B,)``: fraction removed at the first flip, 1.0 when the decision never
    changed (``flipped`` is False then); ``steps``: the step index of the flip."""

    fraction: torch.Tensor
    flipped: torch.Tensor
    steps: torch.Tensor

"""What a metric asks the engine for, and what it gets back: the request protocol.

A request is a frozen (hashable) dataclass deriving from :class:`Request`, so identical requests
from several metrics collapse into one. Each request says

- ``key``: what it may share passes with: requests with equal keys form one **group**, and the
  engine runs a group's perturbation sequence once (a shorter request reads a prefix);
- ``length(ctx)``: how many points of that sequence it reads, per image;
- ``inputs(ctx, length)``: how to build the perturbed inputs of the first ``length`` points, chunk
  by chunk on the device (``(n, build)`` with ``build(start, stop)`` making inputs ``start … stop−1``,
  image-major);
- ``reduce(ctx, logits)``: how to turn the ``B×length×K`` logits of its prefix into its result.

The engine hands each group to the ``execute`` of its requests' class (classes of one key run in the
order of their ``phase``, so a later phase reads what an earlier one computed from ``ctx.results``);
the default ``execute`` is the shared-prefix run above. A request whose passes depend on what earlier
passes gave (a decision flip stops evaluating an image once its decision changed) overrides
``execute``. :class:`Masked`, :class:`Curve`, :class:`Flip`, :class:`Ranked` and :class:`Subsets` are
implementations; a plugin defines its own the same way, and the host does not change
(``docs/architecture.md`` has a worked example).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import torch

from ..errors import InvalidArgumentError
from ..protocols import BLACK, Replacement

if TYPE_CHECKING:
    from .context import RunContext

Build = Callable[[int, int], torch.Tensor]


class Request:
    """The protocol every request implements (see the module).

    Subclasses are frozen dataclasses. Override ``key`` to share passes, ``length``/``inputs``/
    ``reduce`` for a sequence whose inputs do not depend on earlier scores, or ``execute`` for one
    that does.
    """

    #: groups of one key run in increasing phase; a request of a later phase may read ``ctx.results``
    phase: ClassVar[int] = 0

    @property
    def key(self) -> Hashable:
        """Requests with equal keys share their forward passes (default: only identical requests)."""
        return self

    def length(self, ctx: RunContext) -> int:
        """Points of the shared sequence this request reads per image (default 1)."""
        return 1

    def inputs(self, ctx: RunContext, length: int) -> tuple[int, Build]:
        """``(n, build)``: the ``n = B·length`` perturbed inputs of the first ``length`` points."""
        raise NotImplementedError(f"{type(self).__name__}: implement inputs() and reduce(), or execute()")

    def reduce(self, ctx: RunContext, logits: torch.Tensor) -> Any:
        """This request's result from the ``B×length×K`` logits of its prefix of the sequence."""
        raise NotImplementedError(f"{type(self).__name__}: implement inputs() and reduce(), or execute()")

    def planned(self, ctx: RunContext) -> int:
        """Forward inputs this request needs at most (for the progress bar and the executor's plan)."""
        return ctx.batch * self.length(ctx)

    @classmethod
    def execute(cls, group: Sequence[Request], ctx: RunContext) -> dict[Request, Any]:
        """Run the group's sequence once, at its longest request's length; each request reduces its prefix."""
        lengths = {r: r.length(ctx) for r in group}
        leader = max(group, key=lambda r: lengths[r])
        longest = lengths[leader]
        n, build = leader.inputs(ctx, longest)
        logits = ctx.logits(n, build).view(ctx.batch, longest, -1)
        return {r: r.reduce(ctx, logits[:, : lengths[r]]) for r in group}


@dataclass(frozen=True)
class Masked(Request):
    """Score of the soft-masked image: ``x·M + r·(1−M)`` (``keep=True``) or ``x·(1−M) + r·M``.

    ``M = n(S)`` per image (or the run's ``masks``). AD, AG, AI use ``keep=True``; ADD uses
    ``keep=False``. Its result is a :class:`Scores` of shape ``(B,)``.

    Attributes:
        keep: ``True`` keeps the salient pixels (``x·M + r·(1−M)``); ``False`` removes them.
        replacement: what ``r`` is (usually ``protocol.mask_replacement``).
    """

    keep: bool = True
    replacement: Replacement = BLACK

    def inputs(self, ctx: RunContext, length: int) -> tuple[int, Build]:
        m = ctx.soft_masks()
        if not self.keep:
            m = 1 - m
        x, rep = ctx.images, ctx.replacement(self.replacement)
        return ctx.batch, lambda s, e: x[s:e] * m[s:e] + rep[s:e] * (1 - m[s:e])

    def reduce(self, ctx: RunContext, logits: torch.Tensor) -> Scores:
        return ctx.scores(logits[:, 0])


@dataclass(frozen=True)
class Curve(Request):
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
            raise InvalidArgumentError(f"Curve.kind: expected 'deletion' or 'insertion', got {self.kind!r}")
        if self.order not in ("morf", "lerf"):
            raise InvalidArgumentError(f"Curve.order: expected 'morf' or 'lerf', got {self.order!r}")
        if not 0 < self.stop <= 1:
            raise InvalidArgumentError(f"Curve.stop: expected a fraction in (0, 1], got {self.stop!r}")

    @property
    def sequence(self) -> tuple[Any, ...]:
        """Requests with the same sequence share forward passes (a shorter one is a prefix)."""
        return (self.kind, self.order, self.replacement, self.step, self.cell, self.max_steps)

    @property
    def key(self) -> Hashable:
        return ("unit sequence", *self.sequence)

    def counts(self, ctx: RunContext) -> torch.Tensor:
        """Units removed (or revealed) at each point of this curve, from 0."""
        return ctx.step_counts(self.step, self.cell, self.stop, self.max_steps)

    def length(self, ctx: RunContext) -> int:
        return int(self.counts(ctx).numel())

    def inputs(self, ctx: RunContext, length: int) -> tuple[int, Build]:
        counts = self.counts(ctx).to(ctx.device)[:length]
        img_idx = torch.arange(ctx.batch, device=ctx.device).repeat_interleave(length)
        step_idx = counts.repeat(ctx.batch)
        ranks, rep = ctx.rank(self.order, self.cell), ctx.replacement(self.replacement)
        deletion = self.kind == "deletion"
        x = ctx.images
        return img_idx.numel(), lambda s, e: unit_perturbed(deletion, x, rep, ranks, img_idx[s:e], step_idx[s:e])

    def reduce(self, ctx: RunContext, logits: torch.Tensor) -> CurveResult:
        points = logits.shape[1]
        counts = self.counts(ctx).to(ctx.device)[:points]
        sc = ctx.scores(logits)
        units = ctx.num_units(self.cell)
        fractions = counts.float() / units
        return CurveResult(sc.logits, sc.probs, sc.predicted, fractions=fractions, counts=counts, units=units)


def unit_perturbed(
    deletion: bool,
    images: torch.Tensor,
    rep: torch.Tensor,
    ranks: torch.Tensor,
    img_idx: torch.Tensor,
    counts: torch.Tensor,
) -> torch.Tensor:
    """Images ``img_idx`` with their ``counts`` first-ranked units removed (deletion) or revealed (insertion)."""
    mask = (ranks[img_idx] < counts.view(-1, *([1] * (ranks.ndim - 1)))).unsqueeze(1)
    x, r = images[img_idx], rep[img_idx]
    return torch.where(mask, r, x) if deletion else torch.where(mask, x, r)


@dataclass(frozen=True)
class Flip(Request):
    """Decision flip: the fraction of units removed (deleted in ``order``) at the first step where
    the predicted class differs from the unperturbed image's. Images stop being evaluated once
    they flipped. Its result is a :class:`FlipResult`.

    A deletion :class:`Curve` on the same sequence shares its key: the flip reads the steps the
    curve already scored and goes on from there.

    Attributes:
        order: ``"morf"`` (n_MoRF) or ``"lerf"`` (n_LeRF).
        replacement: what replaces removed pixels (usually ``protocol.removal``).
        step: units per step (int), a fraction of all units (float) or ``None`` (as :class:`Curve`).
        cell: ``None`` for pixels, else the side of the square blocks that are the units.
        max_steps: the bound of ``step=None``.
    """

    phase: ClassVar[int] = 1

    order: Literal["morf", "lerf"] = "morf"
    replacement: Replacement = BLACK
    step: int | float | None = 224
    cell: int | None = None
    max_steps: int = 196

    @property
    def sequence(self) -> tuple[Any, ...]:
        """The deletion sequence this request walks (shared with a :class:`Curve` on the same one)."""
        return ("deletion", self.order, self.replacement, self.step, self.cell, self.max_steps)

    @property
    def key(self) -> Hashable:
        return ("unit sequence", *self.sequence)

    def planned(self, ctx: RunContext) -> int:
        return 0  # only the images that have not flipped go on: the bar grows as the steps are run

    @classmethod
    def execute(cls, group: Sequence[Request], ctx: RunContext) -> dict[Request, Any]:
        out: dict[Request, Any] = {}
        for r in group:
            assert isinstance(r, Flip)
            out[r] = r._flip(ctx)
        return out

    def _flip(self, ctx: RunContext) -> FlipResult:
        b, device = ctx.batch, ctx.device
        counts = ctx.step_counts(self.step, self.cell, 1.0, self.max_steps).to(device)
        units = ctx.num_units(self.cell)
        s = counts.numel()
        base_pred = ctx.base_pred
        step_of_flip = torch.full((b,), s, dtype=torch.long, device=device)  # s = never
        start = 1
        known = ctx.longest_result(self.key, CurveResult)
        if known is not None:  # the shared deletion curve already has these steps
            changed = known.predicted != base_pred[:, None]
            has = changed.any(1)
            step_of_flip[has] = changed.float().argmax(1)[has]
            start = known.predicted.shape[1]
        rep = ctx.replacement(self.replacement)
        ranks = ctx.rank(self.order, self.cell)
        chunk = ctx.executor.chunk_size(ctx.images)
        active = (step_of_flip == s).nonzero().flatten()
        while active.numel() and start < s:
            m = max(1, min(s - start, chunk // active.numel()))  # steps per block: fill one chunk
            steps = torch.arange(start, start + m, device=device)
            img_idx = active.repeat_interleave(m)
            cnt = counts[steps].repeat(active.numel())
            ctx.executor.extend_progress(img_idx.numel())

            def build(st: int, en: int, img_idx: torch.Tensor = img_idx, cnt: torch.Tensor = cnt) -> torch.Tensor:
                return unit_perturbed(True, ctx.images, rep, ranks, img_idx[st:en], cnt[st:en])

            logits = ctx.logits(img_idx.numel(), build)
            changed = (logits.argmax(1) != base_pred[img_idx]).view(-1, m)
            has = changed.any(1)
            first = changed.float().argmax(1) + start
            step_of_flip[active[has]] = first[has]
            active = active[~has]
            start += m
        flipped = step_of_flip < s
        fraction = torch.where(
            flipped, counts[step_of_flip.clamp(max=s - 1)].float() / units, torch.ones(b, device=device)
        )
        return FlipResult(fraction=fraction, flipped=flipped, steps=step_of_flip)


#: ``planner(images, maps, steps)`` → ``(ranks B×C×…, fills B×S, S)``: a feature order and its fill values
#: (see :func:`~xai_bridge.engine.sequences.ranked_replacement_logits`), ``steps`` the most steps wanted
#: (``None``: all). A planner is a frozen dataclass (hashable), so equal planners mean one sequence.
Planner = Callable[[torch.Tensor, torch.Tensor, "int | None"], tuple[torch.Tensor, torch.Tensor, int]]


@dataclass(frozen=True)
class Ranked(Request):
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
    def sequence(self) -> tuple[Any, ...]:
        """Requests with the same sequence share forward passes (a shorter one is a prefix)."""
        return (self.planner, self.insert)

    @property
    def key(self) -> Hashable:
        return ("ranked", *self.sequence)

    def planned(self, ctx: RunContext) -> int:
        return ctx.batch * (self.steps or 0)

    @classmethod
    def execute(cls, group: Sequence[Request], ctx: RunContext) -> dict[Request, Any]:
        from .sequences import ranked_replacement_logits

        ranked = [r for r in group if isinstance(r, Ranked)]
        wanted = [r.steps for r in ranked]
        steps = None if any(w is None for w in wanted) else max(w for w in wanted if w is not None)
        lead = ranked[0]
        ranks, fills, s = lead.planner(ctx.images, ctx.maps, steps)
        logits = ranked_replacement_logits(ctx.executor, ctx.images, ranks, fills, s, insert=lead.insert)
        sc = ctx.scores(logits)
        out: dict[Request, Any] = {}
        for r in ranked:
            n = s if r.steps is None else min(r.steps, s)
            out[r] = RankedResult(sc.logits[:, :n], sc.probs[:, :n], sc.predicted[:, :n], ranks, fills)
        return out


#: ``planner(images, maps)`` → ``(subsets B×R×k, fills B×R)``: feature subsets (flat indices into one
#: input) each replaced on its own from the unperturbed input, and their fill values.
SubsetPlanner = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


@dataclass(frozen=True)
class Subsets(Request):
    """Each of ``R`` feature subsets replaced, one at a time, from the unperturbed input (Faithfulness
    Estimate's and Monotonicity Correlation's groups in attribution order, Faithfulness Correlation's random
    subsets). Its result is a :class:`SubsetResult` of shape ``(B, R)``.

    Attributes:
        planner: a hashable callable ``planner(images, maps) -> (subsets B×R×k, fills B×R)``.
    """

    planner: Any

    @property
    def key(self) -> Hashable:
        return ("subsets", self.planner)

    def planned(self, ctx: RunContext) -> int:
        return 0  # R is known once the planner ran

    @classmethod
    def execute(cls, group: Sequence[Request], ctx: RunContext) -> dict[Request, Any]:
        from .sequences import subset_replacement_logits

        lead = group[0]
        assert isinstance(lead, Subsets)
        subsets, fills = lead.planner(ctx.images, ctx.maps)
        sc = ctx.scores(subset_replacement_logits(ctx.executor, ctx.images, subsets, fills))
        return {r: SubsetResult(sc.logits, sc.probs, sc.predicted, subsets, fills) for r in group}


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
            raise InvalidArgumentError(f"score: expected 'probability' or 'logit', got {score!r}")
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


@dataclass
class SubsetResult(Scores):
    """A :class:`Subsets` request's scores ``(B, R)`` and the ``subsets``/``fills`` its planner made."""

    subsets: torch.Tensor = None  # type: ignore[assignment]
    fills: torch.Tensor = None  # type: ignore[assignment]

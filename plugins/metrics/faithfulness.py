"""Faithfulness metrics as :class:`~xai_bridge.metric.Metric` classes on the engine.

None of them loops over images or steps: each declares the engine requests it
reads (:meth:`requests`) and turns the engine's batched results into one value
per image (:meth:`compute`). Registration lives in :mod:`xai_bridge_builtins.metrics`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from xai_bridge.engine import Curve, CurveResult, Flip, Masked, auc, pearson
from xai_bridge.errors import InvalidArgumentError, InvalidTypeError
from xai_bridge.metric import Metric, MetricContext
from xai_bridge.protocols import Protocol, grid_step


def _unit(protocol: Protocol) -> int | None:
    """Cell side of ``level="grid"`` (``None``: pixels are the units)."""
    cell = protocol.cell if protocol.level == "grid" else None
    return None if cell == 1 else cell


def _step(protocol: Protocol, name: str = "step") -> int | float | None:
    """``protocol.step`` (or ``removal_step``) in the units the curves count: whole cells for ``level="grid"``."""
    step = getattr(protocol, name)
    return grid_step(step, protocol.cell or 1, name) if protocol.level == "grid" else step


# -- single step: AD, AG, AI, ADD ------------------------------------------------------------------
class _Masked(Metric):
    keep = True

    def requests(self, protocol: Protocol) -> list[Any]:
        return [Masked(keep=self.keep, replacement=protocol.mask_replacement)]

    def masked_and_base(self, ctx: MetricContext) -> tuple[torch.Tensor, torch.Tensor]:
        return ctx.score(ctx[self.requests(ctx.protocol)[0]]), ctx.base_score


class AverageDrop(_Masked):
    """AD = ``[p_c − o_c]_+ / p_c · 100`` with ``o_c`` the score of ``x ⊙ M`` (lower is better)."""

    name, higher_is_better = "average_drop", False

    def compute(self, ctx: MetricContext) -> torch.Tensor:
        o, p = self.masked_and_base(ctx)
        return (p - o).clamp(min=0) / p.clamp(min=1e-12) * 100


class AverageGain(_Masked):
    """AG = ``[o_c − p_c]_+ / (1 − p_c) · 100`` (thesis eq. 2.8; higher is better)."""

    name = "average_gain"

    def compute(self, ctx: MetricContext) -> torch.Tensor:
        o, p = self.masked_and_base(ctx)
        return (o - p).clamp(min=0) / (1 - p).clamp(min=1e-12) * 100


class AverageIncrease(_Masked):
    """AI (= IIC) = ``1[p_c < o_c] · 100`` (higher is better)."""

    name = "average_increase"

    def compute(self, ctx: MetricContext) -> torch.Tensor:
        o, p = self.masked_and_base(ctx)
        return (p < o).float() * 100


class AverageDropInDeletion(AverageDrop):
    """ADD: Average Drop's formula with ``o_c`` the score of ``x ⊙ (1 − M)``, the salient part removed
    (Jung & Oh 2021; higher is better: removing what the map points at should cost the class its score).
    ``protocol.add_clip=False`` keeps a negative drop, ``(p_c − o_c)/p_c · 100``, as the package of
    Gomez & Mouchère's saliency-map tutorial computes it."""

    name, higher_is_better, keep = "add", True, False

    def compute(self, ctx: MetricContext) -> torch.Tensor:
        if ctx.protocol.add_clip:
            return super().compute(ctx)
        o, p = self.masked_and_base(ctx)
        return (p - o) / p.clamp(min=1e-12) * 100


# -- progressive curves: DAUC, IAUC, DC, IC ---------------------------------------------------------
class _CurveMetric(Metric):
    kind = "deletion"

    @property
    def curve_kind(self) -> str:  # type: ignore[override]
        return self.kind

    def curve_request(self, protocol: Protocol) -> Curve:
        replacement = protocol.deletion if self.kind == "deletion" else protocol.insertion
        return Curve(
            kind=self.kind,  # type: ignore[arg-type]
            order="morf",
            replacement=replacement,
            step=_step(protocol),
            cell=_unit(protocol),
            max_steps=protocol.max_steps,
        )

    def requests(self, protocol: Protocol) -> list[Any]:
        return [self.curve_request(protocol)]

    def values(self, ctx: MetricContext) -> tuple[CurveResult, torch.Tensor]:
        result = ctx[self.curve_request(ctx.protocol)]
        values = ctx.score(result)
        if ctx.protocol.auc_normalize == "first":
            values = values / values[:, :1].clamp(min=1e-12)
        elif ctx.protocol.auc_normalize == "max":
            values = values / values.amax(1, keepdim=True).clamp(min=1e-12)
        return result, values

    def curves(self, ctx: MetricContext) -> dict[str, torch.Tensor]:
        result, values = self.values(ctx)
        return {"fractions": result.fractions, "values": values}


class DeletionAUC(_CurveMetric):
    """DAUC: area under the score as the most salient pixels are removed (lower is better)."""

    name, higher_is_better = "deletion_auc", False

    def compute(self, ctx: MetricContext) -> torch.Tensor:
        result, values = self.values(ctx)
        return auc(values, result.fractions)


class InsertionAUC(_CurveMetric):
    """IAUC: area under the score as the most salient pixels are revealed on the substrate (higher is better)."""

    name, kind = "insertion_auc", "insertion"

    def compute(self, ctx: MetricContext) -> torch.Tensor:
        result, values = self.values(ctx)
        return auc(values, result.fractions)


def saliency_per_step(saliency: torch.Tensor, result: CurveResult, ranks: torch.Tensor) -> torch.Tensor:
    """Sum of the saliency of the units each step removes/reveals: ``B×S``.

    ``saliency`` and ``ranks`` (the removal rank of each entry) are ``B×…`` with one entry per
    unit, or per pixel (a unit's pixels then add up).
    """
    b = saliency.shape[0]
    per_unit = torch.zeros(b, result.units, device=saliency.device, dtype=torch.float64)
    per_unit.scatter_add_(1, ranks.flatten(1).long(), saliency.flatten(1).double())
    cum = torch.cat([torch.zeros(b, 1, device=saliency.device, dtype=torch.float64), per_unit.cumsum(1)], 1)
    at = cum[:, result.counts.to(saliency.device)]
    return (at[:, 1:] - at[:, :-1]).to(saliency.dtype)


class _Correlation(_CurveMetric):
    def compute(self, ctx: MetricContext) -> torch.Tensor:
        from xai_bridge.engine.maps import normalize_maps, unit_ranks, unit_saliency

        result, values = self.values(ctx)
        units = unit_saliency(ctx.maps, self.curve_request(ctx.protocol).cell, ctx.raw)  # B×h×w, one per unit
        ranks = unit_ranks(units, "morf")
        saliency = saliency_per_step(normalize_maps(units, "zeros"), result, ranks)
        change = values[:, :-1] - values[:, 1:] if self.kind == "deletion" else values[:, 1:] - values[:, :-1]
        return pearson(change, saliency)


class DeletionCorrelation(_Correlation):
    """DC (Gomez & Mouchère 2023, eq. 25): Pearson correlation between each deletion step's score drop and the
    saliency of the units it removed (higher is better)."""

    name = "dc"


class InsertionCorrelation(_Correlation):
    """IC (Gomez & Mouchère 2023, eq. 26): Pearson correlation between each insertion step's score gain and the
    saliency of the units it revealed (higher is better)."""

    name, kind = "ic", "insertion"


# -- removal of a fraction: AOPC, AFOC; decision flips ----------------------------------------------
class _Removal(Metric):
    order = "morf"

    def __init__(self, protocol: Any = None, order: str | None = None) -> None:
        super().__init__(protocol)
        if order is not None:
            if order not in ("morf", "lerf"):
                raise InvalidArgumentError(f"order: expected 'morf' or 'lerf', got {order!r}")
            self.order = order
            self.higher_is_better = type(self).higher_is_better if order == "morf" else not type(self).higher_is_better

    def curve_request(self, protocol: Protocol) -> Curve:
        return Curve(
            order=self.order,  # type: ignore[arg-type]
            replacement=protocol.removal,
            step=_step(protocol, "removal_step"),
            cell=_unit(protocol),
            stop=protocol.fraction,
            max_steps=protocol.max_steps,
        )

    def requests(self, protocol: Protocol) -> list[Any]:
        return [self.curve_request(protocol)]


class AOPC(_Removal):
    """AOPC = ``1/(P+1) Σ_{k=0..P} (f_c(x) − f_c(x^(k)))``: MoRF removal up to ``protocol.fraction``
    (Grabska-Barwińska et al.: 10 %, mean colour; higher is better)."""

    name = "aopc"

    def compute(self, ctx: MetricContext) -> torch.Tensor:
        values = ctx.score(ctx[self.curve_request(ctx.protocol)])
        return (values[:, :1] - values).mean(1)


class AFOC(_Removal):
    """AFOC = ``|f_c(x) − f_c(x^(P))| / f_c(x)`` after removing ``protocol.fraction`` of the pixels.

    LeRF by default (lower is better: removing the least relevant pixels should not matter);
    ``order="morf"`` for the MoRF variant (higher is better).
    """

    name, order, higher_is_better = "afoc", "lerf", False

    def __init__(self, protocol: Any = None, order: str | None = None) -> None:
        super().__init__(protocol, order)
        self.higher_is_better = self.order == "morf"

    def compute(self, ctx: MetricContext) -> torch.Tensor:
        values = ctx.score(ctx[self.curve_request(ctx.protocol)])
        return (values[:, 0] - values[:, -1]).abs() / values[:, 0].abs().clamp(min=1e-12)


class _Flips(Metric):
    order = "morf"

    def flip_request(self, protocol: Protocol) -> Flip:
        return Flip(
            order=self.order,  # type: ignore[arg-type]
            replacement=protocol.removal,
            step=_step(protocol, "removal_step"),
            cell=_unit(protocol),
            max_steps=protocol.max_steps,
        )

    def requests(self, protocol: Protocol) -> list[Any]:
        return [self.flip_request(protocol)]

    def compute(self, ctx: MetricContext) -> torch.Tensor:
        return ctx[self.flip_request(ctx.protocol)].fraction


class NMoRF(_Flips):
    """n_MoRF: fraction of pixels removed, most relevant first, before the predicted class changes
    (Grabska-Barwińska et al.; 1.0 when it never changes; lower is better)."""

    name, higher_is_better = "n_morf", False


class NLeRF(_Flips):
    """n_LeRF: the same, least relevant first (higher is better)."""

    name, order = "n_lerf", "lerf"


# -- Δσ -----------------------------------------------------------------------------------------------
class Delta(Metric):
    """Δσ (Grabska-Barwińska et al., eq. 9): ``σ(x, s(x)) − 1/K Σ_k σ(x, s(ξ_k))``
    with the maps of K other images of the batch (drawn at random, seeded) applied to ``x``.
    A random explainer scores ≈ 0.

    ``metric`` is a registered metric (name or object) or a Quantus metric instance.
    The direction is the wrapped metric's.
    """

    name = "delta"
    #: the default wrapped metric's (deletion_auc); an instance takes its wrapped metric's
    higher_is_better = False

    def __init__(
        self, protocol: Any = None, metric: Any = "deletion_auc", k: int = 5, seed: int = 0, **options: Any
    ) -> None:
        super().__init__(protocol)
        if isinstance(metric, str):
            import xai_bridge as xb

            metric = xb.get_metric(metric, **options)
        elif options:
            raise InvalidTypeError(f"delta: options {sorted(options)} only apply when metric is given by name")
        if not isinstance(k, int) or k < 1:
            raise InvalidArgumentError(f"k: expected a positive number of other images, got {k!r}")
        self.inner, self.k, self.seed = metric, k, seed
        self.quantus = not isinstance(metric, Metric)
        if self.quantus and not callable(metric):
            raise InvalidTypeError(
                f"metric: expected a metric name, an xai-bridge Metric or a quantus.Metric, got {type(metric).__name__}"
            )
        inner_name = getattr(metric, "name", type(metric).__name__)
        self.name = f"delta({inner_name})"
        self.higher_is_better = self._direction()
        self.needs = getattr(metric, "needs", ())

    def _direction(self) -> bool:
        if not self.quantus:
            return self.inner.higher_is_better
        direction = getattr(getattr(self.inner, "score_direction", None), "value", "higher")
        return direction != "lower"

    def requests(self, protocol: Protocol) -> list[Any]:
        return [] if self.quantus else self.inner.requests(protocol)

    def others(self, b: int, device: torch.device) -> torch.Tensor:
        """``B×K`` indices of other images (never the image itself; with repeats when B−1 < K)."""
        if b < 2:
            raise InvalidArgumentError(
                "delta: needs at least 2 images in a batch (the maps of other images are the reference)"
            )
        g = torch.Generator().manual_seed(self.seed)
        shift = torch.stack(
            [
                torch.randperm(b - 1, generator=g)[: self.k]
                if b - 1 >= self.k
                else torch.randint(0, b - 1, (self.k,), generator=g)
                for _ in range(b)
            ]
        )
        return ((torch.arange(b)[:, None] + 1 + shift) % b).to(device)

    def _score(
        self, ctx: MetricContext, maps: torch.Tensor, first: bool, raw: torch.Tensor | None = None
    ) -> torch.Tensor:
        if not self.quantus:
            return self.inner.compute(ctx) if first else ctx.rescore(self.inner, maps, raw)
        scores = self.inner(
            model=ctx.model,
            x_batch=ctx.images.detach().cpu().numpy(),
            y_batch=ctx.targets.cpu().numpy(),
            a_batch=maps[:, None].detach().cpu().numpy(),
            device=str(ctx.images.device),
        )
        return (
            torch.as_tensor(np.asarray(scores, dtype=np.float64), dtype=torch.float32, device=ctx.images.device)
            .reshape(maps.shape[0], -1)
            .mean(1)
        )

    def compute(self, ctx: MetricContext) -> torch.Tensor:
        own = self._score(ctx, ctx.maps, True)
        idx = self.others(ctx.maps.shape[0], ctx.maps.device)
        raw = ctx.raw
        reference = torch.stack(
            [
                self._score(ctx, ctx.maps[idx[:, j]], False, None if raw is None else raw[idx[:, j]])
                for j in range(self.k)
            ]
        ).mean(0)
        return own - reference


# -- ADCC -----------------------------------------------------------------------------------------------
class ADCC(Metric):
    """ADCC (Poppi et al. 2021): harmonic mean of Coherency, 1 − Complexity and 1 − AD/100.

    Coherency = (Pearson(S(x), S(x ⊙ M)) + 1)/2, the map re-computed on the masked image by the same
    explainer; Complexity = mean of ``n(S)``. Higher is better.
    """

    name, needs = "adcc", ("explainer",)

    def requests(self, protocol: Protocol) -> list[Any]:
        return AverageDrop().requests(protocol)

    def compute(self, ctx: MetricContext) -> torch.Tensor:
        if ctx.explainer is None:
            raise InvalidArgumentError(
                "adcc: needs the explainer to re-explain the masked image; pass explainers=..., not maps only"
            )
        from xai_bridge.engine import make_replacement

        m = ctx.normalized_maps[:, None]
        rep = make_replacement(ctx.images, ctx.protocol.mask_replacement)
        masked = ctx.images * m + rep * (1 - m)
        again = ctx.explainer.explain(masked, target=ctx.targets)
        coherency = (pearson(ctx.maps.flatten(1), again.flatten(1)) + 1) / 2
        complexity = ctx.normalized_maps.flatten(1).mean(1)
        drop = AverageDrop().compute(ctx) / 100
        parts = torch.stack([coherency, 1 - complexity, 1 - drop]).clamp(min=0)
        return torch.where((parts > 0).all(0), 3 / (1 / parts.clamp(min=1e-12)).sum(0), torch.zeros_like(coherency))


# -- localisation ---------------------------------------------------------------------------------------
class _Localisation(Metric):
    category, needs = "Localisation", ("boxes",)

    def boxes(self, ctx: MetricContext) -> Any:
        if ctx.boxes is None:
            raise InvalidArgumentError(
                f"{self.name}: needs ground-truth boxes (boxes=[[[x0, y0, x1, y1], ...] per image]); "
                "xai_bridge.data.photo_boxes() has them for the embedded photos"
            )
        if len(ctx.boxes) != ctx.maps.shape[0]:
            raise InvalidArgumentError(
                f"boxes: {len(ctx.boxes)} entries for {ctx.maps.shape[0]} images; expected one list of boxes per image"
            )
        return ctx.boxes


def _localisation(name: str, fn_name: str, higher: bool, doc: str, with_scores: bool = False) -> type[Metric]:
    def compute(self: _Localisation, ctx: MetricContext) -> torch.Tensor:
        from xai_bridge_builtins.metrics import localisation as lm

        fn = getattr(lm, fn_name)
        if fn_name == "official_metric":
            labels = ctx.labels if ctx.labels is not None else ctx.targets
            return fn(ctx.maps, self.boxes(ctx), ctx.logits.argmax(1), labels)
        if fn_name == "saliency_metric":
            return fn(ctx.maps, ctx.logits.softmax(1).gather(1, ctx.targets[:, None])[:, 0])
        return fn(ctx.maps, self.boxes(ctx))

    needs = () if fn_name == "saliency_metric" else ("boxes",)
    return type(
        name,
        (_Localisation,),
        {"name": name, "higher_is_better": higher, "needs": needs, "compute": compute, "__doc__": doc},
    )


LOCALISATION = {
    "official_metric": _localisation(
        "official_metric",
        "official_metric",
        False,
        "OM = 1 − max IoU(B, B_p)·1[c_p = c] (thesis eq. 1.16; lower is better).",
    ),
    "localisation_error": _localisation(
        "localisation_error", "localisation_error", False, "LE = 1 − max IoU(B, B_p) (eq. 1.17; lower is better)."
    ),
    "pixel_f1": _localisation(
        "pixel_f1",
        "pixel_f1",
        True,
        "Pixel-wise F1 of the saliency mass against the boxes (eqs. 1.18-1.19; higher is better).",
    ),
    "box_accuracy": _localisation(
        "box_accuracy", "box_accuracy", True, "Box Accuracy (Choe et al. 2020; eq. 1.20; higher is better)."
    ),
    "pointing_game": _localisation(
        "pointing_game",
        "standard_pointing_game",
        True,
        "Standard Pointing Game: the map's peak falls in a box (eq. 1.21; higher is better).",
    ),
    "energy_pointing_game": _localisation(
        "energy_pointing_game",
        "energy_pointing_game",
        True,
        "Energy Pointing Game: share of saliency inside the boxes (higher is better).",
    ),
    "saliency_metric": _localisation(
        "saliency_metric",
        "saliency_metric",
        False,
        "Saliency Metric = log max(0.05, area(B_p)) − log p_c (eq. 1.22; lower is better).",
    ),
}

METRICS: dict[str, type[Metric]] = {
    cls.name: cls
    for cls in (
        AverageDrop,
        AverageGain,
        AverageIncrease,
        AverageDropInDeletion,
        DeletionAUC,
        InsertionAUC,
        DeletionCorrelation,
        InsertionCorrelation,
        AOPC,
        AFOC,
        NMoRF,
        NLeRF,
        Delta,
        ADCC,
    )
} | LOCALISATION

__all__ = ["METRICS", "saliency_per_step"]

# the localisation classes by name, for the registration (``module:Class``)
OfficialMetric = LOCALISATION["official_metric"]
LocalisationError = LOCALISATION["localisation_error"]
PixelF1 = LOCALISATION["pixel_f1"]
BoxAccuracy = LOCALISATION["box_accuracy"]
PointingGame = LOCALISATION["pointing_game"]
EnergyPointingGame = LOCALISATION["energy_pointing_game"]
SaliencyMetric = LOCALISATION["saliency_metric"]

"""The metric contract: a metric declares what the engine must compute and reads the results.

A metric never loops over images or steps itself. :func:`xai_bridge.evaluate`
collects every metric's :meth:`Metric.requests`, runs the perturbation engine
once per explainer (requests that share a perturbation sequence share the
forward passes), and hands each metric a :class:`MetricContext` holding the
engine's results; :meth:`Metric.compute` turns them into one value per image.

A metric that reads only the maps declares no requests: :meth:`Metric.requests`
returns ``[]`` (the default), and the engine runs no forward pass for it.

Example (a complete map-only metric)::

    >>> import torch
    >>> from xai_bridge.metric import Metric
    >>> class MaskArea(Metric):
    ...     '''Mean of the normalised map: how much of the image the explanation keeps.'''
    ...     name = "mask_area"
    ...     higher_is_better = False
    ...     category = "Complexity"
    ...     def compute(self, ctx):
    ...         return ctx.normalized_maps.flatten(1).mean(1)

A metric that uses the engine lists the requests it reads and finds their results in the
context (:class:`~xai_bridge.engine.Curve`, :class:`~xai_bridge.engine.Masked` and
:class:`~xai_bridge.engine.Flip` are in :mod:`xai_bridge.engine`)::

    from xai_bridge.engine import Masked

    class KeptScore(Metric):
        '''Score of the image masked by the map, relative to the unmasked image.'''
        name = "kept_score"

        def requests(self, protocol):
            return [Masked(keep=True, replacement=protocol.mask_replacement)]

        def compute(self, ctx):
            masked = ctx[Masked(keep=True, replacement=ctx.protocol.mask_replacement)]
            return ctx.score(masked) / ctx.base_score
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from .protocols import Protocol


@dataclass
class MetricContext:
    """Everything a metric may read for one explainer on one batch.

    :func:`~xai_bridge.evaluate` and :func:`~xai_bridge.score_maps` build one context per
    metric and pass it to :meth:`Metric.compute` (and :meth:`Metric.curves`). Every tensor is
    on the engine's device (the model's); ``B`` is the batch size, ``K`` the number of classes.
    A metric reads what it needs and never changes it.

    Attributes:
        model: the classifier, in eval mode, on the engine's device. Metrics that need
            forward passes should ask the engine through :meth:`Metric.requests` instead of
            calling it.
        images: ``B×C×H×W`` float images in the protocol's masking space (``[0, 1]`` for
            ``space="pixel"``), exactly what the model takes.
        maps: ``B×H×W`` float saliency maps at input resolution, as the explainer returned
            them (any scale, not normalised). Use them when only the order of pixels matters.
        normalized_maps: ``B×H×W`` maps min-max normalised per image to ``[0, 1]``
            (``n(S)``, the soft mask ``M`` of AD/AG/AI); a constant map becomes 0 or 1, or is
            refused, per ``protocol.constant_maps``. A map-only metric usually reads these. With
            ``protocol.mask_from="raw"`` they are ``up(n(raw))`` (a bicubic resize may overshoot
            ``[0, 1]`` slightly).
        targets: ``(B,)`` long tensor, the class explained and scored for each image.
        logits: ``B×K`` logits of the unperturbed images (computed once per batch).
        protocol: the :class:`~xai_bridge.protocols.Protocol` this metric runs under: the
            metric's own ``protocol=`` when it was given one, else the evaluation's; for
            ``level="grid"`` its ``cell`` is filled in from the explainer's map resolution.
        results: the engine's results for the requests of every metric in this run, keyed by
            request: a :class:`~xai_bridge.engine.Masked` request gives a
            :class:`~xai_bridge.engine.Scores`, a :class:`~xai_bridge.engine.Curve` a
            :class:`~xai_bridge.engine.CurveResult`, a :class:`~xai_bridge.engine.Flip` a
            :class:`~xai_bridge.engine.FlipResult`, a :class:`~xai_bridge.engine.Ranked` a
            :class:`~xai_bridge.engine.Scores` of shape ``(B, S)``. Read them as
            ``ctx[request]``, which names the missing request when a metric forgot to list it in
            ``requests()``.
        explainer: the explainer that made the maps, for metrics that re-explain images
            (they declare ``needs = ("explainer",)``); ``None`` when scoring given maps.
        labels: ``(B,)`` long tensor of ground-truth classes when the caller gave them,
            else ``None`` (metrics that need them declare ``needs = ("labels",)``).
        boxes: per image, a list of ground-truth ``[x0, y0, x1, y1]`` boxes in pixels when
            the caller gave them, else ``None`` (declare ``needs = ("boxes",)``).
        engine: the :class:`~xai_bridge.engine.Engine` that computed ``results`` (its
            device, memory budget and the executor's counters).
        raw: ``B×h×w`` maps at the explainer's own resolution when known, else ``None``
            (``level="grid"`` ranks their cells by their values; ``mask_from="raw"`` masks with them).
    """

    model: torch.nn.Module
    images: torch.Tensor
    maps: torch.Tensor
    normalized_maps: torch.Tensor
    targets: torch.Tensor
    logits: torch.Tensor
    protocol: Protocol
    results: dict[Any, Any] = field(default_factory=dict)
    explainer: Any = None
    labels: torch.Tensor | None = None
    boxes: Sequence[Any] | None = None
    engine: Any = None
    raw: torch.Tensor | None = None
    #: the validated batch (:class:`xai_bridge.evaluation.Batch`) these results came from, for :meth:`rescore`
    batch: Any = None

    def score(self, result: Any) -> torch.Tensor:
        """The protocol's score (probability or logit) from an engine result or from ``B×K`` logits.

        Args:
            result: a :class:`~xai_bridge.engine.Scores` or :class:`~xai_bridge.engine.CurveResult`
                (``ctx[request]``), or a ``B×K`` logits tensor.

        Returns:
            The target class's score: ``(B,)`` for logits or masked scores, ``(B, S+1)`` for a curve.
        """
        if isinstance(result, torch.Tensor):
            logits = result.float()
            values = logits.softmax(-1) if self.protocol.score == "probability" else logits
            return values.gather(-1, self.targets.view(-1, 1)).squeeze(-1)
        return result.get(self.protocol.score)

    @property
    def base_score(self) -> torch.Tensor:
        """Score of the target class on the unperturbed images, ``(B,)``."""
        return self.score(self.logits)

    def rescore(self, metric: Metric, maps: torch.Tensor, raw: torch.Tensor | None = None) -> torch.Tensor:
        """``metric`` evaluated on the same images with other ``maps`` (Δσ uses it).

        Args:
            metric: a configured metric.
            maps: ``B×H×W`` maps for the same images.
            raw: their maps at the explainer's own resolution, when known.

        Returns:
            ``(B,)`` values of ``metric``, computed with this context's protocol, targets and engine.

        It goes through :func:`xai_bridge.evaluation.score`, the scoring function that built this
        context, on the same validated batch: the unperturbed logits and targets are reused.
        """
        if self.batch is None:
            from .errors import InvalidArgumentError

            raise InvalidArgumentError(
                "rescore: this MetricContext has no batch; build it with xai_bridge.evaluation.score"
            )
        batch = dataclasses.replace(self.batch, protocol=self.protocol)
        values: torch.Tensor = batch.rescore(metric, maps, raw=raw, explainer=self.explainer)
        return values

    def __getitem__(self, request: Any) -> Any:
        try:
            return self.results[request]
        except KeyError:
            raise KeyError(f"the engine did not compute {request}; list it in the metric's requests()") from None


class Metric:
    """Base class of every metric. Override :meth:`compute` (and :meth:`requests` to use the engine).

    A metric computed from the maps alone keeps the default :meth:`requests`, which
    returns ``[]``: it asks the engine for nothing. A metric that needs perturbed
    images lists engine requests there and reads their results in :meth:`compute` as
    ``ctx[request]``.

    Args:
        protocol: a preset name or a :class:`~xai_bridge.protocols.Protocol` that this
            metric always runs under, whatever the evaluation's protocol; ``None`` (the
            default) follows the evaluation's.
        **options: none here; a subclass takes its own options as keyword arguments. An
            unknown option raises :class:`~xai_bridge.errors.UnknownOptionError` naming
            those the metric accepts.

    Attributes:
        name: the registered name (set the class attribute; rows and summaries use it).
        higher_is_better: the score direction (Quantus's ``ScoreDirection``).
        category: Quantus's ``EvaluationCategory`` value: ``"Faithfulness"``, ``"Robustness"``,
            ``"Randomisation"``, ``"Complexity"``, ``"Localisation"`` or ``"Axiomatic"``.
        needs: extra inputs the metric reads from the context: ``"boxes"``, ``"labels"``,
            ``"explainer"``. Evaluating a metric that needs boxes without boxes, or an
            explainer with maps only, is refused with a message naming the metric;
            ``ctx.labels`` may still be ``None``, so a metric needing labels checks it.
        protocol: the fixed protocol given at construction, or ``None``.
    """

    name: str = "metric"
    higher_is_better: bool = True
    category: str = "Faithfulness"
    needs: tuple[str, ...] = ()
    #: the engine request kind (``"deletion"`` or ``"insertion"``) of the curve :meth:`curves`
    #: returns, so reports label its axis; ``None`` for metrics without a curve
    curve_kind: str | None = None

    def __init__(self, protocol: str | Protocol | None = None, **options: Any) -> None:
        from .protocols import get_protocol

        self.protocol = None if protocol is None else get_protocol(protocol)
        if options:
            from .errors import UnknownOptionError
            from .registry import accepted_options, did_you_mean

            accepted = accepted_options(self)
            bad = sorted(options)[0]
            raise UnknownOptionError(
                f"metric {type(self).name!r} ({type(self).__name__}): unknown option "
                f"{bad!r}.{did_you_mean(bad, accepted)} "
                f"It accepts: {', '.join(accepted) or 'no options'}."
            )

    def requests(self, protocol: Protocol) -> list[Any]:
        """Engine requests this metric reads; the default ``[]`` declares none (a map-only metric).

        Args:
            protocol: the protocol the metric runs under (build the requests from its
                replacements, steps and cell size, so they match other metrics' and share
                forward passes).

        Returns:
            :class:`~xai_bridge.engine.Masked`, :class:`~xai_bridge.engine.Curve`,
            :class:`~xai_bridge.engine.Flip` or :class:`~xai_bridge.engine.Ranked` requests;
            equal requests from several metrics are computed once.
        """
        return []

    def compute(self, ctx: MetricContext) -> torch.Tensor:
        """One value per image, ``(B,)``, from the context (never a loop over images or steps).

        Args:
            ctx: the maps, the engine's results and everything else a metric may read.

        Returns:
            A float tensor ``(B,)``. NaN is allowed (it is kept, warned about and counted).
        """
        raise NotImplementedError(f"{type(self).__name__} must implement compute(ctx)")

    def curves(self, ctx: MetricContext) -> dict[str, torch.Tensor] | None:
        """Optional per-image curve ``{"fractions": (S+1,), "values": (B, S+1)}`` for plots.

        Args:
            ctx: the same context as :meth:`compute`.

        Returns:
            The curve, or ``None`` (the default) for a metric without one.
        """
        return None

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"

"""The metric contract: a metric declares what the engine must compute and reads the results.

A metric never loops over images or steps itself. :func:`xai_bridge.evaluate`
collects every metric's :meth:`Metric.requests`, runs the perturbation engine
once per explainer (requests that share a perturbation sequence share the
forward passes), and hands each metric a :class:`MetricContext` holding the
engine's results; :meth:`Metric.compute` turns them into one value per image.

Example (a complete metric)::

    >>> import torch
    >>> from xai_bridge.metric import Metric
    >>> class MaskArea(Metric):
    ...     '''Mean of the normalised map: how much of the image the explanation keeps.'''
    ...     higher_is_better = False
    ...     category = "Complexity"
    ...     def compute(self, ctx):
    ...         return ctx.normalized_maps.flatten(1).mean(1)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from .protocols import Protocol


@dataclass
class MetricContext:
    """Everything a metric may read for one explainer on one batch.

    Attributes:
        model: the classifier (eval mode).
        images: ``B×C×H×W`` in the protocol's masking space.
        maps: ``B×H×W`` maps at input resolution (as the explainer returned them).
        normalized_maps: ``n(up(S))`` per the protocol (the soft mask ``M``).
        targets: ``(B,)`` classes explained and scored.
        logits: ``B×K`` logits of the unperturbed images.
        protocol: the :class:`~xai_bridge.protocols.Protocol`.
        results: engine results keyed by request.
        explainer: the explainer that made the maps (for metrics that re-explain).
        labels: ground-truth labels when given.
        boxes: ground-truth boxes per image when given.
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
    #: the function that scores maps (:func:`xai_bridge.score_maps`), for :meth:`rescore`
    scorer: Callable[..., dict[str, torch.Tensor]] | None = None
    labels: torch.Tensor | None = None
    boxes: Sequence[Any] | None = None
    engine: Any = None

    def score(self, result: Any) -> torch.Tensor:
        """The protocol's score (probability or logit) from an engine result or from ``B×K`` logits."""
        if isinstance(result, torch.Tensor):
            logits = result.float()
            values = logits.softmax(-1) if self.protocol.score == "probability" else logits
            return values.gather(-1, self.targets.view(-1, 1)).squeeze(-1)
        return result.get(self.protocol.score)

    @property
    def base_score(self) -> torch.Tensor:
        """Score of the target class on the unperturbed images, ``(B,)``."""
        return self.score(self.logits)

    def rescore(self, metric: Metric, maps: torch.Tensor) -> torch.Tensor:
        """``metric`` evaluated on the same images with other ``maps`` (Δσ uses it).

        The scoring function is the one that built this context (:func:`xai_bridge.score_maps`
        passes itself as ``scorer``), so this module needs no import of the evaluation loop.
        """
        if self.scorer is None:
            raise RuntimeError(
                "rescore: this MetricContext was built without a scorer; build it with xai_bridge.score_maps"
            )
        out = self.scorer(
            self.model,
            self.images,
            maps,
            [metric],
            protocol=self.protocol,
            targets=self.targets,
            labels=self.labels,
            boxes=self.boxes,
            explainer=self.explainer,
            engine=self.engine,
            base_logits=self.logits,
        )
        return next(iter(out.values()))

    def __getitem__(self, request: Any) -> Any:
        try:
            return self.results[request]
        except KeyError:
            raise KeyError(f"the engine did not compute {request}; list it in the metric's requests()") from None


class Metric:
    """Base class of every metric. Override :meth:`compute` (and :meth:`requests` to use the engine).

    Class attributes ``higher_is_better`` and ``category`` (Quantus's
    ``EvaluationCategory`` value) describe the metric; ``needs`` names extra
    inputs (``"boxes"``, ``"labels"``, ``"explainer"``).
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
                f"metric {type(self).name!r} ({type(self).__name__}): unknown option {bad!r}.{did_you_mean(bad, accepted)} "
                f"It accepts: {', '.join(accepted) or 'no options'}."
            )

    def requests(self, protocol: Protocol) -> list[Any]:
        """Engine requests this metric reads (default: none)."""
        return []

    def compute(self, ctx: MetricContext) -> torch.Tensor:
        """One value per image, ``(B,)``."""
        raise NotImplementedError(f"{type(self).__name__} must implement compute(ctx)")

    def curves(self, ctx: MetricContext) -> dict[str, torch.Tensor] | None:
        """Optional per-image curve ``{"fractions": (S+1,), "values": (B, S+1)}`` for plots."""
        return None

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"

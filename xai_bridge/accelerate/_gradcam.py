"""pytorch-grad-cam 1.5.7 confidence metrics on the perturbation engine.

The accelerated classes keep grad-cam's call signature
``metric(input_tensor, cams, targets, model, return_visualization=False, return_diff=True)``
and its values. What changes: the unperturbed images go through the model once per call
(grad-cam's ``…Average`` variants and ``ROADCombined`` send them once per percentile, 9 to 18
times), and the perturbed images of every percentile go through the model together in the
engine's chunks. ``CamMultImageConfidenceChange`` builds ``x·cam`` on the model's device.
ROAD's noisy linear imputation (Rong et al. 2022, "A Consistent and Efficient Evaluation
Strategy for Attribution Methods") is grad-cam's own solver, called in grad-cam's order, so
its ``torch.randn`` noise draws are the same under the same ``torch.manual_seed``.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from pytorch_grad_cam.metrics.cam_mult_image import (
    CamMultImageConfidenceChange,
    DropInConfidence,
    IncreaseInConfidence,
    multiply_tensor_with_cam,
)
from pytorch_grad_cam.metrics.perturbation_confidence import (
    AveragerAcrossThresholds,
    PerturbationConfidenceMetric,
    RemoveLeastRelevantFirst,
    RemoveMostRelevantFirst,
)
from pytorch_grad_cam.metrics.road import (
    NoisyLinearImputer,
    ROADCombined,
    ROADLeastRelevantFirst,
    ROADLeastRelevantFirstAverage,
    ROADMostRelevantFirst,
    ROADMostRelevantFirstAverage,
    neighbors_weights,
)

from ..engine import Engine
from ..engine.imputation import solve_imputation
from ..errors import InvalidArgumentError, UnsupportedMetricError
from ._bridge import Bridge

__all__ = ["ACCELERATED"]


class GradCamBridge(Bridge):
    """The bridge on grad-cam's side: the checks of its call, its target scores, its perturbations."""

    _xb_ndims = (4,)  # cams are H×W maps: images only

    def _xb_call(self, run: Callable[..., np.ndarray], args: tuple[Any, ...]) -> np.ndarray:
        """``run(engine, input_tensor, cams, targets, *args[4:])`` for grad-cam's call
        ``(input_tensor, cams, targets, model, …)``, or grad-cam's own ``__call__`` where the engine cannot take
        it (see ``Bridge._xb_dispatch``)."""
        input_tensor, cams, targets, model = args[:4]
        reason = self._xb_refusal(model, input_tensor, "input_tensor")
        if reason is None and not isinstance(input_tensor, torch.Tensor):
            reason = f"input_tensor: expected a torch.Tensor B×C×H×W, got {type(input_tensor).__name__}"

        def on_engine() -> np.ndarray:
            engine = self._xb_engine(model)
            checked = self._xb_check(input_tensor, cams, targets)
            return run(engine, input_tensor, checked, targets, *args[4:])

        return self._xb_dispatch(reason, on_engine, lambda toolkit: toolkit(*args))

    @staticmethod
    def _xb_check(input_tensor: torch.Tensor, cams: Any, targets: Sequence[Callable]) -> np.ndarray:
        cams = np.asarray(cams)
        b, _, h, w = input_tensor.shape
        if cams.shape != (b, h, w):
            raise InvalidArgumentError(f"cams: expected one H×W map per image, shape {(b, h, w)}, got {cams.shape}")
        if not np.isfinite(cams).all():
            bad = np.nonzero(~np.isfinite(cams.reshape(b, -1)).all(1))[0].tolist()
            raise InvalidArgumentError(f"cams: map(s) {bad} contain NaN or inf; check the explainer")
        if len(targets) != b:
            raise InvalidArgumentError(f"targets: expected one target per image ({b}), got {len(targets)}")
        return cams

    def _xb_logits(
        self, engine: Engine, n: int, build: Callable[[int, int], torch.Tensor], sample: torch.Tensor
    ) -> torch.Tensor:
        return self._xb_forward(engine.model, lambda e: e.forward_chunks(n, build, sample))

    @staticmethod
    def _xb_scores(targets: Sequence[Callable], logits: torch.Tensor) -> np.ndarray:
        """grad-cam's ``np.float32([target(output) …])`` for the rows of ``logits`` (one per target)."""
        return np.asarray(
            [target(output).cpu().numpy() for target, output in zip(targets, logits, strict=True)], np.float32
        )

    def _xb_base(self, engine: Engine, input_tensor: torch.Tensor, targets: Sequence[Callable]) -> np.ndarray:
        x = input_tensor.detach().to(engine.device)
        return self._xb_scores(targets, self._xb_logits(engine, x.shape[0], lambda s, e: x[s:e], x))

    def _xb_perturbed(
        self, engine: Engine, perturbations: Sequence[Any], input_tensor: torch.Tensor, cams: np.ndarray
    ) -> list[torch.Tensor]:
        """Logits ``B×K`` of the images perturbed by each of ``perturbations`` (one forward pass set for all)."""
        b = input_tensor.shape[0]
        x = input_tensor.detach().to(engine.device)
        if all(p is multiply_tensor_with_cam for p in perturbations):
            m = torch.as_tensor(cams, device=engine.device, dtype=x.dtype)[:, None]
            logits = self._xb_logits(engine, b, lambda s, e: x[s:e] * m[s:e], x)
            return [logits] * len(perturbations)
        # grad-cam's own perturbation (ROAD's imputation), image by image in grad-cam's order: same noise draws
        perturbations = [_fast_imputation(p) for p in perturbations]
        images = torch.stack(
            [
                perturb(input_tensor[i, ...].cpu(), torch.from_numpy(cams[i]))
                for perturb in perturbations
                for i in range(b)
            ]
        ).to(engine.device)
        logits = self._xb_logits(engine, images.shape[0], lambda s, e: images[s:e], images)
        return list(logits.view(len(perturbations), b, -1))


class _AssembledImputer:
    """grad-cam's ``NoisyLinearImputer`` with its sparse system assembled at once
    (:func:`~xai_bridge.engine.imputation.imputation_system`): the same solution bit for bit, then the same
    ``torch.randn_like`` noise."""

    def __init__(self, noise: float) -> None:
        self.noise = noise

    def __call__(self, img: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        flat = img.reshape(img.shape[0], -1)
        missing = np.argwhere(mask.reshape(-1).numpy() == 0).flatten()
        values = img.numpy().reshape(img.shape[0], -1)
        solved = solve_imputation((mask.shape[0], mask.shape[1]), missing, values, neighbors_weights)
        solution = torch.tensor(solved, dtype=torch.float)
        filled = flat.clone()
        filled[:, missing] = solution.t() + self.noise * torch.randn_like(solution.t())
        return filled.reshape_as(img)


def _fast_imputation(perturbation: Any) -> Any:
    """``perturbation`` with grad-cam's stock ``NoisyLinearImputer`` swapped for :class:`_AssembledImputer`."""
    imputer: Any = getattr(perturbation, "imputer", None)
    if type(perturbation) not in (RemoveMostRelevantFirst, RemoveLeastRelevantFirst) or type(imputer) is not (
        NoisyLinearImputer
    ):
        return perturbation
    fast = copy.copy(perturbation)
    fast.imputer = _AssembledImputer(imputer.noise)
    return fast


class _EngineConfidence(GradCamBridge, PerturbationConfidenceMetric):
    """grad-cam's ``PerturbationConfidenceMetric.__call__`` on the engine."""

    def __call__(
        self,
        input_tensor: torch.Tensor,
        cams: np.ndarray,
        targets: list[Callable],
        model: torch.nn.Module,
        return_visualization: bool = False,
        return_diff: bool = True,
    ) -> np.ndarray:
        return self._xb_call(
            self._xb_confidence, (input_tensor, cams, targets, model, return_visualization, return_diff)
        )

    def _xb_confidence(
        self,
        engine: Engine,
        input_tensor: torch.Tensor,
        cams: np.ndarray,
        targets: list[Callable],
        return_visualization: bool,
        return_diff: bool,
    ) -> np.ndarray:
        if return_visualization:
            raise UnsupportedMetricError(
                "return_visualization: the accelerated metric does not keep the perturbed images; "
                "call the original toolkit metric to get them"
            )
        base = self._xb_base(engine, input_tensor, targets) if return_diff else None
        (logits,) = self._xb_perturbed(engine, [self.perturbation], input_tensor, cams)
        after = self._xb_scores(targets, logits)
        return after if base is None else after - base


def _averager_diffs(
    state: GradCamBridge,
    averager: AveragerAcrossThresholds,
    engine: Engine,
    input_tensor: torch.Tensor,
    cams: np.ndarray,
    targets: Sequence[Callable],
    base: np.ndarray,
) -> list[np.ndarray]:
    """Per percentile of ``averager``: perturbed score minus ``base``, as grad-cam computes it."""
    perturbations = [averager.imputer(p).perturbation for p in averager.percentiles]
    logits = state._xb_perturbed(engine, perturbations, input_tensor, cams)
    return [state._xb_scores(targets, lg) - base for lg in logits]


class _EngineAverager(GradCamBridge, AveragerAcrossThresholds):
    """grad-cam's ``AveragerAcrossThresholds`` with one pass over the unperturbed images."""

    def __call__(
        self, input_tensor: torch.Tensor, cams: np.ndarray, targets: list[Callable], model: torch.nn.Module
    ) -> np.ndarray:
        return self._xb_call(self._xb_average, (input_tensor, cams, targets, model))

    def _xb_average(
        self, engine: Engine, input_tensor: torch.Tensor, cams: np.ndarray, targets: list[Callable]
    ) -> np.ndarray:
        base = self._xb_base(engine, input_tensor, targets)
        diffs = _averager_diffs(self, self, engine, input_tensor, cams, targets, base)
        return np.mean(np.asarray(diffs, np.float32), axis=0)


class AcceleratedCamMultImageConfidenceChange(CamMultImageConfidenceChange, _EngineConfidence):
    """grad-cam's ``CamMultImageConfidenceChange``: score of ``x·cam`` minus the score of ``x``, on the engine."""


class AcceleratedDropInConfidence(DropInConfidence, _EngineConfidence):
    """grad-cam's ``DropInConfidence`` (Chattopadhay et al. 2018, Grad-CAM++'s Average Drop, unscaled) on the engine."""


class AcceleratedIncreaseInConfidence(IncreaseInConfidence, _EngineConfidence):
    """grad-cam's ``IncreaseInConfidence`` (Chattopadhay et al. 2018) on the engine."""


class AcceleratedROADMostRelevantFirst(ROADMostRelevantFirst, _EngineConfidence):
    """grad-cam's ``ROADMostRelevantFirst`` (Rong et al. 2022) on the engine."""


class AcceleratedROADLeastRelevantFirst(ROADLeastRelevantFirst, _EngineConfidence):
    """grad-cam's ``ROADLeastRelevantFirst`` (Rong et al. 2022) on the engine."""


class AcceleratedROADMostRelevantFirstAverage(ROADMostRelevantFirstAverage, _EngineAverager):
    """grad-cam's ``ROADMostRelevantFirstAverage``: one base pass instead of one per percentile."""


class AcceleratedROADLeastRelevantFirstAverage(ROADLeastRelevantFirstAverage, _EngineAverager):
    """grad-cam's ``ROADLeastRelevantFirstAverage``: one base pass instead of one per percentile."""


class AcceleratedROADCombined(GradCamBridge, ROADCombined):
    """grad-cam's ``ROADCombined`` (Rong et al. 2022): ``(LeRF − MoRF) / 2`` averaged over percentiles, one base
    pass for both orders (grad-cam runs it 2 × 9 times).

    Example::

        >>> from pytorch_grad_cam.metrics.road import ROADCombined
        >>> import xai_bridge as xb
        >>> xb.accelerate(ROADCombined(percentiles=[20, 80])).percentiles
        [20, 80]
    """

    def __call__(
        self, input_tensor: torch.Tensor, cams: np.ndarray, targets: list[Callable], model: torch.nn.Module
    ) -> np.ndarray:
        return self._xb_call(self._xb_combined, (input_tensor, cams, targets, model))

    def _xb_combined(
        self, engine: Engine, input_tensor: torch.Tensor, cams: np.ndarray, targets: list[Callable]
    ) -> np.ndarray:
        base = self._xb_base(engine, input_tensor, targets)
        # grad-cam runs LeRF first: the same order keeps torch's noise draws the same
        lerf = _averager_diffs(self, self.lerf_averager, engine, input_tensor, cams, targets, base)
        morf = _averager_diffs(self, self.morf_averager, engine, input_tensor, cams, targets, base)
        return (np.mean(np.asarray(lerf, np.float32), axis=0) - np.mean(np.asarray(morf, np.float32), axis=0)) / 2


def _make(cls: type[Bridge]) -> Callable[..., Any]:
    def make(metric: Any, *, budget: Any = None, batch_size: int | None = None, fallback: bool = False) -> Any:
        perturbation = getattr(metric, "perturbation", None)
        if isinstance(metric, CamMultImageConfidenceChange) and perturbation is not multiply_tensor_with_cam:
            raise UnsupportedMetricError(
                f"perturbation: {type(metric).__name__} is accelerated with grad-cam's multiply_tensor_with_cam only, "
                f"got {perturbation!r}; pass fallback=True to run the toolkit's own code"
            )
        return cls.bridge(metric, budget=budget, batch_size=batch_size, fallback=fallback)

    return make


ACCELERATED = {
    CamMultImageConfidenceChange: _make(AcceleratedCamMultImageConfidenceChange),
    DropInConfidence: _make(AcceleratedDropInConfidence),
    IncreaseInConfidence: _make(AcceleratedIncreaseInConfidence),
    ROADMostRelevantFirst: _make(AcceleratedROADMostRelevantFirst),
    ROADLeastRelevantFirst: _make(AcceleratedROADLeastRelevantFirst),
    ROADMostRelevantFirstAverage: _make(AcceleratedROADMostRelevantFirstAverage),
    ROADLeastRelevantFirstAverage: _make(AcceleratedROADLeastRelevantFirstAverage),
    ROADCombined: _make(AcceleratedROADCombined),
}

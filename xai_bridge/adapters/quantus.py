"""xai-bridge inside Quantus: every explainer as an ``explain_func``, every metric as a ``quantus.Metric``.

:func:`explain_func` has Quantus's signature ``explain_func(model, inputs, targets, **kwargs)``
and picks the explainer from ``explain_func_kwargs={"method": name, ...}``; the other
keys are the explainer's options. ``quantus.evaluate`` sets ``method`` to each key of
``xai_methods``, so there the keys are explainer names::

    quantus.evaluate(metrics={"Sparseness": quantus.Sparseness()},
                     xai_methods={"opticam": explain_func, "gradcam": explain_func},
                     model=model, x_batch=x, y_batch=y, explain_func_kwargs={})

(``explainer=`` in the kwargs, a name or an explainer object, takes precedence over
``method``, for ``xai_methods`` keys that are display names.) Inputs are numpy (or
torch) ``B×C×H×W``, or ``B×H×W×C`` with ``channel_first=False``; the output is a
float32 numpy ``B×1×H×W`` — channel-first whatever the input layout, as Quantus's metrics
work channel-first — holding the explainer's maps (Quantus normalises them itself).

:func:`as_quantus_metric` wraps a registered xai-bridge metric (``average_gain``,
``n_morf``, ``delta``, …) as a ``quantus.Metric`` whose ``evaluate_batch`` scores each
batch with :func:`xai_bridge.evaluation.score_maps` under the metric's protocol.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from quantus.helpers.enums import (
    DataType,
    EvaluationCategory,
    ModelType,
    ScoreDirection,
)
from quantus.metrics.base import Metric as QuantusMetric
from torch import nn

from ..errors import InvalidArgumentError, InvalidTypeError
from ..explainer import Explainer
from . import resolve_explainer

__all__ = ["XaiBridgeQuantusMetric", "as_quantus_metric", "explain_func"]

#: Keys of ``explain_func_kwargs`` that belong to Quantus (or its own ``quantus.explain``),
#: not to the explainer; they are read or dropped, never passed on as explainer options.
QUANTUS_KEYS = ("method", "explainer", "device", "channel_first", "softmax", "xai_lib")


def _unwrap_model(model: Any) -> nn.Module:
    if not isinstance(model, nn.Module) and hasattr(model, "get_model"):
        model = model.get_model()  # a Quantus ModelInterface
    if not isinstance(model, nn.Module):
        raise InvalidTypeError(
            f"model: expected a torch.nn.Module classifier (or a Quantus PyTorchModel), got {type(model).__name__}"
        )
    return model


def _device(device: Any, model: nn.Module) -> torch.device:
    if device is None:
        param = next(iter(model.parameters()), None)
        return param.device if param is not None else torch.device("cpu")
    if isinstance(device, str) and device.lower() == "gpu":  # Quantus's docs spell CUDA "gpu"
        device = "cuda"
    try:
        return torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise InvalidArgumentError(
            f"device: {device!r} is not a torch device; expected e.g. 'cpu', 'cuda' or 'cuda:0'"
        ) from exc


def _images(inputs: Any, channel_first: bool | None, device: torch.device) -> torch.Tensor:
    x = inputs.detach() if isinstance(inputs, torch.Tensor) else torch.from_numpy(np.asarray(inputs))
    if x.ndim != 4:
        raise InvalidArgumentError(
            f"inputs: expected a batch of images B×C×H×W (or B×H×W×C), got shape {tuple(x.shape)}"
        )
    if channel_first is None:
        from quantus.helpers.utils import infer_channel_first

        channel_first = infer_channel_first(np.empty((1, *x.shape[1:]), dtype=np.uint8))
    if not channel_first:
        x = x.permute(0, 3, 1, 2)
    return x.to(device=device, dtype=torch.float32).contiguous()


def _targets(targets: Any, batch: int, device: torch.device) -> Any:
    if targets is None:
        return None
    t = targets if isinstance(targets, torch.Tensor) else torch.as_tensor(np.asarray(targets))
    if t.is_floating_point():
        if not torch.equal(t, t.round()):
            raise InvalidTypeError(f"targets: expected integer class indices, got values {t.flatten()[:5].tolist()}")
        t = t.long()
    t = t.reshape(-1).to(device)
    if t.numel() == 1 and batch != 1:
        return int(t[0])
    if t.numel() != batch:
        raise InvalidArgumentError(f"targets: {t.numel()} classes for {batch} images; give one per image")
    return t


def explain_func(model: Any, inputs: Any, targets: Any, **kwargs: Any) -> np.ndarray:
    """Quantus ``explain_func``: maps of a registered explainer, numpy ``B×1×H×W``.

    Args:
        model: the classifier (``nn.Module`` in eval mode, or a Quantus ``PyTorchModel``).
        inputs: images, numpy or torch, ``B×C×H×W`` (``B×H×W×C`` with ``channel_first=False``).
        targets: one class per image (``None`` = predicted class).
        **kwargs: ``method`` — the registered explainer name (``quantus.evaluate`` sets it
            to the ``xai_methods`` key); ``explainer`` — a name or explainer object that
            overrides ``method``; ``device`` — where to compute (default: the model's);
            ``channel_first`` — the layout of ``inputs`` (inferred when absent); any other
            key is an option of the explainer (``layer=``, ``max_iter=``, …). ``xai_lib``
            is ignored; ``softmax=True`` is refused (explainers explain the model as given).

    Example::

        >>> import numpy as np, torchvision
        >>> model = torchvision.models.resnet18(num_classes=10).eval()
        >>> x = np.random.default_rng(0).random((2, 3, 32, 32), dtype=np.float32)
        >>> explain_func(model, x, np.array([1, 2]), method="fakecam").shape
        (2, 1, 32, 32)
    """
    name = kwargs.pop("explainer", None)
    method = kwargs.pop("method", None)
    name = method if name is None else name
    if name is None:
        raise InvalidArgumentError(
            "explain_func_kwargs: name the explainer, e.g. explain_func_kwargs={'method': 'opticam'} "
            "(quantus.evaluate sets 'method' to each xai_methods key); see xai_bridge.list_explainers()"
        )
    if kwargs.pop("softmax", None):
        raise InvalidArgumentError(
            "softmax: xai-bridge explainers explain the model's outputs as they are; to explain "
            "probabilities, pass nn.Sequential(model, nn.Softmax(-1)) as the model, or drop softmax=True"
        )
    kwargs.pop("xai_lib", None)
    device_arg = kwargs.pop("device", None)
    channel_first = kwargs.pop("channel_first", None)
    model = _unwrap_model(model)
    device = _device(device_arg, model)
    images = _images(inputs, channel_first, device)
    explainer = resolve_explainer(name, model, kwargs, argument="explain_func_kwargs['method']")
    maps = explainer.explain(images, target=_targets(targets, images.shape[0], device))
    return maps[:, None].detach().cpu().numpy().astype(np.float32)


class _ExplainFuncExplainer(Explainer):
    """Any Quantus ``explain_func`` seen as an explainer (for metrics that re-explain, e.g. ADCC)."""

    def __init__(self, model: nn.Module, func: Callable[..., Any], kwargs: dict[str, Any]) -> None:
        super().__init__(model)
        self.func = func
        self.kwargs = dict(kwargs)
        self.name = str(kwargs.get("method", getattr(func, "__name__", "explain_func")))

    def attribute(self, images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        kwargs = {**self.kwargs, "channel_first": True}
        a = self.func(model=self.model, inputs=images.detach().cpu().numpy(), targets=targets.cpu().numpy(), **kwargs)
        a = torch.as_tensor(np.asarray(a), dtype=torch.float32, device=images.device)
        return a.sum(1) if a.ndim == 4 else a


def _maps_from_attributions(a_batch: np.ndarray, x: torch.Tensor) -> torch.Tensor:
    a = torch.as_tensor(np.asarray(a_batch), dtype=torch.float32, device=x.device)
    if a.ndim == 4:
        a = a.sum(1)  # B×1×H×W → B×H×W; per-channel attributions are summed over channels
    if a.ndim != 3 or tuple(a.shape[-2:]) != tuple(x.shape[-2:]):
        raise InvalidArgumentError(
            f"a_batch: expected attributions B×1×H×W (or B×C×H×W) matching x_batch {tuple(x.shape)}, "
            f"got {tuple(a.shape)}"
        )
    return a


def _boxes_from_masks(s_batch: np.ndarray) -> list[list[list[int]]]:
    """One box ``[x0, y0, x1, y1]`` (ends exclusive) per connected region of each mask."""
    from scipy import ndimage

    out = []
    for i, s in enumerate(np.asarray(s_batch)):
        mask = s.reshape(s.shape[-2:]) if s.ndim == 3 and s.shape[0] == 1 else (s.any(0) if s.ndim == 3 else s)
        labelled, n = ndimage.label(mask > 0)
        if n == 0:
            raise InvalidArgumentError(
                f"s_batch: the mask of image {i} is empty; localisation metrics need a region per image"
            )
        out.append([[sl[1].start, sl[0].start, sl[1].stop, sl[0].stop] for sl in ndimage.find_objects(labelled)])
    return out


class XaiBridgeQuantusMetric(QuantusMetric):
    """A registered xai-bridge metric as a Quantus metric (one score per instance).

    Args:
        metric: a configured metric from :func:`xai_bridge.get_metric`.
        abs, normalise, normalise_func, normalise_func_kwargs, return_aggregate,
        aggregate_func, disable_warnings, display_progressbar: Quantus's metric options
            (attributions reach the xai-bridge metric after Quantus's ``abs``/``normalise``;
            both default to off since the protocol normalises maps itself).

    ``y_batch`` are the explained classes and also the labels (for ``official_metric``);
    localisation metrics take boxes from ``custom_batch`` (per image, a list of
    ``[x0, y0, x1, y1]``) or else one box per connected region of ``s_batch``.
    """

    name = "xai-bridge metric"
    data_applicability = {DataType.IMAGE}
    model_applicability = {ModelType.TORCH}
    score_direction = ScoreDirection.HIGHER
    evaluation_category = EvaluationCategory.FAITHFULNESS

    def __init__(
        self,
        metric: Any,
        *,
        abs: bool = False,
        normalise: bool = False,
        normalise_func: Callable[[np.ndarray], np.ndarray] | None = None,
        normalise_func_kwargs: dict[str, Any] | None = None,
        return_aggregate: bool = False,
        aggregate_func: Callable | None = None,
        disable_warnings: bool = True,
        display_progressbar: bool = False,
    ) -> None:
        super().__init__(
            abs=abs,
            normalise=normalise,
            normalise_func=normalise_func,
            normalise_func_kwargs=normalise_func_kwargs,
            return_aggregate=return_aggregate,
            aggregate_func=aggregate_func if aggregate_func is not None else np.mean,
            default_plot_func=None,
            disable_warnings=disable_warnings,
            display_progressbar=display_progressbar,
        )
        self.metric = metric
        # Quantus declares these as class variables; each wrapped metric needs its own.
        self.name = metric.name  # type: ignore[misc]
        self.score_direction = ScoreDirection.HIGHER if metric.higher_is_better else ScoreDirection.LOWER  # type: ignore[misc]
        self.evaluation_category = EvaluationCategory(getattr(metric, "category", "Faithfulness"))  # type: ignore[misc]

    def __call__(
        self,
        model: Any,
        x_batch: np.ndarray,
        y_batch: np.ndarray,
        a_batch: np.ndarray | None = None,
        s_batch: np.ndarray | None = None,
        channel_first: bool | None = None,
        explain_func: Callable | None = None,
        explain_func_kwargs: dict[str, Any] | None = None,
        model_predict_kwargs: dict[str, Any] | None = None,
        softmax: bool | None = False,
        device: str | None = None,
        batch_size: int = 64,
        custom_batch: Any = None,
        **kwargs: Any,
    ) -> list[float]:
        """Scores of ``a_batch`` (or of ``explain_func``'s attributions), one per instance."""
        return super().__call__(
            model=model,
            x_batch=x_batch,
            y_batch=y_batch,
            a_batch=a_batch,
            s_batch=s_batch,
            channel_first=channel_first,
            explain_func=explain_func,
            explain_func_kwargs=explain_func_kwargs,
            model_predict_kwargs=model_predict_kwargs,
            softmax=softmax,
            device=device,
            batch_size=batch_size,
            custom_batch=custom_batch,
            **kwargs,
        )

    def _explainer(self, model: nn.Module) -> Explainer | None:
        func = getattr(self, "explain_func", None)
        if func is None:
            return None
        kwargs = dict(getattr(self, "explain_func_kwargs", None) or {})
        if func is explain_func:
            name = kwargs.pop("explainer", None) or kwargs.pop("method", None)
            options = {k: v for k, v in kwargs.items() if k not in QUANTUS_KEYS}
            return resolve_explainer(name, model, options, argument="explain_func_kwargs['method']") if name else None
        return _ExplainFuncExplainer(model, func, kwargs)

    def evaluate_batch(
        self,
        model: Any,
        x_batch: np.ndarray,
        y_batch: np.ndarray,
        a_batch: np.ndarray,
        s_batch: np.ndarray | None = None,
        custom_batch: Any = None,
        **kwargs: Any,
    ) -> list[float]:
        """One batch through :func:`xai_bridge.evaluation.score_maps`."""
        from ..evaluation import score_maps

        net = _unwrap_model(model)
        device = _device(None, net)
        x = torch.as_tensor(np.asarray(x_batch), dtype=torch.float32, device=device)
        maps = _maps_from_attributions(a_batch, x)
        targets = None if y_batch is None else _targets(y_batch, x.shape[0], device)
        labels = targets if isinstance(targets, torch.Tensor) else None
        needs = tuple(getattr(self.metric, "needs", ()))
        boxes = None
        if "boxes" in needs:
            if custom_batch is not None and not (
                isinstance(custom_batch, (list, tuple)) and all(b is None for b in custom_batch)
            ):
                boxes = list(custom_batch)
            elif s_batch is not None and not (isinstance(s_batch, (list, tuple)) and all(s is None for s in s_batch)):
                boxes = _boxes_from_masks(np.asarray(s_batch))
            else:
                raise InvalidArgumentError(
                    f"s_batch: metric {self.metric.name!r} needs ground truth: pass s_batch masks or custom_batch boxes"
                )
        explainer = self._explainer(net) if "explainer" in needs else None
        scores = score_maps(
            net, x, maps, [self.metric], targets=targets, labels=labels, boxes=boxes, explainer=explainer
        )
        return [float(v) for v in scores[self.metric.name].cpu()]

    def __repr__(self) -> str:
        return f"<XaiBridgeQuantusMetric {self.name!r}>"


def as_quantus_metric(name: str, **options: Any) -> XaiBridgeQuantusMetric:
    """A registered xai-bridge metric as a ``quantus.Metric``, for ``quantus.evaluate``.

    Args:
        name: a registered metric (``"average_gain"``, ``"n_morf"``, ``"delta"``, …; see
            :func:`xai_bridge.list_metrics`).
        **options: the metric's options (``protocol=``, ``metric=`` for ``delta``, …) and
            Quantus's metric options (``return_aggregate``, ``aggregate_func``, ``abs``,
            ``normalise``, ``normalise_func``, ``normalise_func_kwargs``,
            ``disable_warnings``, ``display_progressbar``).

    Example::

        >>> import numpy as np, quantus, torchvision
        >>> model = torchvision.models.resnet18(num_classes=10).eval()
        >>> x = np.random.default_rng(0).random((2, 3, 32, 32), dtype=np.float32)
        >>> ag = as_quantus_metric("average_gain")
        >>> len(ag(model=model, x_batch=x, y_batch=np.array([1, 2]), explain_func=explain_func,
        ...        explain_func_kwargs={"method": "fakecam"}))
        2
    """
    from ..api import get_metric

    quantus_keys = (
        "abs",
        "normalise",
        "normalise_func",
        "normalise_func_kwargs",
        "return_aggregate",
        "aggregate_func",
        "disable_warnings",
        "display_progressbar",
    )
    quantus_options = {k: options.pop(k) for k in quantus_keys if k in options}
    if not isinstance(name, str):
        raise InvalidTypeError(
            f"name: expected a registered metric name (see xai_bridge.list_metrics()), got {type(name).__name__}"
        )
    return XaiBridgeQuantusMetric(get_metric(name, **options), **quantus_options)

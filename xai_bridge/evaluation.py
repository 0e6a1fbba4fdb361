"""``evaluate``: explainers × metrics on a batch, one explanation and one engine run per explainer.

>>> import xai_bridge as xb
>>> model = xb.default_model(); images, names = xb.sample_images(names=["chelsea", "coffee"])
>>> results = xb.evaluate(model, images, explainers=["fakecam", "gradcam"],
...                       metrics=["average_drop", "average_gain"], image_ids=names, progress=False)
>>> sorted(results.to_frame().columns[:5])
['explainer', 'image', 'metric', 'protocol', 'value']
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from .engine import Engine
from .engine.maps import check_maps, normalize_maps
from .errors import InvalidArgumentError, InvalidTypeError, MetricValueWarning, PluginError
from .metric import Metric, MetricContext
from .protocols import Protocol, get_protocol
from .results import Results
from .specs import parse_spec
from .targets import Target, check_images, check_model_ready, resolve_targets


def as_metric(metric: str | Metric) -> Metric:
    """A configured metric from a name, a spec ``"name:key=value,..."`` or an object."""
    if isinstance(metric, str):
        from .api import get_metric

        name, options, _ = parse_spec(metric, "metrics")
        return get_metric(name, **options)
    if not isinstance(metric, Metric) or not hasattr(metric, "compute"):
        raise InvalidTypeError(
            f"metrics: expected names or Metric objects from get_metric(), got {type(metric).__name__}"
        )
    return metric


def _grid_protocol(protocol: Protocol, images: torch.Tensor, raw: torch.Tensor | None) -> Protocol:
    """Fill ``cell`` for ``level="grid"`` from the explainer's own map: input side ÷ raw map side
    (32 for a 7×7 map at 224²), or 1 (pixels) for maps made at input resolution.

    The copy is validated again, so an int ``step`` that is not a whole number of cells is refused here.
    """
    if protocol.level != "grid" or protocol.cell is not None:
        return protocol
    (height, width) = images.shape[-2:]
    if raw is None or tuple(raw.shape[-2:]) == (height, width):
        cell = 1
    else:
        h, w = raw.shape[-2:]
        if height % h or width % w or height // h != width // w:
            raise InvalidArgumentError(
                f"protocol level='grid': the explainer's {h}×{w} map does not tile {height}×{width} images in square "
                "cells; set protocol cell=... (pixels per cell side) to rank blocks of the upsampled map instead"
            )
        cell = height // h
    return dataclasses.replace(protocol, cell=cell)


def soft_masks(protocol: Protocol, maps: torch.Tensor, raw: torch.Tensor | None = None) -> torch.Tensor:
    """The soft mask ``M`` of AD, AG, AI and ADD (``B×H×W``), as ``protocol.mask_from`` says.

    ``"maps"``: ``n(maps)``, the min-max of the maps at input resolution. ``"raw"`` (when the raw
    map is known): ``up(n(raw))``, the raw map min-max normalised at its own resolution, then resized
    with ``protocol.resize`` and left as the resize makes it (a bicubic overshoot is not clipped), as
    the tutorial authors' package makes its masks.
    """
    from .explainer import upsample

    constant = protocol.constant_maps
    if protocol.mask_from == "maps" or raw is None:
        return normalize_maps(maps, constant)
    raw = check_maps(raw, name="raw").to(maps.device)
    if raw.shape[0] != maps.shape[0]:
        raise InvalidArgumentError(f"raw: {raw.shape[0]} raw maps for {maps.shape[0]} maps")
    height, width = maps.shape[-2:]
    return upsample(normalize_maps(raw, constant), (height, width), protocol.resize)


def to_input_resolution(
    maps: torch.Tensor, images: torch.Tensor, protocol: Protocol, raw: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Checked maps at the images' resolution, and the raw maps they came from.

    Maps already at input resolution pass through (an explainer's own upsampling stands).
    Coarser maps (``B×h×w``, e.g. 7×7 CAMs given through ``maps=``) are upsampled with the
    protocol's ``resize`` (bilinear with ``align_corners=False``, bicubic, or nearest) and
    become the ``raw`` maps that set the grid cell of ``level="grid"``.
    """
    from .explainer import upsample

    if isinstance(maps, torch.Tensor) and maps.ndim == 4 and maps.shape[1] == 1:
        maps = maps[:, 0]
    size = tuple(images.shape[-2:])
    if isinstance(maps, torch.Tensor) and maps.ndim == 3 and tuple(maps.shape[-2:]) != size:
        small = check_maps(maps, name="maps")
        if small.shape[0] != images.shape[0]:
            raise InvalidArgumentError(
                f"maps: {small.shape[0]} maps for {images.shape[0]} images; expected one map per image"
            )
        if any(s > big for s, big in zip(small.shape[-2:], size, strict=True)):
            raise InvalidArgumentError(
                f"maps: {tuple(small.shape[-2:])} is larger than the images {size}; expected ≤ {size}"
            )
        return upsample(small.to(images.device), size, mode=protocol.resize), small  # type: ignore[arg-type]
    return check_maps(maps, images), raw


def warn_non_finite(metric: str, explainer: str, image_ids: Sequence[str], values: torch.Tensor) -> None:
    """One :class:`~xai_bridge.errors.MetricValueWarning` naming the metric, explainer and images it gave NaN/inf for.

    The values are kept as they are (rows hold NaN; summaries count them), never dropped silently.
    """
    bad = [image for image, ok in zip(image_ids, torch.isfinite(values).cpu().tolist(), strict=True) if not ok]
    if bad:
        warnings.warn(
            f"metric {metric!r} gave NaN or infinite values for explainer {explainer!r} on {len(bad)} image(s): "
            f"{', '.join(map(str, bad))}. They are kept in the results as NaN; the summary counts them.",
            MetricValueWarning,
            stacklevel=3,
        )


def _spec_key(name: str, options: Mapping[str, Any]) -> str:
    """``name`` or ``name:key=value,...`` (options sorted): how a configured component is written as a spec."""
    if not options:
        return name
    return name + ":" + ",".join(f"{k}={v!r}" for k, v in sorted(options.items()))


def keyed_metrics(metrics: Sequence[str | Metric] | Mapping[str, str | Metric]) -> list[tuple[str, Metric]]:
    """``(key, metric)`` pairs: the key is what the caller asked for, and names the metric's rows.

    * a mapping ``{label: metric or spec}``: the labels;
    * a spec string (``"average_drop"``, ``"pixel_flipping:features_in_step=3584"``): the string as given;
    * a configured metric: its ``name``, or, when several configurations of one metric are given, its
      spec (``pixel_flipping:features_in_step=3584``, from the options it was made with).

    Two metrics that would get one key are refused (no value is ever written twice under one key).

    >>> print(*(k for k, _ in keyed_metrics(["average_drop", "delta:metric=n_morf"])))
    average_drop delta:metric=n_morf
    """
    if isinstance(metrics, Mapping):
        pairs = [(str(k), as_metric(m)) for k, m in metrics.items()]
    elif isinstance(metrics, (str, Metric)) or not isinstance(metrics, Sequence):
        raise InvalidTypeError(
            f"metrics: expected a list of names or Metric objects, or a {{label: metric}} dict, got "
            f"{type(metrics).__name__}"
        )
    else:
        objs = [as_metric(m) for m in metrics]
        names = [m.name for m in objs]
        pairs = []
        for given, obj in zip(metrics, objs, strict=True):
            if isinstance(given, str):
                pairs.append((given.strip(), obj))
            elif names.count(obj.name) == 1:
                pairs.append((obj.name, obj))
            else:
                pairs.append((_spec_key(obj.name, getattr(obj, "spec_options", {})), obj))
    seen: set[str] = set()
    for key, _ in pairs:
        if key in seen:
            raise InvalidArgumentError(
                f"metrics: {key!r} is given twice (two metrics would write the same rows); give each a label: "
                f"metrics={{'label-1': metric_1, 'label-2': metric_2}}"
            )
        seen.add(key)
    return pairs


@dataclasses.dataclass
class Batch:
    """One batch's inputs, validated once at the boundary (:func:`prepare`), and its unperturbed logits.

    Attributes:
        model: the classifier (eval mode).
        images: ``B×C×H×W`` on the engine's device.
        ids: one unique name per image.
        protocol: the evaluation's protocol.
        targets: ``(B,)`` classes explained and scored (resolved once).
        logits: ``B×K`` logits of the unperturbed images (one forward pass per image, through the executor).
        labels: ``(B,)`` ground-truth classes or ``None``.
        boxes: per image, ground-truth boxes or ``None``.
        engine: the engine (and its :class:`~xai_bridge.engine.executor.Executor`) every forward pass runs on.
    """

    model: nn.Module
    images: torch.Tensor
    ids: list[str]
    protocol: Protocol
    targets: torch.Tensor
    logits: torch.Tensor
    labels: torch.Tensor | None
    boxes: Sequence[Any] | None
    engine: Engine

    @property
    def size(self) -> int:
        return int(self.images.shape[0])

    def rescore(
        self, metric: Metric, maps: torch.Tensor, raw: torch.Tensor | None = None, explainer: Any = None
    ) -> torch.Tensor:
        """``(B,)`` values of ``metric`` on this batch with other ``maps`` (:func:`score`; logits, targets reused)."""
        scored = score(self, maps, [("rescored", metric)], raw=raw, explainer=explainer)
        return scored.values["rescored"]


def prepare(
    model: nn.Module,
    images: torch.Tensor,
    protocol: str | Protocol | None = None,
    targets: Target = None,
    *,
    labels: torch.Tensor | Sequence[int] | None = None,
    boxes: Sequence[Any] | None = None,
    image_ids: Sequence[str] | None = None,
    engine: Engine | None = None,
    base_logits: torch.Tensor | None = None,
) -> Batch:
    """Check a batch once and compute its unperturbed logits once: the input of :func:`explain` and :func:`score`.

    >>> import torch
    >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 3)).eval()
    >>> batch = prepare(model, torch.rand(2, 3, 2, 2), targets=1)
    >>> batch.targets.tolist(), batch.engine.executor.samples
    ([1, 1], 2)
    """
    check_model_ready(model)
    check_images(images)
    protocol = get_protocol(protocol)
    b = images.shape[0]
    ids = [str(i) for i in range(b)] if image_ids is None else [str(i) for i in image_ids]
    if len(ids) != b:
        raise InvalidArgumentError(f"image_ids: {len(ids)} names for {b} images")
    if len(set(ids)) != b:
        raise InvalidArgumentError("image_ids: names must be unique (they key the rows)")
    engine = engine or Engine(model, progress=False)
    images = images.to(engine.device)
    if protocol.space == "pixel":
        lo, hi = float(images.min()), float(images.max())
        if lo < -1e-6 or hi > 1 + 1e-6:
            raise InvalidArgumentError(
                f"images: values in [{lo:.3g}, {hi:.3g}] but protocol {protocol.name!r} masks in pixel space [0, 1] "
                "(black = 0); pass unnormalised images (the model normalises) or use space='normalized'"
            )
    label_t = None if labels is None else torch.as_tensor(labels, device=engine.device).long().view(-1)
    if label_t is not None and label_t.numel() != b:
        raise InvalidArgumentError(f"labels: {label_t.numel()} labels for {b} images")
    if boxes is not None and len(boxes) != b:
        raise InvalidArgumentError(f"boxes: {len(boxes)} entries for {b} images; expected one list of boxes per image")
    if base_logits is None:
        base_logits = engine.forward_chunks(b, lambda s, e: images[s:e], images)
    base_logits = base_logits.to(engine.device).float()
    if targets is None and protocol.target == "label" and label_t is not None:
        targets = label_t
    target_t = resolve_targets(targets, b, logits=base_logits, device=engine.device)
    if (target_t >= base_logits.shape[1]).any():
        raise InvalidArgumentError(
            f"targets: class indices must be in [0, {base_logits.shape[1]}), got {target_t.tolist()}"
        )
    return Batch(model, images, ids, protocol, target_t, base_logits, label_t, boxes, engine)


@dataclasses.dataclass
class Cost:
    """What explaining (or scoring) a batch cost: wall seconds and the model's passes, per image.

    >>> Cost(images=4, seconds=2.0, forward=8, backward=4).per_image()
    {'seconds': 0.5, 'forward': 2.0, 'backward': 1.0}
    """

    images: int
    seconds: float = 0.0
    forward: int = 0
    backward: int = 0

    def per_image(self) -> dict[str, float]:
        n = max(self.images, 1)
        return {"seconds": self.seconds / n, "forward": self.forward / n, "backward": self.backward / n}


class _PassCounter:
    """Counts the inputs of the model's top-level forward calls, and those whose gradient flows back.

    How an explainer that does not run through the executor (e.g. pytorch-grad-cam) is costed:
    a forward hook adds each call's batch size; when the output carries gradients, a tensor hook on
    it adds the batch size again when a backward pass reaches it. Calls under ``inference_mode``
    are the executor's own (it counts them) and are left out.
    """

    def __init__(self, model: nn.Module) -> None:
        self.forward = 0
        self.backward = 0
        self._handle = model.register_forward_hook(self._hook)

    def _hook(self, _module: nn.Module, args: Any, out: Any) -> None:
        if torch.is_inference_mode_enabled() or not args or not isinstance(args[0], torch.Tensor):
            return
        n = int(args[0].shape[0]) if args[0].ndim else 1
        self.forward += n
        if isinstance(out, torch.Tensor) and out.requires_grad:

            def count_backward(grad: torch.Tensor, n: int = n) -> None:
                self.backward += n

            out.register_hook(count_backward)

    def close(self) -> None:
        self._handle.remove()


def _accepts(fn: Any, option: str) -> bool:
    """Whether ``fn`` takes ``option`` by name (a :func:`~xai_bridge.lazy.lazy_factory` is read as its class)."""
    import inspect

    target = getattr(fn, "lazy_target", None)
    if callable(target):
        fn = target()
    try:
        return option in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


def make_explainer(name: str, model: nn.Module, engine: Engine | None = None) -> Any:
    """The registered explainer ``name`` for ``model``, sharing ``engine``'s executor when its factory takes one.

    A name may carry options: ``"opticam:max_iter=20"``.
    """
    from .api import explainer_spec

    base, options, _ = parse_spec(name, "explainers")
    spec = explainer_spec(base)
    return spec.create(model, **sharing_executor(spec.factory, options, engine))


def sharing_executor(factory: Any, options: dict[str, Any], engine: Engine | None) -> dict[str, Any]:
    """``options`` plus ``executor=engine.executor`` when the explainer's factory takes one and none was given.

    Whoever runs the work owns one executor: an explainer made for :func:`evaluate` or the benchmark
    runner sends its passes (RISE's masks, Score-CAM's channels, Opti-CAM's steps) through it, so
    they share its graphs and measured chunk and are counted and shown (or kept quiet) with the rest.
    """
    if engine is None or "executor" in options or not _accepts(factory, "executor"):
        return options
    return {**options, "executor": engine.executor}


def explain(batch: Batch, explainer: Any) -> tuple[Any, Cost]:
    """The explainer's :class:`~xai_bridge.explainer.Explanation` of the batch, and what it cost.

    The batch's logits and targets are handed in (no second unperturbed pass; an explainer whose
    ``explanation`` takes no ``logits=`` runs its own). Cost: wall seconds; forward and backward
    inputs from the executors' counters (the batch's, and the explainer's own ``executor``) when the
    explainer runs through one, else counted on the model (:class:`_PassCounter`).
    """
    import time

    from .engine.executor import Executor

    # the batch's executor and the explainer's own (RISE, Score-CAM, Opti-CAM keep one): their passes may run
    # through a traced graph that a hook on the model does not see
    own = getattr(explainer, "executor", None)
    executors = [batch.engine.executor] + (
        [own] if isinstance(own, Executor) and own is not batch.engine.executor else []
    )
    counter = _PassCounter(batch.model)
    before = [ex.counters() for ex in executors]
    sync = torch.cuda.synchronize if batch.images.device.type == "cuda" else (lambda: None)
    sync()
    start = time.perf_counter()
    try:
        if _accepts(explainer.explanation, "logits"):
            out = explainer.explanation(batch.images, target=batch.targets, logits=batch.logits)
        else:
            out = explainer.explanation(batch.images, target=batch.targets)
        sync()
    finally:
        counter.close()
    seconds = time.perf_counter() - start
    after = [ex.counters() for ex in executors]
    forward = sum(a[0] - b[0] for a, b in zip(after, before, strict=True))
    backward = sum(a[1] - b[1] for a, b in zip(after, before, strict=True))
    if forward == 0 and backward == 0:
        forward, backward = counter.forward, counter.backward
    return out, Cost(batch.size, seconds, forward, backward)


@dataclasses.dataclass
class Scored:
    """What :func:`score` returns for one explainer on one batch, keyed by the caller's metric keys.

    Attributes:
        values: key → ``(B,)`` values, for the metrics that computed.
        curves: key → per-image curve ``{"fractions", "values"}`` of progressive metrics.
        errors: key → ``"ErrorType: message"`` for the metrics that raised (the others keep their values).
        forward: key → forward inputs of the engine runs the metric read (a run shared by several
            metrics is counted for each of them).
    """

    values: dict[str, torch.Tensor] = dataclasses.field(default_factory=dict)
    curves: dict[str, dict[str, torch.Tensor]] = dataclasses.field(default_factory=dict)
    errors: dict[str, str] = dataclasses.field(default_factory=dict)
    forward: dict[str, int] = dataclasses.field(default_factory=dict)


def _check_needs(metrics: Sequence[tuple[str, Metric]], boxes: Any, explainer: Any) -> None:
    for key, m in metrics:
        if "boxes" in getattr(m, "needs", ()) and boxes is None:
            raise InvalidArgumentError(
                f"boxes: metric {key!r} needs ground-truth boxes per image (xai_bridge.data.photo_boxes())"
            )
        if "explainer" in getattr(m, "needs", ()) and explainer is None:
            raise InvalidArgumentError(
                f"explainer: metric {key!r} re-explains images, so it needs an explainer, not maps only"
            )


def score(
    batch: Batch,
    maps: torch.Tensor,
    metrics: Sequence[tuple[str, Metric]],
    *,
    raw: torch.Tensor | None = None,
    explainer: Any = None,
    errors: str = "raise",
) -> Scored:
    """Score one explainer's maps of a batch with keyed metrics: THE scoring function.

    :func:`evaluate`, :func:`score_maps`, the benchmark runner and
    :meth:`MetricContext.rescore <xai_bridge.metric.MetricContext.rescore>` all score through it.
    Metrics are grouped by the protocol they run under (their own ``protocol=`` or the batch's):
    each group takes its masks, constant-map policy, grid and requests from its protocol. Within a
    group, metrics whose requests share a key share one engine run.

    Args:
        batch: from :func:`prepare`.
        maps: ``B×H×W`` maps (or coarser ``B×h×w``, upsampled with the protocol's resize).
        metrics: ``(key, metric)`` pairs (:func:`keyed_metrics`).
        raw: the maps at the explainer's own resolution, when known.
        explainer: the explainer that made ``maps`` (metrics that re-explain).
        errors: ``"raise"`` (the first metric error propagates) or ``"record"`` (it is kept in
            :attr:`Scored.errors` for that metric, and the others are computed).
    """
    if errors not in ("raise", "record"):
        raise InvalidArgumentError(f"errors: expected 'raise' or 'record', got {errors!r}")
    _check_needs(metrics, batch.boxes, explainer)
    engine, images = batch.engine, batch.images
    maps, raw = to_input_resolution(maps, images, batch.protocol, raw)
    maps = maps.to(engine.device)
    if raw is not None:
        raw = check_maps(raw, name="raw").to(engine.device)
        if raw.shape[0] != images.shape[0]:
            raise InvalidArgumentError(
                f"raw: {raw.shape[0]} raw maps for {images.shape[0]} images; expected one per image"
            )
    out = Scored()

    def fail(key: str, exc: Exception) -> None:
        if errors == "raise":
            raise exc
        out.errors[key] = f"{type(exc).__name__}: {exc}"

    groups: dict[str, tuple[Protocol, list[tuple[str, Metric]]]] = {}
    for key, metric in metrics:
        p = metric.protocol or batch.protocol
        ident = repr(sorted(p.as_dict().items()))
        groups.setdefault(ident, (p, []))[1].append((key, metric))
    for p, members in groups.values():
        try:
            gp = _grid_protocol(p, images, raw)
            normalized = soft_masks(gp, maps, raw)
        except Exception as exc:
            for key, _ in members:
                fail(key, exc)
            continue
        wanted: dict[str, list[Any]] = {}
        for key, metric in members:
            try:
                wanted[key] = list(metric.requests(gp))
            except Exception as exc:
                fail(key, exc)
        # metrics whose requests share a key share a run (a Flip reads its Curve's results by key)
        clusters: list[tuple[set[Any], list[str]]] = []
        for key, reqs in wanted.items():
            keys = {r.key for r in reqs}
            joined = [c for c in clusters if c[0] & keys]
            merged = (set(keys).union(*(c[0] for c in joined)), [k for c in joined for k in c[1]] + [key])
            clusters = [c for c in clusters if not any(c is j for j in joined)] + [merged]
        results: dict[Any, Any] = {}
        for _, keys_in in clusters:
            reqs = [r for k in keys_in for r in wanted[k]]
            before = engine.executor.counters()[0]
            try:
                if reqs:
                    results.update(
                        engine.run(
                            images,
                            maps,
                            batch.targets,
                            reqs,
                            constant_maps=gp.constant_maps,
                            base_logits=batch.logits,
                            masks=normalized,
                            grid=raw if gp.level == "grid" else None,
                        )
                    )
            except Exception as exc:
                for k in keys_in:
                    fail(k, exc)
                keys_in = []
            spent = engine.executor.counters()[0] - before
            for k in keys_in:
                out.forward[k] = spent
        for key, metric in members:
            if key not in wanted or key in out.errors:
                continue
            ctx = MetricContext(
                model=batch.model,
                images=images,
                maps=maps,
                normalized_maps=normalized,
                targets=batch.targets,
                logits=batch.logits,
                protocol=gp,
                results=results,
                explainer=explainer,
                labels=batch.labels,
                boxes=batch.boxes,
                engine=engine,
                raw=raw,
                batch=batch,
            )
            before = engine.executor.counters()[0]
            try:
                values = metric.compute(ctx)
                if not isinstance(values, torch.Tensor) or values.shape != (images.shape[0],):
                    raise PluginError(
                        f"metric {key!r}: compute() returned {getattr(values, 'shape', values)!r}; "
                        "expected one value per image"
                    )
                curve = metric.curves(ctx)
            except Exception as exc:
                fail(key, exc)
                continue
            out.values[key] = values.detach().float()
            out.forward[key] = out.forward.get(key, 0) + engine.executor.counters()[0] - before
            if curve is not None:
                out.curves[key] = curve
    return out


def score_maps(
    model: nn.Module,
    images: torch.Tensor,
    maps: torch.Tensor,
    metrics: Sequence[str | Metric] | Mapping[str, str | Metric],
    protocol: str | Protocol | None = None,
    targets: Target = None,
    *,
    labels: torch.Tensor | None = None,
    boxes: Sequence[Any] | None = None,
    explainer: Any = None,
    engine: Engine | None = None,
    base_logits: torch.Tensor | None = None,
    raw: torch.Tensor | None = None,
    curves: dict[str, dict[str, torch.Tensor]] | None = None,
) -> dict[str, torch.Tensor]:
    """Score given ``maps`` (``B×H×W``) with ``metrics``: ``{metric key: values (B,)}``.

    :func:`prepare` then :func:`score`; keys as :func:`keyed_metrics` gives them (the spec
    string, the label, or the metric's name).

    Args:
        model: classifier in eval mode.
        images: ``B×C×H×W`` in the protocol's masking space.
        maps: ``B×H×W`` saliency maps at input resolution, one per image.
        metrics: names, configured metrics from :func:`~xai_bridge.get_metric`, or ``{label: metric}``.
        protocol: a preset name or a :class:`~xai_bridge.protocols.Protocol` (``None``: ``"default"``).
        targets: classes to score; ``None`` = the label when the protocol says so and
            ``labels`` are given, else the predicted class.
        labels: ground-truth classes, ``(B,)``.
        boxes: per image, a list of ``[x0, y0, x1, y1]`` boxes (localisation metrics).
        explainer: the explainer that made ``maps``, for metrics that re-explain.
        engine: a configured engine (memory budget, autocast); a default one otherwise.
        base_logits: logits of the unperturbed images when already computed.
        raw: the maps at the explainer's own resolution: the cells of ``level="grid"`` (ranked by
            its values) and the masks of ``mask_from="raw"``.
        curves: a dict that receives each progressive metric's per-image curve.

    Returns:
        ``{metric key: (B,) float tensor}``.
    """
    keyed = keyed_metrics(metrics)
    batch = prepare(
        model, images, protocol, targets, labels=labels, boxes=boxes, engine=engine, base_logits=base_logits
    )
    scored = score(batch, maps, keyed, raw=raw, explainer=explainer)
    if curves is not None:
        curves.update(scored.curves)
    return scored.values


def keyed_explainers(
    explainers: Sequence[Any] | Mapping[str, Any], maps: Mapping[str, Any] | None, model: nn.Module, engine: Engine
) -> list[tuple[str, Any]]:
    """``(key, explainer or None)``: ``None`` for the keys of ``maps`` (scored as given, nothing is run).

    A key both listed and in ``maps``: the given maps win, and that explainer is not run.
    """
    given = dict(maps or {})
    if isinstance(explainers, Mapping):
        items: list[tuple[str | None, Any]] = [(str(k), e) for k, e in explainers.items()]
    elif isinstance(explainers, str) or not isinstance(explainers, Sequence):
        raise InvalidTypeError(
            f"explainers: expected a list of names or explainers, or a {{label: explainer}} dict, got "
            f"{type(explainers).__name__}"
        )
    else:
        items = [(None, e) for e in explainers]
    out: list[tuple[str, Any]] = []
    for label, e in items:
        if isinstance(e, str):
            key = label or e.strip()
            out.append((key, None if key in given else make_explainer(e, model, engine)))
        elif hasattr(e, "explanation"):
            out.append((label or str(getattr(e, "name", type(e).__name__)), e))
        else:
            raise InvalidTypeError(
                f"explainers: expected names or explainers from get_explainer(), got {type(e).__name__}"
            )
    keys = [k for k, _ in out]
    for key in keys:
        if keys.count(key) > 1:
            raise InvalidArgumentError(
                f"explainers: {key!r} is given twice; give each a label: explainers={{'label-1': ..., 'label-2': ...}}"
            )
    out = [(k, None if k in given else e) for k, e in out]
    out += [(k, None) for k in given if k not in keys]
    return out


def evaluate(
    model: nn.Module,
    images: torch.Tensor,
    explainers: Sequence[Any] | Mapping[str, Any],
    metrics: Sequence[str | Metric] | Mapping[str, str | Metric],
    protocol: str | Protocol | None = None,
    targets: Target = None,
    *,
    labels: torch.Tensor | Sequence[int] | None = None,
    image_ids: Sequence[str] | None = None,
    boxes: Sequence[Any] | None = None,
    maps: Mapping[str, torch.Tensor] | None = None,
    batch_size: int = 16,
    engine: Engine | None = None,
    compile: str | None = None,
    precision: str | None = None,
    errors: str = "record",
    progress: bool = True,
) -> Results:
    """Evaluate explainers with metrics: one row per image × explainer × metric key.

    Args:
        model: classifier in eval mode (on any device; images are moved to it).
        images: ``B×C×H×W`` in the protocol's masking space ([0, 1] for pixel space).
        explainers: names (``"opticam:max_iter=20"`` with options), configured explainers from
            :func:`~xai_bridge.get_explainer`, or ``{label: explainer}``. Each explains every image
            once; all metrics share its maps.
        metrics: names or specs (``"pixel_flipping:features_in_step=3584"``), configured metrics from
            :func:`~xai_bridge.get_metric`, or ``{label: metric}``. Rows are keyed by what was given
            (see :func:`keyed_metrics`): two configurations of one metric are two columns.
        protocol: a preset name (``"default"``, ``"opticam"``, ``"rise"``, ``"tutorial"``,
            ``"deepmaps"``, ``"quantus"``) or a :class:`~xai_bridge.protocols.Protocol`.
        targets: classes to explain and score; ``None`` = the label when the protocol says so
            and ``labels`` are given, else the predicted class.
        labels: ground-truth classes (OM, ``target="label"`` protocols).
        image_ids: names for the rows (default ``"0"``, ``"1"``, …).
        boxes: per image, a list of ``[x0, y0, x1, y1]`` boxes (localisation metrics).
        maps: precomputed ``{explainer key: B×H×W}`` maps. They are scored as given and nothing is
            run for that key, also when the same key is listed in ``explainers`` (the given maps win).
        batch_size: images per explanation batch.
        engine: a configured :class:`~xai_bridge.engine.Engine` (memory budget, graph mode, precision).
        compile: graph mode of the engine's forward passes (``"auto"`` by default: the faster of eager and
            freeze that agrees with eager within 1e-5; ``"eager"``, ``"freeze"``, ``"inductor"``; see
            :mod:`xai_bridge.engine.forward`); not with ``engine``.
        precision: ``"float32"`` (default), ``"bfloat16"`` or ``"float16"`` autocast for the
            engine's forward passes (explainers are not affected); not with ``engine``.
        errors: ``"record"`` (default): a metric that raises on a batch gets its error recorded in
            :attr:`Results.errors <xai_bridge.results.Results.errors>` (and a warning), the other metrics
            keep their values; ``"raise"``: the error propagates.
        progress: progress bar over explainers.

    Returns:
        A :class:`~xai_bridge.results.Results`: its ``rows`` (image, explainer, metric, value,
        protocol), the mean curves, the errors, the costs (explainer seconds and passes per image,
        metric forward inputs per image), ``summary()``, ``to_frame()``, ``to_csv()``, ``to_json()``;
        its ``forward`` says how the engine's forward passes were computed.
    """
    if engine is not None and (compile is not None or precision is not None):
        raise InvalidArgumentError("compile, precision: give them to the Engine you pass as engine=, not to evaluate()")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InvalidArgumentError(f"batch_size: expected a positive integer, got {batch_size!r}")
    keyed = keyed_metrics(metrics)
    engine = engine or Engine(model, compile=compile or "auto", precision=precision, progress=False)
    # one check, one unperturbed pass and one target resolution for the whole call
    whole = prepare(model, images, protocol, targets, labels=labels, boxes=boxes, image_ids=image_ids, engine=engine)
    named = keyed_explainers(explainers, maps, model, engine)
    _check_needs(keyed, whole.boxes, explainer=True)
    given = {k: to_input_resolution(maps[k], whole.images, whole.protocol) for k, e in named if e is None and maps}
    out = Results(protocols={whole.protocol.name: whole.protocol.as_dict()})
    for key, metric in keyed:
        out.directions[key] = metric.higher_is_better
        if metric.curve_kind is not None:
            out.curve_kinds[key] = metric.curve_kind
    iterator: Any = named
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(named, desc="evaluate", unit="explainer")
    for name, explainer in iterator:
        cost = Cost(0)
        metric_forward: dict[str, int] = {}
        curve_parts: dict[str, list[dict[str, torch.Tensor]]] = {}
        values: dict[str, list[torch.Tensor]] = {}
        for s in range(0, whole.size, batch_size):
            part = _slice(whole, s, s + batch_size)
            if explainer is None:
                explained, raw = given[name][0][s : s + batch_size], _cut(given[name][1], s, s + batch_size)
            else:
                exp, c = explain(part, explainer)
                explained, raw = exp.maps, exp.raw
                cost = Cost(
                    cost.images + c.images,
                    cost.seconds + c.seconds,
                    cost.forward + c.forward,
                    cost.backward + c.backward,
                )
            scored = score(part, explained, keyed, raw=raw, explainer=explainer, errors=errors)
            for k, err in scored.errors.items():
                out.errors.append({"images": part.ids, "explainer": name, "metric": k, "error": err})
                warnings.warn(
                    f"metric {k!r} failed for explainer {name!r} on images {', '.join(part.ids)}: {err}",
                    MetricValueWarning,
                    stacklevel=2,
                )
            for k, v in scored.values.items():
                values.setdefault(k, []).append(v)
            for k, n in scored.forward.items():
                metric_forward[k] = metric_forward.get(k, 0) + n
            for k, c2 in scored.curves.items():
                curve_parts.setdefault(k, []).append(c2)
        for key, _ in keyed:
            if key not in values:
                continue
            ids = [i for s in range(0, whole.size, batch_size) for i in whole.ids[s : s + batch_size]]
            got = torch.cat(values[key])
            if got.shape[0] != whole.size:  # a batch of this metric failed: its images have no rows
                ids = [i for s, part in _parts_ok(out.errors, name, key, whole, batch_size) for i in part]
            warn_non_finite(key, name, ids, got)
            for image, value in zip(ids, got.cpu().tolist(), strict=True):
                out.rows.append(
                    {"image": image, "explainer": name, "metric": key, "value": value, "protocol": whole.protocol.name}
                )
        out.families[name] = getattr(explainer, "family", "other") if explainer is not None else "other"
        if explainer is not None:
            out.costs[name] = {"images": whole.size, **cost.per_image()} if whole.size else {}
        for key, n in metric_forward.items():
            out.metric_costs.setdefault(key, {})[name] = n / whole.size
        for key, parts in curve_parts.items():
            fractions = parts[0]["fractions"]
            mean = torch.cat([p["values"] for p in parts]).mean(0)
            out.curves[(name, key)] = {"fractions": fractions.cpu().tolist(), "mean": mean.cpu().tolist()}
    out.forward = engine.describe()
    return out


def _cut(t: torch.Tensor | None, start: int, stop: int) -> torch.Tensor | None:
    return None if t is None else t[start:stop]


def _slice(batch: Batch, start: int, stop: int) -> Batch:
    """Images ``start:stop`` of a prepared batch (nothing checked or computed again)."""
    return dataclasses.replace(
        batch,
        images=batch.images[start:stop],
        ids=batch.ids[start:stop],
        targets=batch.targets[start:stop],
        logits=batch.logits[start:stop],
        labels=_cut(batch.labels, start, stop),
        boxes=None if batch.boxes is None else list(batch.boxes)[start:stop],
    )


def _parts_ok(
    errors: Sequence[dict[str, Any]], explainer: str, metric: str, whole: Batch, batch_size: int
) -> list[tuple[int, list[str]]]:
    failed = {tuple(e["images"]) for e in errors if e["explainer"] == explainer and e["metric"] == metric}
    parts = [(s, whole.ids[s : s + batch_size]) for s in range(0, whole.size, batch_size)]
    return [(s, ids) for s, ids in parts if tuple(ids) not in failed]

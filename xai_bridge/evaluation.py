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
from .errors import InvalidArgumentError, InvalidTypeError, MetricValueWarning
from .metric import Metric, MetricContext
from .protocols import Protocol, get_protocol
from .results import Results
from .targets import Target, check_images, check_model_ready, resolve_targets


def as_metric(metric: str | Metric) -> Metric:
    """A configured metric from a name or an object."""
    if isinstance(metric, str):
        from .api import get_metric

        return get_metric(metric)
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


def _check_inputs(
    protocol: Protocol, images: torch.Tensor, metrics: Sequence[Metric], boxes: Any, explainer: Any
) -> None:
    if protocol.space == "pixel":
        lo, hi = float(images.min()), float(images.max())
        if lo < -1e-6 or hi > 1 + 1e-6:
            raise InvalidArgumentError(
                f"images: values in [{lo:.3g}, {hi:.3g}] but protocol {protocol.name!r} masks in pixel space [0, 1] "
                "(black = 0); pass unnormalised images (the model normalises) or use space='normalized'"
            )
    for m in metrics:
        if "boxes" in getattr(m, "needs", ()) and boxes is None:
            raise InvalidArgumentError(
                f"boxes: metric {m.name!r} needs ground-truth boxes per image (xai_bridge.data.photo_boxes())"
            )
        if "explainer" in getattr(m, "needs", ()) and explainer is None:
            raise InvalidArgumentError(
                f"explainer: metric {m.name!r} re-explains images, so it needs an explainer, not maps only"
            )


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


def score_maps(
    model: nn.Module,
    images: torch.Tensor,
    maps: torch.Tensor,
    metrics: Sequence[str | Metric],
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
    """Score given ``maps`` (``B×H×W``) with ``metrics``: ``{metric name: values (B,)}``.

    Every metric's engine requests go through one :class:`~xai_bridge.engine.Engine` run.

    Args:
        model: classifier in eval mode.
        images: ``B×C×H×W`` in the protocol's masking space.
        maps: ``B×H×W`` saliency maps at input resolution, one per image.
        metrics: names, or configured metrics from :func:`~xai_bridge.get_metric`.
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
        ``{metric name: (B,) float tensor}``.
    """
    check_model_ready(model)
    check_images(images)
    protocol = get_protocol(protocol)
    metric_objs = [as_metric(m) for m in metrics]
    _check_inputs(protocol, images, metric_objs, boxes, explainer)
    engine = engine or Engine(model, progress=False)
    images = images.to(engine.device)
    maps, raw = to_input_resolution(maps, images, protocol, raw)
    maps = maps.to(engine.device)
    if raw is not None:
        raw = check_maps(raw, name="raw").to(engine.device)
        if raw.shape[0] != images.shape[0]:
            raise InvalidArgumentError(
                f"raw: {raw.shape[0]} raw maps for {images.shape[0]} images; expected one per image"
            )
    protocol = _grid_protocol(protocol, images, raw)
    if base_logits is None:
        base_logits = engine.forward_chunks(images.shape[0], lambda s, e: images[s:e], images)
    if targets is None and protocol.target == "label" and labels is not None:
        targets = labels
    targets = resolve_targets(targets, images.shape[0], logits=base_logits, device=engine.device)
    if (targets >= base_logits.shape[1]).any():
        raise InvalidArgumentError(
            f"targets: class indices must be in [0, {base_logits.shape[1]}), got {targets.tolist()}"
        )
    per_metric = [(m, m.protocol or protocol) for m in metric_objs]
    requests = [r for m, p in per_metric for r in m.requests(_grid_protocol(p, images, raw))]
    normalized = soft_masks(protocol, maps, raw)
    results = engine.run(
        images,
        maps,
        targets,
        requests,
        constant_maps=protocol.constant_maps,
        base_logits=base_logits,
        masks=normalized,
        grid=raw if protocol.level == "grid" else None,
    )
    out: dict[str, torch.Tensor] = {}
    for metric, p in per_metric:
        ctx = MetricContext(
            model=model,
            images=images,
            maps=maps,
            normalized_maps=normalized,
            targets=targets,
            logits=base_logits,
            protocol=_grid_protocol(p, images, raw),
            results=results,
            explainer=explainer,
            labels=labels,
            boxes=boxes,
            engine=engine,
            scorer=score_maps,
            raw=raw,
        )
        values = metric.compute(ctx)
        if not isinstance(values, torch.Tensor) or values.shape != (images.shape[0],):
            raise RuntimeError(
                f"metric {metric.name!r}: compute() returned {getattr(values, 'shape', values)!r}; "
                "expected one value per image"
            )
        out[metric.name] = values.detach().float()
        if curves is not None:
            curve = metric.curves(ctx)
            if curve is not None:
                curves[metric.name] = curve
    return out


def evaluate(
    model: nn.Module,
    images: torch.Tensor,
    explainers: Sequence[Any],
    metrics: Sequence[str | Metric],
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
    progress: bool = True,
) -> Results:
    """Evaluate explainers with metrics: one row per image × explainer × metric.

    Args:
        model: classifier in eval mode (on any device; images are moved to it).
        images: ``B×C×H×W`` in the protocol's masking space ([0, 1] for pixel space).
        explainers: names, or configured explainers from :func:`~xai_bridge.get_explainer`.
            Each explains every image once; all metrics share its maps.
        metrics: names, or configured metrics from :func:`~xai_bridge.get_metric`.
        protocol: a preset name (``"default"``, ``"opticam"``, ``"rise"``, ``"tutorial"``,
            ``"deepmaps"``, ``"quantus"``) or a :class:`~xai_bridge.protocols.Protocol`.
        targets: classes to explain and score; ``None`` = the label when the protocol says so
            and ``labels`` are given, else the predicted class.
        labels: ground-truth classes (OM, ``target="label"`` protocols).
        image_ids: names for the rows (default ``"0"``, ``"1"``, …).
        boxes: per image, a list of ``[x0, y0, x1, y1]`` boxes (localisation metrics).
        maps: precomputed ``{explainer name: B×H×W}`` maps (those explainers are not run).
        batch_size: images per explanation batch.
        engine: a configured :class:`~xai_bridge.engine.Engine` (memory budget, graph mode, precision).
        compile: graph mode of the engine's forward passes (``"auto"`` by default: the faster of eager and
            freeze that agrees with eager within 1e-5; ``"eager"``, ``"freeze"``, ``"inductor"``; see
            :mod:`xai_bridge.engine.forward`); not with ``engine``.
        precision: ``"float32"`` (default), ``"bfloat16"`` or ``"float16"`` autocast for the
            engine's forward passes (explainers are not affected); not with ``engine``.
        progress: progress bar over explainers.

    Returns:
        A :class:`~xai_bridge.results.Results`: its ``rows`` (image, explainer, metric, value,
        protocol), the mean curves, ``summary()``, ``to_frame()``, ``to_csv()``, ``to_json()``;
        its ``forward`` says how the engine's forward passes were computed.
    """
    if engine is not None and (compile is not None or precision is not None):
        raise InvalidArgumentError("compile, precision: give them to the Engine you pass as engine=, not to evaluate()")
    check_model_ready(model)
    check_images(images)
    protocol = get_protocol(protocol)
    metric_objs = [as_metric(m) for m in metrics]
    b = images.shape[0]
    ids = [str(i) for i in range(b)] if image_ids is None else [str(i) for i in image_ids]
    if len(ids) != b:
        raise InvalidArgumentError(f"image_ids: {len(ids)} names for {b} images")
    if len(set(ids)) != b:
        raise InvalidArgumentError("image_ids: names must be unique (they key the rows)")
    engine = engine or Engine(model, compile=compile or "auto", precision=precision, progress=False)
    images = images.to(engine.device)
    label_t = None if labels is None else torch.as_tensor(labels, device=engine.device).long().view(-1)
    if label_t is not None and label_t.numel() != b:
        raise InvalidArgumentError(f"labels: {label_t.numel()} labels for {b} images")
    base_logits = engine.forward_chunks(b, lambda s, e: images[s:e], images)
    if targets is None and protocol.target == "label" and label_t is not None:
        targets = label_t
    target_t = resolve_targets(targets, b, logits=base_logits, device=engine.device)
    _check_inputs(protocol, images, metric_objs, boxes, explainer=True)

    from .api import get_explainer

    named: list[tuple[str, Any]] = []
    for e in explainers:
        if isinstance(e, str):
            named.append((e, get_explainer(e, model)))
        else:
            if not hasattr(e, "explanation"):
                raise InvalidTypeError(
                    f"explainers: expected names or explainers from get_explainer(), got {type(e).__name__}"
                )
            named.append((getattr(e, "name", type(e).__name__), e))
    for name in maps or {}:
        named.append((name, None))

    out = Results(protocols={protocol.name: protocol.as_dict()})
    for m in metric_objs:
        out.directions[m.name] = m.higher_is_better
    iterator: Any = named
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(named, desc="evaluate", unit="explainer")
    for name, explainer in iterator:
        raw = None
        if explainer is None:
            assert maps is not None  # named only when maps were given
            given, raw = to_input_resolution(maps[name], images, protocol)
            explained = given.to(engine.device)
        else:
            parts = [
                explainer.explanation(images[s : s + batch_size], target=target_t[s : s + batch_size])
                for s in range(0, b, batch_size)
            ]
            explained = torch.cat([p.maps for p in parts])
            raw = None if parts[0].raw is None else torch.cat([p.raw for p in parts if p.raw is not None])
        curves: dict[str, dict[str, torch.Tensor]] = {}
        scores = score_maps(
            model,
            images,
            explained,
            metric_objs,
            protocol,
            target_t,
            labels=label_t,
            boxes=boxes,
            explainer=explainer,
            engine=engine,
            base_logits=base_logits,
            raw=raw,
            curves=curves,
        )
        for metric_name, values in scores.items():
            warn_non_finite(metric_name, name, ids, values)
            for image, value in zip(ids, values.cpu().tolist(), strict=True):
                out.rows.append(
                    {
                        "image": image,
                        "explainer": name,
                        "metric": metric_name,
                        "value": value,
                        "protocol": protocol.name,
                    }
                )
        out.families[name] = getattr(explainer, "family", "other") if explainer is not None else "other"
        for metric in metric_objs:
            if metric.curve_kind is not None:
                out.curve_kinds[metric.name] = metric.curve_kind
        for metric_name, c in curves.items():
            out.curves[(name, metric_name)] = {
                "fractions": c["fractions"].cpu().tolist(),
                "mean": c["values"].mean(0).cpu().tolist(),
            }
    out.forward = engine.describe()
    return out

"""The benchmark runner: explainers × metrics over a data source, stored as it goes.

Images are split into fixed batches (the same split on one process or many, so
batch-dependent metrics such as Δσ, whose references are other images of the batch,
give the same values). A unit of work is one batch × one explainer; each unit calls
:func:`xai_bridge.evaluate` for the metrics not stored yet and is written in one
transaction, so a killed run resumes exactly where it stopped and a finished one is a
no-op. Under ``torchrun`` the batches are shared across ranks (see
:mod:`xai_bridge.runner.distributed`).

>>> from xai_bridge.runner import BenchmarkConfig, run_benchmark
>>> results = run_benchmark(BenchmarkConfig(images="default:chelsea,coffee", explainers=["fakecam", "random"],
...                                         metrics=["average_drop"], store="/tmp/xb-doc/bench.sqlite",
...                                         out=None, progress=False))
>>> sorted(results.explainers)
['fakecam', 'random']
"""

from __future__ import annotations

import hashlib
import json
import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import InvalidArgumentError
from ..results import Results
from ..specs import parse_spec
from .data import Item, Source, load_batch, open_source
from .store import CostRecord, CurveRecord, ErrorRecord, RowRecord, Store, merge_curves

Spec = "str | tuple[str, dict[str, Any]] | tuple[str, dict[str, Any], str]"


@dataclass
class BenchmarkConfig:
    """Everything a benchmark run needs.

    Attributes:
        images: ``"default"`` (the embedded photos), ``"default:chelsea,coffee"``, an
            ImageFolder directory, a list file, or a :class:`~xai_bridge.runner.data.Source`.
        explainers: specs ``"name"``, ``"name:key=value,..."``, ``(name, options)`` or
            ``(name, options, label)``; the label names the explainer in results (default: its name).
        metrics: specs as for explainers (``"delta:metric=n_morf"``); results use the metric's own name.
        protocol: a preset name or a :class:`~xai_bridge.protocols.Protocol`.
        model: a classifier taking ``[0, 1]`` images; ``None`` = the default EfficientNet-Lite0.
        model_name: how the report names the model.
        size: image side after resize and centre crop.
        batch_size: images per batch (batches are split evenly, so none is a lone image).
        store: the SQLite file of results (resumable).
        out: report folder (``report.md``, ``report.html``, ``figures/``); ``None`` = no report.
        device: torch device for the model and images (``None`` = the model's; under
            ``torchrun`` with CUDA, each rank takes ``cuda:LOCAL_RANK``).
        grid_images: how many images the report's saliency grid shows.
        compile: graph mode of the engine's forward passes (``"auto"``, the default, ``"eager"``, ``"freeze"``,
            ``"inductor"``; see :mod:`xai_bridge.engine.forward`): exact within 1e-5, so a store
            computed in one mode resumes in another; results record the mode.
        precision: ``"float32"``, ``"bfloat16"`` or ``"float16"`` autocast for the engine's forward
            passes. It changes scores, so a reduced precision is part of the configuration hash.
        progress: progress bars (stderr).
        score: the scoring function (default :func:`xai_bridge.evaluation.score`, the one
            :func:`xai_bridge.evaluate` uses; tests put a stand-in with its signature here).
        notes: lines the report shows under its settings (e.g. why iteration counts are small).
        title: the report's title.
    """

    images: Any = "default"
    explainers: Sequence[Any] = ()
    metrics: Sequence[Any] = ()
    protocol: Any = "default"
    model: Any = None
    model_name: str = "EfficientNet-Lite0 (xai-bridge default)"
    size: int = 224
    batch_size: int = 8
    store: str | Path = "out/benchmark/benchmark.sqlite"
    out: str | Path | None = "out/benchmark"
    device: Any = None
    grid_images: int = 4
    compile: str = "auto"
    precision: str = "float32"
    progress: bool = True
    score: Callable[..., Any] | None = None
    notes: list[str] = field(default_factory=list)
    title: str = "xai-bridge benchmark"


@dataclass(frozen=True)
class Entry:
    """A configured explainer or metric: ``key`` (canonical spec, stored), ``label`` (shown), the object."""

    name: str
    options: dict[str, Any]
    key: str
    label: str
    obj: Any = None


@dataclass
class RunInfo:
    """What one call of :func:`run_benchmark` did (also shown in the report)."""

    config_hash: str
    units_total: int = 0
    units_computed: int = 0
    rows_written: int = 0
    skipped: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    world_size: int = 1
    failures: list[str] = field(default_factory=list)


def _canonical(name: str, options: dict[str, Any]) -> str:
    return name if not options else f"{name} {json.dumps(options, sort_keys=True, default=repr)}"


def _explainer_entries(specs: Sequence[Any], model: Any, engine: Any = None) -> list[Entry]:
    import xai_bridge as xb

    from ..evaluation import sharing_executor

    if not specs:
        raise InvalidArgumentError("explainers: none given; name at least one (see `xai-bridge plugins`)")
    entries = []
    for spec in specs:
        name, options, label = parse_spec(spec, "explainers")
        canonical = xb.explainer_spec(name).name
        obj = None
        if model is not None:  # explainers that take an executor run on the run's one
            factory = xb.explainer_spec(name).factory
            obj = xb.get_explainer(canonical, model, **sharing_executor(factory, options, engine))
        entries.append(Entry(canonical, options, _canonical(canonical, options), label or canonical, obj))
    _unique(entries, "explainers")
    return entries


def _metric_entries(specs: Sequence[Any]) -> list[Entry]:
    import xai_bridge as xb

    if not specs:
        raise InvalidArgumentError("metrics: none given; name at least one (see `xai-bridge plugins`)")
    made = []
    for spec in specs:
        name, options, label = parse_spec(spec, "metrics")
        canonical = xb.metric_spec(name).name
        made.append((canonical, options, label, xb.get_metric(canonical, **options)))
    names = [str(getattr(obj, "name", canonical)) for canonical, _, _, obj in made]
    entries = []
    for (canonical, options, label, obj), own in zip(made, names, strict=True):
        # the label: the one given, else the metric's own name, else (two configurations of one metric) the spec
        default = own if names.count(own) == 1 else _spec_label(canonical, options)
        entries.append(Entry(canonical, options, _canonical(canonical, options), label or default, obj))
    _unique(entries, "metrics")
    return entries


def _spec_label(name: str, options: dict[str, Any]) -> str:
    return name + (":" + ",".join(f"{k}={v!r}" for k, v in sorted(options.items())) if options else "")


def _unique(entries: Sequence[Entry], what: str) -> None:
    for attr in ("key", "label"):
        seen: dict[str, Entry] = {}
        for e in entries:
            if getattr(e, attr) in seen:
                raise InvalidArgumentError(
                    f"{what}: {getattr(e, attr)!r} is given twice; give each a different label, e.g. ({e.name!r}, "
                    f"{e.options!r}, 'my-label')"
                )
            seen[getattr(e, attr)] = e


def model_fingerprint(model: Any) -> str:
    """A hash of the model's class and weights (what makes two runs comparable)."""
    import torch

    h = hashlib.blake2b(type(model).__qualname__.encode(), digest_size=12)
    for name, tensor in model.state_dict().items():
        h.update(name.encode())
        h.update(tensor.detach().to("cpu").contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def split_batches(items: Sequence[Item], batch_size: int) -> list[list[Item]]:
    """``ceil(n / batch_size)`` batches of near-equal size (9 images, size 4 → 3, 3, 3)."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InvalidArgumentError(f"batch_size: expected a positive integer, got {batch_size!r}")
    n = len(items)
    count = max(1, math.ceil(n / batch_size))
    base, extra = divmod(n, count)
    out, start = [], 0
    for i in range(count):
        size = base + (1 if i < extra else 0)
        out.append(list(items[start : start + size]))
        start += size
    return [b for b in out if b]


def _bar(total: int, desc: str, enabled: bool, unit: str) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit=unit, disable=not enabled, file=sys.stderr)


def _say(message: str) -> None:
    """A line on stderr that does not break the progress bars."""
    from tqdm.auto import tqdm

    tqdm.write(message, file=sys.stderr)


class Plan:
    """The configured run: model, source, entries, batches and the configuration hash."""

    def __init__(self, config: BenchmarkConfig, device: Any = None) -> None:
        import torch

        from ..protocols import get_protocol

        self.config = config
        if config.model is None:
            from ..models import default_model

            model = default_model()
        else:
            model = config.model
        if not hasattr(model, "state_dict") or not callable(model):
            raise InvalidArgumentError(f"model: expected a torch.nn.Module classifier, got {type(model).__name__}")
        if getattr(model, "training", False):
            raise InvalidArgumentError(
                "model: is in training mode; call model.eval() first (dropout/batch-norm change the scores)"
            )
        if device is None and config.device is not None:
            device = torch.device(config.device)
        self.model = model.to(device) if device is not None else model
        self.protocol = get_protocol(config.protocol)
        from ..engine.forward import check_compile, check_precision
        from ..models import model_device

        check_compile(config.compile)
        check_precision(config.precision, model_device(self.model))
        if isinstance(config.size, bool) or not isinstance(config.size, int) or config.size < 8:
            raise InvalidArgumentError(f"size: expected an image side ≥ 8 pixels, got {config.size!r}")
        self.source: Source = config.images if isinstance(config.images, Source) else open_source(config.images)
        # one executor per model: every forward pass of the run (unperturbed, explainers that take it, metrics)
        from ..engine import Engine

        self.engine = Engine(self.model, compile=config.compile, precision=config.precision, progress=False)
        self.explainers = _explainer_entries(config.explainers, self.model, self.engine)
        self.metrics = _metric_entries(config.metrics)
        self.batches = split_batches(self.source.items, config.batch_size)
        self.grid_ids = {i.id for i in self.source.items[: max(0, config.grid_images)]}
        self.settings = {
            "model": model_fingerprint(model),
            "protocol": self.protocol.as_dict(),
            "size": config.size,
            "batches": [[i.id for i in b] for b in self.batches],
            "source": self.source.identity,
            "labels": [i.label for i in self.source.items],
        }
        if config.precision != "float32":  # float32 keeps the hashes of stores made before precision existed
            self.settings["precision"] = config.precision
        self.config_hash = hashlib.blake2b(
            json.dumps(self.settings, sort_keys=True, default=repr).encode(), digest_size=10
        ).hexdigest()
        self.directions = {m.label: bool(getattr(m.obj, "higher_is_better", True)) for m in self.metrics}

    @property
    def device(self) -> Any:
        from ..models import model_device

        return model_device(self.model)

    def pending(
        self, batch: Sequence[Item], done: set[tuple[str, str, str]], skipped: set[str]
    ) -> list[tuple[Entry, list[Entry]]]:
        """Explainers with the metrics missing for some image of ``batch``."""
        images = [i.id for i in batch if i.id not in skipped]
        if not images:
            return []
        out = []
        for e in self.explainers:
            missing = [m for m in self.metrics if any((image, e.key, m.key) not in done for image in images)]
            if missing:
                out.append((e, missing))
        return out

    def run_units(
        self,
        store: Store,
        work: Sequence[tuple[int, list[Item], list[tuple[Entry, list[Entry]]]]],
        skipped: set[str],
        info: RunInfo,
        label: str = "",
    ) -> None:
        """Compute the units ``(batch index, batch, [(explainer, missing metrics)])`` into ``store``.

        Per batch: the images are checked and their unperturbed logits computed once; per explainer:
        one explanation (its cost measured), then :func:`xai_bridge.evaluation.score` with every
        missing metric. A metric that raises records its error for that unit; the others are written.
        """
        import torch

        from ..evaluation import explain, prepare, score

        info.units_total += sum(len(p) for _, _, p in work)
        progress = self.config.progress
        bar = _bar(sum(len(p) for _, _, p in work), f"explain+score{label}", progress, "unit")
        try:
            for index, batch, pending in work:

                def report_skip(item: Item, reason: str) -> None:
                    store.mark_skipped(self.config_hash, item.id, reason)
                    skipped.add(item.id)
                    info.skipped[item.id] = reason
                    _say(f"skipped {item.id}: {reason}")

                images, kept = load_batch([i for i in batch if i.id not in skipped], self.config.size, report_skip)
                if images is None:
                    bar.update(len(pending))
                    continue
                images = images.to(self.device)
                labels = (
                    torch.tensor([i.label for i in kept], device=self.device)
                    if all(i.label is not None for i in kept)
                    else None
                )
                ids = [i.id for i in kept]
                grid = [k for k, i in enumerate(kept) if i.id in self.grid_ids]
                # one check, one unperturbed pass and one target resolution per batch, for every explainer
                batch_in = prepare(self.model, images, self.protocol, labels=labels, image_ids=ids, engine=self.engine)
                tag = f"{index:06d}"
                for explainer, metrics in pending:
                    bar.set_postfix_str(f"batch {index + 1}/{len(self.batches)} {explainer.label}", refresh=False)
                    explanation, cost = explain(batch_in, explainer.obj)
                    scored = (self.config.score or score)(
                        batch_in,
                        explanation.maps,
                        [(m.label, m.obj) for m in metrics],
                        raw=explanation.raw,
                        explainer=explainer.obj,
                        errors="record",
                    )
                    rows, curves, errors, costs = self._records(scored, explainer, metrics, tag, ids, cost)
                    for e in errors:
                        message = f"batch {index + 1} ({', '.join(ids)}) × {explainer.label} × {e.metric}: {e.error}"
                        info.failures.append(message)
                        _say(f"not scored, left out: {message}")
                    info.rows_written += store.write_unit(self.config_hash, rows, curves, errors, costs)
                    if grid:
                        probs = batch_in.logits.float().softmax(-1)
                        for k in grid:
                            t = int(batch_in.targets[k])
                            store.put_map(
                                self.config_hash,
                                ids[k],
                                explainer.key,
                                explanation.maps[k].detach().float().cpu().numpy(),
                                _title(ids[k], t, float(probs[k, t]), probs.shape[-1]),
                            )
                    info.units_computed += 1
                    bar.update(1)
        finally:
            bar.close()

    def _records(
        self, scored: Any, explainer: Entry, metrics: Sequence[Entry], batch: str, ids: Sequence[str], cost: Any
    ) -> tuple[list[RowRecord], list[CurveRecord], list[ErrorRecord], list[CostRecord]]:
        """What one unit writes: rows and curves keyed by the entries' keys, the errors, the costs."""
        rows, curves, errors = [], [], []
        costs = [CostRecord(batch, explainer.key, "", len(ids), cost.seconds, cost.forward, cost.backward)]
        for m in metrics:
            if m.label in scored.errors:
                errors.append(
                    ErrorRecord(
                        batch, explainer.key, m.key, explainer.label, m.label, tuple(ids), scored.errors[m.label]
                    )
                )
                continue
            values = scored.values[m.label].cpu().tolist()
            rows += [
                RowRecord(image, explainer.key, explainer.label, m.key, m.label, float(v), self.protocol.name)
                for image, v in zip(ids, values, strict=True)
            ]
            costs.append(CostRecord(batch, explainer.key, m.key, len(ids), 0.0, scored.forward.get(m.label, 0), 0))
            curve = scored.curves.get(m.label)
            if curve is not None:
                curves.append(
                    CurveRecord(
                        batch,
                        explainer.key,
                        m.key,
                        tuple(curve["fractions"].cpu().tolist()),
                        tuple(curve["values"].float().mean(0).cpu().tolist()),
                        len(ids),
                    )
                )
        return rows, curves, errors, costs

    def grid_maps(self, store: Store) -> None:
        """Saliency maps of the first ``grid_images`` readable images for the report (stored once)."""
        import torch

        count = self.config.grid_images
        if not count:
            return
        skipped = set(store.skipped(self.config_hash))
        have = set(store.maps(self.config_hash))
        items = [i for i in self.source.items if i.id not in skipped][:count]
        todo = [e for e in self.explainers if any((i.id, e.key) not in have for i in items)]
        if not items or not todo:
            return
        images, kept = load_batch(
            items, self.config.size, lambda item, reason: store.mark_skipped(self.config_hash, item.id, reason)
        )
        if images is None:
            return
        images = images.to(self.device)
        with torch.no_grad():
            logits = self.model(images)
        probs = logits.float().softmax(-1)
        labels = [i.label for i in kept]
        if self.protocol.target == "label" and all(lab is not None for lab in labels):
            targets = torch.tensor(labels, device=self.device)
        else:
            targets = probs.argmax(-1)
        titles = [
            _title(i.id, int(t), float(probs[k, int(t)]), probs.shape[-1])
            for k, (i, t) in enumerate(zip(kept, targets.tolist(), strict=False))
        ]
        bar = _bar(len(todo), "saliency grid", self.config.progress, "explainer")
        for e in todo:
            maps = e.obj.explain(images, target=targets)
            for k, item in enumerate(kept):
                store.put_map(self.config_hash, item.id, e.key, maps[k].detach().float().cpu().numpy(), titles[k])
            bar.update(1)
        bar.close()

    def results(self, store: Store) -> Results:
        """The stored results of this configuration, for these explainers and metrics, in order."""
        order_image = {i.id: k for k, i in enumerate(self.source.items)}
        order_e = {e.key: k for k, e in enumerate(self.explainers)}
        order_m = {m.key: k for k, m in enumerate(self.metrics)}
        records = [
            r
            for r in store.rows(self.config_hash)
            if r.explainer_key in order_e and r.metric_key in order_m and r.image in order_image
        ]
        records.sort(key=lambda r: (order_e[r.explainer_key], order_m[r.metric_key], order_image[r.image]))
        rows = [
            {
                "image": r.image,
                "explainer": r.explainer,
                "metric": r.metric,
                "value": math.nan if r.value is None else r.value,
                "protocol": r.protocol,
            }
            for r in records
        ]
        labels_e = {e.key: e.label for e in self.explainers}
        labels_m = {m.key: m.label for m in self.metrics}
        curves = {
            (labels_e[e], labels_m[m]): c
            for (e, m), c in merge_curves(
                c for c in store.curves(self.config_hash) if c.explainer_key in labels_e and c.metric_key in labels_m
            ).items()
        }
        ordered = dict(
            sorted(
                curves.items(),
                key=lambda kv: (list(labels_e.values()).index(kv[0][0]), list(labels_m.values()).index(kv[0][1])),
            )
        )
        return Results(
            rows=rows,
            protocols={self.protocol.name: self.protocol.as_dict()},
            directions=dict(self.directions),
            curves=ordered,
            curve_kinds={m.label: m.obj.curve_kind for m in self.metrics if getattr(m.obj, "curve_kind", None)},
            families={e.label: getattr(e.obj, "family", "other") for e in self.explainers},
            forward={"compile": self.config.compile, "precision": self.config.precision},
            errors=[
                {
                    "images": list(e.images),
                    "explainer": labels_e[e.explainer_key],
                    "metric": labels_m[e.metric_key],
                    "error": e.error,
                }
                for e in store.errors(self.config_hash)
                if e.explainer_key in labels_e and e.metric_key in labels_m
            ],
            **self._costs(store, labels_e, labels_m),
        )

    def _costs(self, store: Store, labels_e: dict[str, str], labels_m: dict[str, str]) -> dict[str, Any]:
        """Explainer seconds and passes per image, metric forward inputs per image, over the stored batches."""
        explain: dict[str, list[float]] = {}
        metric: dict[tuple[str, str], list[float]] = {}
        for c in store.costs(self.config_hash):
            if c.explainer_key not in labels_e:
                continue
            if not c.metric_key:
                acc = explain.setdefault(labels_e[c.explainer_key], [0, 0.0, 0, 0])
                acc[0] += c.images
                acc[1] += c.seconds
                acc[2] += c.forward
                acc[3] += c.backward
            elif c.metric_key in labels_m:
                m = metric.setdefault((labels_m[c.metric_key], labels_e[c.explainer_key]), [0, 0])
                m[0] += c.images
                m[1] += c.forward
        costs = {
            e: {"images": n, "seconds": sec / n, "forward": fwd / n, "backward": bwd / n}
            for e, (n, sec, fwd, bwd) in explain.items()
            if n
        }
        metric_costs: dict[str, dict[str, float]] = {}
        for (m_label, e_label), (n, fwd) in metric.items():
            if n:
                metric_costs.setdefault(m_label, {})[e_label] = fwd / n
        return {"costs": costs, "metric_costs": metric_costs}


def _title(image: str, cls: int, prob: float, num_classes: int) -> str:
    if num_classes == 1000:
        from ..classes import imagenet_classes

        return f"{image}\n{imagenet_classes()[cls]} {prob:.0%}"
    return f"{image}\nclass {cls} {prob:.0%}"

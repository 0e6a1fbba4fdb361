"""Forward passes of ``xb.evaluate`` on the demo's settings, counted where they happen.

``xai-bridge demo`` scores eight explainers with seven metrics on the nine embedded photos. This
script runs the same explainers, metrics and protocol through :func:`xai_bridge.evaluate` (one
batch of nine, as the demo) and counts every input the model computes, split by where it was
asked for:

- **explainer**: inside ``Explainer.explanation`` (the explainer's own passes: its gradients,
  masked images, optimisation steps, and any pass it makes to read the logits);
- **evaluation**: everything else (the unperturbed pass, the metrics' masked images and curves).

Counting needs no change to the code under test, so the same script measures an older checkout
(run it with that checkout's ``xai_bridge`` first on ``PYTHONPATH``; explainers it does not
register are skipped and named). Two places are patched for the run: the model's ``forward``
(eager calls, from explainers or eager graph mode) and ``ForwardPass.__call__`` (the engine's
traced or compiled graphs, which a Python-side counter inside the model would not see). A graph
being traced is not counted; inputs padded up to a graph's batch size are counted, since the
model computes them.

Run::

    python benchmarks/evaluation_passes.py                        # the demo's settings, nine photos
    python benchmarks/evaluation_passes.py --explainers gradcam,fakecam --json out/passes.json
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import importlib.util
import json
import sys
import time
import types
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.append(str(REPO))  # a checkout without installing; an xai_bridge on PYTHONPATH comes first

import xai_bridge as xb  # noqa: E402


class PassCounter:
    """Inputs the model computed, per phase (``explainer`` while an explanation is made, else ``evaluation``)."""

    def __init__(self) -> None:
        self.inputs: dict[str, int] = defaultdict(int)
        self.calls: dict[str, int] = defaultdict(int)
        self.phase = "evaluation"
        self._in_graph = 0

    def add(self, n: int) -> None:
        if torch.jit.is_tracing():
            return
        self.inputs[self.phase] += n
        self.calls[self.phase] += 1

    @contextlib.contextmanager
    def during(self, phase: str) -> Iterator[None]:
        before, self.phase = self.phase, phase
        try:
            yield
        finally:
            self.phase = before

    @contextlib.contextmanager
    def installed(self, model: torch.nn.Module) -> Iterator[None]:
        from xai_bridge.engine.forward import ForwardPass
        from xai_bridge.explainer import Explainer

        counter = self
        fp_call, explanation = ForwardPass.__call__, Explainer.explanation

        def counted_forward(net: torch.nn.Module, x: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
            if not counter._in_graph:  # an eager call that no ForwardPass counted
                counter.add(int(x.shape[0]))
            return type(net).forward(net, x, *args, **kwargs)

        def counted_fp(fp: Any, x: torch.Tensor) -> torch.Tensor:
            counter.add(int(x.shape[0]))
            counter._in_graph += 1
            try:
                return fp_call(fp, x)
            finally:
                counter._in_graph -= 1

        @functools.wraps(explanation)  # the same signature: evaluate hands logits= to what accepts them
        def counted_explanation(explainer: Any, *args: Any, **kwargs: Any) -> Any:
            with counter.during("explainer"):
                return explanation(explainer, *args, **kwargs)

        # an instance attribute: graphs traced from a deep copy are bound to the copy
        model.forward = types.MethodType(counted_forward, model)  # type: ignore[method-assign]
        ForwardPass.__call__ = counted_fp  # type: ignore[method-assign]
        Explainer.explanation = counted_explanation  # type: ignore[method-assign]
        try:
            yield
        finally:
            del model.forward
            ForwardPass.__call__ = fp_call  # type: ignore[method-assign]
            Explainer.explanation = explanation  # type: ignore[method-assign]


def demo_settings() -> tuple[list[tuple[str, dict[str, Any]]], list[tuple[str, str, dict[str, Any]]], Any]:
    """The demo's explainers (name, options), metrics (key, name, options) and protocol overrides.

    Read from *this* checkout's ``plugins/demo.py`` by path, so that an older ``xai_bridge`` on
    ``PYTHONPATH`` is measured on today's demo settings rather than its own.
    """
    spec = importlib.util.spec_from_file_location("demo_settings", REPO / "plugins" / "demo.py")
    assert spec is not None and spec.loader is not None
    demo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(demo)
    explainers = [(name, dict(demo.EXPLAINER_OPTIONS.get(name, {}))) for name in demo.EXPLAINERS]
    metrics: list[tuple[str, str, dict[str, Any]]] = []
    for key in demo.METRICS:
        name, _, rest = key.partition(":")
        options = dict(item.split("=", 1) for item in rest.split(",")) if rest else {}
        metrics.append((key, name, options))
    return explainers, metrics, dict(demo.PROTOCOL_OVERRIDES)


def registered(name: str) -> bool:
    """Whether this checkout's host knows the explainer ``name``."""
    try:
        xb.explainer_spec(name)
    except Exception:  # noqa: BLE001 - an older host raises its own unknown-name error
        return False
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--explainers", help="comma-separated subset of the demo's explainers (default: all)")
    parser.add_argument("--images", type=int, default=9, help="how many of the nine photos (default 9)")
    parser.add_argument("--json", help="also write the counts here")
    args = parser.parse_args(argv)

    torch.manual_seed(0)
    model = xb.default_model()
    images, names = xb.sample_images()
    images, names = images[: args.images], list(names[: args.images])
    from xai_bridge.protocols import get_protocol

    explainer_settings, metric_settings, overrides = demo_settings()
    protocol = get_protocol("default", **overrides)
    if args.explainers:
        wanted = args.explainers.split(",")
        unknown = sorted(set(wanted) - {n for n, _ in explainer_settings})
        if unknown:
            parser.error(
                f"--explainers: not among the demo's explainers: {', '.join(unknown)} "
                f"(choose from {', '.join(n for n, _ in explainer_settings)})"
            )
        explainer_settings = [(n, o) for n, o in explainer_settings if n in wanted]
    skipped = [n for n, _ in explainer_settings if not registered(n)]
    metrics = {key: xb.get_metric(name, **options) for key, name, options in metric_settings}

    rows: list[dict[str, Any]] = []
    print(f"{args.images} photos, one batch; metrics: {', '.join(metrics)}; protocol {protocol.name}")
    if skipped:
        print(f"not registered in this checkout (skipped): {', '.join(skipped)}")
    for name, options in explainer_settings:
        if name in skipped:
            continue
        explainer = xb.get_explainer(name, model, **options)
        counter = PassCounter()
        start = time.perf_counter()
        with counter.installed(model):
            xb.evaluate(
                model,
                images,
                explainers=[explainer],
                metrics=list(metrics.values()),
                protocol=protocol,
                image_ids=names,
                batch_size=args.images,
                progress=False,
            )
        seconds = time.perf_counter() - start
        row = {
            "explainer": name,
            "explainer_inputs": counter.inputs["explainer"],
            "evaluation_inputs": counter.inputs["evaluation"],
            "explainer_calls": counter.calls["explainer"],
            "evaluation_calls": counter.calls["evaluation"],
            "seconds": seconds,
        }
        rows.append(row)
        print(
            f"{name:10s} explainer {row['explainer_inputs']:6d} inputs in {row['explainer_calls']:4d} calls | "
            f"evaluation {row['evaluation_inputs']:6d} inputs in {row['evaluation_calls']:4d} calls | {seconds:6.1f} s",
            flush=True,
        )
    total = {k: sum(r[k] for r in rows) for k in ("explainer_inputs", "evaluation_inputs")}
    print(f"total: explainers {total['explainer_inputs']} inputs, evaluation {total['evaluation_inputs']} inputs")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"rows": rows, "total": total, "skipped": skipped}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

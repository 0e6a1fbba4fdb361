"""Toolkit metrics vs ``xb.accelerate(metric)``: time, forward samples and max |Δ|, side by side in one run.

For each supported metric, on the default model and ``--images`` photos at 224²: the toolkit's time and
the accelerated time, their ratio, the max |Δ| between the results, the forward samples each sent
through the model, the share of the toolkit's time spent inside forward passes, and the accelerated time over
the time of its own forward passes. Where the toolkit fails (IROF and ROAD on colour images), its error is
printed and the accelerated metric is timed alone. Then the 1-D row: the layout-free Quantus metrics through
``quantus.evaluate`` on Quantus's ``ConvNet1D`` and ``--series`` series ``3×100``. Then the suite: every
Quantus metric the toolkit can run through ``quantus.evaluate``, toolkit vs accelerated, and the metrics
registered in xai-bridge through one ``xb.evaluate`` pass (shared sequences) vs ``quantus.evaluate`` of the
same toolkit metrics.

The toolkit runs on a copy of the model that carries the forward-time meter (hooks); the accelerated metrics
run on the unhooked model, in the engine's default graph mode (``auto`` runs eagerly while hooks are
registered), and their forward time is the engine's own ``forward_seconds``.

    python benchmarks/toolkit_metrics.py                 # CPU, 8 photos
    python benchmarks/toolkit_metrics.py --device cuda   # same code on a GPU
    python benchmarks/toolkit_metrics.py --images 4 --only Faithfulness,Monotonicity --no-suite
"""

from __future__ import annotations

import argparse
import copy
import time
import warnings

import numpy as np
import quantus
import torch
from pytorch_grad_cam.metrics.cam_mult_image import DropInConfidence, IncreaseInConfidence
from pytorch_grad_cam.metrics.road import ROADCombined, ROADMostRelevantFirst
from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget

import xai_bridge as xb
from xai_bridge.engine import Engine


def _row(
    name: str,
    t1: float | str,
    t2: float,
    delta: tuple[float, float] | None,
    n1: int,
    n2: int,
    share: float | None,
    own: float,
) -> tuple:
    """One table row; ``t1`` is the toolkit's time or its error, ``own`` the accelerated time in forward passes."""
    theirs = f"{t1:.1f} s" if isinstance(t1, float) else t1
    ratio = f"{t1 / t2:.2f}×" if isinstance(t1, float) else "—"
    diff = "—" if delta is None else f"{delta[0]:.1e}" + (f" (relative {delta[1]:.0e})" if delta[0] > 1e-3 else "")
    forward_share = "—" if share is None else f"{share:.0%}"
    print(
        f"| {name} | {theirs} | {t2:.1f} s | {ratio} | {diff} | {n1:,} / {n2:,} | {forward_share} | {t2 / own:.2f} |",
        flush=True,
    )
    return name, t1, t2, delta, n1, n2, share, own


def _engine_seconds(metrics: object) -> float:
    """Forward-pass seconds of the engines behind accelerated metrics."""
    items = metrics.values() if isinstance(metrics, dict) else [metrics]
    return sum(getattr(getattr(m, "_xb_engine_obj", None), "forward_seconds", 0.0) for m in items)


class ForwardMeter:
    """Counts forward samples and the wall time spent inside ``model.forward``."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.samples, self.seconds, self._t = 0, 0.0, 0.0
        model.register_forward_pre_hook(self._pre)
        model.register_forward_hook(self._post)

    def _pre(self, _m, inputs) -> None:
        if inputs and isinstance(inputs[0], torch.Tensor):
            self.samples += inputs[0].shape[0]
        self._t = time.perf_counter()

    def _post(self, *_args) -> None:
        if inputs_on_cuda[0]:
            torch.cuda.synchronize()
        self.seconds += time.perf_counter() - self._t

    def reset(self) -> None:
        self.samples, self.seconds = 0, 0.0


inputs_on_cuda = [False]


def quantus_metrics() -> dict[str, object]:
    kw = {"disable_warnings": True}
    return {
        "PixelFlipping(features_in_step=224·8, black)": quantus.PixelFlipping(features_in_step=224 * 8, **kw),
        "RegionPerturbation(patch_size=16, regions=100, morf)": quantus.RegionPerturbation(
            patch_size=16, regions_evaluation=100, **kw
        ),
        "RegionPerturbation(patch_size=16, regions=100, random)": quantus.RegionPerturbation(
            patch_size=16, regions_evaluation=100, order="random", **kw
        ),
        "Selectivity(patch_size=16)": quantus.Selectivity(patch_size=16, **kw),
        "FaithfulnessEstimate(features_in_step=224·32, black)": quantus.FaithfulnessEstimate(
            features_in_step=224 * 32, **kw
        ),
        "MonotonicityCorrelation(features_in_step=224·32, nr_samples=5, black)": quantus.MonotonicityCorrelation(
            features_in_step=224 * 32, nr_samples=5, perturb_baseline="black", **kw
        ),
        "FaithfulnessCorrelation(nr_runs=20, subset_size=224·28, black)": quantus.FaithfulnessCorrelation(
            nr_runs=20, subset_size=224 * 28, **kw
        ),
        "Infidelity(patch_sizes=[56], n_perturb_samples=10, black)": quantus.Infidelity(
            perturb_patch_sizes=[56], n_perturb_samples=10, **kw
        ),
    }


def failing_quantus_metrics() -> dict[str, object]:
    """Quantus metrics that fail on colour images in Quantus 0.6.0 (see docs/quantus.md): timed accelerated only."""
    kw = {"disable_warnings": True}
    return {
        "IROF(slic, mean)": quantus.IROF(return_aggregate=False, **kw),
        "ROAD(percentages=[10, 30, 50, 70, 90])": quantus.ROAD(percentages=[10, 30, 50, 70, 90], **kw),
    }


#: the suite's metrics registered in xai-bridge, with the toolkit metric each equals
REGISTERED = {
    "PixelFlipping(features_in_step=224·8, black)": ("pixel_flipping", {"features_in_step": 224 * 8}),
    "RegionPerturbation(patch_size=16, regions=100, morf)": (
        "region_perturbation",
        {"patch_size": 16, "regions_evaluation": 100},
    ),
    "Selectivity(patch_size=16)": ("selectivity", {"patch_size": 16}),
    "Infidelity(patch_sizes=[56], n_perturb_samples=10, black)": ("infidelity", {"perturb_patch_sizes": [56]}),
}


def gradcam_metrics() -> dict[str, object]:
    return {
        "DropInConfidence": DropInConfidence(),
        "IncreaseInConfidence": IncreaseInConfidence(),
        "ROADMostRelevantFirst(80)": ROADMostRelevantFirst(80),
        "ROADCombined([20, 50, 80])": ROADCombined(percentiles=[20, 50, 80]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--only", default="", help="run only the metrics whose name contains one of these, comma-separated"
    )
    parser.add_argument("--no-suite", action="store_true", help="skip the quantus.evaluate run of all Quantus metrics")
    parser.add_argument("--series", type=int, default=32, help="series for the 1-D row (Quantus's ConvNet1D), 0: none")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    inputs_on_cuda[0] = args.device.startswith("cuda")
    model = xb.default_model().to(args.device).eval()
    toolkit_model = copy.deepcopy(model)
    meter = ForwardMeter(toolkit_model)
    images, _ = xb.sample_images()
    images = torch.cat([images, images.flip(-1)])[: args.images].to(args.device)
    maps = xb.get_explainer("gradcam", model).explain(images)
    with torch.no_grad():
        y = model(images).argmax(1)
    x_np, y_np, a_np = images.cpu().numpy(), y.cpu().numpy(), maps[:, None].cpu().numpy()
    rows = []
    print(f"device {args.device}, {args.images} photos at 224², {args.threads} threads", flush=True)
    print(
        "| metric (settings) | toolkit | accelerated | ratio | max \\|Δ\\| | forward samples (toolkit / ours) "
        "| toolkit time in forward | accelerated / its forward time |\n|---|---|---|---|---|---|---|---|",
        flush=True,
    )

    def timed(fn):
        meter.reset()
        t = time.perf_counter()
        out = np.asarray(fn(), dtype=np.float64)
        return out, time.perf_counter() - t, meter.samples, meter.seconds

    wanted = [w for w in args.only.split(",") if w]

    def chosen(name: str) -> bool:
        return not wanted or any(w in name for w in wanted)

    theirs_call = dict(model=toolkit_model, x_batch=x_np, y_batch=y_np, a_batch=a_np, device=args.device)
    ours_call = {**theirs_call, "model": model}
    for name, metric in quantus_metrics().items():
        if not chosen(name):
            continue
        fast = xb.accelerate(metric)
        np.random.seed(0)
        theirs, t1, n1, f1 = timed(lambda m=metric: m(**theirs_call))
        np.random.seed(0)
        ours, t2, _, _ = timed(lambda m=fast: m(**ours_call))
        delta = _delta(theirs, ours)
        rows.append(_row(f"quantus.{name}", t1, t2, delta, n1, fast.forward_samples, f1 / t1, _engine_seconds(fast)))
    for name, metric in failing_quantus_metrics().items():
        if not chosen(name):
            continue
        fast = xb.accelerate(metric)
        try:
            metric(**theirs_call)
            error = "runs"
        except Exception as exc:  # the toolkit defect this row documents
            error = f"fails: {type(exc).__name__}"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            np.random.seed(0)
            _, t2, _, _ = timed(lambda m=fast: _flat_any(m(**ours_call)))
        rows.append(_row(f"quantus.{name}", error, t2, None, 0, fast.forward_samples, None, _engine_seconds(fast)))
    targets = [ClassifierOutputSoftmaxTarget(int(c)) for c in y]
    cams = maps.cpu().numpy()
    for name, metric in gradcam_metrics().items():
        if not chosen(name):
            continue
        fast = xb.accelerate(metric)
        torch.manual_seed(0)
        theirs, t1, n1, f1 = timed(lambda m=metric: m(images, cams, targets, toolkit_model))
        torch.manual_seed(0)
        ours, t2, _, _ = timed(lambda m=fast: m(images, cams, targets, model))
        delta = _delta(theirs, ours)
        rows.append(_row(f"grad-cam {name}", t1, t2, delta, n1, fast.forward_samples, f1 / t1, _engine_seconds(fast)))

    if args.series:
        rows.append(series_row(args.series, args.device, timed))
    if args.no_suite:
        return
    suite = quantus_metrics()
    kwargs = dict(xai_methods={"gradcam": a_np}, x_batch=x_np, y_batch=y_np)
    np.random.seed(0)
    theirs, t1, n1, f1 = timed(lambda: _flat(quantus.evaluate(metrics=suite, model=toolkit_model, **kwargs)))
    np.random.seed(0)
    fast_suite = {k: xb.accelerate(m) for k, m in suite.items()}
    ours, t2, _, _ = timed(lambda: _flat(quantus.evaluate(metrics=fast_suite, model=model, **kwargs)))
    n2 = sum(m.forward_samples for m in fast_suite.values())
    label = f"quantus.evaluate, the {len(suite)} Quantus metrics above"
    rows.append(_row(label, t1, t2, _delta(theirs, ours), n1, n2, f1 / t1, _engine_seconds(fast_suite)))

    # the registered metrics through one xb.evaluate (shared sequences) vs quantus.evaluate of the same metrics
    names = [k for k in REGISTERED if k in suite]
    toolkit = {k: suite[k] for k in names}
    np.random.seed(0)
    theirs, t1, n1, f1 = timed(lambda: _auc_flat(quantus.evaluate(metrics=toolkit, model=toolkit_model, **kwargs)))
    engine = Engine(model, progress=False)
    registered = [xb.get_metric(REGISTERED[k][0], **REGISTERED[k][1]) for k in names]

    def one_pass() -> np.ndarray:
        results = xb.evaluate(model, images, [], registered, maps={"gradcam": maps}, engine=engine, progress=False)
        frame = results.to_frame()
        return np.concatenate([frame[frame.metric == REGISTERED[k][0]].value.to_numpy() for k in names])

    ours, t2, _, _ = timed(one_pass)
    rows.append(
        _row(
            f"the {len(names)} registered ({', '.join(REGISTERED[k][0] for k in names)}): quantus.evaluate vs "
            "one xb.evaluate",
            t1,
            t2,
            _delta(theirs, ours),
            n1,
            engine.forward_samples,
            f1 / t1,
            engine.forward_seconds,
        )
    )


def series_metrics() -> dict[str, object]:
    """The layout-free Quantus metrics on series, with the parameters of Quantus's own 1-D test cases."""
    quiet = {"disable_warnings": True}
    return {
        "PixelFlipping": quantus.PixelFlipping(features_in_step=10, perturb_baseline="mean", **quiet),
        "RegionPerturbation": quantus.RegionPerturbation(patch_size=7, perturb_baseline="mean", **quiet),
        "Selectivity": quantus.Selectivity(patch_size=7, perturb_baseline="mean", abs=True, **quiet),
        "FaithfulnessEstimate": quantus.FaithfulnessEstimate(features_in_step=10, perturb_baseline="uniform", **quiet),
        "MonotonicityCorrelation": quantus.MonotonicityCorrelation(
            features_in_step=10, nr_samples=10, perturb_baseline="uniform", abs=True, **quiet
        ),
        "FaithfulnessCorrelation": quantus.FaithfulnessCorrelation(
            nr_runs=10, subset_size=10, perturb_baseline="mean", **quiet
        ),
    }


def series_row(n: int, device: str, timed) -> tuple:
    """The 1-D row: ``quantus.evaluate`` of :func:`series_metrics` on Quantus's ``ConvNet1D`` and ``n`` series
    ``3×100`` (its test fixture's shape), toolkit vs accelerated."""
    from quantus.helpers.model.models import ConvNet1D

    torch.manual_seed(0)
    net = ConvNet1D(n_channels=3, n_classes=10).to(device).eval()
    rng = np.random.RandomState(0)
    x, y, a = rng.randn(n, 3, 100).astype(np.float32), rng.randint(0, 10, n), rng.uniform(0, 0.01, (n, 1, 100))
    kwargs = dict(xai_methods={"gradcam": a}, x_batch=x, y_batch=y)
    toolkit_net = copy.deepcopy(net)  # the toolkit's copy carries the forward-time meter
    meter = ForwardMeter(toolkit_net)
    suite = series_metrics()
    np.random.seed(0)
    start = time.perf_counter()
    theirs = _flat(quantus.evaluate(metrics=suite, model=toolkit_net, **kwargs))
    t1, n1, f1 = time.perf_counter() - start, meter.samples, meter.seconds
    fast = {k: xb.accelerate(m) for k, m in series_metrics().items()}
    np.random.seed(0)
    ours, t2, _, _ = timed(lambda: _flat(quantus.evaluate(metrics=fast, model=net, **kwargs)))
    n2 = sum(m.forward_samples for m in fast.values())
    label = f"quantus.evaluate, the {len(suite)} layout-free metrics on {n} series 3×100 (ConvNet1D)"
    return _row(label, t1, t2, _delta(theirs, ours), n1, n2, f1 / t1, _engine_seconds(fast))


def _delta(theirs: np.ndarray, ours: np.ndarray) -> tuple[float, float]:
    """Max |Δ|, and relative to the largest |value| (for metrics whose values are large, e.g. Infidelity's MSE)."""
    diff = float(np.nanmax(np.abs(theirs - ours)))
    return diff, diff / max(float(np.nanmax(np.abs(theirs))), 1e-30)


def _flat_any(result: object) -> np.ndarray:
    values = result.values() if isinstance(result, dict) else result
    return np.asarray(list(values), dtype=np.float64).ravel()


def _auc_flat(results: dict) -> np.ndarray:
    """Per metric, one value per image: curves become the area under them, as the registered metrics give."""
    out = []
    for values in results["gradcam"].values():
        arr = np.asarray(values, dtype=np.float64)
        out.append(np.trapezoid(arr, dx=1, axis=1) if arr.ndim == 2 else arr.ravel())
    return np.concatenate(out)


def _flat(results: dict) -> np.ndarray:
    return np.concatenate([np.asarray(v, dtype=np.float64).ravel() for v in results["gradcam"].values()])


if __name__ == "__main__":
    main()

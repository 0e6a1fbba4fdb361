"""Toolkit metrics vs ``xb.accelerate(metric)``: time, forward samples and max |Δ|, side by side in one run.

For each supported metric, on the default model and ``--images`` photos at 224²: the toolkit's time and
the accelerated time, their ratio, the max |Δ| between the results, the forward samples each sent
through the model, and the share of the toolkit's time spent inside forward passes. Then all the
Quantus metrics together through ``quantus.evaluate``, toolkit vs accelerated.

    python benchmarks/toolkit_metrics.py                 # CPU, 8 photos
    python benchmarks/toolkit_metrics.py --device cuda   # same code on a GPU
    python benchmarks/toolkit_metrics.py --images 4 --only Faithfulness,Monotonicity --no-suite
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import quantus
import torch
from pytorch_grad_cam.metrics.cam_mult_image import DropInConfidence, IncreaseInConfidence
from pytorch_grad_cam.metrics.road import ROADCombined, ROADMostRelevantFirst
from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget

import xai_bridge as xb


def _row(name: str, t1: float, t2: float, delta: float, n1: int, n2: int, share: float) -> tuple:
    print(
        f"| {name} | {t1:.1f} s | {t2:.1f} s | {t1 / t2:.2f}× | {delta:.1e} | {n1:,} / {n2:,} | {share:.0%} |",
        flush=True,
    )
    return name, t1, t2, delta, n1, n2, share


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
        "Selectivity(patch_size=32)": quantus.Selectivity(patch_size=32, **kw),
        "FaithfulnessEstimate(features_in_step=224·32, black)": quantus.FaithfulnessEstimate(
            features_in_step=224 * 32, **kw
        ),
        "MonotonicityCorrelation(features_in_step=224·32, nr_samples=5, black)": quantus.MonotonicityCorrelation(
            features_in_step=224 * 32, nr_samples=5, perturb_baseline="black", **kw
        ),
        "FaithfulnessCorrelation(nr_runs=20, subset_size=224·28, black)": quantus.FaithfulnessCorrelation(
            nr_runs=20, subset_size=224 * 28, **kw
        ),
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
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    inputs_on_cuda[0] = args.device.startswith("cuda")
    model = xb.default_model().to(args.device).eval()
    meter = ForwardMeter(model)
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
        "| toolkit time in forward |\n|---|---|---|---|---|---|---|",
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

    for name, metric in quantus_metrics().items():
        if not chosen(name):
            continue
        call = dict(model=model, x_batch=x_np, y_batch=y_np, a_batch=a_np, device=args.device)
        fast = xb.accelerate(metric)
        np.random.seed(0)
        theirs, t1, n1, f1 = timed(lambda m=metric, c=call: m(**c))
        np.random.seed(0)
        ours, t2, n2, _ = timed(lambda m=fast, c=call: m(**c))
        rows.append(_row(f"quantus.{name}", t1, t2, np.abs(theirs - ours).max(), n1, n2, f1 / t1))
    targets = [ClassifierOutputSoftmaxTarget(int(c)) for c in y]
    cams = maps.cpu().numpy()
    for name, metric in gradcam_metrics().items():
        if not chosen(name):
            continue
        fast = xb.accelerate(metric)
        torch.manual_seed(0)
        theirs, t1, n1, f1 = timed(lambda m=metric: m(images, cams, targets, model))
        torch.manual_seed(0)
        ours, t2, n2, _ = timed(lambda m=fast: m(images, cams, targets, model))
        rows.append(_row(f"grad-cam {name}", t1, t2, np.abs(theirs - ours).max(), n1, n2, f1 / t1))

    if args.no_suite:
        return
    suite = quantus_metrics()
    kwargs = dict(xai_methods={"gradcam": a_np}, model=model, x_batch=x_np, y_batch=y_np)
    np.random.seed(0)
    theirs, t1, n1, f1 = timed(lambda: _flat(quantus.evaluate(metrics=suite, **kwargs)))
    np.random.seed(0)
    fast_suite = {k: xb.accelerate(m) for k, m in suite.items()}
    ours, t2, n2, _ = timed(lambda: _flat(quantus.evaluate(metrics=fast_suite, **kwargs)))
    rows.append(
        _row(
            f"quantus.evaluate, the {len(suite)} Quantus metrics above",
            t1,
            t2,
            np.abs(theirs - ours).max(),
            n1,
            n2,
            f1 / t1,
        )
    )


def _flat(results: dict) -> np.ndarray:
    return np.concatenate([np.asarray(v, dtype=np.float64).ravel() for v in results["gradcam"].values()])


if __name__ == "__main__":
    main()

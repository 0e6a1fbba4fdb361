"""Opti-CAM one image at a time vs the whole batch at once: time per image, ratio, agreement of the maps.

Both runs explain the same embedded photos with the default EfficientNet-Lite0, the predicted
class, the default layer (``head``, 7×7) and the same settings (Adam lr 0.1, ``--iterations``
steps at most, tolerance 1e-10). The batched run solves the images as one batch in which each
image stops on its own; the sequential run calls the explainer once per image. The maps should
be the same problem solved twice, so their Pearson correlation is reported per image.

In float32 the two runs are not bit-identical: a convolution over a batch rounds differently
from the same convolution over one image (~1e-7), and 100 Adam steps on a non-convex objective
amplify that. ``--dtype float64`` removes the rounding and the maps agree exactly.

Run::

    python benchmarks/opticam.py                          # 9 photos, 100 iterations, CPU
    python benchmarks/opticam.py --iterations 30 --images 4
    python benchmarks/opticam.py --device cuda --json out/opticam-bench.json
    python benchmarks/opticam.py --dtype float64 --images 3
    python benchmarks/opticam.py --levers --iterations 10 --images 4   # speed options side by side
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

import xai_bridge as xb  # noqa: E402


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def pearson(a: torch.Tensor, b: torch.Tensor) -> float:
    """Pearson correlation of two maps (flattened)."""
    a, b = a.flatten().double(), b.flatten().double()
    a, b = a - a.mean(), b - b.mean()
    return float((a * b).sum() / (a.norm() * b.norm()).clamp_min(1e-30))


def run(iterations: int, count: int, device: str, repeats: int = 1, dtype: str = "float32") -> dict[str, Any]:
    dev, dt = torch.device(device), getattr(torch, dtype)
    model = xb.default_model().to(device=dev, dtype=dt)
    images, names = xb.sample_images()
    if not 1 <= count <= images.shape[0]:
        raise SystemExit(f"--images: expected 1..{images.shape[0]} (the embedded photos), got {count}")
    images, names = images[:count].to(device=dev, dtype=dt), names[:count]
    explainer = xb.get_explainer("opticam", model, max_iter=iterations, progress=False)
    xb.get_explainer("opticam", model, max_iter=2, progress=False).explain(images[:1])  # warm-up

    def timed(fn: Any) -> tuple[float, Any]:
        best, result = float("inf"), None
        for _ in range(repeats):
            _sync(dev)
            start = time.perf_counter()
            result = fn()
            _sync(dev)
            best = min(best, time.perf_counter() - start)
        return best, result

    def sequential() -> list[Any]:
        return [explainer.explanation(images[i : i + 1]) for i in range(count)]

    t_seq, singles = timed(sequential)
    t_bat, batched = timed(lambda: explainer.explanation(images))
    seq_maps = torch.cat([e.maps for e in singles])
    seq_iters = torch.cat([e.info["iterations"] for e in singles])
    corr = [pearson(seq_maps[i], batched.maps[i]) for i in range(count)]
    return {
        "device": torch.cuda.get_device_name(dev)
        if dev.type == "cuda"
        else f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)",
        "torch": torch.__version__,
        "dtype": dtype,
        "images": names,
        "iterations": iterations,
        "sequential_s_per_image": t_seq / count,
        "batched_s_per_image": t_bat / count,
        "speedup": t_seq / t_bat,
        "correlation_per_image": corr,
        "correlation_min": min(corr),
        "correlation_mean": sum(corr) / count,
        "max_abs_difference": float((seq_maps - batched.maps).abs().max()),
        "steps_sequential": seq_iters.tolist(),
        "steps_batched": batched.info["iterations"].tolist(),
        "same_targets": bool(torch.equal(torch.cat([e.targets for e in singles]), batched.targets)),
    }


LEVERS = {
    "default": {},
    "channels_last": {"channels_last": True},
    "channels_last+bfloat16": {"channels_last": True, "precision": "bfloat16"},
    "compile+channels_last": {"channels_last": True, "compile": True},
}


def levers(iterations: int, count: int, device: str, rounds: int, names: list[str]) -> dict[str, Any]:
    """The batched call with each speed option, rounds interleaved (best kept), maps compared with the default."""
    dev = torch.device(device)
    model = xb.default_model().to(dev)
    images = xb.sample_images()[0][:count].to(dev)
    explainers = {
        n: xb.get_explainer("opticam", model, max_iter=iterations, progress=False, **LEVERS[n]) for n in names
    }
    best: dict[str, float] = {}
    maps: dict[str, torch.Tensor] = {}
    first: dict[str, float] = {}
    for _ in range(rounds):
        for name, e in explainers.items():
            _sync(dev)
            start = time.perf_counter()
            maps[name] = e.explain(images)
            _sync(dev)
            t = time.perf_counter() - start
            first.setdefault(name, t)
            best[name] = min(best.get(name, float("inf")), t)
    ref = maps["default"]
    with torch.no_grad():
        classes = model(images).argmax(1)
    out = {}
    for name in names:
        # what the options could change in what a user reads: the masked score f(x · n(S)) Opti-CAM maximises
        # and the Average Gain of the maps (Zhang et al. 2024, "Opti-CAM: Optimizing saliency maps for
        # interpretability"), per image
        scored = xb.evaluate(model, images, [], ["average_gain"], maps={name: maps[name]}, progress=False)
        gain = np.array([r["value"] for r in scored.rows])
        low = maps[name].flatten(1).min(1).values.view(-1, 1, 1)
        high = maps[name].flatten(1).max(1).values.view(-1, 1, 1)
        normalised = (maps[name] - low) / (high - low).clamp_min(1e-12)
        with torch.no_grad():
            masked = model(images * normalised[:, None]).softmax(1).gather(1, classes[:, None])[:, 0].cpu().numpy()
        out[name] = {
            "s_per_image": best[name] / count,
            "first_call_s": first[name],
            "speedup": best["default"] / best[name],
            "max_abs_diff": float((maps[name] - ref).abs().max()),
            "correlation_min": min(pearson(a, b) for a, b in zip(maps[name], ref, strict=True)),
            "masked_score": [float(masked.mean()), float(masked.min()), float(masked.max())],
            "average_gain": [float(gain.mean()), float(gain.min()), float(gain.max())],
        }
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--iterations", type=int, default=100, help="Opti-CAM max_iter (default 100, the paper's)")
    parser.add_argument("--images", type=int, default=9, help="how many of the embedded photos (default all 9)")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cuda")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument(
        "--dtype",
        choices=("float32", "float64"),
        default="float32",
        help="float64 shows the two runs agree to rounding",
    )
    parser.add_argument("--repeats", type=int, default=1, help="time each run this many times, keep the best")
    parser.add_argument("--json", help="also write the results to this JSON file")
    parser.add_argument(
        "--levers",
        nargs="*",
        choices=tuple(LEVERS),
        help="instead: the batched call with each speed option (default, channels_last, ...), side by side",
    )
    parser.add_argument("--rounds", type=int, default=2, help="--levers: interleaved rounds, best kept")
    args = parser.parse_args(argv)
    if args.iterations < 1:
        parser.error("--iterations: expected a positive integer")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.levers is not None:
        names = ["default", *[n for n in (args.levers or list(LEVERS)) if n != "default"]]
        figures = levers(args.iterations, args.images, args.device, args.rounds, names)
        print(f"Opti-CAM, {args.images} photos, {args.iterations} iterations, batched, best of {args.rounds} rounds")
        for name, f in figures.items():
            print(
                f"  {name:<24} {f['s_per_image']:.3f} s/image ({f['speedup']:.2f}× the default; first call "
                f"{f['first_call_s']:.1f} s), maps vs default: max |Δ| {f['max_abs_diff']:.1e}, "
                f"min correlation {f['correlation_min']:.4f}; masked score mean/min/max "
                f"{'/'.join(f'{v:.3f}' for v in f['masked_score'])}, Average Gain mean/min/max "
                f"{'/'.join(f'{v:.1f}' for v in f['average_gain'])}"
            )
        if args.json:
            Path(args.json).write_text(json.dumps(figures, indent=2))
        return 0
    result = run(args.iterations, args.images, args.device, args.repeats, args.dtype)
    print(
        f"Opti-CAM, {len(result['images'])} photos, {result['iterations']} iterations, {result['device']}, torch "
        f"{result['torch']}, {result['dtype']}"
    )
    print(f"  sequential (one image per call): {result['sequential_s_per_image']:.3f} s/image")
    print(f"  batched (all images, one call):  {result['batched_s_per_image']:.3f} s/image")
    print(f"  ratio sequential / batched:      {result['speedup']:.2f}×")
    print(
        f"  map correlation (Pearson):       min {result['correlation_min']:.5f}, mean "
        f"{result['correlation_mean']:.5f}; max |Δ| {result['max_abs_difference']:.2e}"
    )
    print(f"  Adam steps sequential {result['steps_sequential']}, batched {result['steps_batched']}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

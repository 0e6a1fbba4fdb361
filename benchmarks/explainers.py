"""The perturbation explainers on the executor vs the toolkits' own loops: time, agreement, memory, classes.

For each method, the reference and ours explain the same embedded photos with the default
EfficientNet-Lite0 (predicted class), side by side in one process:

- ``scorecam``: pytorch-grad-cam's ``ScoreCAM`` at its default settings (16 masked images per
  call, one ``.item()`` per score) vs ours, both at the default layer (``head``, 1280 channels);
- ``ablationcam``: pytorch-grad-cam's ``AblationCAM`` (its default batch of 32) vs ours (the
  ablated activations run through the rest of the network only);
- ``occlusion``: Captum's ``Occlusion`` (16×16 window, stride 8, black) at the fastest of
  ``--captum-ppe`` (``perturbations_per_eval``) vs ours;
- ``rise``: a faithful loop of the authors' ``explanations.py`` (Petsiuk, Das & Saenko): the
  masked stack of one image scored 100 masks at a time, softmax, ``pᵀ·masks / N / p1``, with
  the same ``N`` masks as ours (the stack is built per batch of 100 instead of all at once, which
  only saves the reference memory).

Then ``--targets`` classes per image (default 5, ``"top5"``) against one, for RISE, Score-CAM and
Occlusion (time ratio; the forward counts are asserted in ``tests/test_perturbation.py``), and
with ``--memory`` the peak resident memory that one photo's explanation adds in a fresh process as
``N`` (RISE) and the channel count (Score-CAM: ``blocks.15``, 320 channels, vs ``head``, 1280) grow.

Run::

    python benchmarks/explainers.py --images 2                 # every method, two photos
    python benchmarks/explainers.py --methods rise,occlusion --images 9
    python benchmarks/explainers.py --memory --json out/explainers.json
    python benchmarks/explainers.py --targets-only --methods rise,scorecam,occlusion --masks 1000
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

import xai_bridge as xb  # noqa: E402
from xai_bridge_builtins.perturbation import RISE, AblationCAM, Occlusion, ScoreCAM  # noqa: E402

METHODS = ("scorecam", "ablationcam", "occlusion", "rise")
WINDOW = {"sliding_window_shapes": (3, 16, 16), "strides": (3, 8, 8), "baselines": 0.0}


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def gradcam_maps(cls: Any, model: Any, images: torch.Tensor, targets: torch.Tensor, **options: Any) -> np.ndarray:
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    cam = cls(model=model, target_layers=[model.head], **options)
    try:
        return cam(input_tensor=images, targets=[ClassifierOutputTarget(int(t)) for t in targets])  # type: ignore[no-any-return]
    finally:
        cam.activations_and_grads.release()


def authors_rise(
    model: Any, images: torch.Tensor, masks: torch.Tensor, p1: float, targets: torch.Tensor
) -> torch.Tensor:
    """The authors' ``RISE.forward``, one image at a time, ``gpu_batch = 100``; the explained class's map."""
    n, h, w = masks.shape
    stacked = masks[:, None]
    out = []
    with torch.no_grad():
        for b in range(images.shape[0]):
            p = torch.cat([torch.softmax(model(stacked[i : i + 100] * images[b]), 1) for i in range(0, n, 100)])  # N×K
            sal = (p.transpose(0, 1) @ masks.view(n, h * w)).view(-1, h, w) / n / p1
            out.append(sal[int(targets[b])])
    return torch.stack(out)


def compare(model: Any, images: torch.Tensor, method: str, args: argparse.Namespace) -> dict[str, Any]:
    targets = model(images).argmax(1)
    row: dict[str, Any] = {"method": method}
    if method == "scorecam":
        from pytorch_grad_cam import ScoreCAM as Reference

        ref, row["reference_s"] = timed(lambda: gradcam_maps(Reference, model, images, targets))
        ours_e = ScoreCAM(model, batch_size=args.batch_size)
        ours, row["ours_s"] = timed(lambda: ours_e.explain(images, target=targets))
        row["reference"] = "pytorch-grad-cam ScoreCAM (batch 16)"
        row["passes"] = ours_e.executor.samples
        ref_maps = torch.from_numpy(ref)
    elif method == "ablationcam":
        from pytorch_grad_cam import AblationCAM as Reference

        ref, row["reference_s"] = timed(lambda: gradcam_maps(Reference, model, images, targets))
        ours_a = AblationCAM(model, batch_size=args.batch_size)
        ours, row["ours_s"] = timed(lambda: ours_a.explain(images, target=targets))
        row["reference"] = "pytorch-grad-cam AblationCAM (batch 32)"
        row["passes"] = f"{ours_a.tail_executor.samples} (head → logits only)"
        ref_maps = torch.from_numpy(ref)
    elif method == "occlusion":
        from captum.attr import Occlusion as Reference

        best = None
        for ppe in args.captum_ppe:
            attr, seconds = timed(
                lambda ppe=ppe: Reference(model).attribute(images, target=targets, perturbations_per_eval=ppe, **WINDOW)
            )
            row[f"captum_ppe{ppe}_s"] = seconds
            if best is None or seconds < best[1]:
                best = (attr, seconds, ppe)
        assert best is not None
        ref_maps, row["reference_s"] = best[0].abs().sum(1), best[1]
        row["reference"] = f"Captum Occlusion (perturbations_per_eval={best[2]}, fastest of {args.captum_ppe})"
        ours_o = Occlusion(model, batch_size=args.batch_size, **WINDOW)
        ours, row["ours_s"] = timed(lambda: ours_o.explain(images, target=targets))
        row["passes"] = ours_o.executor.samples
    else:
        rise = RISE(model, n_masks=args.masks, seed=0)
        masks = rise.generator((images.shape[-2], images.shape[-1])).masks(0, args.masks, images.device)
        ref_maps, row["reference_s"] = timed(lambda: authors_rise(model, images, masks, 0.5, targets))
        ours_r = RISE(model, masks=masks, p1=0.5, batch_size=args.batch_size)
        ours, row["ours_s"] = timed(lambda: ours_r.explain(images, target=targets))
        row["reference"] = f"authors' RISE loop (N={args.masks}, batch 100)"
        row["passes"] = ours_r.executor.samples
    row["speedup"] = row["reference_s"] / row["ours_s"]
    row["max_abs_diff"] = float((ours - ref_maps.to(ours)).abs().max())
    return row


def targets_cost(model: Any, images: torch.Tensor, method: str, k: int, args: argparse.Namespace) -> dict[str, Any]:
    make = {
        "rise": lambda: RISE(model, n_masks=args.masks, batch_size=args.batch_size),
        "scorecam": lambda: ScoreCAM(model, batch_size=args.batch_size),
        "occlusion": lambda: Occlusion(model, batch_size=args.batch_size, **WINDOW),
        "ablationcam": lambda: AblationCAM(model, batch_size=args.batch_size),
    }[method]
    one, many = make(), make()
    one.explain(images[:1], target=0)  # warm-up: the executor's graph and chunk are measured once per process
    _, t1 = timed(lambda: make().explain(images))
    _, tk = timed(lambda: many.explain(images, target=f"top{k}"))
    return {"method": method, "one_s": t1, f"top{k}_s": tk, "ratio": tk / t1}


def peak_memory(kind: str, size: int) -> float:
    """Peak resident memory (MiB) that ``kind`` at ``size`` (N or layer) adds while explaining one photo.

    In a fresh process, after the model, the explainer and one warm-up call (graphs traced, chunk
    measured): the resident set is sampled every 2 ms during a second call and the peak above the
    level before it is returned (the process's own peak is set by the imports and hides it).
    """
    root = str(Path(__file__).resolve().parents[1])
    make = (
        f"RISE(m, n_masks={size})"
        if kind == "rise"
        else f"ScoreCAM(m, layer={'head' if size == 1280 else 'blocks.15'!r})"
    )
    code = "\n".join(
        [
            f"import os, sys, threading, time, torch; sys.path.insert(0, {root!r})",
            "import xai_bridge as xb",
            "from xai_bridge_builtins.perturbation import RISE, ScoreCAM",
            "m = xb.default_model(); x, _ = xb.sample_images(['chelsea'])",
            f"e = {make}",
            "e.explain(x)",
            "page = os.sysconf('SC_PAGE_SIZE') / 2**20",
            "rss = lambda: int(open('/proc/self/statm').read().split()[1]) * page",
            "base = rss(); peak = [base]; done = threading.Event()",
            "def watch():",
            "    while not done.is_set():",
            "        peak[0] = max(peak[0], rss()); time.sleep(0.002)",
            "w = threading.Thread(target=watch); w.start(); e.explain(x); done.set(); w.join()",
            "print(peak[0] - base)",
        ]
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=9, help="how many of the nine photos (default 9)")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--masks", type=int, default=4000, help="RISE's N (default 4000)")
    parser.add_argument("--captum-ppe", default="16,64,256", help="Captum perturbations_per_eval values to try")
    parser.add_argument("--targets", type=int, default=5, help="classes per image for the cost of several targets")
    parser.add_argument("--no-targets", action="store_true", help="skip the several-targets timing")
    parser.add_argument("--targets-only", action="store_true", help="only the several-targets timing")
    parser.add_argument("--memory", action="store_true", help="peak memory as N and the channel count grow")
    parser.add_argument("--batch-size", type=int, help="fix our executors' chunk (default: the executor measures it)")
    parser.add_argument("--json", help="also write the rows here")
    args = parser.parse_args(argv)
    args.captum_ppe = [int(v) for v in args.captum_ppe.split(",")]
    methods = [m for m in args.methods.split(",") if m]
    torch.manual_seed(0)
    model = xb.default_model()
    images, names = xb.sample_images()
    images = images[: args.images]
    machine = f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}"
    print(f"# {machine}; photos: {names[: args.images]}")
    rows = []
    if not args.targets_only:
        print(f"{'method':<12} {'reference':<62} {'ref s':>8} {'ours s':>8} {'speedup':>8} {'max |Δ|':>9}  passes")
    for method in [] if args.targets_only else methods:
        row = compare(model, images, method, args)
        rows.append(row)
        print(
            f"{method:<12} {row['reference']:<62} {row['reference_s']:8.1f} {row['ours_s']:8.1f} "
            f"{row['speedup']:7.1f}× {row['max_abs_diff']:9.2e}  {row['passes']}",
            flush=True,
        )
    cost = []
    if not args.no_targets:
        print(f"\n{'method':<12} {'1 class s':>10} {f'top{args.targets} s':>10} {'ratio':>7}")
        for method in [m for m in methods if m != "ablationcam"]:
            r = targets_cost(model, images, method, args.targets, args)
            cost.append(r)
            print(f"{method:<12} {r['one_s']:10.1f} {r[f'top{args.targets}_s']:10.1f} {r['ratio']:6.2f}×", flush=True)
    memory = {}
    if args.memory:
        memory = {
            "rise_N500_MiB": peak_memory("rise", 500),
            "rise_N4000_MiB": peak_memory("rise", 4000),
            "scorecam_320ch_MiB": peak_memory("scorecam", 320),
            "scorecam_1280ch_MiB": peak_memory("scorecam", 1280),
        }
        print(
            "\npeak resident memory added by one photo's explanation (MiB):",
            ", ".join(f"{k} {v:.0f}" for k, v in memory.items()),
        )
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"rows": rows, "targets": cost, "memory": memory}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

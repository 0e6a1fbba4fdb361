"""The perturbation engine against the toolkits' loops, measured side by side in one run.

(a) Quantus PixelFlipping vs the engine for the same deletion curve;
(b) the engine's images/s vs the model's own peak: the best images/s over graph modes
    (eager, freeze, inductor) × batch sizes (1–32), float32 and bfloat16 separately;
(c) deletion + insertion + AOPC + n_MoRF + n_LeRF through one engine request set vs separate
    per-metric calls (a per-image per-step loop: Quantus has none of these at whole-pixel steps);
(d) peak memory (the peak RSS of a fresh process during the run, reset after warm-up) as
    images × steps grows under a fixed budget;
(e) the demo metrics in float32, through the frozen graph and in bfloat16: max |Δ| and rankings;
(f) ``auto`` told the work: a long run (past the inductor break-even) and a short run against the
    model's float32 peak; the first compile of each fast path in a fresh process, with and without
    torch's on-disk inductor cache (freeze, inductor, ``torch.export`` + ahead-of-time inductor).

Run::

    python benchmarks/engine.py                  # 16 photos, 224² (about 15 minutes on 2 CPU cores)
    python benchmarks/engine.py --images 4 --quick
    python benchmarks/engine.py --parts f          # (f) alone: about 10 minutes on 2 CPU cores
    python benchmarks/engine.py --device cuda

Quantus counts C×H×W features per step and requires ``features_in_step`` to divide H·W, so
whole-pixel steps (3·k features) need 3 | H·W: part (a) runs at 192² with 192-pixel steps
(192 steps), the nearest match to 224 steps at 224².
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

import xai_bridge as xb
from xai_bridge.engine import Curve, Engine, Flip, make_replacement, rank_units
from xai_bridge.protocols import Replacement

MEAN = Replacement("mean")
BLUR = Replacement("blur", kernel=11, sigma=5.0)


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def photos(n: int, size: int, device: torch.device) -> torch.Tensor:
    images, _ = xb.sample_images(size=size)
    reps = -(-n // images.shape[0])
    images = torch.cat([images, images.flip(-1)] * reps)[:n]  # mirrored copies beyond the nine photos
    return images.to(device)


def saliency(model: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
    return xb.get_explainer("gradcam", model).explain(images)


# -- (a) -------------------------------------------------------------------------------------------
def part_a(model, images, device) -> dict[str, float]:
    import quantus

    x = F.interpolate(images, size=(192, 192), mode="bilinear", antialias=True, align_corners=False)
    # Grad-CAM's zeros are ties that numpy's unstable argsort orders differently: use each pixel's
    # rank instead (the same order, no ties) so the two curves must agree
    maps = rank_units(saliency(model, x), "lerf").float() / (192 * 192)
    with torch.no_grad():
        y = model(x).argmax(1)
    k = 192
    metric = quantus.PixelFlipping(
        features_in_step=3 * k,
        perturb_baseline="black",
        normalise=False,
        abs=False,
        disable_warnings=True,
        display_progressbar=False,
    )
    t_q, theirs = timed(
        lambda: np.array(
            metric(
                model=model,
                x_batch=x.cpu().numpy(),
                y_batch=y.cpu().numpy(),
                a_batch=maps[:, None].cpu().numpy(),
                device=str(device),
                softmax=True,
                batch_size=x.shape[0],
            )
        )
    )
    req = Curve(replacement=Replacement("min"), step=k)
    engine = Engine(model, progress=False)
    t_e, ours = timed(lambda: engine.run(x, maps, y, [req])[req].probs[:, 1:].cpu().numpy())
    return {
        "quantus_s": t_q,
        "engine_s": t_e,
        "ratio": t_q / t_e,
        "max_abs_diff": float(np.abs(theirs - ours).max()),
        "steps": ours.shape[1],
    }


# -- (b) -------------------------------------------------------------------------------------------
GRAPH_MODES = ("eager", "freeze", "inductor")
BATCHES = (1, 2, 4, 8, 16, 32)


def part_b(
    model,
    images,
    maps,
    step: int,
    device,
    rounds: int = 3,
    modes: tuple[str, ...] = GRAPH_MODES,
    batches: tuple[int, ...] = BATCHES,
    precisions: tuple[str, ...] = ("float32", "bfloat16"),
    engines: tuple[str, ...] = ("before", "eager", "freeze", "auto"),
    inductor_batches: tuple[int, ...] | None = None,
) -> dict[str, Any]:
    """The model's peak (best images/s over graph modes × batch sizes) and the engine's images/s.

    Every configuration is measured once per round, rounds interleaved, best of ``rounds`` kept, so
    a noisy shared machine hurts all alike. Per precision: the peak over ``modes × batches`` of
    bare forward passes (:class:`~xai_bridge.engine.ForwardPass`, the engine's own graphs), and the
    engine (default budget, measured chunk) on a 225-point deletion curve of 4 images in each
    graph mode of ``engines``, as a fraction of that peak; ``"before"`` is the engine as it was before graph
    modes and the measured chunk (eager, the budget's chunk): every engine's speed and curve are compared with its
    float32 run.
    """
    from xai_bridge.engine import ForwardPass

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    def model_rate(fp: ForwardPass, bs: int, n: int = 64) -> float:
        x = images[:1].expand(bs, -1, -1, -1).contiguous()
        with torch.inference_mode():
            fp(x)  # warm-up (and the graph, the first time)
            sync()
            reps = max(2, n // bs)
            start = time.perf_counter()
            for _ in range(reps):
                fp(x)
            sync()
        return bs * reps / (time.perf_counter() - start)

    req = Curve(step=step)
    sub, sub_maps = images[:4], maps[:4]  # 4 images × 225 steps = 900 forward samples per round
    passes = {(p, m): ForwardPass(model, compile=m, precision=p) for p in precisions for m in modes}
    sizes = {m: (inductor_batches or batches) if m == "inductor" else batches for m in modes}
    compile_s: dict[str, float] = {}
    for (p, m), fp in passes.items():  # build every graph once before timing (inductor: tens of seconds)
        for bs in sizes[m]:
            t, _ = timed(lambda fp=fp, bs=bs: model_rate(fp, bs, n=bs))
            compile_s[f"{p}/{m}"] = compile_s.get(f"{p}/{m}", 0.0) + t
    peak: dict[tuple[str, str, int], float] = {}
    engine_rate: dict[tuple[str, str], float] = {}
    chunks: dict[tuple[str, str], Any] = {}
    curves: dict[tuple[str, str], torch.Tensor] = {}
    for r in range(rounds):
        for (p, m), fp in passes.items():
            for bs in sizes[m]:
                key = (p, m, bs)
                peak[key] = max(peak.get(key, 0.0), model_rate(fp, bs))
        for p in precisions:
            for mode in engines:
                options = {"compile": "eager", "tune": False} if mode == "before" else {"compile": mode}
                engine = Engine(model, precision=p, progress=False, **options)
                t, result = timed(lambda engine=engine: (engine.run(sub, sub_maps, None, [req]), sync())[0])
                key2 = (p, mode)
                engine_rate[key2] = max(engine_rate.get(key2, 0.0), engine.forward_samples / t)
                chunks[key2] = engine.describe()
                curves[key2] = result[req].probs
        print(f"    (b) round {r + 1}/{rounds} done", flush=True)
    out: dict[str, Any] = {"rounds": rounds, "compile_and_first_pass_s": compile_s, "precisions": {}}
    for p in precisions:
        mine = {k: v for k, v in peak.items() if k[0] == p}
        best = max(mine, key=mine.get)
        out["precisions"][p] = {
            "model_img_s": {f"{m}@{bs}": round(v, 1) for (_, m, bs), v in mine.items()},
            "peak_img_s": mine[best],
            "peak_at": f"{best[1]} batch {best[2]}",
            "engine": {
                mode: {
                    "img_s": engine_rate[(p, mode)],
                    "fraction_of_peak": engine_rate[(p, mode)] / mine[best],
                    "forward": chunks[(p, mode)],
                    "vs_before": engine_rate[(p, mode)] / engine_rate[(precisions[0], engines[0])],
                    "max_abs_diff_vs_float32_before": float(
                        (curves[(p, mode)] - curves[(precisions[0], engines[0])]).abs().max()
                    ),
                }
                for mode in engines
            },
        }
    return out


# -- (e) -------------------------------------------------------------------------------------------
def part_e(model, photos_: torch.Tensor, explainers: tuple[str, ...]) -> dict[str, Any]:
    """Demo metrics (demo protocol) computed eagerly in float32 (the reference), through the frozen graph, and in
    bfloat16, eagerly and frozen.

    The explainers' maps are computed once (float32) and passed to every run, so only the engine's
    forward passes differ. Reports the largest |Δ| per metric versus float32 and whether the ranking
    of the explainers by mean changes.
    """
    from scipy.stats import kendalltau

    from xai_bridge.protocols import get_protocol
    from xai_bridge.runner.run import parse_spec
    from xai_bridge_builtins.demo import METRICS, PROTOCOL_OVERRIDES

    protocol = get_protocol("default", **PROTOCOL_OVERRIDES)
    metrics = [xb.get_metric(name, **options) for name, options, _ in (parse_spec(m, "metrics") for m in METRICS)]
    given = {name: xb.get_explainer(name, model).explain(photos_) for name in explainers}
    runs = {}
    for label, options in (
        ("float32", {"compile": "eager"}),
        ("freeze float32", {"compile": "freeze"}),
        ("bfloat16", {"compile": "eager", "precision": "bfloat16"}),
        ("freeze bfloat16", {"compile": "freeze", "precision": "bfloat16"}),
    ):
        t, res = timed(
            lambda options=options: xb.evaluate(
                model, photos_, [], metrics, protocol, maps=given, progress=False, **options
            )
        )
        runs[label] = (t, res)
        print(f"    (e) {label}: {t:.1f} s", flush=True)
    ref = runs["float32"][1]
    out: dict[str, Any] = {"seconds": {k: v[0] for k, v in runs.items()}, "metrics": {}}
    for metric in ref.metrics:
        order = sorted(explainers, key=lambda e: -ref.mean_std(e, metric)[0])
        row: dict[str, Any] = {}
        for label in [k for k in runs if k != "float32"]:
            other = runs[label][1]
            diff = max(
                abs(a - b)
                for e in explainers
                for a, b in zip(ref.values(e, metric), other.values(e, metric), strict=True)
            )
            other_order = sorted(explainers, key=lambda e: -other.mean_std(e, metric)[0])
            tau = kendalltau(
                [ref.mean_std(e, metric)[0] for e in explainers], [other.mean_std(e, metric)[0] for e in explainers]
            )
            row[label] = {
                "max_abs_diff": diff,
                "ranking_changed": other_order != order,
                "kendall_tau": float(tau.statistic),
            }
        out["metrics"][metric] = row
    return out


# -- (c) -------------------------------------------------------------------------------------------
def naive_curve(model, image, ranks, rep, target, counts, kind="deletion") -> list[float]:
    out = []
    for t in counts:
        mask = (ranks < t)[None]
        x = torch.where(mask, rep, image) if kind == "deletion" else torch.where(mask, image, rep)
        with torch.no_grad():
            out.append(float(model(x[None]).softmax(1)[0, target]))
    return out


def naive_flip(model, image, ranks, rep, counts) -> float:
    with torch.no_grad():
        base = int(model(image[None]).argmax())
    for t in counts[1:]:
        x = torch.where((ranks < t)[None], rep, image)
        with torch.no_grad():
            if int(model(x[None]).argmax()) != base:
                return t / ranks.numel()
    return 1.0


def part_c(model, images, maps, step: int, device) -> dict[str, float]:
    b, _, h, w = images.shape
    with torch.no_grad():
        y = model(images).argmax(1)
    counts = list(range(0, h * w, step)) + [h * w]
    aopc_counts = counts[: int(np.ceil(0.1 * h * w / step)) + 1]
    mean_rep, blur_rep = make_replacement(images, MEAN), make_replacement(images, BLUR)
    morf, lerf = rank_units(maps, "morf"), rank_units(maps, "lerf")

    def separate() -> None:
        # Quantus's PixelFlipping cannot take whole-pixel steps at 224² (see (a)) and its "mean"
        # baseline drifts with each step, so the per-image loop stands in for every metric here.
        for i in range(b):  # deletion, insertion, AOPC, n_MoRF, n_LeRF: per image, per step
            naive_curve(model, images[i], morf[i], mean_rep[i], int(y[i]), counts)
            naive_curve(model, images[i], morf[i], blur_rep[i], int(y[i]), counts, "insertion")
            naive_curve(model, images[i], morf[i], mean_rep[i], int(y[i]), aopc_counts)
            naive_flip(model, images[i], morf[i], mean_rep[i], counts)
            naive_flip(model, images[i], lerf[i], mean_rep[i], counts)

    reqs = [
        Curve(replacement=MEAN, step=step),
        Curve(kind="insertion", replacement=BLUR, step=step),
        Curve(replacement=MEAN, step=step, stop=0.1),
        Flip(replacement=MEAN, step=step),
        Flip(order="lerf", replacement=MEAN, step=step),
    ]
    engine = Engine(model, progress=False)
    t_sep, _ = timed(separate)
    t_eng, _ = timed(lambda: engine.run(images, maps, y, reqs))
    return {
        "separate_s": t_sep,
        "engine_s": t_eng,
        "ratio": t_sep / t_eng,
        "engine_forward_samples": engine.forward_samples,
    }


# -- (d) -------------------------------------------------------------------------------------------
def _rss_mib(field: str) -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _memory_child(n: int, step: int, budget: str) -> None:
    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "2")))
    model = xb.default_model()
    images = photos(n, 224, torch.device("cpu"))
    maps = torch.rand(n, 224, 224, generator=torch.Generator().manual_seed(0))
    engine = Engine(model, budget=budget, progress=False)
    engine.run(images[:1], maps[:1], None, [Curve(step=224 * 224)])  # warm up: allocator, oneDNN
    with open("/proc/self/clear_refs", "w") as fh:  # reset the peak (VmHWM) to the current RSS
        fh.write("5")
    before, done = _rss_mib("VmRSS"), engine.forward_samples
    engine.run(images, maps, None, [Curve(step=step)])
    print(
        json.dumps(
            {
                "rss_before_mib": before,
                "rss_peak_mib": _rss_mib("VmHWM"),
                "chunk": engine.chunk_size(images),
                "samples": engine.forward_samples - done,
            }
        )
    )


def part_d(budget: str, sizes: list[tuple[int, int]]) -> list[dict[str, float]]:
    rows = []
    for n, step in sizes:
        out = subprocess.run(
            [sys.executable, __file__, "--memory-child", str(n), str(step), budget],
            capture_output=True,
            text=True,
            check=True,
        )
        row = json.loads(out.stdout.strip().splitlines()[-1])
        row.update(images=n, steps=-(-224 * 224 // step), pairs=row["samples"])
        rows.append(row)
    return rows


# -- (f) -------------------------------------------------------------------------------------------
def _compile_child(kind: str, batch: int, package: str) -> None:
    """In a fresh process: build ``kind``'s fast path for one chunk shape, then time it; prints one JSON line."""
    from xai_bridge.engine import forward

    model = xb.default_model()
    x = photos(batch, 224, torch.device("cpu"))
    start = time.perf_counter()
    with torch.inference_mode():
        if kind == "freeze":
            run = forward._freeze(model, x)
            run(x)
        elif kind == "inductor":
            run = torch.compile(model, dynamic=False)
            run(x)
        elif kind == "aot-compile":  # torch.export + AOTInductor, packaged to a file
            with torch.no_grad():
                exported = torch.export.export(model, (x,))
            torch._inductor.aoti_compile_and_package(exported, package_path=package)
            run = torch._inductor.aoti_load_package(package)
            run(x)
        else:  # "aot-load": a later process loads the package and pays no compile
            run = torch._inductor.aoti_load_package(package)
            run(x)
    first = time.perf_counter() - start
    with torch.inference_mode():
        best = float("inf")
        for _ in range(3):
            t = time.perf_counter()
            out = run(x)
            best = min(best, time.perf_counter() - t)
        diff = float((out.float() - model(x)).abs().max())
    print(json.dumps({"kind": kind, "first_s": first, "img_s": batch / best, "max_abs_diff": diff}))


def part_f(model, images, maps, step: int, batch: int, long_images: int) -> dict[str, Any]:
    """(f): the fast paths' first-run cost in fresh processes, then ``auto`` on a short and a long run.

    First runs: each path in a new process, timed from nothing to the first output (inductor twice: with an
    empty ``TORCHINDUCTOR_CACHE_DIR`` and again with the cache the first process left). Then, in this process:
    the model's float32 peak at the chunk ``batch`` (the best of eager, freeze and inductor), ``auto`` on a
    short run (4 images × one deletion curve, below the break-even) and on a long run (``long_images``
    images, past it; the engine announces each run's work), each as a fraction of that peak, and the short
    run in eager for comparison.
    """
    import tempfile

    from xai_bridge.engine import Executor, ForwardPass
    from xai_bridge.engine import forward as fw

    out: dict[str, Any] = {"first_run": {}}
    with tempfile.TemporaryDirectory() as cache, tempfile.TemporaryDirectory() as pkg:
        env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": cache}
        package = os.path.join(pkg, "model.pt2")
        for kind, label in (
            ("freeze", "freeze"),
            ("inductor", "inductor, empty on-disk cache"),
            ("inductor", "inductor, warm on-disk cache"),
            ("aot-compile", "export + AOT compile"),
            ("aot-load", "AOT package loaded"),
        ):
            proc = subprocess.run(
                [sys.executable, __file__, "--compile-child", kind, str(batch), package],
                capture_output=True,
                text=True,
                env=env,
            )
            if proc.returncode:
                out["first_run"][label] = {"error": (proc.stderr.strip().splitlines() or ["?"])[-1][:200]}
            else:
                out["first_run"][label] = json.loads(proc.stdout.strip().splitlines()[-1])
            print(f"    (f) {label}: {out['first_run'][label]}", flush=True)

    x = images[:1].expand(batch, -1, -1, -1).contiguous()
    peak = {}
    for mode in ("eager", "freeze", "inductor"):
        fp = ForwardPass(model, compile=mode)
        with torch.inference_mode():
            fp(x)
            best = float("inf")
            for _ in range(3):
                t = time.perf_counter()
                for _ in range(4):
                    fp(x)
                best = min(best, (time.perf_counter() - t) / 4)
        peak[mode] = batch / best
    out["model_img_s_at_chunk"] = peak
    top = max(peak.values())
    req = Curve(step=step)

    def engine_rate(n: int, compile: str = "auto") -> tuple[float, dict[str, Any]]:
        ex = Executor(model, batch_size=batch, compile=compile, progress=False)
        sub, sub_maps = images[:n], maps[:n]
        # the engine announces the run's forward images itself (n × 226 here), before the first pass
        t, _ = timed(lambda: Engine(ex).run(sub, sub_maps, None, [req]))
        return ex.samples / t, ex.describe()

    fw.clear_cache()
    out["short_eager"] = engine_rate(4, compile="eager")[0]
    fw.clear_cache()
    rate, how = engine_rate(4)
    out["short_auto"] = {"img_s": rate, "fraction_of_peak": rate / top, "forward": how}
    fw.clear_cache()  # the long run pays its own compile (counted: its rate includes it)
    rate, how = engine_rate(long_images)
    out["long_auto"] = {"img_s": rate, "fraction_of_peak": rate / top, "forward": how, "images": long_images}
    rate, how = engine_rate(long_images)  # the same process again: the graph is kept
    out["long_auto_again"] = {"img_s": rate, "fraction_of_peak": rate / top, "forward": how}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--step", type=int, default=224, help="pixels per step at 224² (224 → 224 steps)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--budget", default="1GiB", help="engine memory budget for part (d)")
    parser.add_argument("--quick", action="store_true", help="smaller (c) and (d)")
    parser.add_argument("--parts", default="abcd", help="any of abcde (e: float32 vs bfloat16 on the demo metrics)")
    parser.add_argument("--rounds", type=int, default=3, help="(b): interleaved rounds, best kept")
    parser.add_argument("--modes", default=",".join(GRAPH_MODES), help="(b): graph modes of the model's peak")
    parser.add_argument("--batches", default=",".join(map(str, BATCHES)), help="(b): batch sizes of the model's peak")
    parser.add_argument(
        "--inductor-batches", help="(b): batch sizes for inductor only (each one compiles for tens of seconds)"
    )
    parser.add_argument(
        "--explainers",
        default="gradcam,gradcam++,deepmaps,fakecam,random",
        help="(e): explainers whose maps are scored",
    )
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument("--chunk", type=int, default=8, help="(f): the chunk every fast path is built and timed at")
    parser.add_argument("--long-images", type=int, default=256, help="(f): images of the long run (× 225 steps)")
    parser.add_argument("--memory-child", nargs=3, help=argparse.SUPPRESS)
    parser.add_argument("--compile-child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.memory_child:
        _memory_child(int(args.memory_child[0]), int(args.memory_child[1]), args.memory_child[2])
        return 0
    if args.compile_child:
        _compile_child(args.compile_child[0], int(args.compile_child[1]), args.compile_child[2])
        return 0
    device = torch.device(args.device)
    model = xb.default_model().to(device)
    images = photos(args.images, 224, device)
    maps = saliency(model, images)
    print(f"device={device} threads={torch.get_num_threads()} images={args.images} at 224², step={args.step} px")
    figures: dict[str, Any] = {}
    if "a" in args.parts:
        figures["a"] = a = part_a(model, images, device)
        print(
            f"(a) deletion curve, {a['steps']} steps at 192²: Quantus PixelFlipping {a['quantus_s']:.1f} s, "
            f"engine {a['engine_s']:.1f} s → {a['ratio']:.1f}× (max |Δ| {a['max_abs_diff']:.1e})"
        )
    if "b" in args.parts:
        figures["b"] = bb = part_b(
            model,
            images,
            maps,
            args.step,
            device,
            rounds=args.rounds,
            modes=tuple(args.modes.split(",")),
            batches=tuple(int(b) for b in args.batches.split(",")),
            inductor_batches=tuple(int(b) for b in args.inductor_batches.split(",")) if args.inductor_batches else None,
        )
        print(f"(b) best of {bb['rounds']} interleaved rounds; graphs built in {bb['compile_and_first_pass_s']}")
        for p, fig in bb["precisions"].items():
            print(f"    {p}: model peak {fig['peak_img_s']:.1f} img/s ({fig['peak_at']}); all: {fig['model_img_s']}")
            for mode, e in fig["engine"].items():
                print(
                    f"    {p}: engine {mode} {e['img_s']:.1f} img/s → {e['fraction_of_peak']:.0%} of peak, "
                    f"{e['vs_before']:.2f}× the float32 engine before, curve max |Δ| vs float32 before "
                    f"{e['max_abs_diff_vs_float32_before']:.1e} ({e['forward']})"
                )
    if "c" in args.parts:
        n = min(args.images, 4) if args.quick else args.images
        figures["c"] = c = part_c(model, images[:n], maps[:n], args.step, device)
        print(
            f"(c) deletion+insertion+AOPC+n_MoRF+n_LeRF on {n} images: separate calls {c['separate_s']:.1f} s, "
            f"one engine request set {c['engine_s']:.1f} s → {c['ratio']:.1f}×"
        )
    if "d" in args.parts:
        sizes = [(2, 1792), (4, 448), (8, 224)] if args.quick else [(2, 1792), (4, 448), (8, 224), (16, 112)]
        figures["d"] = d = part_d(args.budget, sizes)
        print(f"(d) peak RSS under a {args.budget} budget:")
        for row in d:
            print(
                f"    {row['images']:>3} images × {row['steps']:>4} steps = {row['pairs']:>6} forward samples: "
                f"peak {row['rss_peak_mib']:.0f} MiB, +{row['rss_peak_mib'] - row['rss_before_mib']:.0f} MiB "
                f"over the process before the run (chunk {row['chunk']})"
            )
    if "e" in args.parts:
        n = min(args.images, 9)
        figures["e"] = e = part_e(model, images[:n], tuple(args.explainers.split(",")))
        print(f"(e) demo metrics on {n} photos vs float32 (max |Δ|, ranking of the explainers changed?):")
        for metric, row in e["metrics"].items():
            print(
                f"    {metric:<22} "
                + "  ".join(
                    f"{k}: {v['max_abs_diff']:.1e} τ={v['kendall_tau']:.2f} "
                    f"{'CHANGED' if v['ranking_changed'] else 'same'}"
                    for k, v in row.items()
                )
            )
    if "f" in args.parts:
        long_images = args.long_images
        reps = -(-long_images // images.shape[0])
        long_set = torch.cat([images] * reps)[:long_images]
        long_maps = torch.cat([maps] * reps)[:long_images]
        figures["f"] = f = part_f(model, long_set, long_maps, args.step, args.chunk, long_images)
        print(
            f"(f) model at chunk {args.chunk}: "
            + ", ".join(f"{k} {v:.1f}" for k, v in f["model_img_s_at_chunk"].items())
        )
        print(
            f"    short run (4 images): eager {f['short_eager']:.1f} img/s, auto "
            f"{f['short_auto']['img_s']:.1f} img/s ({f['short_auto']['fraction_of_peak']:.0%} of peak, "
            f"{f['short_auto']['forward']['graph']})"
        )
        for key in ("long_auto", "long_auto_again"):
            r = f[key]
            print(
                f"    {key} ({long_images} images): {r['img_s']:.1f} img/s = {r['fraction_of_peak']:.0%} "
                f"of peak ({r['forward']['graph']})"
            )
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(figures, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())

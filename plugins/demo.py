"""Built-in plugin: ``xai-bridge demo``, the benchmark on the embedded default model and photos.

Eight explainers (Grad-CAM, Grad-CAM++, Score-CAM, Opti-CAM, RISE, DeepMaps, Fake-CAM, random) ×
seven metrics (Average Drop / Gain / Increase, insertion and deletion AUC, n_MoRF and its Δσ)
on EfficientNet-Lite0 and the nine embedded photos, with settings chosen so the whole run
takes a few minutes on a 2-core CPU. It is an ordinary benchmark (:mod:`xai_bridge.runner`)
whose lists live here, in a plugin, so the host names no method.

>>> demo_config("out/demo", quick=True).images
'default:chelsea,coffee,astronaut,rocket'
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from xai_bridge import hookimpl

EXPLAINERS = ("gradcam", "gradcam++", "scorecam", "opticam", "rise", "deepmaps", "fakecam", "random")
METRICS = (
    "average_drop",
    "average_gain",
    "average_increase",
    "insertion_auc",
    "deletion_auc",
    "n_morf",
    "delta:metric=n_morf",
)
#: Insertion/deletion move 5 % of the pixels per step, decision flips 3 %.
PROTOCOL_OVERRIDES = {"step": 0.05, "removal_step": 0.03}
#: the paper's iteration count (Zhang et al. 2024)
OPTICAM_ITERATIONS = 100
#: RISE's masks per image: below the authors' 2000–8000 to keep the demo within a few minutes on a CPU
RISE_MASKS = 1000
#: options of the explainers the demo does not run at their defaults (``--quick`` lowers Opti-CAM's iterations)
EXPLAINER_OPTIONS = {"opticam": {"max_iter": OPTICAM_ITERATIONS}, "rise": {"n_masks": RISE_MASKS}}


def demo_config(out: str | Path, quick: bool = False, progress: bool = True) -> Any:
    """The :class:`~xai_bridge.runner.BenchmarkConfig` that ``xai-bridge demo`` runs."""
    from xai_bridge.protocols import get_protocol
    from xai_bridge.runner import BenchmarkConfig

    iterations = 10 if quick else OPTICAM_ITERATIONS
    images = "default:chelsea,coffee,astronaut,rocket" if quick else "default"
    options = {**EXPLAINER_OPTIONS, "opticam": {"max_iter": iterations}}
    explainers = [(e, options[e]) if e in options else e for e in EXPLAINERS]
    out = Path(out)
    notes = [
        f"Demo settings, chosen to finish in a few minutes on a 2-core CPU: Opti-CAM runs {iterations} iterations "
        f"(the paper: 100) and Score-CAM reads the default layer (the 1280-channel head, like the other CAMs); "
        f"RISE uses {RISE_MASKS} masks of 7×7 cells kept with probability 0.5 (the authors: 2000–8000); "
        f"insertion/deletion move {PROTOCOL_OVERRIDES['step']:.0%} of the pixels per step and "
        f"decision flips (n_MoRF, Δn_MoRF) {PROTOCOL_OVERRIDES['removal_step']:.0%} per step (the `default` preset: "
        "1/28 and 224 pixels), hence the protocol name `default+custom`; "
        "Δ takes K = 5 reference maps from the other images.",
    ]
    if quick:
        notes.append("Quick demo: 4 photos only — far too few for the statistics to mean much.")
    return BenchmarkConfig(
        images=images,
        explainers=explainers,
        metrics=list(METRICS),
        protocol=get_protocol("default", **PROTOCOL_OVERRIDES),
        batch_size=9,
        size=224,
        store=out / "benchmark.sqlite",
        out=out,
        grid_images=4 if quick else 5,
        progress=progress,
        notes=notes,
        title="xai-bridge demo: eight explainers, seven metrics, the embedded photos",
    )


def run_demo(out: str | Path = "out/demo", quick: bool = False, progress: bool = True) -> Any:
    """Run the demo into ``out`` (report.md, report.html, figures/, benchmark.sqlite); returns the results.

    Rerunning with the same ``out`` reuses the stored results.
    """
    from xai_bridge.runner import run_benchmark

    return run_benchmark(demo_config(out, quick=quick, progress=progress))


def _cmd_demo(args: argparse.Namespace) -> int:
    out = Path(args.out)
    results = run_demo(out, quick=args.quick, progress=not args.quiet)
    print(results.summary())
    print(f"\nwrote {out / 'report.md'} and {out / 'report.html'}")
    return 0


@hookimpl
def register_commands(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "demo",
        help="the benchmark on the embedded default: 8 explainers × 7 metrics, report with statistics "
        "(a few minutes on CPU)",
    )
    p.add_argument("--out", default="out/demo")
    p.add_argument("--quick", action="store_true", help="four photos and fewer Opti-CAM iterations")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_cmd_demo)

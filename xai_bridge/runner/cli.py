"""The ``benchmark`` sub-command of ``xai-bridge`` (the host's runner; ``xai-bridge demo`` is a built-in plugin on it).

``add_benchmark_parser(subparsers)`` registers ``benchmark`` on the main parser; this
command also runs as ``python -m xai_bridge benchmark ...``, also under ``torchrun``.

>>> import argparse
>>> parser = argparse.ArgumentParser(); sub = parser.add_subparsers(dest="command")
>>> _ = add_benchmark_parser(sub)
>>> parser.parse_args(["benchmark", "-e", "gradcam", "random", "-m", "average_gain"]).explainers
['gradcam', 'random']
"""

from __future__ import annotations

import argparse
import importlib
from pathlib import Path
from typing import Any

from ..cli_support import add_scoring_arguments, parse_options, torch_device
from ..errors import UsageError


def load_model(spec: str) -> Any:
    """``"default"`` (EfficientNet-Lite0) or ``"package.module:factory"`` — a function returning a classifier."""
    if spec == "default":
        from ..models import default_model

        return default_model()
    module, sep, attr = spec.partition(":")
    if not sep or not module or not attr:
        raise UsageError(
            f"--model {spec!r}: expected 'default' or 'package.module:factory' (a function returning an nn.Module)"
        )
    try:
        factory = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as exc:
        raise UsageError(f"--model {spec!r}: cannot load it ({exc}); is the module on PYTHONPATH?") from exc
    model = factory()
    if not hasattr(model, "eval"):
        raise UsageError(f"--model {spec!r}: the factory returned {type(model).__name__}, expected an nn.Module")
    return model.eval()


def cmd_benchmark(args: argparse.Namespace) -> int:
    """Run (or resume) the benchmark the arguments describe and write its report."""
    from ..protocols import PRESETS, get_protocol
    from ..registry import UnknownNameError
    from .benchmark import run_benchmark
    from .run import BenchmarkConfig

    if args.protocol not in PRESETS:
        raise UsageError(f"--protocol {args.protocol!r}: expected one of {', '.join(PRESETS)}")
    if args.batch_size < 1:
        raise UsageError(f"--batch-size {args.batch_size}: expected a positive number of images")
    overrides = parse_options(args.protocol_option, "--protocol-option")
    try:
        protocol = get_protocol(args.protocol, **overrides)
    except (TypeError, ValueError) as exc:
        raise UsageError(f"--protocol-option: {exc}") from exc
    out = Path(args.out)
    config = BenchmarkConfig(
        images=args.images,
        explainers=args.explainers,
        metrics=args.metrics,
        protocol=protocol,
        model=load_model(args.model),
        model_name="EfficientNet-Lite0 (xai-bridge default)" if args.model == "default" else args.model,
        size=args.size,
        batch_size=args.batch_size,
        store=args.store or out / "benchmark.sqlite",
        out=None if args.no_report else out,
        device=None if args.device is None else torch_device(args.device),
        grid_images=args.grid_images,
        compile=args.compile,
        precision=args.precision,
        progress=not args.quiet,
    )
    try:
        results = run_benchmark(config)
    except UnknownNameError as exc:
        raise UsageError(str(exc)) from exc
    except ValueError as exc:
        if str(exc).split(":")[0] in (
            "images",
            "explainers",
            "metrics",
            "model",
            "size",
            "batch_size",
            "store",
            "compile",
            "precision",
        ):
            raise UsageError(str(exc)) from exc
        raise
    import os

    if int(os.environ.get("RANK", "0")) == 0:
        print(results.summary())
        if not args.no_report:
            print(f"\nwrote {out / 'report.md'} and {out / 'report.html'} (store: {config.store})")
    return 0


def add_benchmark_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``benchmark`` on the ``xai-bridge`` sub-parsers; returns its parser."""
    p = subparsers.add_parser(
        "benchmark",
        help="explainers × metrics over a data set: resumable store, statistics, Markdown/HTML report (torchrun-ready)",
        description="Explainers × metrics over a data set. Results go to a SQLite store as they are computed; "
        "rerunning resumes (or does nothing when complete). "
        "Under `torchrun --nproc_per_node N -m xai_bridge benchmark ...` the images are sharded across ranks.",
    )
    p.add_argument(
        "--images",
        default="default",
        help=(
            "'default' (embedded photos), 'default:chelsea,coffee', an ImageFolder directory, or a list file "
            "(PATH [LABEL] per line)"
        ),
    )
    add_scoring_arguments(p)
    p.add_argument(
        "--protocol-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a protocol field, e.g. removal_step=0.02 (repeatable)",
    )
    p.add_argument("--model", default="default", help="'default' (EfficientNet-Lite0) or 'package.module:factory'")
    p.add_argument("--out", default="out/benchmark", help="report folder (default: out/benchmark)")
    p.add_argument("--store", help="SQLite store (default: OUT/benchmark.sqlite)")
    p.add_argument("--size", type=int, default=224, help="image side after resize and centre crop")
    p.add_argument("--batch-size", type=int, default=8, help="images per batch (also the pool of Δ reference maps)")
    p.add_argument("--grid-images", type=int, default=4, help="images in the report's saliency grid")
    p.add_argument(
        "--device", default=None, help="torch device (default: CPU; cuda:LOCAL_RANK under torchrun with CUDA)"
    )
    p.add_argument(
        "--compile",
        default="auto",
        choices=("auto", "eager", "freeze", "inductor"),
        help="graph mode of the engine's forward passes (default: auto, the faster exact one of eager and freeze; "
        "see docs/performance.md)",
    )
    p.add_argument(
        "--precision",
        default="float32",
        choices=("float32", "bfloat16", "float16"),
        help="autocast precision of the engine's forward passes (default: float32; bfloat16 on CPUs, float16 on CUDA)",
    )
    p.add_argument("--no-report", action="store_true", help="only fill the store")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_benchmark)
    return p

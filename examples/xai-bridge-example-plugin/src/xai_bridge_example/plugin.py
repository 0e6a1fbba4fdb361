"""The plugin module named by the entry point. It only registers: cheap to import (no torch)."""

from xai_bridge import hookimpl


def make_edges(model, **options):
    from xai_bridge_example.explainers import EdgeSaliency

    return EdgeSaliency(model, **options)


def make_keep_top(**options):
    from xai_bridge_example.metrics import KeepTopScore

    return KeepTopScore(**options)


@hookimpl
def register_explainers(register):
    register(
        "edges",
        make_edges,
        aliases=("sobel",),
        family="baseline",
        description="Sobel edge magnitude of the image: a class-agnostic baseline that ignores the model.",
    )


@hookimpl
def register_metrics(register):
    register(
        "keep_top",
        make_keep_top,
        higher_is_better=True,
        category="Faithfulness",
        description=(
            "Share of the class score kept when only the top 10 % of the pixels are revealed (option: fraction)."
        ),
    )

"""The plugin module named by the entry point. It only registers: cheap to import (no torch)."""

from xai_bridge import hookimpl


def make_edges(model, **options):
    from xai_bridge_example.explainers import EdgeSaliency

    return EdgeSaliency(model, **options)


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
    # direction, category and description are read from the class (imported when first needed)
    register("keep_top", metric_class="xai_bridge_example.metrics:KeepTopScore")

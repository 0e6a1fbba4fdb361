"""The plugin module named by the entry point. It only registers: cheap to import."""

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

"""A plugin registered for one test with the ``xai_bridge_plugin`` fixture: no install, no entry point."""

import torch
import torch.nn.functional as F

import xai_bridge as xb
from xai_bridge import hookimpl
from xai_bridge_example.explainers import EdgeSaliency


class BlurredEdges(EdgeSaliency):
    """A variant still in development: Sobel edges of the image after a 3×3 box blur."""

    def attribute(self, images, targets):
        return super().attribute(F.avg_pool2d(images, 3, stride=1, padding=1, count_include_pad=False), targets)


class DraftPlugin:
    """Any object with ``@hookimpl`` functions is a plugin; this one is never installed."""

    @hookimpl
    def register_explainers(self, register):
        register("edges-blurred", BlurredEdges, family="baseline", description="Sobel edges after a 3×3 box blur.")


def test_a_plugin_registered_for_one_test(xai_bridge_plugin, tiny_model):
    xai_bridge_plugin(DraftPlugin(), name="draft")  # unregistered when the test ends
    spec = xb.explainer_spec("edges-blurred")
    assert spec.provider.plugin == "draft"
    maps = xb.get_explainer("edges-blurred", tiny_model).explain(torch.rand(2, 3, 16, 16))
    assert maps.shape == (2, 16, 16)


def test_it_is_gone_after_that_test():
    assert "edges-blurred" not in [spec.name for spec in xb.list_explainers()]
